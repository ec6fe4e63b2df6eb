//! `countersign audit report` (issue 17 §4): the numbers of `countersign_core::service::report`, with the
//! chain's status and its checkpoint coverage, rendered as one self-contained HTML file (no external assets,
//! an inline SVG bar chart; it opens offline), Markdown or JSON. Exit 1 when the chain is broken or does not
//! match its checkpoints.

use std::fmt::Write as _;
use std::path::Path;

use countersign_core::domain::Timestamp;
use countersign_core::ports::{Clock, SystemClock};
use countersign_core::service::report::{build, Report};

use super::audit::{coverage, default_checkpoints, CheckpointSource, Coverage};
use super::store::open;
use super::{exit, CliError, StoreArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Html,
    Md,
    Json,
}

/// What the report is over, besides the numbers.
struct Header {
    status: String,
    coverage: Coverage,
    period: String,
}

pub async fn report(
    since: Option<Timestamp>,
    format: ReportFormat,
    out: Option<&Path>,
    checkpoints: Option<&CheckpointSource>,
    jwks: Option<&Path>,
    args: &StoreArgs,
) -> Result<u8, CliError> {
    let store = open(args).await?;
    let records = store.whole_trail().await?;
    let chain = countersign_core::domain::audit::verify_chain(&records);
    let source = checkpoints.cloned().or_else(|| default_checkpoints(args));
    let coverage = coverage(&records, source.as_ref(), jwks).await?;
    let policies = store
        .stores
        .policies
        .list_policies()
        .await
        .map_err(|e| CliError::failed("cannot read the current policies", &e))?;
    let r = build(&records, since, &policies);
    let status = match &chain {
        Ok(_) => format!("verified from genesis: {} records intact", records.len()),
        Err(b) => format!("BROKEN: {b}"),
    };
    let period = format!(
        "{} to {} (generated {}; {} of {} records in the period)",
        since.map_or_else(|| "the first record".to_string(), |t| t.to_rfc3339()),
        r.until.map_or_else(|| "the last record".to_string(), |t| t.to_rfc3339()),
        SystemClock.now().to_rfc3339(),
        r.records,
        records.len()
    );
    let h = Header { status, coverage, period };
    let text = match format {
        ReportFormat::Json => serde_json::to_string_pretty(&serde_json::json!({
            "chain": h.status, "period": h.period, "checkpoints": h.coverage, "report": r,
        }))
        .unwrap_or_default(),
        ReportFormat::Md => markdown(&r, &h),
        ReportFormat::Html => html(&r, &h),
    };
    match out {
        Some(p) => {
            std::fs::write(p, text).map_err(|e| CliError::failed(&format!("cannot write {}", p.display()), &e))?
        }
        None => println!("{text}"),
    }
    Ok(if chain.is_ok() && h.coverage.broken.is_none() { exit::OK } else { exit::FAILED })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), |s| format!("{s:.0} s"))
}

/// The per-policy columns, in order, as both renderings print them.
const POLICY_COLUMNS: &[&str] = &[
    "policy",
    "requests",
    "approved",
    "auto",
    "denied",
    "expired",
    "cancelled",
    "redeemed",
    "unused",
    "median",
    "p90",
];

fn policy_cells(name: &str, s: &countersign_core::service::report::PolicyStats) -> Vec<String> {
    vec![
        name.to_string(),
        s.requests.to_string(),
        s.approved.to_string(),
        s.auto_approved.to_string(),
        s.denied.to_string(),
        s.expired.to_string(),
        s.cancelled.to_string(),
        s.redeemed.to_string(),
        s.unused.to_string(),
        secs(s.median_seconds_to_decision),
        secs(s.p90_seconds_to_decision),
    ]
}

/// (policy, approver, approvals), most approvals first within each policy.
fn approvals(r: &Report) -> Vec<(&str, &str, u64)> {
    let mut rows = Vec::new();
    for (policy, s) in &r.policies {
        let mut by: Vec<(&str, u64)> = s.approvers.iter().map(|(u, n)| (u.as_str(), *n)).collect();
        by.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        rows.extend(by.into_iter().map(|(u, n)| (policy.as_str(), u, n)));
    }
    rows
}

fn markdown(r: &Report, h: &Header) -> String {
    let mut m = format!(
        "# Countersign compliance report\n\nPeriod: {}\n\nChain: {}\n\n{}\n\n## Per policy\n\n",
        h.period,
        h.status,
        h.coverage.line()
    );
    let row = |cells: &[String]| {
        format!("| {} |\n", cells.iter().map(|c| c.replace('|', "\\|")).collect::<Vec<_>>().join(" | "))
    };
    m.push_str(&row(&POLICY_COLUMNS.iter().map(|c| c.to_string()).collect::<Vec<_>>()));
    m.push_str(&format!("|{}\n", "---|".repeat(POLICY_COLUMNS.len())));
    for (name, s) in &r.policies {
        m.push_str(&row(&policy_cells(name, s)));
    }
    m.push_str("\n## Approvals per approver\n\n| policy | approver | approvals |\n|---|---|---|\n");
    for (p, u, n) in approvals(r) {
        m.push_str(&row(&[p.to_string(), u.to_string(), n.to_string()]));
    }
    m.push_str("\n## Refusals per principal and code\n\n| principal | code | refusals |\n|---|---|---|\n");
    for (who, codes) in &r.refusals {
        for (code, n) in codes {
            m.push_str(&row(&[who.clone(), code.clone(), n.to_string()]));
        }
    }
    m.push_str("\n## Approvals by approvers the current policy no longer lists\n\n");
    for d in &r.drift {
        m.push_str(&format!("- {} · {} approved by {} at {}\n", d.request, d.policy, d.user, d.at));
    }
    if r.drift.is_empty() {
        m.push_str("None.\n");
    }
    if !r.drift_unknown_for.is_empty() {
        let names: Vec<&str> = r.drift_unknown_for.iter().map(String::as_str).collect();
        m.push_str(&format!("\nNot judged (approvers include Slack groups, unknown offline): {}\n", names.join(", ")));
    }
    m
}

/// Top 10 principals by refusals, as an inline SVG bar chart.
fn refusal_chart(r: &Report) -> String {
    let mut rows: Vec<(&String, u64)> = r.refusals.iter().map(|(p, codes)| (p, codes.values().sum())).collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    rows.truncate(10);
    let max = rows.first().map_or(1, |r| r.1.max(1));
    let mut svg =
        format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="720" height="{}" role="img">"#, 24 * rows.len() + 4);
    for (i, (p, n)) in rows.iter().enumerate() {
        let w = 300 * n / max;
        let y = 24 * i;
        svg.push_str(&format!(
            r##"<text x="0" y="{}" font-size="12">{}</text><rect x="400" y="{}" width="{w}" height="16" fill="#4a6fa5"/><text x="{}" y="{}" font-size="12">{n}</text>"##,
            y + 14,
            esc(&p.chars().take(60).collect::<String>()),
            y + 2,
            405 + w,
            y + 14
        ));
    }
    svg.push_str("</svg>");
    svg
}

fn table(id: &str, headers: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let mut t = format!("<table id=\"{id}\"><tr>");
    for h in headers {
        let _ = write!(t, "<th>{}</th>", esc(h));
    }
    t.push_str("</tr>");
    for cells in rows {
        t.push_str("<tr>");
        for c in cells {
            let _ = write!(t, "<td>{}</td>", esc(&c));
        }
        t.push_str("</tr>");
    }
    t.push_str("</table>");
    t
}

fn html(r: &Report, h: &Header) -> String {
    let policies = table("policies", POLICY_COLUMNS, r.policies.iter().map(|(name, s)| policy_cells(name, s)));
    let approvers = table(
        "approvers",
        &["policy", "approver", "approvals"],
        approvals(r).into_iter().map(|(p, u, n)| vec![p.to_string(), u.to_string(), n.to_string()]),
    );
    let refusals = table(
        "refusals",
        &["principal", "code", "refusals"],
        r.refusals
            .iter()
            .flat_map(|(who, codes)| codes.iter().map(move |(c, n)| vec![who.clone(), c.clone(), n.to_string()])),
    );
    let drift: String = r
        .drift
        .iter()
        .map(|d| format!("<li>{} · {} approved by {}</li>", esc(&d.request), esc(&d.policy), esc(&d.user)))
        .collect();
    let unknown = if r.drift_unknown_for.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = r.drift_unknown_for.iter().map(|n| esc(n)).collect();
        format!(
            "<p id=\"drift-unknown\">Not judged (approvers include Slack groups, whose members are unknown offline): {}</p>",
            names.join(", ")
        )
    };
    let coverage_class = if h.coverage.broken.is_some() {
        "bad"
    } else if h.coverage.verified {
        "good"
    } else {
        "warn"
    };
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Countersign compliance report</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:1em}}\
         td,th{{border:1px solid #ccc;padding:4px 8px}}.bad{{color:#a00}}.warn{{color:#a60}}.good{{color:#060}}</style>\
         </head><body><h1>Countersign compliance report</h1><p id=\"period\">Period: {}</p><p id=\"chain\">{}</p>\
         <p id=\"coverage\" class=\"{coverage_class}\">{}</p>\
         <h2>Per policy</h2>{policies}\
         <h2>Refusals: top principals</h2>{}\
         <h2>Refusals per principal and code</h2>{refusals}\
         <h2>Approvals per approver</h2>{approvers}\
         <h2>Approvals by approvers the current policy no longer lists</h2><ul id=\"drift\">{drift}</ul>{unknown}\
         </body></html>",
        esc(&h.period),
        esc(&h.status),
        esc(&h.coverage.line()),
        refusal_chart(r)
    )
}

//! `countersign policy test | explain`: what a policy file would decide, before it is applied. Both judge
//! with [`countersign_core::domain::policy::evaluate`], the API's own decision; nothing here matches
//! anything. They read files only, never a store. And `whoami --endpoint`: what the deployed API decides
//! about the caller (`GET /v1/whoami`).

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use countersign_core::domain::policy::{
    evaluate, format_duration, parse_cases, run_case, why_stricter, CaseResult, Evaluation, Outcome,
    MAX_CASES_FILE_BYTES,
};
use countersign_core::domain::{Action, CredentialType, Environment, Principal, Resource};

use super::api::ApiClient;
use super::policy::{load, read_bounded, shadowing_line};
use super::{exit, parse_token, ApiArgs, CliError, Output, OutputArgs};

#[derive(Debug, Args)]
pub struct TestArgs {
    /// The YAML policy file.
    pub file: PathBuf,
    /// The YAML cases file (`version: 1`, `cases: [{name, principal, action, environment, resource,
    /// credential, expect}]`; see docs/policies.md).
    #[arg(long, value_name = "CASES.yaml")]
    pub cases: PathBuf,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The YAML policy file.
    pub file: PathBuf,
    /// Who asks: a role or user ARN, or an assumed-role session ARN (as the API sees the caller).
    #[arg(long, value_name = "ARN", value_parser = parse_principal)]
    pub principal: Principal,
    #[arg(long, value_parser = parse_token::<Action>)]
    pub action: String,
    #[arg(long = "env", value_name = "ENV", value_parser = parse_token::<Environment>)]
    pub environment: String,
    #[arg(long, value_parser = parse_token::<Resource>)]
    pub resource: Option<String>,
    /// The kind of key the request would be signed with.
    #[arg(long, value_name = "TYPE", default_value = "temporary", value_parser = CredentialType::parse)]
    pub credential: CredentialType,
    #[command(flatten)]
    pub output: OutputArgs,
}

fn parse_principal(s: &str) -> Result<Principal, String> {
    Principal::parse(s).map_err(|e| e.to_string())
}

/// `policy test FILE --cases CASES`: exit 0 when every case passes, 1 when one fails or a file is invalid.
pub fn test(args: &TestArgs) -> Result<u8, CliError> {
    let policies = load(&args.file)?;
    let cases = load_cases(&args.cases)?;
    let results: Vec<CaseResult> = cases.iter().map(|c| run_case(&policies, c)).collect();
    let failed = results.iter().filter(|r| !r.pass).count();
    let passed = results.len() - failed;
    match args.output.output {
        Output::Json => {
            let out = json!({"cases": results, "passed": passed, "failed": failed});
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
        Output::Text => print_table(&args.cases, &results, passed, failed),
    }
    Ok(if failed == 0 { exit::OK } else { exit::FAILED })
}

fn load_cases(file: &Path) -> Result<Vec<countersign_core::domain::policy::Case>, CliError> {
    let src = read_bounded(file, MAX_CASES_FILE_BYTES)?;
    let cases = parse_cases(&src).map_err(|errs| {
        let mut m = format!("{} is not valid ({} problem(s)):", file.display(), errs.len());
        for e in &errs {
            m.push_str(&format!("\n  {}: {e}", file.display()));
        }
        CliError::new(exit::FAILED, m)
    })?;
    if cases.is_empty() {
        return Err(CliError::new(exit::FAILED, format!("{}: no cases (an empty file tests nothing)", file.display())));
    }
    Ok(cases)
}

fn print_table(file: &Path, results: &[CaseResult], passed: usize, failed: usize) {
    let width = results.iter().map(|r| r.name.chars().count()).max().unwrap_or(4).clamp(4, 60);
    println!("{:<8}{:<width$}  ACTUAL", "RESULT", "CASE");
    for r in results {
        println!("{:<8}{:<width$}  {}", if r.pass { "PASS" } else { "FAIL" }, r.name, r.actual);
        if !r.pass {
            let at = r.line.map(|l| format!(":{l}")).unwrap_or_default();
            println!("        {}{at}: expected {}", file.display(), r.expected);
            for p in &r.problems {
                println!("          - {p}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
}

/// `policy explain`: every matching policy, the winner and why, approvers, owners, shadowing. Exit 0.
pub fn explain(args: &ExplainArgs) -> Result<u8, CliError> {
    let policies = load(&args.file)?;
    // The value parsers checked these: parsing again cannot fail.
    let action = usage(Action::parse(&args.action))?;
    let env = usage(Environment::parse(&args.environment))?;
    let resource = usage(args.resource.as_deref().map(Resource::parse).transpose())?;
    let e = evaluate(&policies, &args.principal, &action, &env, resource.as_ref(), args.credential);
    match args.output.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&explain_json(args, &e)).unwrap_or_default()),
        Output::Text => print_explain(args, &e),
    }
    Ok(exit::OK)
}

fn usage<T>(r: Result<T, countersign_core::domain::InvalidId>) -> Result<T, CliError> {
    r.map_err(|e| CliError::new(exit::USAGE, e.problem))
}

fn explain_json(args: &ExplainArgs, e: &Evaluation<'_>) -> serde_json::Value {
    let winner = e.winner;
    let matching: Vec<_> = e
        .matching
        .iter()
        .map(|p| {
            let governs = winner.is_some_and(|w| std::ptr::eq(w, *p));
            json!({
                "name": p.name.as_str(),
                "required_approvals": p.required_approvals,
                "max_ttl": format_duration(p.max_ttl),
                "governs": governs,
                "why_not": winner.filter(|_| !governs).map(|w| format!("{} wins: {}", w.name, why_stricter(w, p))),
            })
        })
        .collect();
    let outcome = match e.outcome() {
        Outcome::Denied { code, message } => json!({"decision": "denied", "code": code, "message": message}),
        Outcome::Governed(p) => json!({
            "decision": "created", "policy": p.name.as_str(), "required_approvals": p.required_approvals,
            "channel": p.channel.as_str(),
        }),
    };
    json!({
        "request": {
            "principal": args.principal.identity(), "arn": args.principal.arn, "action": args.action,
            "environment": args.environment, "resource": args.resource, "credential": args.credential.as_str(),
        },
        "matching": matching,
        "outcome": outcome,
        "approvers": e.approvers(),
        "owners": e.owners.iter().map(|o| o.as_str()).collect::<Vec<_>>(),
        "excluded_owners": e.excluded_owners().iter().map(|o| o.as_str()).collect::<Vec<_>>(),
        "break_glass": winner.and_then(|w| w.break_glass.as_ref()).map(|b| json!({"max_per_day": b.max_per_day})),
        "shadowing": e.shadowing.iter().map(shadowing_line).collect::<Vec<_>>(),
    })
}

fn print_explain(args: &ExplainArgs, e: &Evaluation<'_>) {
    let p = &args.principal;
    println!(
        "request: {} (matches on {}) asks for {} in {}{}, signed with {} credentials",
        p.arn,
        p.identity(),
        args.action,
        args.environment,
        args.resource.as_deref().map(|r| format!(" on {r}")).unwrap_or_default(),
        args.credential.as_str().replace('_', "-")
    );
    if e.matching.is_empty() {
        println!("matching policies: none");
    } else {
        println!("matching policies, strictest first (most approvals, then shortest max_ttl, then name):");
    }
    for (i, m) in e.matching.iter().enumerate() {
        let why = match e.winner {
            Some(w) if std::ptr::eq(w, *m) => "governs".to_string(),
            Some(w) => format!("{} wins: {}", w.name, why_stricter(w, m)),
            None => String::new(),
        };
        println!(
            "  {}. {}  ({} approval(s), max_ttl {})  {why}",
            i + 1,
            m.name,
            m.required_approvals,
            format_duration(m.max_ttl)
        );
    }
    match e.outcome() {
        Outcome::Denied { code, message } => println!("decision: denied, 403 {code}: {message}"),
        Outcome::Governed(w) => {
            println!(
                "decision: created under {} ({} approval(s), posted to {})",
                w.name, w.required_approvals, w.channel
            );
            let approvers = e.approvers();
            let who = if approvers.is_empty() { "nobody".to_string() } else { approvers.join(", ") };
            println!(
                "who can approve: {who}{}",
                if w.approvers.groups.is_empty() { "" } else { " (group members, except owners)" }
            );
            match &w.break_glass {
                Some(b) => println!("break-glass: allowed, max {}/day", b.max_per_day),
                None => println!("break-glass: not allowed"),
            }
        }
    }
    let owners: Vec<&str> = e.owners.iter().map(|o| o.as_str()).collect();
    println!(
        "owners of this identity (never approve): {}",
        if owners.is_empty() { "none".into() } else { owners.join(", ") }
    );
    let excluded: Vec<&str> = e.excluded_owners().iter().map(|o| o.as_str()).collect();
    if !excluded.is_empty() {
        println!("excluded from the approvers as owners: {}", excluded.join(", "));
    }
    if e.shadowing.is_empty() {
        println!("shadowing warnings: none");
    } else {
        println!("shadowing warnings:");
        for s in &e.shadowing {
            println!("  - {}", shadowing_line(s));
        }
    }
}

/// `whoami --endpoint URL`: `GET /v1/whoami`, printed whole with `--output json`.
pub async fn whoami(api: ApiArgs) -> Result<u8, CliError> {
    let raw = ApiClient::new(&api).await?.whoami().await?;
    let v: countersign_lambda::http::api::WhoamiView = serde_json::from_value(raw.clone())
        .map_err(|e| CliError::failed("the API answered with something that is not a whoami object", &e))?;
    if api.output.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&raw).unwrap_or_default());
        return Ok(exit::OK);
    }
    println!("arn:        {}", v.arn);
    println!("principal:  {}   (what policies match on)", v.principal);
    println!("account:    {}", v.account_id);
    println!("session:    {}", v.session.as_deref().unwrap_or("-"));
    println!("credential: {}", v.credential);
    if v.policies.is_empty() {
        println!("policies:   none match this principal: every request would be refused (no_matching_policy)");
    }
    for (i, p) in v.policies.iter().enumerate() {
        println!(
            "{}{}: actions {}; environments {}",
            if i == 0 { "policies:   " } else { "            " },
            p.name,
            p.actions.join(", "),
            p.environments.join(", ")
        );
    }
    Ok(exit::OK)
}

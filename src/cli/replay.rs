//! `countersign policy replay FILE --store … --since 30d [--fail-on-change]`: the requests of a period decided
//! again under a candidate file ([`countersign_core::service::replay`]), for a CI check on policy pull
//! requests. Reads the store (the audit trail, and each replayed request for its credential type); never
//! writes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;

use countersign_core::domain::{AuditKind, CredentialType, Timestamp};
use countersign_core::service::replay::{replay as replay_trail, Change, Changed, Decision, Replay};

use super::policy::load;
use super::store::open;
use super::{exit, parse_time, CliError, Output, OutputArgs, StoreArgs};

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The candidate YAML policy file.
    pub file: PathBuf,
    /// Replay the requests made at or after this time (RFC 3339, a date, or an age such as 30d).
    #[arg(long, value_name = "TIME", value_parser = parse_time, default_value = "30d")]
    pub since: Timestamp,
    /// Exit 1 when any replayed outcome would change (for CI on policy pull requests).
    #[arg(long)]
    pub fail_on_change: bool,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub async fn replay(args: &ReplayArgs) -> Result<u8, CliError> {
    // The file is checked before the store is opened: an invalid file never costs a read.
    let file = load(&args.file)?;
    let store = open(&args.store).await?;
    let records = store.whole_trail().await?;
    // The credential type is not in the audit record: read it from each request of the period.
    let mut credentials = BTreeMap::new();
    for id in records
        .iter()
        .filter(|e| e.at >= args.since && e.kind == AuditKind::RequestCreated)
        .filter_map(|e| e.request_id)
    {
        let found = store
            .stores
            .requests
            .get_request(&id)
            .await
            .map_err(|e| CliError::failed(&format!("cannot read request {id} from {}", store.description), &e))?;
        if let Some(r) = found {
            credentials.insert(id, CredentialType::of(r.requester.access_key_id.as_deref()));
        }
    }
    let r = replay_trail(&records, args.since, &file, &credentials).map_err(|m| CliError::new(exit::FAILED, m))?;
    match args.output.output {
        Output::Json => {
            let v = serde_json::json!({
                "since": args.since.to_rfc3339(), "replayed": r.replayed, "skipped": r.skipped,
                "changed": r.changed, "policies": r.policies,
            });
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        Output::Text => print_text(args, &r),
    }
    Ok(if args.fail_on_change && !r.changed.is_empty() { exit::FAILED } else { exit::OK })
}

fn print_text(args: &ReplayArgs, r: &Replay) {
    println!(
        "{}: replayed {} request(s) since {} from the audit trail: {} would change{}",
        args.file.display(),
        r.replayed,
        args.since.to_rfc3339(),
        r.changed.len(),
        if r.skipped > 0 { format!(" ({} record(s) could not be replayed)", r.skipped) } else { String::new() }
    );
    for c in &r.changed {
        print_changed(c);
    }
    if r.policies.is_empty() {
        return;
    }
    let width = r.policies.keys().map(|k| k.chars().count()).max().unwrap_or(6).max(6);
    println!("{:<width$}  BEFORE  AFTER  CHANGED", "POLICY");
    for (name, n) in &r.policies {
        println!("{name:<width$}  {:>6}  {:>5}  {:>7}", n.before, n.after, n.changed);
    }
}

fn print_changed(c: &Changed) {
    let what = match &c.request {
        Some(id) => id.clone(),
        None => format!("refusal #{}", c.seq),
    };
    println!(
        "{what}  {}  {} asked for {} in {}{}: {} → {}{}",
        c.at,
        c.principal,
        c.action,
        c.environment,
        c.resource.as_deref().map(|r| format!(" on {r}")).unwrap_or_default(),
        side(&c.before),
        side(&c.after),
        if c.credential_known { "" } else { " (credential type unknown: the credential rule was not applied)" }
    );
    for ch in &c.changes {
        let line = match ch {
            Change::NewlyDenied { code } => format!("newly denied ({code})"),
            Change::NewlyAllowed { policy } => format!("newly allowed (under {policy})"),
            Change::AnotherPolicy { from, to } => format!("another policy: {from} → {to}"),
            Change::AnotherQuorum { from, to } => format!("another quorum: {from} → {to} approval(s)"),
            Change::ApproversAdded { approvers } => format!("approvers added: {}", approvers.join(", ")),
            Change::ApproversRemoved { approvers } => format!("approvers removed: {}", approvers.join(", ")),
        };
        println!("    {line}");
    }
}

fn side(d: &Decision) -> String {
    match (&d.policy, &d.denied) {
        (Some(p), _) => match d.required_approvals {
            Some(n) => format!("{p} ({n})"),
            None => p.clone(),
        },
        (None, Some(code)) => format!("denied ({code})"),
        (None, None) => "denied".into(),
    }
}

//! `countersign policy validate | diff | apply | history` (`test`, `explain`, `replay`: [`super::policy_tools`]).

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use countersign_core::domain::policy::{parse_policies, shadowing, Shadowing, MAX_POLICY_FILE_BYTES};
use countersign_core::domain::Policy;
use countersign_core::service::policies::{self, render_plan};

use super::store::{open, OpenStore};
use super::{exit, CliError, StoreArgs};

/// Reads a file of at most `max` bytes, refusing a larger one before reading it.
pub(super) fn read_bounded(file: &Path, max: usize) -> Result<String, CliError> {
    let meta = std::fs::metadata(file).map_err(|e| CliError::failed(&format!("cannot read {}", file.display()), &e))?;
    if meta.len() > max as u64 {
        return Err(CliError::new(exit::FAILED, format!("{}: larger than {max} bytes", file.display())));
    }
    std::fs::read_to_string(file).map_err(|e| CliError::failed(&format!("cannot read {}", file.display()), &e))
}

/// Reads and validates a policy file; every problem is printed with file, policy, field and line.
pub(super) fn load(file: &Path) -> Result<Vec<Policy>, CliError> {
    let src = read_bounded(file, MAX_POLICY_FILE_BYTES)?;
    parse_policies(&src).map_err(|errs| {
        let mut m = format!("{} is not valid ({} problem(s)):", file.display(), errs.0.len());
        for e in &errs.0 {
            m.push_str(&format!("\n  {}: {e}", file.display()));
        }
        CliError::new(exit::FAILED, m)
    })
}

/// One line per pair of policies that shadow each other (threat row 32).
pub(super) fn shadowing_line(s: &Shadowing<'_>) -> String {
    let e = &s.example;
    format!(
        "policies {:?} and {:?} can match the same request (for example principal {}, action {}, environment {}, \
         resource {}) but differ in {}: {:?} wins (strictest: most approvals, then shortest max_ttl, then name), \
         so {:?} never governs such a request",
        s.first.name.as_str(),
        s.second.name.as_str(),
        e.principal,
        e.action,
        e.environment,
        e.resource,
        s.differs.join(", "),
        s.winner.name.as_str(),
        s.shadowed().name.as_str(),
    )
}

/// Prints a warning per shadowing pair on stderr; with `strict` they are errors and nothing else runs.
fn lint(file: &Path, ps: &[Policy], strict: bool) -> Result<(), CliError> {
    let found = shadowing(ps);
    if found.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = found.iter().map(|s| format!("{}: {}", file.display(), shadowing_line(s))).collect();
    if strict {
        let mut m = format!("{}: {} pair(s) of policies shadow each other (--strict):", file.display(), found.len());
        for l in &lines {
            m.push_str(&format!("\n  {l}"));
        }
        return Err(CliError::new(exit::FAILED, m));
    }
    for l in &lines {
        eprintln!("warning: {l}");
    }
    Ok(())
}

pub fn validate(file: &Path, strict: bool) -> Result<u8, CliError> {
    let ps = load(file)?;
    lint(file, &ps, strict)?;
    println!("{}: valid, {} polic{}", file.display(), ps.len(), if ps.len() == 1 { "y" } else { "ies" });
    for p in &ps {
        println!(
            "  {} (version {}): {} approval(s), max_ttl {}",
            p.name,
            p.version(),
            p.required_approvals,
            countersign_core::domain::policy::format_duration(p.max_ttl)
        );
    }
    Ok(exit::OK)
}

async fn plan_for(desired: &[Policy], store: &OpenStore) -> Result<Vec<policies::PolicyChange>, CliError> {
    let current = store
        .stores
        .policies
        .list_policies()
        .await
        .map_err(|e| CliError::failed("cannot read the policy store", &e))?;
    Ok(policies::plan(&current, desired))
}

pub async fn diff(file: &Path, args: &StoreArgs) -> Result<u8, CliError> {
    let desired = load(file)?;
    let store = open(args).await?;
    let changes = plan_for(&desired, &store).await?;
    print!("{}", render_plan(&changes));
    Ok(exit::OK)
}

pub async fn apply(file: &Path, args: &StoreArgs, yes: bool, strict: bool) -> Result<u8, CliError> {
    // The file is checked before the store is opened: a refused file never touches it.
    let desired = load(file)?;
    lint(file, &desired, strict)?;
    let store = open(args).await?;
    let changes = plan_for(&desired, &store).await?;
    print!("{}", render_plan(&changes));
    if changes.is_empty() {
        return Ok(exit::OK);
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::new(
                exit::USAGE,
                "refusing to apply without --yes: stdin is not a terminal to confirm on",
            ));
        }
        print!("Apply these changes to {}? [y/N] ", store.description);
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("Nothing applied.");
            return Ok(exit::FAILED);
        }
    }
    let actor = store.actor().await?;
    let n = policies::apply(store.stores.policies.as_ref(), &changes, &actor, store.now())
        .await
        .map_err(|e| CliError::failed("applying policies failed part-way; run apply again to finish", &e))?;
    println!("Applied {n} change(s) to {} as {}.", store.description, actor.0);
    Ok(exit::OK)
}

/// `policy history [NAME] [--at TIME]`: the versions recorded in the audit trail, or the set at an instant.
pub async fn history(
    name: Option<&str>,
    at: Option<countersign_core::domain::Timestamp>,
    args: &StoreArgs,
    output: super::Output,
) -> Result<u8, CliError> {
    let store = open(args).await?;
    let records = store.whole_trail().await?;
    let versions = policies::history(&records, name).map_err(|m| CliError::new(exit::FAILED, m))?;
    if let Some(t) = at {
        let set = policies::policies_at(&versions, t).map_err(|m| CliError::new(exit::FAILED, m))?;
        let set: Vec<&Policy> = set.values().collect();
        println!("{}", serde_json::to_string_pretty(&set).unwrap_or_default());
        return Ok(exit::OK);
    }
    if output == super::Output::Json {
        let rows: Vec<serde_json::Value> = versions
            .iter()
            .map(|v| {
                serde_json::json!({
                    "seq": v.seq, "at": v.at, "actor": v.actor, "policy": v.name, "change": v.change,
                    "version": v.version, "fields": v.fields, "after": v.after,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default());
        return Ok(exit::OK);
    }
    if versions.is_empty() {
        println!("no policy changes recorded{}", name.map(|n| format!(" for {n:?}")).unwrap_or_default());
    }
    for v in &versions {
        let what = if v.fields.is_empty() { String::new() } else { format!(" ({})", v.fields.join(", ")) };
        println!(
            "{}  #{}  {}  {}{}  version {}  by {}",
            v.at.to_rfc3339(),
            v.seq,
            v.name,
            v.change,
            what,
            v.version.as_deref().unwrap_or("—"),
            v.actor.0
        );
    }
    Ok(exit::OK)
}

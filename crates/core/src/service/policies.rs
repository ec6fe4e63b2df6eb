//! Policy-as-code: compare a validated file with the store and apply the difference, one audited change
//! per policy. The file is the whole truth: a policy missing from it is deleted (deny by default).

use std::collections::BTreeMap;

use crate::domain::policy::diff_fields;
use crate::domain::{Actor, AuditDraft, AuditKind, Policy, Timestamp};
use crate::ports::PolicyStore;

use super::ServiceError;

#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // a handful per apply
pub enum PolicyChange {
    Add(Policy),
    Change {
        old: Policy,
        new: Policy,
        /// field → (old JSON, new JSON)
        fields: BTreeMap<String, (String, String)>,
    },
    Remove(Policy),
}

impl PolicyChange {
    pub fn name(&self) -> &str {
        match self {
            Self::Add(p) | Self::Remove(p) => p.name.as_str(),
            Self::Change { new, .. } => new.name.as_str(),
        }
    }
}

/// What applying `desired` to a store holding `current` would do, sorted by policy name.
pub fn plan(current: &[Policy], desired: &[Policy]) -> Vec<PolicyChange> {
    let cur: BTreeMap<&str, &Policy> = current.iter().map(|p| (p.name.as_str(), p)).collect();
    let want: BTreeMap<&str, &Policy> = desired.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut out = Vec::new();
    for (name, new) in &want {
        match cur.get(name) {
            None => out.push(PolicyChange::Add((*new).clone())),
            Some(old) if old != new => out.push(PolicyChange::Change {
                old: (*old).clone(),
                new: (*new).clone(),
                fields: diff_fields(old, new),
            }),
            Some(_) => {}
        }
    }
    for (name, old) in &cur {
        if !want.contains_key(name) {
            out.push(PolicyChange::Remove((*old).clone()));
        }
    }
    out.sort_by(|a, b| a.name().cmp(b.name()));
    out
}

/// Applies a plan: each change is written together with its audit record.
pub async fn apply(
    store: &dyn PolicyStore,
    changes: &[PolicyChange],
    actor: &Actor,
    now: Timestamp,
) -> Result<usize, ServiceError> {
    for c in changes {
        match c {
            PolicyChange::Add(p) => {
                let e = AuditDraft::new(now, AuditKind::PolicyChanged, actor.clone(), None)
                    .with("policy", p.name.as_str())
                    .with("change", "added")
                    .with("version", p.version())
                    .with("after", canonical(p));
                store.put_policy(p, e).await?;
            }
            PolicyChange::Change { old, new, fields } => {
                let names: Vec<&str> = fields.keys().map(String::as_str).collect();
                let e = AuditDraft::new(now, AuditKind::PolicyChanged, actor.clone(), None)
                    .with("policy", new.name.as_str())
                    .with("change", "changed")
                    .with("version", new.version())
                    .with("previous_version", old.version())
                    .with("fields", names.join(","))
                    .with("before", canonical(old))
                    .with("after", canonical(new));
                store.put_policy(new, e).await?;
            }
            PolicyChange::Remove(p) => {
                let e = AuditDraft::new(now, AuditKind::PolicyDeleted, actor.clone(), None)
                    .with("policy", p.name.as_str())
                    .with("change", "removed")
                    .with("previous_version", p.version())
                    .with("before", canonical(p));
                store.delete_policy(&p.name, e).await?;
            }
        }
    }
    Ok(changes.len())
}

/// The policy's canonical JSON: the document its version hashes, kept whole in `policy.changed` and
/// `policy.deleted` so the audit trail alone shows who could approve what, and when (issue 17).
pub fn canonical(p: &Policy) -> String {
    serde_json::to_string(p).unwrap_or_default()
}

/// One change of one policy, as the audit trail recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyVersion {
    pub seq: u64,
    pub at: Timestamp,
    pub actor: Actor,
    pub name: String,
    /// `added`, `changed` or `removed`.
    pub change: String,
    /// The version after the change (`None` once removed).
    pub version: Option<String>,
    /// The fields that changed (`changed` only).
    pub fields: Vec<String>,
    /// The policy after the change; `None` when removed, or for records written before whole documents were
    /// kept.
    pub after: Option<Policy>,
}

/// Every `policy.changed` / `policy.deleted` record of `records` (in chain order), optionally of one policy.
pub fn history(records: &[crate::domain::AuditEvent], name: Option<&str>) -> Result<Vec<PolicyVersion>, String> {
    let mut out = Vec::new();
    for e in records {
        if !matches!(e.kind, AuditKind::PolicyChanged | AuditKind::PolicyDeleted) {
            continue;
        }
        let d = &e.details;
        let policy = d.get("policy").cloned().unwrap_or_default();
        if name.is_some_and(|n| n != policy) {
            continue;
        }
        let after = match d.get("after") {
            Some(doc) => Some(
                serde_json::from_str::<Policy>(doc)
                    .map_err(|err| format!("record {}: the policy document does not parse: {err}", e.seq))?,
            ),
            None => None,
        };
        out.push(PolicyVersion {
            seq: e.seq,
            at: e.at,
            actor: e.actor.clone(),
            name: policy,
            change: d.get("change").cloned().unwrap_or_default(),
            version: d.get("version").cloned(),
            fields: d.get("fields").map(|f| f.split(',').map(str::to_string).collect()).unwrap_or_default(),
            after,
        });
    }
    Ok(out)
}

/// The policy set in force at `at`, replayed from the history (records at or before `at`). A policy whose
/// last change was recorded without its document is an error naming it: that set cannot be shown.
pub fn policies_at(history: &[PolicyVersion], at: Timestamp) -> Result<BTreeMap<String, Policy>, String> {
    // Per policy, the newest version at `at`: a document, removed, or changed before whole documents were
    // kept (a store from before issue 17). Only the last one matters: a later document makes it known again.
    enum State<'a> {
        Known(&'a Policy),
        Removed,
        Unknown(&'a PolicyVersion),
    }
    let mut set: BTreeMap<&str, State<'_>> = BTreeMap::new();
    for v in history.iter().filter(|v| v.at <= at) {
        let state = match (v.change.as_str(), &v.after) {
            ("removed", _) => State::Removed,
            (_, Some(p)) => State::Known(p),
            (_, None) => State::Unknown(v),
        };
        set.insert(v.name.as_str(), state);
    }
    let unknown: Vec<String> = set
        .values()
        .filter_map(|s| match s {
            State::Unknown(v) => Some(format!("{:?} (changed at {}, record {})", v.name, v.at.to_rfc3339(), v.seq)),
            _ => None,
        })
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "the policy set at {} cannot be rebuilt: {} changed before whole documents were kept",
            at.to_rfc3339(),
            unknown.join(", ")
        ));
    }
    Ok(set
        .into_iter()
        .filter_map(|(k, s)| match s {
            State::Known(p) => Some((k.to_string(), p.clone())),
            _ => None,
        })
        .collect())
}

/// Human-readable plan, one block per policy, field by field.
pub fn render_plan(changes: &[PolicyChange]) -> String {
    if changes.is_empty() {
        return "No changes: the store matches the file.\n".to_string();
    }
    let mut s = String::new();
    for c in changes {
        match c {
            PolicyChange::Add(p) => s.push_str(&format!("+ {} (new, version {})\n", p.name, p.version())),
            PolicyChange::Remove(p) => s.push_str(&format!("- {} (removed)\n", p.name)),
            PolicyChange::Change { old, new, fields } => {
                s.push_str(&format!("~ {} ({} → {})\n", new.name, old.version(), new.version()));
                for (f, (a, b)) in fields {
                    s.push_str(&format!("    {f}: {a} → {b}\n"));
                }
            }
        }
    }
    let (a, c, r) = changes.iter().fold((0, 0, 0), |(a, c, r), x| match x {
        PolicyChange::Add(_) => (a + 1, c, r),
        PolicyChange::Change { .. } => (a, c + 1, r),
        PolicyChange::Remove(_) => (a, c, r + 1),
    });
    s.push_str(&format!("{a} to add, {c} to change, {r} to remove.\n"));
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::domain::policy::parse_policies;

    #[test]
    fn plan_lists_adds_changes_and_removals_by_name() {
        let all = parse_policies(crate::domain::policy::tests::EXAMPLE).unwrap();
        let mut desired = all[1..].to_vec();
        desired[0].required_approvals = 2;
        let changes = plan(&all[..3], &desired);
        let kinds: Vec<(&str, &str)> = changes
            .iter()
            .map(|c| {
                (
                    c.name(),
                    match c {
                        PolicyChange::Add(_) => "add",
                        PolicyChange::Change { .. } => "change",
                        PolicyChange::Remove(_) => "remove",
                    },
                )
            })
            .collect();
        assert_eq!(kinds, vec![("deploy-production", "remove"), ("rotate-secrets", "change"), ("staging-auto", "add")]);
        assert!(render_plan(&changes).contains("required_approvals: 1 → 2"));
        assert!(plan(&all, &all).is_empty());
    }

    #[test]
    fn t37_the_canonical_document_kept_in_the_audit_trail_reproduces_the_policy_and_its_version() {
        for p in parse_policies(crate::domain::policy::tests::EXAMPLE).unwrap() {
            let back: Policy = serde_json::from_str(&canonical(&p)).unwrap();
            assert_eq!(back, p);
            assert_eq!(back.version(), p.version());
        }
    }

    #[test]
    fn t37_history_replays_the_policy_set_at_any_instant() {
        use crate::domain::audit::seal_after;
        let all = parse_policies(crate::domain::policy::tests::EXAMPLE).unwrap();
        let mut changed = all[0].clone();
        changed.required_approvals = 2;
        let t = |s: i64| Timestamp::from_unix_seconds(1_800_000_000 + s);
        let actor = Actor::cli("alice");
        let drafts = vec![
            AuditDraft::new(t(0), AuditKind::PolicyChanged, actor.clone(), None)
                .with("policy", all[0].name.as_str())
                .with("change", "added")
                .with("version", all[0].version())
                .with("after", canonical(&all[0])),
            AuditDraft::new(t(10), AuditKind::PolicyChanged, actor.clone(), None)
                .with("policy", all[0].name.as_str())
                .with("change", "changed")
                .with("version", changed.version())
                .with("fields", "required_approvals")
                .with("before", canonical(&all[0]))
                .with("after", canonical(&changed)),
            AuditDraft::new(t(20), AuditKind::PolicyDeleted, actor, None)
                .with("policy", all[0].name.as_str())
                .with("change", "removed")
                .with("before", canonical(&changed)),
        ];
        let h = history(&seal_after(None, drafts), None).unwrap();
        assert_eq!(h.len(), 3);
        assert_eq!(h[1].fields, ["required_approvals"]);
        assert_eq!(policies_at(&h, t(5)).unwrap()[all[0].name.as_str()].required_approvals, all[0].required_approvals);
        assert_eq!(policies_at(&h, t(15)).unwrap()[all[0].name.as_str()].required_approvals, 2);
        assert!(policies_at(&h, t(25)).unwrap().is_empty());
        assert!(policies_at(&h, t(-1)).unwrap().is_empty());
    }

    #[test]
    fn t37_a_store_upgraded_from_before_whole_documents_rebuilds_once_a_policy_has_a_document() {
        use crate::domain::audit::seal_after;
        let all = parse_policies(crate::domain::policy::tests::EXAMPLE).unwrap();
        let t = |s: i64| Timestamp::from_unix_seconds(1_800_000_000 + s);
        let actor = Actor::cli("alice");
        let drafts = vec![
            // Written before issue 17: the version and field names only.
            AuditDraft::new(t(0), AuditKind::PolicyChanged, actor.clone(), None)
                .with("policy", all[0].name.as_str())
                .with("change", "added")
                .with("version", all[0].version()),
            AuditDraft::new(t(10), AuditKind::PolicyChanged, actor, None)
                .with("policy", all[0].name.as_str())
                .with("change", "changed")
                .with("version", all[0].version())
                .with("after", canonical(&all[0])),
        ];
        let h = history(&seal_after(None, drafts), None).unwrap();
        let e = policies_at(&h, t(5)).unwrap_err();
        assert!(e.contains("\"deploy-production\" (changed at") && e.contains("record 1"), "{e}");
        assert_eq!(policies_at(&h, t(15)).unwrap()[all[0].name.as_str()], all[0], "the later document is known");
    }
}

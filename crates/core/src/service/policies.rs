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
                    .with("version", p.version());
                store.put_policy(p, e).await?;
            }
            PolicyChange::Change { old, new, fields } => {
                let names: Vec<&str> = fields.keys().map(String::as_str).collect();
                let e = AuditDraft::new(now, AuditKind::PolicyChanged, actor.clone(), None)
                    .with("policy", new.name.as_str())
                    .with("change", "changed")
                    .with("version", new.version())
                    .with("previous_version", old.version())
                    .with("fields", names.join(","));
                store.put_policy(new, e).await?;
            }
            PolicyChange::Remove(p) => {
                let e = AuditDraft::new(now, AuditKind::PolicyDeleted, actor.clone(), None)
                    .with("policy", p.name.as_str())
                    .with("change", "removed")
                    .with("previous_version", p.version());
                store.delete_policy(&p.name, e).await?;
            }
        }
    }
    Ok(changes.len())
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
}

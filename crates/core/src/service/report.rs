//! The compliance report's numbers (issue 17 §4), computed from
//! the audit trail alone, so they are exactly what `audit verify` vouches for. Rendering (HTML, Markdown,
//! JSON) is the CLI's; this module only counts.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::domain::{AuditEvent, AuditKind, Policy, RequestId, Timestamp};

/// Per-policy outcome counts and decision times.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PolicyStats {
    pub requests: u64,
    pub approved: u64,
    pub auto_approved: u64,
    pub denied: u64,
    pub expired: u64,
    pub cancelled: u64,
    pub redeemed: u64,
    pub unused: u64,
    /// Seconds from creation to decision (approved, denied): median and 90th percentile.
    pub median_seconds_to_decision: Option<f64>,
    pub p90_seconds_to_decision: Option<f64>,
    /// Approvals per Slack user.
    pub approvers: BTreeMap<String, u64>,
}

/// An approval by someone the policy as it is now no longer lists as an approver (by user id; group
/// membership is not known offline and is reported as such).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drift {
    pub request: String,
    pub policy: String,
    pub user: String,
    pub at: Timestamp,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub records: u64,
    pub policies: BTreeMap<String, PolicyStats>,
    /// Refusals per (principal, code).
    pub refusals: BTreeMap<String, BTreeMap<String, u64>>,
    pub drift: Vec<Drift>,
    /// Policies whose approvers include groups: drift there cannot be judged offline.
    pub drift_unknown_for: BTreeSet<String>,
}

fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * (sorted.len() - 1) as f64).round() as usize;
    sorted.get(rank.min(sorted.len() - 1)).copied()
}

/// The report over `records` (chain order) with `at >= since`, judged against the `current` policies.
pub fn build(records: &[AuditEvent], since: Option<Timestamp>, current: &[Policy]) -> Report {
    let mut r = Report { since, ..Report::default() };
    let mut created: BTreeMap<RequestId, (Timestamp, String)> = BTreeMap::new();
    let mut times: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let current: BTreeMap<&str, &Policy> = current.iter().map(|p| (p.name.as_str(), p)).collect();
    for e in records.iter().filter(|e| since.is_none_or(|s| e.at >= s)) {
        r.records += 1;
        r.until = Some(e.at);
        let policy = e.details.get("policy").cloned().unwrap_or_default();
        match e.kind {
            AuditKind::RequestRefused => {
                let who = e.actor.0.strip_prefix("aws:").unwrap_or(&e.actor.0).to_string();
                let code = e.details.get("code").cloned().unwrap_or_default();
                *r.refusals.entry(who).or_default().entry(code).or_default() += 1;
                continue;
            }
            AuditKind::PolicyChanged | AuditKind::PolicyDeleted => continue,
            _ => {}
        }
        let Some(id) = e.request_id else { continue };
        // Only what is counted below makes a policy's row: a Slack post or a rejected vote names a request but
        // no policy, and would add an empty-named row of zeros.
        let counted = matches!(
            e.kind,
            AuditKind::RequestCreated
                | AuditKind::RequestAutoApproved
                | AuditKind::RequestApproved
                | AuditKind::RequestDenied
                | AuditKind::RequestExpired
                | AuditKind::RequestCancelled
                | AuditKind::RequestRedeemed
                | AuditKind::RequestUnused
                | AuditKind::VoteApprove
        );
        if !counted {
            continue;
        }
        let s = r.policies.entry(policy.clone()).or_default();
        match e.kind {
            AuditKind::RequestCreated => {
                s.requests += 1;
                created.insert(id, (e.at, policy.clone()));
            }
            AuditKind::RequestAutoApproved => s.auto_approved += 1,
            AuditKind::RequestApproved | AuditKind::RequestDenied => {
                if e.kind == AuditKind::RequestApproved {
                    s.approved += 1;
                } else {
                    s.denied += 1;
                }
                if let Some((at, _)) = created.get(&id) {
                    let secs = (e.at.unix_millis() - at.unix_millis()) as f64 / 1000.0;
                    times.entry(policy.clone()).or_default().push(secs);
                }
            }
            AuditKind::RequestExpired => s.expired += 1,
            AuditKind::RequestCancelled => s.cancelled += 1,
            AuditKind::RequestRedeemed => s.redeemed += 1,
            AuditKind::RequestUnused => s.unused += 1,
            AuditKind::VoteApprove => {
                let user = e.actor.0.strip_prefix("slack:").unwrap_or(&e.actor.0).to_string();
                *s.approvers.entry(user.clone()).or_default() += 1;
                match current.get(policy.as_str()) {
                    Some(p) if !p.approvers.groups.is_empty() => {
                        r.drift_unknown_for.insert(policy.clone());
                    }
                    Some(p) if p.approvers.users.iter().any(|u| u.as_str() == user) => {}
                    _ => r.drift.push(Drift { request: id.to_string(), policy: policy.clone(), user, at: e.at }),
                }
            }
            _ => {}
        }
    }
    for (policy, mut t) in times {
        t.sort_by(f64::total_cmp);
        if let Some(s) = r.policies.get_mut(&policy) {
            s.median_seconds_to_decision = percentile(&t, 0.5);
            s.p90_seconds_to_decision = percentile(&t, 0.9);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::domain::audit::{seal_after, Actor, AuditDraft};

    #[test]
    fn counts_outcomes_decision_times_refusals_and_drift() {
        let t = |s: i64| Timestamp::from_unix_seconds(1_800_000_000 + s);
        let id = |n: u128| Some(RequestId::from_parts(1, n));
        let ev =
            |at, kind, actor: Actor, req| AuditDraft::new(at, kind, actor, req).with("policy", "deploy-production");
        let drafts = vec![
            ev(t(0), AuditKind::RequestCreated, Actor::aws("arn:r"), id(1)),
            AuditDraft::new(t(1), AuditKind::SlackPosted, Actor::system("slack"), id(1)).with("channel", "C1"),
            AuditDraft::new(t(20), AuditKind::VoteRejected, Actor::slack("UOWNER01"), id(1)).with("code", "x"),
            ev(t(30), AuditKind::VoteApprove, Actor::slack("UALICE01"), id(1)),
            ev(t(60), AuditKind::RequestApproved, Actor::slack("UALICE01"), id(1)),
            ev(t(70), AuditKind::RequestCreated, Actor::aws("arn:r"), id(2)),
            ev(t(100), AuditKind::RequestDenied, Actor::slack("UBOB0001"), id(2)),
            AuditDraft::new(t(110), AuditKind::RequestRefused, Actor::aws("arn:x"), None).with("code", "not_found"),
        ];
        let records = seal_after(None, drafts);
        let r = build(&records, None, &[]);
        let s = &r.policies["deploy-production"];
        assert_eq!((s.requests, s.approved, s.denied), (2, 1, 1));
        assert_eq!(s.median_seconds_to_decision, Some(60.0));
        assert_eq!(s.approvers["UALICE01"], 1);
        assert_eq!(r.refusals["arn:x"]["not_found"], 1);
        assert_eq!(r.drift.len(), 1, "no current policy lists UALICE01");
        assert_eq!(
            r.policies.keys().collect::<Vec<_>>(),
            ["deploy-production"],
            "a Slack post or a rejected vote adds no row"
        );
        assert_eq!(build(&records, Some(t(65)), &[]).policies["deploy-production"].requests, 1);
    }
}

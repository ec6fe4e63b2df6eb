//! `policy replay`: every request of a period, decided again under a candidate policy file, and the ones
//! whose outcome would change. Pure: the CLI reads the audit trail (and each request's credential type)
//! and hands them here.
//!
//! What is replayed, from the audit trail:
//! - `request.created`: principal, action, environment and resource as recorded; the outcome then is the
//!   recorded policy and quorum, and its approvers are those of that policy in the set in force at that
//!   instant ([`super::policies::policies_at`], rebuilt from the `policy.changed` records);
//! - `request.refused` with `no_matching_policy` or `long_term_credentials` and an action: refused then. A
//!   refusal records no resource, so it is replayed without one.
//!
//! Both sides are decided by [`crate::domain::policy::evaluate`], the API's decision.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::policies::{history, policies_at, PolicyVersion};
use crate::domain::policy::{evaluate, Evaluation, Outcome};
use crate::domain::{
    Action, AuditEvent, AuditKind, CredentialType, Environment, Policy, Principal, RequestId, Resource, Timestamp,
};

/// The decision replayed for one request, on one side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The governing policy; `None` when refused.
    pub policy: Option<String>,
    /// The refusal's code, when refused.
    pub denied: Option<String>,
    pub required_approvals: Option<u32>,
    /// `None` when not known (the set in force then could not be rebuilt).
    pub approvers: Option<Vec<String>>,
}

/// One way an outcome changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    NewlyDenied { code: String },
    NewlyAllowed { policy: String },
    AnotherPolicy { from: String, to: String },
    AnotherQuorum { from: u32, to: u32 },
    ApproversAdded { approvers: Vec<String> },
    ApproversRemoved { approvers: Vec<String> },
}

/// A replayed request whose outcome would change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Changed {
    /// The request id (created), or `None` for a refusal (it has none).
    pub request: Option<String>,
    /// The audit record replayed.
    pub seq: u64,
    pub at: String,
    pub principal: String,
    pub action: String,
    pub environment: String,
    pub resource: Option<String>,
    /// `false` when the credential type is not known (the request item is gone): the credential rule was
    /// not applied to it.
    pub credential_known: bool,
    pub before: Decision,
    pub after: Decision,
    pub changes: Vec<Change>,
}

/// Per policy: requests it governed in the period, would govern under the file, and of those, changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PolicyCounts {
    pub before: usize,
    pub after: usize,
    pub changed: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Replay {
    pub replayed: usize,
    /// Records of the period that could not be replayed (an unparsable principal, a refusal without action).
    pub skipped: usize,
    pub changed: Vec<Changed>,
    /// Keyed by policy name; refusals under `(denied)`.
    pub policies: BTreeMap<String, PolicyCounts>,
}

/// The row of [`Replay::policies`] for refused requests.
pub const DENIED: &str = "(denied)";

/// Replays the requests of `records` (the whole trail, chain order) at or after `since` against `file`.
/// `credentials` gives each created request's credential type where known.
pub fn replay(
    records: &[AuditEvent],
    since: Timestamp,
    file: &[Policy],
    credentials: &BTreeMap<RequestId, CredentialType>,
) -> Result<Replay, String> {
    let versions = history(records, None)?;
    let mut then = SetAt::default();
    let mut out = Replay::default();
    for e in records.iter().filter(|e| e.at >= since) {
        let Some(req) = Replayable::of(e, credentials) else {
            if matches!(e.kind, AuditKind::RequestCreated)
                || (e.kind == AuditKind::RequestRefused && replayable_refusal(e))
            {
                out.skipped += 1;
            }
            continue;
        };
        out.replayed += 1;
        let credential = req.credential.unwrap_or(CredentialType::Temporary);
        let now = req.evaluate(file, credential);
        let after = decision(&now);
        let before = match e.kind {
            AuditKind::RequestCreated => {
                let policy = e.details.get("policy").cloned().unwrap_or_default();
                let quorum = e.details.get("required_approvals").and_then(|n| n.parse().ok());
                // The approvers of the recorded policy in the set then, decided the same way.
                let approvers = then.at(&versions, e.at).and_then(|set| {
                    let old = req.evaluate(set, credential);
                    old.winner.filter(|w| w.name.as_str() == policy).map(|_| old.approvers())
                });
                Decision { policy: Some(policy), denied: None, required_approvals: quorum, approvers }
            }
            _ => Decision {
                policy: None,
                denied: e.details.get("code").cloned(),
                required_approvals: None,
                approvers: None,
            },
        };
        let changes = changes(&before, &after);
        let name = |d: &Decision| d.policy.clone().unwrap_or_else(|| DENIED.to_string());
        out.policies.entry(name(&before)).or_default().before += 1;
        out.policies.entry(name(&after)).or_default().after += 1;
        if changes.is_empty() {
            continue;
        }
        out.policies.entry(name(&before)).or_default().changed += 1;
        if name(&after) != name(&before) {
            out.policies.entry(name(&after)).or_default().changed += 1;
        }
        out.changed.push(Changed {
            request: e.request_id.map(|id| id.to_string()),
            seq: e.seq,
            at: e.at.to_rfc3339(),
            principal: req.principal.arn.clone(),
            action: req.action.to_string(),
            environment: req.environment.to_string(),
            resource: req.resource.as_ref().map(ToString::to_string),
            credential_known: req.credential.is_some(),
            before,
            after,
            changes,
        });
    }
    Ok(out)
}

fn replayable_refusal(e: &AuditEvent) -> bool {
    matches!(e.details.get("code").map(String::as_str), Some("no_matching_policy" | "long_term_credentials"))
        && e.details.contains_key("action")
}

/// The request a record describes, parsed with the API's own types.
struct Replayable {
    principal: Principal,
    action: Action,
    environment: Environment,
    resource: Option<Resource>,
    credential: Option<CredentialType>,
}

impl Replayable {
    fn of(e: &AuditEvent, credentials: &BTreeMap<RequestId, CredentialType>) -> Option<Self> {
        let credential = match e.kind {
            AuditKind::RequestCreated => e.request_id.and_then(|id| credentials.get(&id).copied()),
            // Only a credential refusal records the type.
            AuditKind::RequestRefused if replayable_refusal(e) => {
                e.details.get("credential").and_then(|c| CredentialType::parse(c).ok())
            }
            _ => return None,
        };
        let d = &e.details;
        Some(Self {
            principal: Principal::parse(e.actor.0.strip_prefix("aws:")?).ok()?,
            action: Action::parse(d.get("action")?).ok()?,
            environment: Environment::parse(d.get("environment")?).ok()?,
            resource: match d.get("resource") {
                Some(r) => Some(Resource::parse(r).ok()?),
                None => None,
            },
            credential,
        })
    }

    fn evaluate<'a>(&self, policies: &'a [Policy], credential: CredentialType) -> Evaluation<'a> {
        evaluate(policies, &self.principal, &self.action, &self.environment, self.resource.as_ref(), credential)
    }
}

fn decision(e: &Evaluation<'_>) -> Decision {
    match e.outcome() {
        Outcome::Denied { code, .. } => {
            Decision { policy: None, denied: Some(code.to_string()), required_approvals: None, approvers: None }
        }
        Outcome::Governed(p) => Decision {
            policy: Some(p.name.to_string()),
            denied: None,
            required_approvals: Some(p.required_approvals),
            approvers: Some(e.approvers()),
        },
    }
}

fn changes(before: &Decision, after: &Decision) -> Vec<Change> {
    match (&before.policy, &after.policy) {
        (None, None) => Vec::new(),
        (Some(_), None) => vec![Change::NewlyDenied { code: after.denied.clone().unwrap_or_default() }],
        (None, Some(p)) => vec![Change::NewlyAllowed { policy: p.clone() }],
        (Some(a), Some(b)) => {
            let mut out = Vec::new();
            if a != b {
                out.push(Change::AnotherPolicy { from: a.clone(), to: b.clone() });
            }
            if let (Some(x), Some(y)) = (before.required_approvals, after.required_approvals) {
                if x != y {
                    out.push(Change::AnotherQuorum { from: x, to: y });
                }
            }
            if let (Some(x), Some(y)) = (&before.approvers, &after.approvers) {
                let (x, y): (BTreeSet<&String>, BTreeSet<&String>) = (x.iter().collect(), y.iter().collect());
                let added: Vec<String> = y.difference(&x).map(|s| s.to_string()).collect();
                let removed: Vec<String> = x.difference(&y).map(|s| s.to_string()).collect();
                if !added.is_empty() {
                    out.push(Change::ApproversAdded { approvers: added });
                }
                if !removed.is_empty() {
                    out.push(Change::ApproversRemoved { approvers: removed });
                }
            }
            out
        }
    }
}

/// The policy set in force at an instant, rebuilt only when a policy change falls between two requests.
#[derive(Default)]
struct SetAt {
    /// How many versions the cached set includes, and the set (`None`: it could not be rebuilt).
    cached: Option<(usize, Option<Vec<Policy>>)>,
}

impl SetAt {
    fn at(&mut self, versions: &[PolicyVersion], at: Timestamp) -> Option<&[Policy]> {
        let n = versions.iter().filter(|v| v.at <= at).count();
        if self.cached.as_ref().is_none_or(|(m, _)| *m != n) {
            let set = policies_at(versions, at).ok().map(|s| s.into_values().collect());
            self.cached = Some((n, set));
        }
        self.cached.as_ref().and_then(|(_, s)| s.as_deref())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::domain::audit::{seal_after, Actor, AuditDraft};
    use crate::domain::policy::parse_policies;
    use crate::service::policies::canonical;

    const ARN: &str = "arn:aws:sts::111122223333:assumed-role/ci-deploy/run-1";

    fn set(approvers: &str, quorum: u32) -> Vec<Policy> {
        parse_policies(&format!(
            "version: 1\npolicies:\n  - name: prod\n    principals: [\"arn:aws:iam::111122223333:role/ci-*\"]\n    \
             actions: [deploy]\n    environments: [production]\n    approvers: {{users: [{approvers}]}}\n    \
             required_approvals: {quorum}\n    channel: C0APPROVALS\n    max_ttl: 1h\n"
        ))
        .unwrap()
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_unix_seconds(1_800_000_000 + s)
    }

    fn created(at: Timestamp, n: u128, quorum: u32) -> AuditDraft {
        AuditDraft::new(at, AuditKind::RequestCreated, Actor::aws(ARN), Some(RequestId::from_parts(1, n)))
            .with("policy", "prod")
            .with("action", "deploy")
            .with("environment", "production")
            .with("required_approvals", quorum.to_string())
    }

    fn applied(at: Timestamp, p: &Policy) -> AuditDraft {
        AuditDraft::new(at, AuditKind::PolicyChanged, Actor::cli("test"), None)
            .with("policy", p.name.as_str())
            .with("change", "added")
            .with("after", canonical(p))
    }

    #[test]
    fn approvers_then_come_from_the_set_in_force_at_the_request() {
        let old = set("U0ALICE, U0BOB", 1);
        let records = seal_after(None, vec![applied(t(0), &old[0]), created(t(10), 1, 1)]);
        let r = replay(&records, t(0), &set("U0ALICE, U0CAROL", 2), &BTreeMap::new()).unwrap();
        assert_eq!((r.replayed, r.changed.len()), (1, 1));
        assert_eq!(
            r.changed[0].changes,
            [
                Change::AnotherQuorum { from: 1, to: 2 },
                Change::ApproversAdded { approvers: vec!["U0CAROL".into()] },
                Change::ApproversRemoved { approvers: vec!["U0BOB".into()] },
            ]
        );
        assert!(!r.changed[0].credential_known, "no credential type was handed over");
        // The same file changes nothing.
        assert!(replay(&records, t(0), &old, &BTreeMap::new()).unwrap().changed.is_empty());
    }

    #[test]
    fn without_the_set_then_approvers_are_not_compared_but_the_quorum_is() {
        let records = seal_after(None, vec![created(t(10), 1, 1)]);
        let r = replay(&records, t(0), &set("U0CAROL", 1), &BTreeMap::new()).unwrap();
        assert!(r.changed.is_empty(), "{r:?}");
        let r = replay(&records, t(0), &set("U0CAROL, U0DAVE", 2), &BTreeMap::new()).unwrap();
        assert_eq!(r.changed[0].changes, [Change::AnotherQuorum { from: 1, to: 2 }]);
        assert_eq!(r.changed[0].before.approvers, None);
    }

    #[test]
    fn a_known_long_term_key_is_newly_denied_by_a_temporary_credentials_rule() {
        let mut file = set("U0ALICE", 1);
        file[0].credentials = crate::domain::CredentialRule::Temporary;
        let records = seal_after(None, vec![created(t(10), 1, 1), created(t(20), 2, 1)]);
        let creds = BTreeMap::from([
            (RequestId::from_parts(1, 1), CredentialType::LongTerm),
            (RequestId::from_parts(1, 2), CredentialType::Temporary),
        ]);
        let r = replay(&records, t(0), &file, &creds).unwrap();
        assert_eq!(r.changed.len(), 1, "{r:?}");
        assert_eq!(r.changed[0].changes, [Change::NewlyDenied { code: "long_term_credentials".into() }]);
        assert_eq!(r.policies["prod"], PolicyCounts { before: 2, after: 1, changed: 1 });
        assert_eq!(r.policies[DENIED], PolicyCounts { before: 0, after: 1, changed: 1 });
    }

    #[test]
    fn refusals_are_replayed_only_with_an_action_and_a_parsable_caller() {
        let refused = |actor: &str, code: &str| {
            AuditDraft::new(t(10), AuditKind::RequestRefused, Actor::aws(actor), None).with("code", code)
        };
        let records = seal_after(
            None,
            vec![
                refused(ARN, "no_matching_policy").with("action", "deploy").with("environment", "production"),
                refused(ARN, "no_matching_policy"),
                refused("arn:aws:iam::111122223333:root", "no_matching_policy")
                    .with("action", "deploy")
                    .with("environment", "production"),
                refused(ARN, "invalid_request").with("action", "deploy").with("environment", "production"),
            ],
        );
        let r = replay(&records, t(0), &set("U0ALICE", 1), &BTreeMap::new()).unwrap();
        assert_eq!((r.replayed, r.skipped), (1, 1), "{r:?}");
        assert_eq!(r.changed[0].changes, [Change::NewlyAllowed { policy: "prod".into() }]);
        assert!(r.changed[0].request.is_none());
        assert_eq!(replay(&records, t(11), &set("U0ALICE", 1), &BTreeMap::new()).unwrap().replayed, 0);
    }
}

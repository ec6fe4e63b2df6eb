//! The one evaluation of a request against a policy set, for everything that asks "what would the API do":
//! `policy test`, `policy explain`, `policy replay` and `GET /v1/whoami`. It is assembled from the request
//! path's own building blocks ([`super::select`], [`super::stricter_first`], [`Owners::of`],
//! [`Policy::approver_check`], [`check_credential_type`] and the shadowing lint) and never matches anything
//! itself: a rule changed there changes here.
//!
//! Pure: no I/O. Slack group members are not known offline, so approvers are the listed users (minus the
//! owners the vote path refuses) and the group ids.

use super::{for_principal, format_duration, select, shadowing, stricter_first, Owners, Policy, Shadowing};
use crate::domain::credentials::{check_credential_type, CredentialType, LongTermCredentials};
use crate::domain::ids::{Action, Environment, Resource, SlackUserId};
use crate::domain::policy::NotApprover;
use crate::domain::principal::Principal;

/// What the API would decide for one request, and why.
#[derive(Debug, Clone)]
pub struct Evaluation<'a> {
    /// Every policy that matches the request, in strictest-wins order: the first one governs.
    pub matching: Vec<&'a Policy>,
    /// What [`super::select`] picks, as `POST /v1/requests` does; `None` is `403 no_matching_policy`.
    pub winner: Option<&'a Policy>,
    /// The requesting identity's owners (row 30): never approvers of its requests.
    pub owners: Owners,
    /// Row 40, checked as the API checks it: over every matching policy.
    pub credentials: Result<(), LongTermCredentials>,
    /// The shadowing lint's warnings (row 32) about pairs of policies that both match this request.
    pub shadowing: Vec<Shadowing<'a>>,
}

/// The decision in one word and its subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// Refused with this API code (`no_matching_policy`, `long_term_credentials`) and message.
    Denied { code: &'static str, message: String },
    /// Created under this policy.
    Governed(&'a Policy),
}

/// Evaluates a request of `who` for `action` in `env` (on `resource`), signed with a `credential` of this
/// type, against `policies`, in the order the API checks: the governing policy, then the credential rule.
pub fn evaluate<'a>(
    policies: &'a [Policy],
    who: &Principal,
    action: &Action,
    env: &Environment,
    resource: Option<&Resource>,
    credential: CredentialType,
) -> Evaluation<'a> {
    let mut matching: Vec<&Policy> = policies.iter().filter(|p| p.matches(who, action, env, resource)).collect();
    // File order for the lint (it names pairs in that order), strictest-wins order for the reader.
    let shadowing = shadowing(matching.iter().copied());
    matching.sort_by(|a, b| stricter_first(a, b));
    Evaluation {
        winner: select(policies, who, action, env, resource),
        matching,
        owners: Owners::of(policies, who),
        credentials: check_credential_type(policies, who, action, env, resource, credential, None),
        shadowing,
    }
}

impl<'a> Evaluation<'a> {
    pub fn outcome(&self) -> Outcome<'a> {
        match (self.winner, &self.credentials) {
            (None, _) => Outcome::Denied {
                code: "no_matching_policy",
                message: "no policy allows this principal to request this action in this environment".into(),
            },
            (Some(_), Err(e)) => Outcome::Denied { code: "long_term_credentials", message: e.to_string() },
            (Some(p), Ok(())) => Outcome::Governed(p),
        }
    }

    /// Who can approve under the governing policy: its listed users the vote path accepts (not owners),
    /// then its groups (`S…`; their members are looked up at vote time, owners refused then too).
    pub fn approvers(&self) -> Vec<String> {
        let Some(p) = self.winner else { return Vec::new() };
        let users = p.approvers.users.iter().filter(|u| p.approver_check(u, &self.owners, false).is_ok());
        users.map(ToString::to_string).chain(p.approvers.groups.iter().map(ToString::to_string)).collect()
    }

    /// The governing policy's listed approvers that are refused as owners of the requesting identity.
    pub fn excluded_owners(&self) -> Vec<&'a SlackUserId> {
        let Some(p) = self.winner else { return Vec::new() };
        p.approvers
            .users
            .iter()
            .filter(|u| p.approver_check(u, &self.owners, false) == Err(NotApprover::Owner))
            .collect()
    }
}

/// The policies that match `who` on `principals` alone, whatever the action: what `GET /v1/whoami` lists.
pub fn policies_for<'a>(policies: &'a [Policy], who: &Principal) -> Vec<&'a Policy> {
    for_principal(policies, who).collect()
}

/// Why `winner` governs rather than `other` when both match: the first step of the strictest-wins order that
/// tells them apart.
pub fn why_stricter(winner: &Policy, other: &Policy) -> String {
    if winner.required_approvals != other.required_approvals {
        format!("more approvals ({} > {})", winner.required_approvals, other.required_approvals)
    } else if winner.max_ttl != other.max_ttl {
        format!(
            "same approvals ({}), shorter max_ttl ({} < {})",
            winner.required_approvals,
            format_duration(winner.max_ttl),
            format_duration(other.max_ttl)
        )
    } else {
        format!("same approvals and max_ttl, name sorts first ({:?} < {:?})", winner.name.as_str(), other.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::policy::parse_policies;

    const SET: &str = r#"
version: 1
policies:
  - name: team
    principals: ["arn:aws:iam::111122223333:role/ci-deploy"]
    actions: [deploy]
    environments: [production]
    approvers: {users: [U0ALICE]}
    required_approvals: 1
    owners: [U0OWNER]
    channel: C0TEAM
    max_ttl: 1h
  - name: platform
    principals: ["arn:aws:iam::111122223333:role/ci-*"]
    actions: ["*"]
    environments: ["*"]
    approvers: {users: [U0BOB, U0OWNER], groups: [S0PLATFORM]}
    required_approvals: 2
    channel: C0PLATFORM
    max_ttl: 1h
  - name: tight
    principals: ["arn:aws:iam::111122223333:role/ci-deploy"]
    actions: [deploy]
    environments: [production]
    approvers: {users: [U0CAROL, U0DAVE]}
    required_approvals: 2
    channel: C0PLATFORM
    max_ttl: 30m
    credentials: temporary
"#;

    fn eval<'a>(set: &'a [Policy], env: &str, credential: CredentialType) -> Evaluation<'a> {
        let who = Principal::parse("arn:aws:sts::111122223333:assumed-role/ci-deploy/run-42").expect("arn");
        let action = Action::parse("deploy").expect("action");
        let env = Environment::parse(env).expect("env");
        evaluate(set, &who, &action, &env, None, credential)
    }

    #[test]
    fn every_match_is_listed_in_strictest_wins_order_and_the_first_is_what_select_picks() {
        let set = parse_policies(SET).expect("valid");
        let e = eval(&set, "production", CredentialType::Temporary);
        let names: Vec<&str> = e.matching.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["tight", "platform", "team"]);
        assert_eq!(e.winner.map(|p| p.name.as_str()), Some("tight"));
        assert_eq!(why_stricter(e.matching[0], e.matching[1]), "same approvals (2), shorter max_ttl (30m < 1h)");
        assert_eq!(why_stricter(e.matching[1], e.matching[2]), "more approvals (2 > 1)");
        assert_eq!(e.outcome(), Outcome::Governed(e.matching[0]));
        assert_eq!(e.shadowing.len(), 3, "three overlapping pairs with different approvers");
    }

    #[test]
    fn owners_of_any_matching_policy_are_excluded_from_the_winners_approvers() {
        let set = parse_policies(SET).expect("valid");
        let e = eval(&set, "staging", CredentialType::Temporary);
        assert_eq!(e.winner.map(|p| p.name.as_str()), Some("platform"));
        assert_eq!(e.approvers(), ["U0BOB", "S0PLATFORM"]);
        assert_eq!(e.excluded_owners().iter().map(|u| u.as_str()).collect::<Vec<_>>(), ["U0OWNER"]);
        assert!(e.shadowing.is_empty(), "only platform matches in staging");
    }

    #[test]
    fn a_long_term_key_is_denied_where_any_matching_policy_requires_temporary_credentials() {
        let set = parse_policies(SET).expect("valid");
        let e = eval(&set, "production", CredentialType::LongTerm);
        assert!(matches!(e.outcome(), Outcome::Denied { code: "long_term_credentials", .. }));
        let e = eval(&set, "staging", CredentialType::LongTerm);
        assert!(matches!(e.outcome(), Outcome::Governed(_)));
    }

    #[test]
    fn no_match_is_deny_by_default() {
        let set = parse_policies(SET).expect("valid");
        let who = Principal::parse("arn:aws:iam::111122223333:role/other").expect("arn");
        let e = evaluate(
            &set,
            &who,
            &Action::parse("deploy").expect("a"),
            &Environment::parse("production").expect("e"),
            None,
            CredentialType::Temporary,
        );
        assert!(matches!(e.outcome(), Outcome::Denied { code: "no_matching_policy", .. }));
        assert!(e.approvers().is_empty() && policies_for(&set, &who).is_empty());
    }
}

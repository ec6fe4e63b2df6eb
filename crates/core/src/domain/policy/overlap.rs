//! The shadowing lint (threat row 32): pairs of policies that can both match one request — principal,
//! action, environment and resource — but send it to different people (approvers, owners or channel).
//! Only one of them governs such a request ("strictest wins", [`super::select`]); the other is silently
//! shadowed for it, so whoever wrote it believes their approvers decide when they do not.
//!
//! Pure: `policy validate` and `policy apply` print what this finds. Overlap is decided conservatively:
//! two patterns overlap when some value could match both, whether or not such a role, action or resource
//! exists today.

use std::collections::BTreeSet;

use super::{strictest, Pattern, Policy};
use crate::domain::principal::PrincipalPattern;

/// One request shape both policies match: for each field, the narrower of the first pair of patterns
/// that overlap (`role/ci-deploy` of `role/ci-*` and `role/ci-deploy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommonRequest {
    pub principal: String,
    pub action: String,
    pub environment: String,
    /// `*` also stands for "no resource" (a request without one matches only `*`).
    pub resource: String,
}

/// Two policies that can govern the same request and differ in who decides or where it is posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadowing<'a> {
    /// The two policies, in file order.
    pub first: &'a Policy,
    pub second: &'a Policy,
    /// The one that governs every request both match: what [`super::select`] picks between them.
    pub winner: &'a Policy,
    /// What differs, among `approvers`, `owners` and `channel`, in that order.
    pub differs: Vec<&'static str>,
    pub example: CommonRequest,
}

impl Shadowing<'_> {
    /// The policy that never governs a request both match.
    pub fn shadowed(&self) -> &Policy {
        if std::ptr::eq(self.winner, self.first) {
            self.second
        } else {
            self.first
        }
    }
}

/// Every pair of `policies` that can match one request but differs in approvers, owners or channel.
/// Quadratic in the number of policies; the cheapest comparisons run first.
pub fn shadowing<'a>(policies: impl IntoIterator<Item = &'a Policy>) -> Vec<Shadowing<'a>> {
    let policies: Vec<&'a Policy> = policies.into_iter().collect();
    let mut out = Vec::new();
    for (i, &a) in policies.iter().enumerate() {
        for &b in &policies[i + 1..] {
            // The allocation-free overlap test first: most pairs of a large file do not overlap.
            if !can_match_one_request(a, b) {
                continue;
            }
            let differs = differences(a, b);
            if differs.is_empty() {
                continue;
            }
            let Some(example) = common_request(a, b) else { continue };
            let winner = strictest([a, b]).unwrap_or(a);
            out.push(Shadowing { first: a, second: b, winner, differs, example });
        }
    }
    out
}

fn can_match_one_request(a: &Policy, b: &Policy) -> bool {
    fn any_pair<T>(xs: &[T], ys: &[T], overlap: impl Fn(&T, &T) -> bool) -> bool {
        xs.iter().any(|x| ys.iter().any(|y| overlap(x, y)))
    }
    // Principals first: in real files they tell policies apart most often.
    any_pair(&a.principals.patterns, &b.principals.patterns, PrincipalPattern::overlaps)
        && any_pair(&a.environments, &b.environments, Pattern::overlaps)
        && any_pair(&a.actions, &b.actions, Pattern::overlaps)
        && any_pair(&a.resources, &b.resources, Pattern::overlaps)
}

/// Listing order does not matter: the same people in another order are the same approvers.
fn differences(a: &Policy, b: &Policy) -> Vec<&'static str> {
    fn same<T: Ord>(x: &[T], y: &[T]) -> bool {
        x == y || x.iter().collect::<BTreeSet<_>>() == y.iter().collect::<BTreeSet<_>>()
    }
    let mut out = Vec::new();
    if !same(&a.approvers.users, &b.approvers.users) || !same(&a.approvers.groups, &b.approvers.groups) {
        out.push("approvers");
    }
    if !same(&a.owners, &b.owners) {
        out.push("owners");
    }
    if a.channel != b.channel {
        out.push("channel");
    }
    out
}

/// `Some` when one request can match both policies on all four fields. A request without a resource
/// matches only `*`, which overlaps everything, so "both could match some resource" covers it.
fn common_request(a: &Policy, b: &Policy) -> Option<CommonRequest> {
    Some(CommonRequest {
        environment: narrower_overlap(&a.environments, &b.environments)?,
        action: narrower_overlap(&a.actions, &b.actions)?,
        resource: narrower_overlap(&a.resources, &b.resources)?,
        principal: principal_overlap(&a.principals.patterns, &b.principals.patterns)?,
    })
}

fn narrower_overlap(xs: &[Pattern], ys: &[Pattern]) -> Option<String> {
    let (x, y) = xs.iter().flat_map(|x| ys.iter().map(move |y| (x, y))).find(|(x, y)| x.overlaps(y))?;
    let narrower = match (x.stem(), y.stem()) {
        ((_, false), _) => x,
        (_, (_, false)) => y,
        ((xs, true), (ys, true)) if xs.len() >= ys.len() => x,
        _ => y,
    };
    Some(narrower.as_str().to_string())
}

fn principal_overlap(xs: &[PrincipalPattern], ys: &[PrincipalPattern]) -> Option<String> {
    let (x, y) = xs.iter().flat_map(|x| ys.iter().map(move |y| (x, y))).find(|(x, y)| x.overlaps(y))?;
    let narrower = match (x.prefix, y.prefix) {
        (false, _) => x,
        (_, false) => y,
        _ if x.name.len() >= y.name.len() => x,
        _ => y,
    };
    Some(narrower.source.clone())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::domain::ids::{Action, Environment, Resource};
    use crate::domain::policy::{parse_policies, select};
    use crate::domain::Principal;

    /// A policy file of two policies: `a` then `b`, each given as its YAML fields.
    fn two(a: &str, b: &str) -> Vec<Policy> {
        let src = format!(
            "version: 1\npolicies:\n  - name: a\n    max_ttl: 1h\n{}\n  - name: b\n    max_ttl: 1h\n{}\n",
            indent(a),
            indent(b)
        );
        parse_policies(&src).unwrap_or_else(|e| panic!("{e}\n{src}"))
    }

    fn indent(fields: &str) -> String {
        fields.trim().lines().map(|l| format!("    {}", l.trim())).collect::<Vec<_>>().join("\n")
    }

    const A: &str = "
        principals: [arn:aws:iam::111122223333:role/ci-*]
        actions: [deploy]
        environments: [production]
        approvers: {users: [UALICE0001, UBOB000001]}
        required_approvals: 2
        channel: C0APPROVALS";

    /// `A` with one field replaced (`key: value`).
    fn a_with(key: &str, value: &str) -> String {
        A.lines()
            .map(|l| if l.trim().starts_with(&format!("{key}:")) { format!("{key}: {value}") } else { l.to_string() })
            .collect::<Vec<_>>()
            .join("\n")
    }

    const B: &str = "
        principals: [arn:aws:iam::111122223333:role/ci-deploy]
        actions: [deploy]
        environments: [production]
        approvers: {users: [UMALLORY01]}
        required_approvals: 1
        channel: C0ELSEWHERE";

    #[test]
    fn t32_overlapping_policies_with_other_approvers_are_reported_with_the_winner() {
        let ps = two(A, B);
        let found = shadowing(&ps);
        assert_eq!(found.len(), 1, "{found:#?}");
        let s = &found[0];
        assert_eq!((s.first.name.as_str(), s.second.name.as_str()), ("a", "b"));
        assert_eq!(s.winner.name.as_str(), "a", "two approvals beat one");
        assert_eq!(s.shadowed().name.as_str(), "b");
        assert_eq!(s.differs, vec!["approvers", "channel"]);
        assert_eq!(s.example.principal, "arn:aws:iam::111122223333:role/ci-deploy");
        assert_eq!((s.example.action.as_str(), s.example.environment.as_str()), ("deploy", "production"));
        assert_eq!(s.example.resource, "*");
    }

    #[test]
    fn t32_the_winner_is_what_select_picks_for_a_request_both_match() {
        // Same quorum on both: the shorter max_ttl wins, then the name. Checked against select itself.
        let b2 = B
            .replace("required_approvals: 1", "required_approvals: 2")
            .replace("[UMALLORY01]", "[UMALLORY01, UEVE000001]");
        for (b_ttl, want) in [("30m", "b"), ("1h", "a"), ("2h", "a")] {
            let mut ps = two(A, &b2);
            ps[1].max_ttl = crate::domain::policy::parse_duration(b_ttl).unwrap();
            let found = shadowing(&ps);
            assert_eq!(found.len(), 1, "{b_ttl}");
            let who = Principal::parse("arn:aws:sts::111122223333:assumed-role/ci-deploy/run-1").unwrap();
            let (action, env) = (Action::parse("deploy").unwrap(), Environment::parse("production").unwrap());
            let resource = Resource::parse("service/payments").unwrap();
            for r in [None, Some(&resource)] {
                let chosen = select(&ps, &who, &action, &env, r).unwrap();
                assert_eq!(found[0].winner.name, chosen.name, "{b_ttl}");
            }
            assert_eq!(found[0].winner.name.as_str(), want, "{b_ttl}");
        }
    }

    #[test]
    fn t32_wildcard_prefixes_overlap_on_every_field() {
        let a = "
            principals: [arn:aws:iam::111122223333:role/ci-*]
            actions: [\"db:*\"]
            environments: [\"prod*\"]
            resources: [\"service/*\"]
            approvers: {users: [UALICE0001]}
            required_approvals: 1
            channel: C0APPROVALS";
        let b = "
            principals: [arn:aws:iam::111122223333:role/ci-deploy-*]
            actions: [\"db:migrate\"]
            environments: [\"production-eu\"]
            resources: [\"service/pay*\"]
            approvers: {users: [UMALLORY01]}
            required_approvals: 1
            channel: C0APPROVALS";
        let ps = two(a, b);
        let found = shadowing(&ps);
        assert_eq!(found.len(), 1);
        let e = &found[0].example;
        assert_eq!(e.principal, "arn:aws:iam::111122223333:role/ci-deploy-*");
        assert_eq!((e.action.as_str(), e.environment.as_str()), ("db:migrate", "production-eu"));
        assert_eq!(e.resource, "service/pay*");
        assert_eq!(found[0].differs, vec!["approvers"]);
        // Everything-wildcards overlap everything.
        let star =
            a.replace("[\"db:*\"]", "[\"*\"]").replace("[\"prod*\"]", "[\"*\"]").replace("[\"service/*\"]", "[\"*\"]");
        assert_eq!(shadowing(&two(&star, b)).len(), 1);
    }

    #[test]
    fn t32_absent_resources_mean_any_resource() {
        let b = format!("{B}\nresources: [\"service/payments\"]");
        let ps = two(A, &b);
        let found = shadowing(&ps);
        assert_eq!(found.len(), 1, "A has no resources (any), so it overlaps service/payments");
        assert_eq!(found[0].example.resource, "service/payments");
    }

    #[test]
    fn t32_policies_disjoint_on_any_one_field_do_not_overlap() {
        for (key, value) in [
            ("principals", "[arn:aws:iam::444455556666:role/ci-deploy]"),
            ("principals", "[arn:aws:iam::111122223333:role/cd-*]"),
            ("principals", "[arn:aws:iam::111122223333:user/ci-deploy]"),
            ("actions", "[rollback, \"db:*\"]"),
            ("environments", "[staging, \"dev*\"]"),
        ] {
            let b =
                B.lines()
                    .map(|l| {
                        if l.trim().starts_with(&format!("{key}:")) {
                            format!("{key}: {value}")
                        } else {
                            l.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
            assert!(shadowing(&two(A, &b)).is_empty(), "{key}: {value}");
        }
        let a = a_with("principals", "[arn:aws:iam::111122223333:role/ci-*]") + "\nresources: [\"secret/*\"]";
        let b = format!("{B}\nresources: [\"service/*\"]");
        assert!(shadowing(&two(&a, &b)).is_empty(), "disjoint resources");
    }

    #[test]
    fn t32_same_approvers_owners_and_channel_in_another_order_is_not_reported() {
        let a = format!("{A}\nowners: [U0OWNER001, U0OWNER002]");
        let b = a
            .replace("[UALICE0001, UBOB000001]", "[UBOB000001, UALICE0001]")
            .replace("[U0OWNER001, U0OWNER002]", "[U0OWNER002, U0OWNER001]")
            .replace("required_approvals: 2", "required_approvals: 1");
        assert!(shadowing(&two(&a, &b)).is_empty());
        let other_owner = b.replace("[U0OWNER002, U0OWNER001]", "[U0OWNER002]");
        assert_eq!(shadowing(&two(&a, &other_owner))[0].differs, vec!["owners"]);
    }

    #[test]
    fn t32_every_overlapping_pair_is_reported_once() {
        let src = format!(
            "version: 1\npolicies:\n{}",
            ["a", "b", "c"]
                .iter()
                .enumerate()
                .map(|(i, n)| format!(
                    "  - name: {n}\n    max_ttl: 1h\n{}\n",
                    indent(&A.replace("C0APPROVALS", &format!("C0CHAN000{i}")))
                ))
                .collect::<String>()
        );
        let ps = parse_policies(&src).unwrap();
        let pairs: Vec<(&str, &str)> =
            shadowing(&ps).iter().map(|s| (s.first.name.as_str(), s.second.name.as_str())).collect();
        assert_eq!(pairs, vec![("a", "b"), ("a", "c"), ("b", "c")]);
    }

    #[test]
    fn t32_the_example_policies_do_not_shadow_each_other() {
        let ps = parse_policies(crate::domain::policy::tests::EXAMPLE).unwrap();
        assert!(shadowing(&ps).is_empty(), "{:#?}", shadowing(&ps));
    }
}

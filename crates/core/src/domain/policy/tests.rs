#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

pub use crate::testing::EXAMPLE_POLICIES as EXAMPLE;

const GOOD: &str = r#"
version: 1
policies:
  - name: p
    principals: [arn:aws:iam::111122223333:role/deploy]
    actions: [deploy]
    environments: [production]
    approvers: {users: [UAPPROVER1, UAPPROVER2]}
    required_approvals: 1
    owners: [U0OWNER01]
    channel: C0APPROVALS
    max_ttl: 1h
"#;

fn errors_of(src: &str) -> Vec<String> {
    match parse_policies(src) {
        Ok(p) => panic!("expected errors, got {} policies", p.len()),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn assert_error(src: &str, want: &str) {
    let errs = errors_of(src);
    assert!(errs.iter().any(|e| e.contains(want)), "wanted an error containing {want:?}, got {errs:#?}");
}

#[test]
fn example_file_is_valid() {
    let p = parse_policies(EXAMPLE).unwrap();
    assert_eq!(p.len(), 4);
    assert_eq!(p[0].max_ttl, 3600);
    assert_eq!(p[2].resources, vec![Pattern("*".into())]);
}

#[test]
fn minimal_policy_gets_defaults() {
    let p = &parse_policies(GOOD).unwrap()[0];
    assert_eq!(p.max_pending, DEFAULT_MAX_PENDING);
    assert!(!p.require_reason);
    assert_eq!(p.version().len(), 16);
}

#[test]
fn rejects_unknown_policy_key_naming_policy_field_and_line() {
    let src = GOOD.replace("    max_ttl: 1h", "    max_ttl: 1h\n    auto_approve: true");
    let e = &parse_policies(&src).unwrap_err().0[0];
    assert_eq!(e.policy.as_deref(), Some("p"));
    assert!(e.message.contains("unknown field `auto_approve`"), "{e}");
    assert_eq!(e.line, Some(13));
}

#[test]
fn rejects_unknown_top_level_key() {
    assert_error(&format!("{GOOD}extra: 1\n"), "unknown field `extra`");
}

#[test]
fn rejects_wrong_version() {
    assert_error(&GOOD.replace("version: 1", "version: 2"), "field version: unsupported version 2");
}

#[test]
fn rejects_bad_policy_name() {
    assert_error(&GOOD.replace("name: p", "name: Deploy_Prod"), "field name: may only contain a-z, 0-9 and -");
}

#[test]
fn rejects_duplicate_names() {
    let body = GOOD.split("policies:\n").nth(1).unwrap();
    assert_error(&format!("{GOOD}{body}"), "policy \"p\", field name: duplicate policy name");
}

#[test]
fn rejects_root_and_wildcard_account_principals() {
    assert_error(
        &GOOD.replace("role/deploy]", "role/deploy, 'arn:aws:iam::111122223333:root']"),
        "the root user cannot be a principal",
    );
    assert_error(&GOOD.replace("111122223333:role/deploy", "*:role/deploy"), "field principals");
}

#[test]
fn rejects_assumed_role_principal() {
    assert_error(
        &GOOD.replace("iam::111122223333:role/deploy", "sts::111122223333:assumed-role/deploy/s1"),
        "not an assumed-role ARN",
    );
}

#[test]
fn rejects_wildcard_in_middle_of_action() {
    assert_error(
        &GOOD.replace("[deploy]", "[\"d*y\"]"),
        "field actions: \"d*y\": a wildcard is only allowed once, at the end",
    );
}

#[test]
fn rejects_invalid_environment() {
    assert_error(&GOOD.replace("[production]", "[Production]"), "field environments: \"Production\"");
}

#[test]
fn rejects_bad_slack_ids() {
    assert_error(&GOOD.replace("UAPPROVER1", "alice"), "field approvers.users: \"alice\"");
    assert_error(&GOOD.replace("C0APPROVALS", "#approvals"), "field channel: Slack channel id");
}

#[test]
fn rejects_owner_listed_as_approver() {
    assert_error(&GOOD.replace("U0OWNER01", "UAPPROVER1"), "is also an owner");
}

#[test]
fn rejects_quorum_larger_than_the_approver_list() {
    assert_error(
        &GOOD.replace("required_approvals: 1", "required_approvals: 3"),
        "3 approvals required but only 2 approver(s) listed",
    );
}

#[test]
fn rejects_approvals_without_approvers() {
    assert_error(&GOOD.replace("    approvers: {users: [UAPPROVER1, UAPPROVER2]}\n", ""), "nobody could ever approve");
}

#[test]
fn rejects_bad_ttls() {
    assert_error(&GOOD.replace("max_ttl: 1h", "max_ttl: 1 hour"), "field max_ttl: \"1 hour\" is not a duration");
    assert_error(&GOOD.replace("max_ttl: 1h", "max_ttl: 30s"), "must be between 1m and 7d, got 30s");
    assert_error(&GOOD.replace("max_ttl: 1h", "max_ttl: 8d"), "must be between 1m and 7d, got 8d");
}

#[test]
fn rejects_missing_required_field_with_policy_name() {
    let e = errors_of(&GOOD.replace("    channel: C0APPROVALS\n", ""));
    assert!(e[0].contains("policy \"p\"") && e[0].contains("missing field `channel`"), "{e:?}");
}

#[test]
fn rejects_zero_max_pending() {
    assert_error(&format!("{GOOD}    max_pending: 0\n"), "field max_pending: must be 1 to 1000, got 0");
}

#[test]
fn reports_every_error_not_just_the_first() {
    let src =
        GOOD.replace("name: p", "name: P!").replace("[production]", "[PROD]").replace("max_ttl: 1h", "max_ttl: x");
    assert_eq!(errors_of(&src).len(), 3);
}

#[test]
fn rejects_invalid_yaml_with_line() {
    let e = &parse_policies("version: 1\npolicies:\n  - name: [unclosed\n").unwrap_err().0[0];
    assert!(e.line.is_some(), "{e}");
}

#[test]
fn structural_error_names_the_line_the_policy_and_the_field() {
    let second = GOOD.split("policies:\n").nth(1).unwrap();
    let second = second.replace("name: p", "name: q").replace("required_approvals: 1", "required_approvals: lots");
    let e = &parse_policies(&format!("{GOOD}{second}")).unwrap_err().0[0];
    assert_eq!(
        (e.policy.as_deref(), e.field.as_deref(), e.line),
        (Some("q"), Some("required_approvals"), Some(18)),
        "{e}"
    );
    assert!(e.message.contains("u32") && !e.message.contains("line"), "{e}");

    let e = &parse_policies(&GOOD.replace("UAPPROVER2]", "[UAPPROVER2]]")).unwrap_err().0[0];
    assert_eq!(
        (e.policy.as_deref(), e.field.as_deref(), e.line),
        (Some("p"), Some("approvers.users[1]"), Some(8)),
        "{e}"
    );

    let e = &parse_policies(&GOOD.replace("version: 1", "version: one")).unwrap_err().0[0];
    assert_eq!((e.policy.as_deref(), e.field.as_deref(), e.line), (None, Some("version"), Some(2)), "{e}");
}

#[test]
fn structural_error_in_an_unnamed_policy_names_it_by_position() {
    let e = &parse_policies(&GOOD.replace("name: p", "name: [p]")).unwrap_err().0[0];
    assert_eq!((e.policy.as_deref(), e.field.as_deref(), e.line), (Some("#1"), Some("name"), Some(4)), "{e}");
}

#[test]
fn missing_field_points_at_the_policy_that_lacks_it() {
    let e = &parse_policies(&GOOD.replace("    channel: C0APPROVALS\n", "")).unwrap_err().0[0];
    assert_eq!((e.policy.as_deref(), e.field.as_deref(), e.line), (Some("p"), None, Some(4)), "{e}");
}

#[test]
fn yaml_1_1_booleans_merge_keys_and_tags_are_refused() {
    assert_error(&format!("{GOOD}    require_reason: yes\n"), "field require_reason");
    let merged = GOOD
        .replace("    required_approvals: 1\n", "")
        .replace("version: 1\n", "version: 1\nx: &d {required_approvals: 0}\n");
    assert!(parse_policies(&merged.replace("  - name: p\n", "  - name: p\n    <<: *d\n")).is_err());
    assert!(parse_policies(&GOOD.replace("channel: C0APPROVALS", "channel: !disabled C0APPROVALS")).is_err());
}

#[test]
fn ttl_may_be_seconds_and_odd_ttls_are_field_errors() {
    assert_eq!(parse_policies(&GOOD.replace("max_ttl: 1h", "max_ttl: 600")).unwrap()[0].max_ttl, 600);
    assert_error(&GOOD.replace("max_ttl: 1h", "max_ttl: 1.5"), "field max_ttl: 1.5 is not a whole number of seconds");
    assert_error(&GOOD.replace("max_ttl: 1h", "max_ttl: -60"), "field max_ttl: -60 is not a whole number of seconds");
    assert_error(&GOOD.replace("max_ttl: 1h", "max_ttl: [1h]"), "field max_ttl: must be a duration");
}

/// Aliases are fine for sharing a principal list (and one anchor may serve every policy), but what they
/// expand to counts against the same budget as the file itself.
#[test]
fn an_anchor_shared_by_many_policies_is_accepted() {
    let mut src = String::from("version: 1\npolicies:\n");
    for i in 0..300 {
        let principals = if i == 0 { "&ci [arn:aws:iam::111122223333:role/ci]" } else { "*ci" };
        src.push_str(&format!(
            "  - name: p{i}\n    principals: {principals}\n    actions: [deploy]\n    environments: [production]\n    \
             approvers: {{users: [UAPPROVER1]}}\n    required_approvals: 1\n    channel: C0X\n    max_ttl: 1h\n"
        ));
    }
    assert_eq!(parse_policies(&src).unwrap().len(), 300);
}

#[test]
fn alias_bomb_is_refused_without_expanding_it() {
    // "Billion laughs": nine levels of ten aliases each, 10^9 nodes once expanded, in a file of 700 bytes.
    let mut bomb = String::from("&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]");
    for i in 1..9 {
        bomb = format!("{bomb}, &a{i} [{}]", vec![format!("*a{}", i - 1); 10].join(", "));
    }
    let src = GOOD.replace("max_ttl: 1h", &format!("max_ttl: [[{bomb}], *a8]"));
    let started = std::time::Instant::now();
    let e = &parse_policies(&src).unwrap_err().0[0];
    assert!(e.message.contains("too large or too complex") && e.line == Some(12), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "took {:?}", started.elapsed());
    // The same trick with text: one 1 MiB string repeated 100 times would be 100 MiB of principals.
    let big = "x".repeat(1 << 20);
    let src = GOOD.replace("description", "d").replace(
        "principals: [arn:aws:iam::111122223333:role/deploy]",
        &format!("description: &big {big}\n    principals: [{}]", vec!["*big"; 100].join(", ")),
    );
    let e = &parse_policies(&src).unwrap_err().0[0];
    assert!(e.message.contains("too large or too complex") && e.message.contains("ScalarBytes"), "{e}");
}

#[test]
fn the_budget_admits_a_file_with_the_most_policies_allowed() {
    let mut src = String::from("version: 1\npolicies:\n");
    for i in 0..MAX_POLICIES {
        src.push_str(&format!(
            "  - name: policy-{i}\n    principals: [arn:aws:iam::444455556666:role/team-*]\n    \
             actions: [deploy, 'db:*']\n    environments: [prod-*]\n    resources: ['service/*']\n    \
             approvers:\n      users: [UALICE0001, UBOB00001]\n      groups: [S0ONCALL]\n    \
             required_approvals: 1\n    owners: [U0OWNER01]\n    channel: C0APPROVALS\n    max_ttl: 1h\n"
        ));
    }
    assert!(src.len() <= MAX_POLICY_FILE_BYTES);
    assert_eq!(parse_policies(&src).unwrap().len(), MAX_POLICIES);
}

fn principal(arn: &str) -> Principal {
    Principal::parse(arn).unwrap()
}

#[test]
fn no_matching_policy_means_deny() {
    let ps = parse_policies(EXAMPLE).unwrap();
    let who = principal("arn:aws:sts::111122223333:assumed-role/unknown-role/s1");
    let a = Action::parse("deploy").unwrap();
    let e = Environment::parse("production").unwrap();
    assert!(select(&ps, &who, &a, &e, None).is_none());
}

#[test]
fn strictest_matching_policy_wins() {
    let src = r#"
version: 1
policies:
  - name: loose
    principals: [arn:aws:iam::111122223333:role/ci-*]
    actions: ["*"]
    environments: ["*"]
    approvers: {groups: [S0ANY]}
    required_approvals: 1
    channel: C0X
    max_ttl: 1h
  - name: strict-b
    principals: [arn:aws:iam::111122223333:role/ci-deploy]
    actions: [deploy]
    environments: [production]
    approvers: {groups: [S0ANY]}
    required_approvals: 2
    channel: C0X
    max_ttl: 1h
  - name: strict-a
    principals: [arn:aws:iam::111122223333:role/ci-deploy]
    actions: [deploy]
    environments: [production]
    approvers: {groups: [S0ANY]}
    required_approvals: 2
    channel: C0X
    max_ttl: 1h
  - name: strict-short
    principals: [arn:aws:iam::111122223333:role/ci-deploy]
    actions: [deploy]
    environments: [production]
    approvers: {groups: [S0ANY]}
    required_approvals: 2
    channel: C0X
    max_ttl: 10m
"#;
    let ps = parse_policies(src).unwrap();
    let who = principal("arn:aws:sts::111122223333:assumed-role/ci-deploy/run-1");
    let a = Action::parse("deploy").unwrap();
    let prod = Environment::parse("production").unwrap();
    let stg = Environment::parse("staging").unwrap();
    assert_eq!(select(&ps, &who, &a, &prod, None).unwrap().name.as_str(), "strict-short");
    assert_eq!(select(&ps, &who, &a, &stg, None).unwrap().name.as_str(), "loose");
    let without_short: Vec<_> = ps.iter().filter(|p| p.name.as_str() != "strict-short").cloned().collect();
    assert_eq!(select(&without_short, &who, &a, &prod, None).unwrap().name.as_str(), "strict-a");
}

#[test]
fn resources_default_to_any_and_requests_without_resource_need_a_star() {
    let ps = parse_policies(EXAMPLE).unwrap();
    let who = principal("arn:aws:sts::111122223333:assumed-role/github-deploy/run-1");
    let a = Action::parse("deploy").unwrap();
    let prod = Environment::parse("production").unwrap();
    let svc = Resource::parse("service/payments").unwrap();
    let other = Resource::parse("bucket/x").unwrap();
    assert_eq!(select(&ps, &who, &a, &prod, Some(&svc)).unwrap().name.as_str(), "deploy-production");
    assert!(select(&ps, &who, &a, &prod, Some(&other)).is_none());
    assert!(select(&ps, &who, &a, &prod, None).is_none(), "deploy-production lists resources, so a resource is needed");
}

#[test]
fn owners_can_never_approve_even_through_a_group() {
    let p = &parse_policies(EXAMPLE).unwrap()[0];
    let owner = SlackUserId::parse("U0OWNER01").unwrap();
    let none = Owners::default();
    assert_eq!(p.approver_check(&owner, &none, true), Err(NotApprover::Owner));
    assert!(!p.needs_group_lookup(&owner, &none));
    let stranger = SlackUserId::parse("U0STRANGER").unwrap();
    assert_eq!(p.approver_check(&stranger, &none, false), Err(NotApprover::NotListed));
    assert_eq!(p.approver_check(&SlackUserId::parse("U012AB3CD").unwrap(), &none, false), Ok(()));
}

/// Two policies for one identity: a narrow one whose owner is U0OWNER01, and a broader one (every action,
/// every environment) that lists that owner as an approver and has owners of its own.
const NARROW_AND_BROAD: &str = r#"
version: 1
policies:
  - name: deploy-production
    principals: [arn:aws:iam::111122223333:role/github-deploy]
    actions: [deploy]
    environments: [production]
    approvers: {users: [U0ALICE01]}
    required_approvals: 1
    owners: [U0OWNER01]
    channel: C0X
    max_ttl: 1h
  - name: platform
    principals: [arn:aws:iam::111122223333:role/github-*]
    actions: ["*"]
    environments: ["*"]
    approvers: {users: [U0OWNER01, U0ALICE01]}
    required_approvals: 1
    owners: [U0PLATFORM]
    channel: C0X
    max_ttl: 1h
  - name: other-identity
    principals: [arn:aws:iam::111122223333:role/billing]
    actions: ["*"]
    environments: ["*"]
    approvers: {users: [U0ALICE01]}
    required_approvals: 1
    owners: [U0BILLING]
    channel: C0X
    max_ttl: 1h
"#;

#[test]
fn t30_owners_are_the_union_over_every_policy_matching_the_principal() {
    let ps = parse_policies(NARROW_AND_BROAD).unwrap();
    let who = principal("arn:aws:sts::111122223333:assumed-role/github-deploy/run-1");
    let owners = Owners::of(&ps, &who);
    let names: Vec<&str> = owners.iter().map(SlackUserId::as_str).collect();
    assert_eq!(names, ["U0OWNER01", "U0PLATFORM"], "another identity's owners are not this one's");
    // A staging request matches only the broad policy, which lists the owner as an approver: still refused.
    let staging =
        select(&ps, &who, &Action::parse("restart").unwrap(), &Environment::parse("staging").unwrap(), None).unwrap();
    assert_eq!(staging.name.as_str(), "platform");
    let owner = SlackUserId::parse("U0OWNER01").unwrap();
    assert_eq!(staging.approver_check(&owner, &owners, false), Err(NotApprover::Owner));
    assert!(!staging.needs_group_lookup(&owner, &owners), "an owner's refusal never waits on a group lookup");
    let alice = SlackUserId::parse("U0ALICE01").unwrap();
    assert_eq!(staging.approver_check(&alice, &owners, false), Ok(()));
    // The billing identity's owners list neither.
    let billing = principal("arn:aws:sts::111122223333:assumed-role/billing/run-1");
    assert_eq!(staging.approver_check(&owner, &Owners::of(&ps, &billing), false), Ok(()));
}

#[test]
fn durations_parse_and_format() {
    assert_eq!(parse_duration("2h30m"), Ok(9000));
    assert_eq!(parse_duration("90"), Ok(90));
    assert!(parse_duration("5").is_ok());
    assert!(parse_duration("h").is_err());
    assert!(parse_duration("5x").is_err());
    assert_eq!(format_duration(9000), "2h30m");
}

#[test]
fn version_changes_with_content() {
    let mut p = parse_policies(GOOD).unwrap().remove(0);
    let v1 = p.version();
    p.required_approvals = 2;
    assert_ne!(v1, p.version());
    let old = parse_policies(GOOD).unwrap().remove(0);
    assert_eq!(diff_fields(&old, &p).keys().collect::<Vec<_>>(), vec!["required_approvals"]);
}

#[test]
fn principals_are_stored_as_the_file_wrote_them_and_parsed_once_on_load() {
    let p = &parse_policies(GOOD).unwrap()[0];
    let json = serde_json::to_value(p).unwrap();
    assert_eq!(json["principals"], serde_json::json!(["arn:aws:iam::111122223333:role/deploy"]));
    let back: Policy = serde_json::from_value(json).unwrap();
    assert_eq!(&back, p);
    assert_eq!(back.version(), p.version());
    let who = Principal::parse("arn:aws:sts::111122223333:assumed-role/deploy/run-1").unwrap();
    let (action, env) = (Action::parse("deploy").unwrap(), Environment::parse("production").unwrap());
    assert!(back.matches(&who, &action, &env, None));
}

#[test]
fn a_stored_principal_that_no_longer_parses_is_kept_but_never_matches() {
    let mut json = serde_json::to_value(&parse_policies(GOOD).unwrap()[0]).unwrap();
    json["principals"] = serde_json::json!(["arn:aws:iam::111122223333:root", "arn:aws:iam::111122223333:role/deploy"]);
    let p: Policy = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(serde_json::to_value(&p).unwrap()["principals"], json["principals"]);
    let (action, env) = (Action::parse("deploy").unwrap(), Environment::parse("production").unwrap());
    let json_bad = serde_json::json!(["arn:aws:iam::111122223333:role/de ploy"]);
    let mut bad = json.clone();
    bad["principals"] = json_bad.clone();
    let bad: Policy = serde_json::from_value(bad).unwrap();
    assert_eq!(serde_json::to_value(&bad).unwrap()["principals"], json_bad);
    let spaced = Principal { name: "de ploy".into(), ..Principal::parse("arn:aws:iam::111122223333:role/x").unwrap() };
    assert!(!bad.matches(&spaced, &action, &env, None));
    let who = Principal::parse("arn:aws:iam::111122223333:role/deploy").unwrap();
    assert!(p.matches(&who, &action, &env, None));
}

#[test]
fn use_within_and_bind_session_default_out_of_the_version_and_show_in_the_diff() {
    let base = "version: 1\npolicies:\n  - name: p\n    principals: [arn:aws:iam::111122223333:role/r]\n    actions: [deploy]\n    environments: [production]\n    required_approvals: 0\n    channel: C0APPROVALS\n    max_ttl: 1h\n";
    let old = &parse_policies(base).unwrap()[0];
    assert_eq!((old.use_within, old.bind_session), (DEFAULT_USE_WITHIN_SECONDS, false));
    assert!(!serde_json::to_string(old).unwrap().contains("use_within"), "defaults keep earlier versions");
    let new = &parse_policies(&format!("{base}    use_within: 10m\n    bind_session: true\n")).unwrap()[0];
    assert_eq!((new.use_within, new.bind_session), (600, true));
    assert_ne!(old.version(), new.version());
    let diff = diff_fields(old, new);
    assert!(diff.contains_key("use_within") && diff.contains_key("bind_session"), "{diff:?}");
    let e = parse_policies(&format!("{base}    use_within: 25h\n")).unwrap_err().to_string();
    assert!(e.contains("use_within") && e.contains("between 1m and 24h"), "{e}");
}

#[test]
fn break_glass_section_takes_its_defaults_and_leaves_other_policies_versions_alone() {
    let plain = parse_policies(GOOD).unwrap().remove(0);
    let with = parse_policies(&format!("{GOOD}    break_glass: {{channel: C0BREAKGLASS}}\n")).unwrap().remove(0);
    let b = with.break_glass.as_ref().unwrap();
    assert_eq!((b.max_per_day, b.review_within), (3, 24 * 3600));
    assert!(b.notify.users.is_empty() && b.notify.groups.is_empty());
    assert!(plain.break_glass.is_none());
    assert!(!serde_json::to_string(&plain).unwrap().contains("break_glass"), "no section, no field: same version");
    assert_ne!(plain.version(), with.version());
    let full = "    break_glass:\n      channel: C0BREAKGLASS\n      notify: {users: [U0SEC0001], groups: [S0SECURITY]}\n      max_per_day: 1\n      review_within: 2h\n";
    let p = parse_policies(&format!("{GOOD}{full}")).unwrap().remove(0);
    let b = p.break_glass.unwrap();
    assert_eq!((b.max_per_day, b.review_within), (1, 7200));
    assert_eq!(b.notify.users.iter().map(ToString::to_string).collect::<Vec<_>>(), ["U0SEC0001"]);
    assert_eq!(b.notify.groups.iter().map(ToString::to_string).collect::<Vec<_>>(), ["S0SECURITY"]);
}

#[test]
fn break_glass_section_errors_name_the_field() {
    for (section, field) in [
        ("{channel: general}", "break_glass.channel"),
        ("{channel: C0APPROVALS}", "break_glass.channel"),
        ("{channel: C0BG, max_per_day: 0}", "break_glass.max_per_day"),
        ("{channel: C0BG, max_per_day: 21}", "break_glass.max_per_day"),
        ("{channel: C0BG, review_within: 1m}", "break_glass.review_within"),
        ("{channel: C0BG, review_within: 8d}", "break_glass.review_within"),
        ("{channel: C0BG, notify: {users: [alice]}}", "break_glass.notify.users"),
        ("{channel: C0BG, notify: {groups: [sre]}}", "break_glass.notify.groups"),
        ("{channel: C0BG, approve: true}", "approve"),
    ] {
        assert_error(&format!("{GOOD}    break_glass: {section}\n"), field);
    }
}

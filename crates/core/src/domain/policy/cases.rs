//! `policy test` cases: a YAML table of requests and what the policy set must decide for each, read under
//! the policy file's own limits, and judged with [`super::evaluate`] (the API's decision, not a copy).
//!
//! ```yaml
//! version: 1
//! cases:
//!   - name: CI deploys to production with two approvals
//!     principal: arn:aws:sts::111122223333:assumed-role/ci-deploy/run-1
//!     action: deploy
//!     environment: production
//!     resource: service/payments        # optional
//!     credential: temporary             # optional: temporary (default), long_term, unknown
//!     expect: {policy: prod-deploy, required_approvals: 2, approvers_include: [U0A], owners_include: [U0O]}
//!   - name: nobody else
//!     principal: arn:aws:iam::111122223333:role/intruder
//!     action: deploy
//!     environment: production
//!     expect: deny
//! ```

use std::fmt;

use serde::Deserialize;

use super::explain::{evaluate, Outcome};
use super::file::{item_lines, yaml_options, NoLocations};
use super::{Policy, MAX_POLICY_FILE_BYTES};
use crate::domain::credentials::CredentialType;
use crate::domain::ids::{Action, Environment, PolicyName, Resource, SlackGroupId, SlackUserId};
use crate::domain::principal::Principal;

/// A cases file holds at most this many cases, and is read under the policy file's byte limit.
pub const MAX_CASES: usize = 10_000;
pub const MAX_CASES_FILE_BYTES: usize = MAX_POLICY_FILE_BYTES;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    version: u32,
    #[serde(default)]
    cases: Vec<RawCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: Option<String>,
    principal: String,
    action: String,
    environment: String,
    resource: Option<String>,
    credential: Option<String>,
    expect: RawExpect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGoverned {
    policy: String,
    required_approvals: Option<u32>,
    #[serde(default)]
    approvers_include: Vec<String>,
    #[serde(default)]
    owners_include: Vec<String>,
}

/// `deny`, or a mapping: read through a visitor, not an untagged enum, which would buffer its input whole.
#[derive(Debug)]
enum RawExpect {
    Deny,
    Other(String),
    Governed(RawGoverned),
}

impl<'de> Deserialize<'de> for RawExpect {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawExpect;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "deny, or {policy: NAME, required_approvals: N, approvers_include: [..], owners_include: [..]}",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawExpect, E> {
                Ok(if v == "deny" { RawExpect::Deny } else { RawExpect::Other(v.to_string()) })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawExpect, A::Error> {
                RawGoverned::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(RawExpect::Governed)
            }
        }
        d.deserialize_any(V)
    }
}

/// What a case expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Refused: no policy governs it, or its credential is refused (`403`).
    Deny,
    /// Created under `policy`; each other field is checked only when given.
    Governed {
        policy: PolicyName,
        required_approvals: Option<u32>,
        /// Slack user (`U…`) or group (`S…`) ids that must be able to approve.
        approvers_include: Vec<String>,
        owners_include: Vec<SlackUserId>,
    },
}

/// One validated case.
#[derive(Debug, Clone)]
pub struct Case {
    /// The case's `name`, or `#N` (1-based) without one.
    pub name: String,
    pub line: Option<usize>,
    pub principal: Principal,
    pub action: Action,
    pub environment: Environment,
    pub resource: Option<Resource>,
    pub credential: CredentialType,
    pub expect: Expect,
}

/// A problem in a cases file: where (case, field, line) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseError {
    pub case: Option<String>,
    pub field: Option<String>,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for CaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = self.line {
            write!(f, "line {l}: ")?;
        }
        if let Some(c) = &self.case {
            write!(f, "case {c:?}: ")?;
        }
        if let Some(fld) = &self.field {
            write!(f, "field {fld}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Parses and validates a cases file; every problem is reported, not just the first.
pub fn parse_cases(src: &str) -> Result<Vec<Case>, Vec<CaseError>> {
    let err = |field: Option<&str>, line, message: String| CaseError {
        case: None,
        field: field.map(Into::into),
        line,
        message,
    };
    if src.len() > MAX_CASES_FILE_BYTES {
        return Err(vec![err(None, None, format!("file is larger than {MAX_CASES_FILE_BYTES} bytes"))]);
    }
    let raw: RawFile = serde_saphyr::from_str_with_options(src, yaml_options()).map_err(|e| {
        let line = e.location().filter(|l| l.line() > 0).and_then(|l| usize::try_from(l.line()).ok());
        let message = e.render_with_formatter(&serde_saphyr::UserMessageFormatter.with_localizer(&NoLocations));
        vec![err(None, line, message)]
    })?;
    let mut errors = Vec::new();
    if raw.version != 1 {
        errors.push(err(Some("version"), None, format!("unsupported version {}; expected 1", raw.version)));
    }
    if raw.cases.len() > MAX_CASES {
        errors.push(err(Some("cases"), None, format!("at most {MAX_CASES} cases per file")));
    }
    let lines = item_lines(src, "cases:");
    let mut out = Vec::new();
    for (i, rc) in raw.cases.into_iter().enumerate() {
        let name = rc.name.clone().filter(|n| !n.trim().is_empty()).unwrap_or_else(|| format!("#{}", i + 1));
        let line = lines.get(i).copied();
        let mut bad = |field: &str, message: String| {
            errors.push(CaseError { case: Some(name.clone()), field: Some(field.into()), line, message });
        };
        if let Some(case) = validate(rc, name.clone(), line, &mut bad) {
            out.push(case);
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn validate(rc: RawCase, name: String, line: Option<usize>, bad: &mut dyn FnMut(&str, String)) -> Option<Case> {
    let principal = Principal::parse(&rc.principal).map_err(|e| bad("principal", e.to_string())).ok();
    let action = Action::parse(&rc.action).map_err(|e| bad("action", e.to_string())).ok();
    let environment = Environment::parse(&rc.environment).map_err(|e| bad("environment", e.to_string())).ok();
    let resource = match rc.resource.as_deref().map(Resource::parse) {
        None => Some(None),
        Some(Ok(r)) => Some(Some(r)),
        Some(Err(e)) => {
            bad("resource", e.to_string());
            None
        }
    };
    let credential = match rc.credential.as_deref() {
        None => Some(CredentialType::Temporary),
        Some(c) => CredentialType::parse(c).map_err(|e| bad("credential", e)).ok(),
    };
    let expect = match rc.expect {
        RawExpect::Deny => Some(Expect::Deny),
        RawExpect::Other(s) => {
            bad("expect", format!("{s:?}: expected deny or a mapping with policy"));
            None
        }
        RawExpect::Governed(g) => expect_governed(g, bad),
    };
    Some(Case {
        name,
        line,
        principal: principal?,
        action: action?,
        environment: environment?,
        resource: resource?,
        credential: credential?,
        expect: expect?,
    })
}

fn expect_governed(g: RawGoverned, bad: &mut dyn FnMut(&str, String)) -> Option<Expect> {
    let mut ok = true;
    let policy = PolicyName::parse(&g.policy).map_err(|e| bad("expect.policy", e.to_string())).ok();
    for a in &g.approvers_include {
        if SlackUserId::parse(a).is_err() && SlackGroupId::parse(a).is_err() {
            bad("expect.approvers_include", format!("{a:?} is not a Slack user (U…) or group (S…) id"));
            ok = false;
        }
    }
    let mut owners = Vec::new();
    for o in &g.owners_include {
        match SlackUserId::parse(o) {
            Ok(u) => owners.push(u),
            Err(e) => {
                bad("expect.owners_include", e.to_string());
                ok = false;
            }
        }
    }
    Some(Expect::Governed {
        policy: policy.filter(|_| ok)?,
        required_approvals: g.required_approvals,
        approvers_include: g.approvers_include,
        owners_include: owners,
    })
}

/// A case judged: what was expected, what the API would do, and each way they differ.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CaseResult {
    pub name: String,
    pub line: Option<usize>,
    pub pass: bool,
    pub expected: String,
    pub actual: String,
    pub problems: Vec<String>,
}

/// Judges one case against `policies` with the API's evaluation.
pub fn run_case(policies: &[Policy], case: &Case) -> CaseResult {
    let e =
        evaluate(policies, &case.principal, &case.action, &case.environment, case.resource.as_ref(), case.credential);
    let owners: Vec<String> = e.owners.iter().map(ToString::to_string).collect();
    let approvers = e.approvers();
    let actual = match e.outcome() {
        Outcome::Denied { code, .. } => format!("deny ({code})"),
        Outcome::Governed(p) => format!(
            "policy {}, {} approval(s), approvers [{}], owners [{}]",
            p.name,
            p.required_approvals,
            approvers.join(", "),
            owners.join(", ")
        ),
    };
    let mut problems = Vec::new();
    let expected = match &case.expect {
        Expect::Deny => {
            if let Outcome::Governed(p) = e.outcome() {
                problems.push(format!("expected deny, but policy {} governs it", p.name));
            }
            "deny".to_string()
        }
        Expect::Governed { policy, required_approvals, approvers_include, owners_include } => {
            match e.outcome() {
                Outcome::Denied { code, message } => problems.push(format!("denied ({code}): {message}")),
                Outcome::Governed(p) => {
                    if p.name != *policy {
                        problems.push(format!("policy {} governs it, not {policy}", p.name));
                    }
                    if let Some(n) = required_approvals.filter(|n| *n != p.required_approvals) {
                        problems.push(format!("{} approval(s) required, not {n}", p.required_approvals));
                    }
                    for a in approvers_include.iter().filter(|a| !approvers.contains(a)) {
                        let owner = e.excluded_owners().iter().any(|o| o.as_str() == a.as_str());
                        let why = if owner { " (listed, but an owner of this identity)" } else { "" };
                        problems.push(format!("{a} cannot approve{why}"));
                    }
                    for o in owners_include.iter().filter(|o| !e.owners.contains(o)) {
                        problems.push(format!("{o} is not an owner of this identity"));
                    }
                }
            }
            let mut s = format!("policy {policy}");
            if let Some(n) = required_approvals {
                s.push_str(&format!(", {n} approval(s)"));
            }
            if !approvers_include.is_empty() {
                s.push_str(&format!(", approvers include [{}]", approvers_include.join(", ")));
            }
            if !owners_include.is_empty() {
                let o: Vec<&str> = owners_include.iter().map(SlackUserId::as_str).collect();
                s.push_str(&format!(", owners include [{}]", o.join(", ")));
            }
            s
        }
    };
    CaseResult { name: case.name.clone(), line: case.line, pass: problems.is_empty(), expected, actual, problems }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::policy::parse_policies;

    const SET: &str = r#"
version: 1
policies:
  - name: prod
    principals: ["arn:aws:iam::111122223333:role/ci-*"]
    actions: [deploy]
    environments: [production]
    approvers: {users: [U0A, U0OWNER]}
    required_approvals: 2
    channel: C0APPROVALS
    max_ttl: 1h
  - name: ci-owners
    principals: ["arn:aws:iam::111122223333:role/ci-deploy"]
    actions: [read]
    environments: [dev]
    approvers: {users: [U0B]}
    required_approvals: 1
    owners: [U0OWNER]
    channel: C0APPROVALS
    max_ttl: 1h
"#;

    #[test]
    fn a_case_whose_expectation_differs_fails_naming_each_difference() {
        let set = parse_policies(SET).expect("valid");
        let cases = parse_cases(
            r#"version: 1
cases:
  - name: right
    principal: arn:aws:sts::111122223333:assumed-role/ci-deploy/run-1
    action: deploy
    environment: production
    expect: {policy: prod, required_approvals: 2, approvers_include: [U0A], owners_include: [U0OWNER]}
  - name: wrong
    principal: arn:aws:sts::111122223333:assumed-role/ci-deploy/run-1
    action: deploy
    environment: production
    expect: {policy: prod, required_approvals: 1, approvers_include: [U0OWNER]}
  - principal: arn:aws:iam::111122223333:role/other
    action: deploy
    environment: production
    expect: deny
"#,
        )
        .expect("valid cases");
        let results: Vec<CaseResult> = cases.iter().map(|c| run_case(&set, c)).collect();
        assert!(results[0].pass, "{:?}", results[0]);
        assert!(!results[1].pass);
        assert_eq!(
            results[1].problems,
            ["2 approval(s) required, not 1", "U0OWNER cannot approve (listed, but an owner of this identity)"]
        );
        assert_eq!((results[2].name.as_str(), results[2].pass), ("#3", true));
        assert_eq!(results[1].line, Some(8));
    }

    #[test]
    fn bad_cases_are_reported_with_case_field_and_line() {
        let errs = parse_cases(
            "version: 1\ncases:\n  - name: x\n    principal: arn:aws:iam::111122223333:root\n    action: Deploy\n    \
             environment: p\n    credential: forever\n    expect: allow\n",
        )
        .expect_err("invalid");
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_deref().unwrap_or("")).collect();
        assert_eq!(fields, ["principal", "action", "credential", "expect"]);
        assert!(errs.iter().all(|e| e.line == Some(3) && e.case.as_deref() == Some("x")));
        let errs = parse_cases("version: 1\ncases:\n  - name: x\n    colour: red\n").expect_err("unknown field");
        assert!(errs[0].message.contains("colour"), "{}", errs[0]);
        assert_eq!(errs[0].line, Some(4));
    }

    #[test]
    fn an_oversized_cases_file_is_refused_before_parsing() {
        let big = "#".repeat(MAX_CASES_FILE_BYTES + 1);
        assert!(parse_cases(&big).expect_err("too big")[0].message.contains("larger than"));
    }
}

//! Credential hygiene (threat row 40): what kind of AWS credential signed a request, and the policies' rule
//! on it. The first rule of securing non-human identities is "no shared long-term keys": a policy that
//! says `credentials: temporary` refuses requests signed with an IAM user's long-term access key.
//!
//! The type is read from the access key id's prefix, which AWS documents as the key's kind
//! (`AKIA` long-term IAM user key, `ASIA` temporary STS credentials). The id comes only from the IAM
//! authorizer's request context; it is never taken from the caller's body or headers. Anything else
//! (no key, another prefix) is `Unknown`, and `temporary` refuses it too: deny when we cannot tell.

use serde::{Deserialize, Serialize};

use super::ids::{Action, Environment, PolicyName, Resource};
use super::policy::Policy;
use super::principal::Principal;

/// The kind of credential a request was signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialType {
    /// `ASIA…`: temporary credentials from STS (an assumed role, a federated or session token).
    Temporary,
    /// `AKIA…`: a long-term access key of an IAM user.
    LongTerm,
    /// No access key in the request context, or a prefix we do not know.
    Unknown,
}

impl CredentialType {
    pub fn of(access_key_id: Option<&str>) -> Self {
        match access_key_id {
            Some(k) if k.starts_with("ASIA") => Self::Temporary,
            Some(k) if k.starts_with("AKIA") => Self::LongTerm,
            _ => Self::Unknown,
        }
    }

    /// As reviewers and the API read it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Temporary => "temporary (STS session)",
            Self::LongTerm => "long-term IAM user key",
            Self::Unknown => "unknown credential type",
        }
    }

    /// Stable word for JSON (`whoami`, audit fields).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Temporary => "temporary",
            Self::LongTerm => "long_term",
            Self::Unknown => "unknown",
        }
    }
}

/// The last 4 characters of an access key id: all that is ever shown or audited of it.
pub fn key_suffix(access_key_id: &str) -> String {
    let chars: Vec<char> = access_key_id.chars().collect();
    chars[chars.len().saturating_sub(4)..].iter().collect()
}

/// A policy's `credentials:` rule. `any` (the default) is left out of the policy's canonical JSON, so
/// policies written before the rule existed keep their version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialRule {
    #[default]
    Any,
    Temporary,
}

impl CredentialRule {
    pub fn is_any(&self) -> bool {
        *self == Self::Any
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "any" => Ok(Self::Any),
            "temporary" => Ok(Self::Temporary),
            other => Err(format!("must be temporary or any, got {other:?}")),
        }
    }
}

/// Why a request's credential does not meet the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LongTermCredentials {
    /// The policy that requires temporary credentials.
    pub policy: PolicyName,
    pub credential: CredentialType,
    /// The key id's last 4 characters, never more.
    pub key_suffix: Option<String>,
}

impl std::fmt::Display for LongTermCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "policy {:?} requires temporary credentials (an STS session, access key ASIA…); this request was signed with ",
            self.policy.as_str()
        )?;
        match (self.credential, self.key_suffix.as_deref()) {
            (CredentialType::LongTerm, Some(k)) => write!(f, "the long-term IAM user access key …{k}"),
            (_, Some(k)) => write!(f, "an access key of unknown type (…{k})"),
            (_, None) => f.write_str("no access key in the request context"),
        }
    }
}

/// Row 40: checks the credential against every policy that matches the request, not only the one that
/// governs it. `credentials: temporary` is a statement about the request (this action in this
/// environment), so a broader or stricter-by-quorum policy that wins the match must not waive it.
pub fn check_credentials<'a>(
    policies: impl IntoIterator<Item = &'a Policy>,
    who: &Principal,
    action: &Action,
    env: &Environment,
    resource: Option<&Resource>,
    access_key_id: Option<&str>,
) -> Result<(), LongTermCredentials> {
    let key = access_key_id.filter(|k| !k.is_empty()).map(key_suffix);
    check_credential_type(policies, who, action, env, resource, CredentialType::of(access_key_id), key)
}

/// [`check_credentials`] given the credential's type rather than its key id: the one rule, for callers that
/// know only the type (`policy test` cases, replayed requests). `key_suffix` is what the refusal names.
pub fn check_credential_type<'a>(
    policies: impl IntoIterator<Item = &'a Policy>,
    who: &Principal,
    action: &Action,
    env: &Environment,
    resource: Option<&Resource>,
    credential: CredentialType,
    key_suffix: Option<String>,
) -> Result<(), LongTermCredentials> {
    if credential == CredentialType::Temporary {
        return Ok(());
    }
    let requiring = policies
        .into_iter()
        .filter(|p| p.credentials == CredentialRule::Temporary && p.matches(who, action, env, resource))
        .min_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
    match requiring {
        None => Ok(()),
        Some(p) => Err(LongTermCredentials { policy: p.name.clone(), credential, key_suffix }),
    }
}

impl CredentialType {
    /// The inverse of [`CredentialType::as_str`]: `temporary`, `long_term` or `unknown`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "temporary" => Ok(Self::Temporary),
            "long_term" => Ok(Self::LongTerm),
            "unknown" => Ok(Self::Unknown),
            other => Err(format!("must be temporary, long_term or unknown, got {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::policy::parse_policies;

    const FILE: &str = r#"
version: 1
policies:
  - name: prod
    principals: ["arn:aws:iam::111122223333:user/ci-*"]
    actions: [deploy]
    environments: [production]
    approvers: {users: [U0A]}
    required_approvals: 1
    channel: C0APPROVALS
    max_ttl: 1h
    credentials: temporary
  - name: broad
    principals: ["arn:aws:iam::111122223333:user/ci*"]
    actions: ["*"]
    environments: ["*"]
    approvers: {users: [U0A, U0B]}
    required_approvals: 2
    channel: C0APPROVALS
    max_ttl: 30m
"#;

    fn check(env: &str, key: Option<&str>) -> Result<(), LongTermCredentials> {
        let set = parse_policies(FILE).expect("valid");
        let who = Principal::parse("arn:aws:iam::111122223333:user/ci-deploy").expect("principal");
        let action = Action::parse("deploy").expect("action");
        let env = Environment::parse(env).expect("env");
        check_credentials(&set, &who, &action, &env, None, key)
    }

    #[test]
    fn credential_type_comes_from_the_documented_key_prefix() {
        assert_eq!(CredentialType::of(Some("ASIAEXAMPLE00001234")), CredentialType::Temporary);
        assert_eq!(CredentialType::of(Some("AKIAEXAMPLE00001234")), CredentialType::LongTerm);
        assert_eq!(CredentialType::of(Some("asiaexample")), CredentialType::Unknown);
        assert_eq!(CredentialType::of(Some("AIDAEXAMPLE")), CredentialType::Unknown);
        assert_eq!(CredentialType::of(None), CredentialType::Unknown);
    }

    #[test]
    fn t40_long_term_key_is_refused_where_a_matching_policy_requires_temporary_credentials() {
        let e = check("production", Some("AKIAEXAMPLEKEYW1XYZ")).expect_err("refused");
        assert_eq!(e.policy.as_str(), "prod");
        assert_eq!(e.key_suffix.as_deref(), Some("1XYZ"));
        let text = e.to_string();
        assert!(text.contains("…1XYZ") && !text.contains("AKIAEXAMPLE"), "only the last 4 are named: {text}");
        // The broad policy wins the match (two approvals), and still does not waive the rule.
        assert!(check("production", Some("ASIAEXAMPLEKEYW1XYZ")).is_ok());
        assert!(check("staging", Some("AKIAEXAMPLEKEYW1XYZ")).is_ok(), "no matching policy requires it");
    }

    #[test]
    fn temporary_refuses_a_credential_it_cannot_tell_apart() {
        let e = check("production", None).expect_err("refused");
        assert_eq!(e.credential, CredentialType::Unknown);
        assert!(e.to_string().contains("no access key"));
        assert!(check("production", Some("XYZW")).is_err());
    }

    #[test]
    fn an_unknown_credentials_rule_is_a_field_error() {
        let bad = FILE.replace("credentials: temporary", "credentials: permanent");
        let errors = parse_policies(&bad).expect_err("refused").0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field.as_deref(), Some("credentials"));
        assert!(errors[0].message.contains("temporary or any"), "{}", errors[0].message);
    }

    #[test]
    fn the_default_rule_leaves_the_policy_version_unchanged() {
        let set = parse_policies(FILE).expect("valid");
        let broad = set.iter().find(|p| p.name.as_str() == "broad").expect("broad");
        assert!(!serde_json::to_string(broad).expect("json").contains("credentials"));
        let prod = set.iter().find(|p| p.name.as_str() == "prod").expect("prod");
        assert!(serde_json::to_string(prod).expect("json").contains(r#""credentials":"temporary""#));
    }
}

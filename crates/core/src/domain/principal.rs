//! Who is asking: the IAM principal behind a SigV4-signed call.
//!
//! The only input is the caller ARN that API Gateway's IAM authorizer reports (or local mode's stand-in).
//! Policy matching uses (partition, account, kind, name) and never the session name, which the caller picks
//! freely when it assumes a role. Root and federated users are refused: no pipeline should run as either.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Partition {
    #[serde(rename = "aws")]
    Aws,
    #[serde(rename = "aws-us-gov")]
    AwsUsGov,
    #[serde(rename = "aws-cn")]
    AwsCn,
}

impl Partition {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "aws" => Some(Self::Aws),
            "aws-us-gov" => Some(Self::AwsUsGov),
            "aws-cn" => Some(Self::AwsCn),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aws => "aws",
            Self::AwsUsGov => "aws-us-gov",
            Self::AwsCn => "aws-cn",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    Role,
    User,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Role => "role",
            Self::User => "user",
        }
    }
}

/// Why an ARN was refused as a requester.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrincipalError {
    #[error("the account root user may not request approvals; use a role")]
    Root,
    #[error("federated users (sts:GetFederationToken) may not request approvals; use a role")]
    FederatedUser,
    #[error("partition {0:?} is not supported (aws, aws-us-gov, aws-cn)")]
    UnsupportedPartition(String),
    #[error("malformed ARN: {0}")]
    Malformed(String),
}

fn malformed(s: impl Into<String>) -> PrincipalError {
    PrincipalError::Malformed(s.into())
}

/// An authenticated IAM role or user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The ARN exactly as reported.
    pub arn: String,
    pub partition: Partition,
    pub account: String,
    pub kind: PrincipalKind,
    /// Role or user name, without path.
    pub name: String,
    /// IAM path, when the ARN carries one (`/service-role/`); assumed-role ARNs never do.
    pub path: Option<String>,
    /// The role session name: shown to reviewers, never used to match.
    pub session: Option<String>,
}

/// IAM names: `[\w+=,.@-]{1,64}` (roles) / `{1,64}` (users).
fn valid_iam_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '=' | ',' | '.' | '@' | '-'))
}

/// Session names: `[\w+=,.@-]{2,64}`.
fn valid_session_name(s: &str) -> bool {
    s.len() >= 2 && valid_iam_name(s)
}

pub fn valid_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Splits `PATH.../NAME` into (path, name) where path is `/` or `/a/b/`.
fn split_path(rest: &str) -> Result<(Option<String>, &str), PrincipalError> {
    match rest.rfind('/') {
        None => Ok((None, rest)),
        Some(i) => {
            let path = &rest[..=i];
            if path.split('/').any(|seg| seg.chars().any(|c| !('\u{21}'..='\u{7e}').contains(&c))) {
                return Err(malformed("IAM path contains characters outside ASCII 0x21-0x7E"));
            }
            if path.contains("//") {
                return Err(malformed("IAM path has an empty segment"));
            }
            Ok((Some(format!("/{path}")), &rest[i + 1..]))
        }
    }
}

impl Principal {
    pub fn parse(arn: &str) -> Result<Self, PrincipalError> {
        if arn.len() > 2048 {
            return Err(malformed("longer than 2048 characters"));
        }
        let mut parts = arn.splitn(6, ':');
        let (Some(prefix), Some(partition), Some(service), Some(region), Some(account), Some(resource)) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("expected arn:PARTITION:SERVICE::ACCOUNT:RESOURCE"));
        };
        if prefix != "arn" {
            return Err(malformed("does not start with arn:"));
        }
        let partition =
            Partition::parse(partition).ok_or_else(|| PrincipalError::UnsupportedPartition(partition.to_string()))?;
        if service != "iam" && service != "sts" {
            return Err(malformed(format!("service {service:?}: IAM and STS principals only")));
        }
        if !region.is_empty() {
            return Err(malformed("IAM and STS principal ARNs have no region"));
        }
        if !valid_account(account) {
            return Err(malformed(format!("account {account:?} is not 12 digits")));
        }
        let account = account.to_string();
        let base = |kind, name: &str, path, session| -> Result<Self, PrincipalError> {
            if !valid_iam_name(name) {
                return Err(malformed(format!("{} name {name:?} is not a valid IAM name", kind_str(kind))));
            }
            Ok(Self {
                arn: arn.to_string(),
                partition,
                account: account.clone(),
                kind,
                name: name.to_string(),
                path,
                session,
            })
        };
        match (service, resource) {
            ("iam", "root") => Err(PrincipalError::Root),
            ("sts", r) if r.starts_with("federated-user/") => Err(PrincipalError::FederatedUser),
            ("sts", r) => {
                let rest = r
                    .strip_prefix("assumed-role/")
                    .ok_or_else(|| malformed("STS principals must be assumed-role/ROLE/SESSION"))?;
                let (role, session) =
                    rest.split_once('/').ok_or_else(|| malformed("assumed-role ARN has no session name"))?;
                if !valid_session_name(session) {
                    return Err(malformed(format!("session name {session:?} is not valid")));
                }
                base(PrincipalKind::Role, role, None, Some(session.to_string()))
            }
            ("iam", r) => {
                let (kind, rest) = if let Some(rest) = r.strip_prefix("role/") {
                    (PrincipalKind::Role, rest)
                } else if let Some(rest) = r.strip_prefix("user/") {
                    (PrincipalKind::User, rest)
                } else {
                    return Err(malformed("IAM principals must be role/… or user/…"));
                };
                let (path, name) = split_path(rest)?;
                base(kind, name, path, None)
            }
            (other, _) => Err(malformed(format!("service {other:?} is not iam or sts"))),
        }
    }

    /// The identity policies match on: `arn:PARTITION:iam::ACCOUNT:role/NAME` (no path, no session).
    /// IAM role and user names are unique within an account whatever their path, so this is exact.
    pub fn identity(&self) -> String {
        format!("arn:{}:iam::{}:{}/{}", self.partition.as_str(), self.account, self.kind.as_str(), self.name)
    }
}

fn kind_str(k: PrincipalKind) -> &'static str {
    k.as_str()
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.identity())
    }
}

/// A policy's `principals:` entry: an IAM role or user ARN whose name part may end in `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalPattern {
    pub partition: Partition,
    pub account: String,
    pub kind: PrincipalKind,
    /// Name without path; when `prefix` is true, matches any name starting with it.
    pub name: String,
    pub prefix: bool,
    pub source: String,
}

impl PrincipalPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        let p = match Principal::parse(&s.replace('*', "WILDCARDx")) {
            Ok(p) => p,
            Err(PrincipalError::Root) => return Err("the root user cannot be a principal".into()),
            Err(e) => return Err(e.to_string()),
        };
        if p.session.is_some() {
            return Err("use the role ARN (arn:…:iam::ACCOUNT:role/NAME), not an assumed-role ARN".into());
        }
        let stars = s.matches('*').count();
        // Matching compares names only (assumed-role ARNs, what callers present, carry no path), so a
        // wildcard in the path could never mean what it says: refuse it rather than silently drop it.
        if p.path.as_deref().is_some_and(|path| path.contains("WILDCARDx")) {
            return Err(format!(
                "a wildcard in the IAM path ({}) cannot be matched: assumed-role ARNs carry no path, so \
                 paths are ignored; put the wildcard at the end of a name prefix (role/ci-*)",
                p.path.as_deref().unwrap_or_default().replace("WILDCARDx", "*")
            ));
        }
        let (name, prefix) = match p.name.strip_suffix("WILDCARDx") {
            // An empty stem matches every name of this kind in the account, whatever path is written
            // before it (`role/ci/*` reads as "roles under /ci/" but would match them all).
            Some("") if stars == 1 => {
                let what = match &p.path {
                    Some(path) => format!(
                        "the path {path} is ignored (assumed-role ARNs carry no path, so paths cannot be \
                         matched) and "
                    ),
                    None => String::new(),
                };
                return Err(format!(
                    "{what}an empty name before * would match every {kind} in account {account}; write a name \
                     prefix ({kind}/ci-*) or list the {kind}s",
                    kind = p.kind.as_str(),
                    account = p.account,
                ));
            }
            Some(stem) if stars == 1 && !stem.contains("WILDCARDx") => (stem.to_string(), true),
            _ if stars == 0 => (p.name.clone(), false),
            _ => return Err("a wildcard is only allowed once, at the end of the name (role/ci-*)".into()),
        };
        Ok(Self { partition: p.partition, account: p.account, kind: p.kind, name, prefix, source: s.to_string() })
    }

    pub fn matches(&self, p: &Principal) -> bool {
        self.partition == p.partition
            && self.account == p.account
            && self.kind == p.kind
            && if self.prefix { p.name.starts_with(&self.name) } else { p.name == self.name }
    }

    /// Whether some principal could match both patterns (for the shadowing lint): same partition, account
    /// and kind, and names that overlap as [`stems_overlap`] says.
    pub fn overlaps(&self, other: &Self) -> bool {
        self.partition == other.partition
            && self.account == other.account
            && self.kind == other.kind
            && stems_overlap((&self.name, self.prefix), (&other.name, other.prefix))
    }
}

/// Whether two patterns, each `(stem, is_prefix)` — exact when not a prefix, "starts with stem" when it
/// is — can both match one value. Conservative: it does not ask whether that value is otherwise valid.
pub fn stems_overlap((a, a_prefix): (&str, bool), (b, b_prefix): (&str, bool)) -> bool {
    match (a_prefix, b_prefix) {
        (false, false) => a == b,
        (true, false) => b.starts_with(a),
        (false, true) => a.starts_with(b),
        (true, true) => a.starts_with(b) || b.starts_with(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (ARN, expected identity or the error's leading words)
    const CASES: &[(&str, Result<&str, &str>)] = &[
        (
            "arn:aws:sts::111122223333:assumed-role/github-deploy/run-42",
            Ok("arn:aws:iam::111122223333:role/github-deploy"),
        ),
        ("arn:aws:iam::111122223333:role/github-deploy", Ok("arn:aws:iam::111122223333:role/github-deploy")),
        ("arn:aws:iam::111122223333:role/service-role/ci/deployer", Ok("arn:aws:iam::111122223333:role/deployer")),
        (
            "arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_AdminAccess_0123456789abcdef/alice@example.com",
            Ok("arn:aws:iam::111122223333:role/AWSReservedSSO_AdminAccess_0123456789abcdef"),
        ),
        ("arn:aws:iam::111122223333:user/ci/bot", Ok("arn:aws:iam::111122223333:user/bot")),
        ("arn:aws:iam::111122223333:user/bot", Ok("arn:aws:iam::111122223333:user/bot")),
        ("arn:aws-us-gov:sts::111122223333:assumed-role/deploy/s1", Ok("arn:aws-us-gov:iam::111122223333:role/deploy")),
        ("arn:aws-cn:iam::111122223333:role/deploy", Ok("arn:aws-cn:iam::111122223333:role/deploy")),
        ("arn:aws:iam::111122223333:root", Err("the account root user")),
        ("arn:aws:sts::111122223333:federated-user/bob", Err("federated users")),
        ("arn:aws-iso:iam::111122223333:role/deploy", Err("partition")),
        ("arn:aws:iam::12345:role/deploy", Err("malformed ARN: account")),
        ("arn:aws:sts::111122223333:assumed-role/deploy", Err("malformed ARN: assumed-role ARN has no session")),
        ("arn:aws:s3:::bucket", Err("malformed ARN: service \"s3\"")),
        ("arn:aws:iam::111122223333:group/admins", Err("malformed ARN: IAM principals")),
        ("", Err("malformed ARN: expected")),
        ("aws:iam::111122223333:role/x:y", Err("malformed ARN")),
        (
            "arn:aws:iam:us-east-1:111122223333:role/deploy",
            Err("malformed ARN: IAM and STS principal ARNs have no region"),
        ),
        ("arn:aws:iam::111122223333:role/de ploy", Err("malformed ARN: role name")),
        ("arn:aws:sts::111122223333:assumed-role/deploy/x", Err("malformed ARN: session name")),
    ];

    #[test]
    fn parses_and_refuses_principal_arn_forms() {
        for (arn, want) in CASES {
            match (Principal::parse(arn), want) {
                (Ok(p), Ok(id)) => assert_eq!(&p.identity(), id, "{arn}"),
                (Err(e), Err(prefix)) => {
                    assert!(e.to_string().starts_with(prefix), "{arn}: got {e:?}, wanted {prefix:?}")
                }
                (got, _) => panic!("{arn}: got {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn session_name_is_kept_for_display_but_not_in_identity() {
        let a = Principal::parse("arn:aws:sts::111122223333:assumed-role/deploy/run-1").unwrap();
        let b = Principal::parse("arn:aws:sts::111122223333:assumed-role/deploy/admin-approved").unwrap();
        assert_eq!(a.identity(), b.identity());
        assert_eq!(a.session.as_deref(), Some("run-1"));
    }

    #[test]
    fn patterns_match_on_account_kind_and_name_only() {
        let pat = PrincipalPattern::parse("arn:aws:iam::111122223333:role/ci-*").unwrap();
        let ok = Principal::parse("arn:aws:sts::111122223333:assumed-role/ci-deploy/s1").unwrap();
        let other_acct = Principal::parse("arn:aws:sts::444455556666:assumed-role/ci-deploy/s1").unwrap();
        let user = Principal::parse("arn:aws:iam::111122223333:user/ci-deploy").unwrap();
        let other_part = Principal::parse("arn:aws-cn:iam::111122223333:role/ci-deploy").unwrap();
        let spoof = Principal::parse("arn:aws:sts::111122223333:assumed-role/deploy/ci-deploy").unwrap();
        assert!(pat.matches(&ok));
        assert!(!pat.matches(&other_acct));
        assert!(!pat.matches(&user));
        assert!(!pat.matches(&other_part));
        assert!(!pat.matches(&spoof), "session name must never match");
    }

    #[test]
    fn patterns_refuse_wildcards_outside_the_name_end() {
        assert!(PrincipalPattern::parse("arn:aws:iam::*:role/x").is_err());
        assert!(PrincipalPattern::parse("arn:aws:iam::111122223333:role/*x").is_err());
        assert!(PrincipalPattern::parse("arn:aws:iam::111122223333:role/a*b*").is_err());
        assert!(PrincipalPattern::parse("arn:aws:sts::111122223333:assumed-role/x/y").is_err());
        assert!(PrincipalPattern::parse("arn:aws:iam::111122223333:role/path/x*").is_ok());
    }

    #[test]
    fn t29_principal_pattern_with_empty_stem_is_refused() {
        for (pat, kind) in [
            ("arn:aws:iam::111122223333:role/*", "role"),
            ("arn:aws:iam::111122223333:user/*", "user"),
            ("arn:aws-cn:iam::111122223333:role/*", "role"),
        ] {
            let e = PrincipalPattern::parse(pat).unwrap_err();
            assert!(e.contains(&format!("would match every {kind} in account 111122223333")), "{pat}: {e}");
        }
    }

    #[test]
    fn t29_principal_pattern_with_a_path_and_empty_stem_is_refused_saying_the_path_is_ignored() {
        // Before: the path was dropped and the empty stem matched every role in the account.
        let e = PrincipalPattern::parse("arn:aws:iam::111122223333:role/ci/*").unwrap_err();
        assert!(e.contains("the path /ci/ is ignored"), "{e}");
        assert!(e.contains("assumed-role ARNs carry no path"), "{e}");
        assert!(e.contains("would match every role in account 111122223333"), "{e}");
        let e = PrincipalPattern::parse("arn:aws:iam::111122223333:user/bots/*").unwrap_err();
        assert!(e.contains("the path /bots/ is ignored"), "{e}");
    }

    #[test]
    fn t29_principal_pattern_with_a_wildcard_in_the_path_is_refused() {
        for pat in [
            "arn:aws:iam::111122223333:role/*/deploy",
            "arn:aws:iam::111122223333:role/ci*/deploy",
            "arn:aws:iam::111122223333:role/a/*/deploy",
            "arn:aws:iam::111122223333:user/ci-*/bot",
        ] {
            let e = PrincipalPattern::parse(pat).unwrap_err();
            assert!(e.contains("a wildcard in the IAM path"), "{pat}: {e}");
            assert!(e.contains("assumed-role ARNs carry no path"), "{pat}: {e}");
        }
    }

    #[test]
    fn t29_named_prefixes_and_paths_without_wildcards_stay_valid() {
        let any_ci = Principal::parse("arn:aws:sts::111122223333:assumed-role/ci-deploy/s1").unwrap();
        let other = Principal::parse("arn:aws:sts::111122223333:assumed-role/payments/s1").unwrap();
        let ci = PrincipalPattern::parse("arn:aws:iam::111122223333:role/ci-*").unwrap();
        assert!(ci.matches(&any_ci) && !ci.matches(&other));
        // The path is ignored for matching: `role/service-role/deployer` is the role named deployer.
        let pathed = PrincipalPattern::parse("arn:aws:iam::111122223333:role/service-role/deployer").unwrap();
        assert!((pathed.name.as_str(), pathed.prefix) == ("deployer", false));
        assert!(pathed.matches(&Principal::parse("arn:aws:sts::111122223333:assumed-role/deployer/s1").unwrap()));
        assert!(!pathed.matches(&other));
        let pathed_prefix = PrincipalPattern::parse("arn:aws:iam::111122223333:role/ci/deploy-*").unwrap();
        assert!((pathed_prefix.name.as_str(), pathed_prefix.prefix) == ("deploy-", true));
    }

    #[test]
    fn t32_principal_patterns_overlap_when_one_name_could_match_both() {
        let p = |s: &str| PrincipalPattern::parse(&format!("arn:aws:iam::111122223333:{s}")).unwrap();
        let yes = [
            ("role/ci-*", "role/ci-deploy"),
            ("role/ci-*", "role/ci-d*"),
            ("role/ci-d*", "role/ci-*"),
            ("role/deploy", "role/a/deploy"),
            ("role/deploy", "role/deploy"),
        ];
        for (a, b) in yes {
            assert!(p(a).overlaps(&p(b)) && p(b).overlaps(&p(a)), "{a} / {b}");
        }
        let no = [("role/ci-*", "role/cd-*"), ("role/ci-*", "user/ci-deploy"), ("role/deploy", "role/deployer")];
        for (a, b) in no {
            assert!(!p(a).overlaps(&p(b)) && !p(b).overlaps(&p(a)), "{a} / {b}");
        }
        let other_account = PrincipalPattern::parse("arn:aws:iam::444455556666:role/ci-deploy").unwrap();
        assert!(!p("role/ci-*").overlaps(&other_account));
        let other_partition = PrincipalPattern::parse("arn:aws-cn:iam::111122223333:role/ci-deploy").unwrap();
        assert!(!p("role/ci-*").overlaps(&other_partition));
    }
}

//! Identifiers and names that can only be built valid ("parse, don't validate").
//!
//! Every constructor checks its input; once a value of these types exists, the rest of the code can rely on
//! its shape (length, alphabet) without checking again.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ulid::Ulid;

/// Why a value was refused; the message names the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {problem}")]
pub struct InvalidId {
    pub what: &'static str,
    pub problem: String,
}

fn invalid(what: &'static str, problem: impl Into<String>) -> InvalidId {
    InvalidId { what, problem: problem.into() }
}

/// Threat row 33, checked first so the message names the code point (see `super::text`).
fn check_visible(s: &str) -> Result<(), String> {
    super::text::check_visible(s).map_err(|h| h.to_string())
}

macro_rules! string_newtype {
    ($(#[$m:meta])* $name:ident, $what:literal, $check:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, InvalidId> {
                let check: fn(&str) -> Result<(), String> = $check;
                check(s).map_err(|p| invalid($what, p))?;
                Ok(Self(s.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_newtype!(
    /// The digest of the artifact a request is bound to: `sha256:` and 64 lowercase hex digits.
    ArtifactDigest, "artifact", |s| {
        let Some(hex) = s.strip_prefix("sha256:") else {
            return Err("must be sha256: followed by 64 lowercase hex digits".into());
        };
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err("must be sha256: followed by 64 lowercase hex digits".into());
        }
        Ok(())
    }
);

impl ArtifactDigest {
    /// The digest as reviewers see it: `sha256:9f2c…e1` (first 4 and last 2 hex digits).
    pub fn short(&self) -> String {
        let hex = &self.0["sha256:".len()..];
        format!("sha256:{}…{}", &hex[..4], &hex[hex.len() - 2..])
    }

    /// The digest of `bytes` (an artifact file's content).
    pub fn of_bytes(bytes: &[u8]) -> Self {
        use sha2::Digest;
        Self(format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes))))
    }

    /// From a finished SHA-256 (a file hashed in chunks).
    pub fn from_sha256(digest: [u8; 32]) -> Self {
        Self(format!("sha256:{}", hex::encode(digest)))
    }
}

/// `[a-z0-9][a-z0-9._:-]{0,63}`
fn check_token(s: &str) -> Result<(), String> {
    check_visible(s)?;
    let b = s.as_bytes();
    if b.is_empty() {
        return Err("must not be empty".into());
    }
    if b.len() > 64 {
        return Err(format!("must be at most 64 characters, got {}", s.chars().count()));
    }
    if !(b[0].is_ascii_lowercase() || b[0].is_ascii_digit()) {
        return Err("must start with a lowercase letter or a digit".into());
    }
    if let Some(c) =
        s.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(format!("character {c:?} is not allowed (use a-z 0-9 . _ : -)"));
    }
    Ok(())
}

fn check_slack_id(s: &str, prefixes: &[char]) -> Result<(), String> {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if prefixes.contains(&c) => {}
        _ => {
            let p: Vec<String> = prefixes.iter().map(|c| format!("{c}")).collect();
            return Err(format!("must start with {}", p.join(" or ")));
        }
    }
    if s.len() < 3 || s.len() > 32 {
        return Err("must be 3 to 32 characters".into());
    }
    if !chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()) {
        return Err("must be upper-case letters and digits only".into());
    }
    Ok(())
}

string_newtype!(
    /// What a workload wants to do (`deploy`, `db:migrate`, `secret.rotate`).
    Action, "action", check_token
);
string_newtype!(
    /// Where (`production`, `staging`, `eu-west-1:prod`).
    Environment, "environment", check_token
);
string_newtype!(
    /// What it acts on, as the workload states it (`service/payments`). At most 256 printable characters.
    Resource, "resource", |s| {
        check_visible(s)?;
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        if s.chars().count() > 256 {
            return Err("must be at most 256 characters".into());
        }
        if s.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(())
    }
);
string_newtype!(
    /// A Slack user id (`U…` or `W…` for Enterprise Grid).
    SlackUserId, "Slack user id", |s| check_slack_id(s, &['U', 'W'])
);
string_newtype!(
    /// A Slack user group id (`S…`).
    SlackGroupId, "Slack user group id", |s| check_slack_id(s, &['S'])
);
string_newtype!(
    /// A Slack channel id (`C…` public, `G…` private).
    SlackChannelId, "Slack channel id", |s| check_slack_id(s, &['C', 'G'])
);
string_newtype!(
    /// A policy name: `[a-z0-9-]{1,64}`.
    PolicyName, "policy name", |s| {
        if s.is_empty() || s.len() > 64 {
            return Err("must be 1 to 64 characters".into());
        }
        if !s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
            return Err("may only contain a-z, 0-9 and -".into());
        }
        Ok(())
    }
);
string_newtype!(
    /// A caller-chosen key that collapses retries into one request. 1 to 128 printable ASCII characters.
    IdempotencyKey, "idempotency_key", |s| {
        check_visible(s)?;
        if s.is_empty() || s.len() > 128 {
            return Err("must be 1 to 128 characters".into());
        }
        if !s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err("must be printable ASCII without spaces".into());
        }
        Ok(())
    }
);

/// A request id: a ULID, so ids sort by creation time. Shown as `req_01JD…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(Ulid);

impl RequestId {
    pub const PREFIX: &'static str = "req_";

    /// A new id for a request created at `now_ms` with the given randomness.
    pub fn from_parts(now_ms: u64, random: u128) -> Self {
        Self(Ulid::from_parts(now_ms, random))
    }

    pub fn generate() -> Self {
        Self(Ulid::new())
    }

    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let body = s.strip_prefix(Self::PREFIX).ok_or_else(|| invalid("request id", "must start with req_"))?;
        if body.len() != 26 {
            return Err(invalid("request id", "must be req_ followed by 26 characters"));
        }
        Ulid::from_string(body).map(Self).map_err(|_| invalid("request id", "is not a valid ULID"))
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.0)
    }
}

impl FromStr for RequestId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for RequestId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RequestId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_round_trip_and_sort_by_time() {
        let a = RequestId::from_parts(1_000, 5);
        let b = RequestId::from_parts(2_000, 1);
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
        assert_eq!(RequestId::parse(&a.to_string()), Ok(a));
    }

    #[test]
    fn request_id_rejects_other_shapes() {
        for bad in ["", "req_", "01JD0000000000000000000000", "req_zzzz", "REQ_01JD0000000000000000000000"] {
            assert!(RequestId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn action_and_environment_follow_the_token_grammar() {
        for good in ["deploy", "db:migrate", "secret.rotate", "a", "0-x_y"] {
            assert!(Action::parse(good).is_ok(), "{good}");
        }
        let long = "a".repeat(65);
        for bad in ["", "Deploy", "-x", "de ploy", "déploy", long.as_str(), "a/b"] {
            assert!(Environment::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn slack_ids_need_their_prefix() {
        assert!(SlackUserId::parse("U012AB3CD").is_ok());
        assert!(SlackUserId::parse("W012AB3CD").is_ok());
        assert!(SlackUserId::parse("C012AB3CD").is_err());
        assert!(SlackUserId::parse("u012ab3cd").is_err());
        assert!(SlackGroupId::parse("S0614TZR7").is_ok());
        assert!(SlackChannelId::parse("G0PRIVATE").is_ok());
        assert!(SlackChannelId::parse("D0DIRECT").is_err());
    }

    #[test]
    fn resource_is_bounded_and_printable() {
        assert!(Resource::parse("service/payments").is_ok());
        assert!(Resource::parse(&"é".repeat(256)).is_ok());
        assert!(Resource::parse(&"é".repeat(257)).is_err());
        assert!(Resource::parse("a\nb").is_err());
    }

    #[test]
    fn t33_requester_ids_refuse_hidden_characters_naming_the_code_point() {
        let e = Resource::parse("service/\u{202E}gnigats-stnemyap").unwrap_err();
        assert!(e.problem.contains("U+202E"), "{e}");
        assert!(Action::parse("deploy\u{200B}").unwrap_err().problem.contains("U+200B"));
        assert!(Environment::parse("prod\u{2029}").unwrap_err().problem.contains("U+2029"));
        assert!(IdempotencyKey::parse("key-\u{E000}").unwrap_err().problem.contains("U+E000"));
        // Visible non-ASCII stays a resource.
        assert!(Resource::parse("bucket/données 中文 👍").is_ok());
    }
}

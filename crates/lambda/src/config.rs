//! Configuration of the Lambda functions, from environment variables only (documented in
//! docs/configuration.md). A missing or invalid variable stops start-up with one line naming it.

use std::collections::BTreeSet;
use std::time::Duration;

use countersign_core::domain::principal::valid_account;
use countersign_core::domain::receipt::DEFAULT_ISSUER;
use countersign_core::domain::{Environment, SlackWorkspaces};

pub const DEFAULT_SLACK_API_BASE_URL: &str = "https://slack.com/api";

/// One configuration problem, naming the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration error: {var}: {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

fn err(var: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError { var, problem: problem.into() }
}

/// Which binary is starting: each needs a slightly different set of variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    RequestApi,
    SlackInteractions,
    Sweeper,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableConfig {
    pub policies: String,
    pub requests: String,
    pub audit: String,
}

/// Where a function finds its Slack secrets (row 28).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackSecretIds {
    /// `{"signing_secret"}`. Only slack-interactions has it: request-api and sweeper never learn where the
    /// key that forges approvals is, so they cannot fetch it even by mistake.
    pub signing_secret: Option<String>,
    /// `{"bot_token"}`, read by all three functions.
    pub bot_token: String,
}

/// The combined `{"bot_token", "signing_secret"}` secret of earlier versions: still accepted, with a warning,
/// when the variable a function needs is unset.
pub const LEGACY_SLACK_SECRET_VAR: &str = "COUNTERSIGN_SLACK_SECRET_ID";
pub const SIGNING_SECRET_VAR: &str = "COUNTERSIGN_SLACK_SIGNING_SECRET_ID";
pub const BOT_TOKEN_SECRET_VAR: &str = "COUNTERSIGN_SLACK_BOT_TOKEN_SECRET_ID";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LambdaConfig {
    pub tables: TableConfig,
    pub slack_secrets: SlackSecretIds,
    /// How long `AWSPREVIOUS` still verifies after the `AWSCURRENT` version was created (row 27); zero: never.
    pub slack_secret_grace: Duration,
    /// Start-up warnings (a deprecated variable in use), one line each, logged once by the wiring.
    pub warnings: Vec<String>,
    pub slack_api_base_url: String,
    /// `T…` workspace ids and at most one `E…` Enterprise Grid organization id, comma-separated (see
    /// [`SlackWorkspaces`]); callbacks and voters from anything else are refused.
    pub slack_team_id: Option<String>,
    pub slack_app_id: Option<String>,
    /// Empty = any account (API Gateway's resource policy still applies).
    pub allowed_accounts: BTreeSet<String>,
    pub allowed_org_id: Option<String>,
    pub sensitive_environments: BTreeSet<Environment>,
    pub secret_cache_ttl: Duration,
    pub slack_timeout: Duration,
    /// `COUNTERSIGN_RECEIPT_KEY_ID`: the KMS key receipts are signed with (required by request-api).
    pub receipt_key_id: Option<String>,
    /// `COUNTERSIGN_RECEIPT_PREVIOUS_KEY_IDS`: rotated-out keys, comma-separated, still published in the JWKS.
    pub receipt_previous_key_ids: Vec<String>,
    /// `COUNTERSIGN_RECEIPT_ISSUER`, default `countersign`: the receipts' `iss`.
    pub receipt_issuer: String,
    /// `COUNTERSIGN_CHECKPOINT_BUCKET`: where the sweeper writes audit checkpoints (issue 17).
    pub checkpoint_bucket: Option<String>,
    /// `COUNTERSIGN_EVENT_BUS`: the EventBridge bus (name or ARN) the sweeper publishes decision events on
    /// (issue 19). Unset: none are published, and the sweeper deletes the outbox entries unpublished.
    pub event_bus: Option<String>,
}

impl LambdaConfig {
    /// Reads the process environment.
    pub fn from_env(component: Component) -> Result<Self, ConfigError> {
        Self::from_lookup(component, |k| std::env::var(k).ok())
    }

    /// Reads configuration through `get` (tests pass a map).
    pub fn from_lookup(component: Component, get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let opt = |var: &'static str| get(var).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let req = |var: &'static str| opt(var).ok_or_else(|| err(var, "is required but not set"));
        let table = |var: &'static str| -> Result<String, ConfigError> {
            let v = req(var)?;
            let ok = (3..=255).contains(&v.len())
                && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if ok {
                Ok(v)
            } else {
                Err(err(var, format!("{v:?} is not a valid DynamoDB table name")))
            }
        };
        let tables = TableConfig {
            policies: table("COUNTERSIGN_POLICIES_TABLE")?,
            requests: table("COUNTERSIGN_REQUESTS_TABLE")?,
            audit: table("COUNTERSIGN_AUDIT_TABLE")?,
        };
        let (slack_secrets, warnings) = slack_secret_ids(component, &opt)?;
        let slack_api_base_url = match opt("COUNTERSIGN_SLACK_API_BASE_URL") {
            None => DEFAULT_SLACK_API_BASE_URL.to_string(),
            Some(u) => check_slack_api_base_url(&u).map_err(|p| err("COUNTERSIGN_SLACK_API_BASE_URL", p))?,
        };
        let needs_slack_ids = component == Component::SlackInteractions;
        let slack_team_id = match opt("COUNTERSIGN_SLACK_TEAM_ID") {
            // A comma-separated list of `T…` ids and at most one `E…` id (the rule is the domain's).
            Some(t) => match SlackWorkspaces::parse(&t) {
                Ok(_) => Some(t),
                Err(p) => return Err(err("COUNTERSIGN_SLACK_TEAM_ID", p)),
            },
            None if needs_slack_ids => return Err(err("COUNTERSIGN_SLACK_TEAM_ID", "is required but not set")),
            None => None,
        };
        let slack_app_id = match opt("COUNTERSIGN_SLACK_APP_ID") {
            Some(a) if is_slack_id(&a, &['A']) => Some(a),
            Some(a) => return Err(err("COUNTERSIGN_SLACK_APP_ID", format!("{a:?} is not a Slack app id (A…)"))),
            None if needs_slack_ids => return Err(err("COUNTERSIGN_SLACK_APP_ID", "is required but not set")),
            None => None,
        };
        let mut allowed_accounts = BTreeSet::new();
        for a in entries(&opt("COUNTERSIGN_ALLOWED_ACCOUNTS").unwrap_or_default()) {
            if !valid_account(a) {
                return Err(err("COUNTERSIGN_ALLOWED_ACCOUNTS", format!("{a:?} is not a 12-digit account id")));
            }
            allowed_accounts.insert(a.to_string());
        }
        let allowed_org_id = match opt("COUNTERSIGN_ALLOWED_ORG_ID") {
            Some(o)
                if o.starts_with("o-")
                    && o.len() >= 12
                    && o[2..].chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) =>
            {
                Some(o)
            }
            Some(o) => return Err(err("COUNTERSIGN_ALLOWED_ORG_ID", format!("{o:?} is not an organization id (o-…)"))),
            None => None,
        };
        let mut sensitive_environments = BTreeSet::new();
        for e in entries(&opt("COUNTERSIGN_SENSITIVE_ENVIRONMENTS").unwrap_or_default()) {
            let env = Environment::parse(e).map_err(|x| err("COUNTERSIGN_SENSITIVE_ENVIRONMENTS", x.to_string()))?;
            sensitive_environments.insert(env);
        }
        let secs = |var: &'static str, default: u64, max: u64| -> Result<u64, ConfigError> {
            match opt(var) {
                None => Ok(default),
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if n <= max => Ok(n),
                    _ => Err(err(var, format!("{v:?} is not a whole number of seconds from 0 to {max}"))),
                },
            }
        };
        let secret_cache_ttl = Duration::from_secs(secs("COUNTERSIGN_SECRET_CACHE_TTL_SECONDS", 300, 3600)?);
        // Callbacks Slack signed just before a rotation are at most 5 minutes old when they count: an hour is
        // already far more than the previous secret is ever legitimately needed for.
        let slack_secret_grace = Duration::from_secs(secs("COUNTERSIGN_SLACK_SECRET_GRACE_SECONDS", 600, 3600)?);
        let slack_timeout_ms = match opt("COUNTERSIGN_SLACK_TIMEOUT_MS") {
            None => 2000,
            Some(v) => match v.parse::<u64>() {
                Ok(n) if (100..=10_000).contains(&n) => n,
                _ => return Err(err("COUNTERSIGN_SLACK_TIMEOUT_MS", format!("{v:?} must be 100 to 10000"))),
            },
        };
        let receipt_key_id = match opt("COUNTERSIGN_RECEIPT_KEY_ID") {
            Some(k) if valid_kms_key_id(&k) => Some(k),
            Some(k) => {
                return Err(err("COUNTERSIGN_RECEIPT_KEY_ID", format!("{k:?} is not a KMS key id, ARN or alias")))
            }
            None if component == Component::RequestApi => {
                return Err(err("COUNTERSIGN_RECEIPT_KEY_ID", "is required but not set"))
            }
            None => None,
        };
        let mut receipt_previous_key_ids = Vec::new();
        for k in entries(&opt("COUNTERSIGN_RECEIPT_PREVIOUS_KEY_IDS").unwrap_or_default()) {
            if !valid_kms_key_id(k) {
                return Err(err("COUNTERSIGN_RECEIPT_PREVIOUS_KEY_IDS", format!("{k:?} is not a KMS key id or ARN")));
            }
            receipt_previous_key_ids.push(k.to_string());
        }
        let receipt_issuer = opt("COUNTERSIGN_RECEIPT_ISSUER").unwrap_or_else(|| DEFAULT_ISSUER.to_string());
        if receipt_issuer.len() > 256 || receipt_issuer.chars().any(char::is_control) {
            return Err(err("COUNTERSIGN_RECEIPT_ISSUER", "must be at most 256 printable characters"));
        }
        let checkpoint_bucket = opt("COUNTERSIGN_CHECKPOINT_BUCKET");
        if checkpoint_bucket.is_some() && receipt_key_id.is_none() {
            return Err(err(
                "COUNTERSIGN_RECEIPT_KEY_ID",
                "is required to sign checkpoints (COUNTERSIGN_CHECKPOINT_BUCKET is set)",
            ));
        }
        let event_bus = match opt("COUNTERSIGN_EVENT_BUS") {
            Some(b) if valid_event_bus(&b) => Some(b),
            Some(b) => {
                return Err(err("COUNTERSIGN_EVENT_BUS", format!("{b:?} is not an EventBridge bus name or ARN")))
            }
            None => None,
        };
        Ok(Self {
            event_bus,
            checkpoint_bucket,
            receipt_key_id,
            receipt_previous_key_ids,
            receipt_issuer,
            tables,
            slack_secrets,
            slack_secret_grace,
            warnings,
            slack_api_base_url,
            slack_team_id,
            slack_app_id,
            allowed_accounts,
            allowed_org_id,
            sensitive_environments,
            secret_cache_ttl,
            slack_timeout: Duration::from_millis(slack_timeout_ms),
        })
    }
}

/// An event bus name (`[A-Za-z0-9._-/]`, at most 256) or an `arn:…:events:…:event-bus/NAME` ARN.
fn valid_event_bus(b: &str) -> bool {
    let name = match b.strip_prefix("arn:") {
        Some(rest) => {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            match parts.as_slice() {
                [_, "events", _, _, res] => match res.strip_prefix("event-bus/") {
                    Some(n) => n,
                    None => return false,
                },
                _ => return false,
            }
        }
        None => b,
    };
    (1..=256).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
}

/// The trimmed, non-empty entries of a comma-separated setting.
fn entries(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|e| !e.is_empty())
}

/// A key id (UUID), key ARN, alias name (`alias/…`) or alias ARN: printable, no spaces, at most 2048.
fn valid_kms_key_id(k: &str) -> bool {
    !k.is_empty() && k.len() <= 2048 && k.chars().all(|c| c.is_ascii_graphic())
}

/// Which Slack secrets `component` reads: the bot token always, the signing secret only for
/// slack-interactions. A variable left unset falls back to the legacy combined secret, with one warning line.
fn slack_secret_ids(
    component: Component,
    opt: &impl Fn(&'static str) -> Option<String>,
) -> Result<(SlackSecretIds, Vec<String>), ConfigError> {
    let legacy = opt(LEGACY_SLACK_SECRET_VAR);
    let mut replaced: Vec<&'static str> = Vec::new();
    let mut id = |var: &'static str| -> Result<String, ConfigError> {
        match (opt(var), &legacy) {
            (Some(v), _) => Ok(v),
            (None, Some(l)) => {
                replaced.push(var);
                Ok(l.clone())
            }
            (None, None) => Err(err(var, "is required but not set")),
        }
    };
    let signing_secret = match component {
        Component::SlackInteractions => Some(id(SIGNING_SECRET_VAR)?),
        Component::RequestApi | Component::Sweeper => None,
    };
    let bot_token = id(BOT_TOKEN_SECRET_VAR)?;
    let warnings = if replaced.is_empty() {
        Vec::new()
    } else {
        vec![format!(
            "{LEGACY_SLACK_SECRET_VAR} (the combined Slack secret) is deprecated: set {} instead (docs/deploy.md)",
            replaced.join(" and ")
        )]
    };
    Ok((SlackSecretIds { signing_secret, bot_token }, warnings))
}

/// Whether a parsed URL's `host_str()` is one plain `http://` may go to: exactly `localhost`, `127.0.0.1`
/// or `[::1]`. For http(s) the URL parser has already normalized the host (domains lower-cased, IPv4 in
/// dotted decimal so `127.1` is `127.0.0.1`, IPv6 compressed in brackets), so equality is exact and
/// `localhost.attacker.example` is not loopback. Also used by the CLI's `--endpoint` check.
pub fn is_loopback_host(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

/// A Slack API base URL, parsed (never prefix-matched: `http://localhost.attacker.example` and
/// `http://127.0.0.1@evil.example` start like loopback URLs): `https://` to any host, or plain `http://`
/// only to exactly `localhost`, `127.0.0.1` or `[::1]` (tests, local mode). No user info, query or fragment.
/// Returned as the parser normalized it, without a trailing slash, so the URL the Slack client later joins
/// and connects to is the one checked here. Shared by the Lambda configuration and local mode's.
pub fn check_slack_api_base_url(u: &str) -> Result<String, String> {
    use reqwest::Url;
    let refuse = |why: &str| Err(format!("{u:?} is refused: {why}"));
    let url = match Url::parse(u) {
        Ok(url) => url,
        Err(e) => return refuse(&format!("not a URL ({e})")),
    };
    if !url.username().is_empty() || url.password().is_some() {
        return refuse("a URL with user info (user@host) is not allowed");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return refuse("a base URL has no query or fragment");
    }
    let loopback = url.host_str().is_some_and(is_loopback_host);
    match url.scheme() {
        "https" | "http" if url.host_str().is_none_or(str::is_empty) => return refuse("it has no host"),
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return refuse(
                "plain http:// is allowed only to the exact hosts localhost, 127.0.0.1 and [::1]; use https://",
            )
        }
        other => return refuse(&format!("scheme {other:?}: use https://")),
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

fn is_slack_id(s: &str, prefixes: &[char]) -> bool {
    s.len() >= 3
        && s.len() <= 32
        && s.starts_with(prefixes)
        && s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;

    use super::*;

    fn base() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("COUNTERSIGN_POLICIES_TABLE", "cs-policies"),
            ("COUNTERSIGN_REQUESTS_TABLE", "cs-requests"),
            ("COUNTERSIGN_AUDIT_TABLE", "cs-audit"),
            ("COUNTERSIGN_RECEIPT_KEY_ID", "alias/countersign-receipts"),
            ("COUNTERSIGN_SLACK_SECRET_ID", "countersign/slack"),
            ("COUNTERSIGN_SLACK_TEAM_ID", "T0123ABCD"),
            ("COUNTERSIGN_SLACK_APP_ID", "A0123ABCD"),
        ])
    }

    fn load(c: Component, m: &HashMap<&'static str, &'static str>) -> Result<LambdaConfig, ConfigError> {
        LambdaConfig::from_lookup(c, |k| m.get(k).map(|v| (*v).to_string()))
    }

    #[test]
    fn minimal_environment_loads_with_defaults() {
        let c = load(Component::SlackInteractions, &base()).unwrap();
        assert_eq!(c.slack_api_base_url, DEFAULT_SLACK_API_BASE_URL);
        assert!(c.allowed_accounts.is_empty());
        assert_eq!(c.secret_cache_ttl, Duration::from_secs(300));
        assert_eq!(c.slack_secret_grace, Duration::from_secs(600));
    }

    #[test]
    fn missing_variable_is_named_in_one_line() {
        let mut m = base();
        m.remove("COUNTERSIGN_AUDIT_TABLE");
        let e = load(Component::RequestApi, &m).unwrap_err();
        assert_eq!(e.to_string(), "configuration error: COUNTERSIGN_AUDIT_TABLE: is required but not set");
    }

    #[test]
    fn slack_ids_are_required_only_by_the_interactions_handler() {
        let mut m = base();
        m.remove("COUNTERSIGN_SLACK_TEAM_ID");
        assert!(load(Component::RequestApi, &m).is_ok());
        assert_eq!(load(Component::SlackInteractions, &m).unwrap_err().var, "COUNTERSIGN_SLACK_TEAM_ID");
    }

    #[test]
    fn invalid_values_are_refused_by_name() {
        for (k, v) in [
            ("COUNTERSIGN_ALLOWED_ACCOUNTS", "111122223333,12"),
            ("COUNTERSIGN_ALLOWED_ORG_ID", "org-1"),
            ("COUNTERSIGN_SENSITIVE_ENVIRONMENTS", "Production"),
            ("COUNTERSIGN_SLACK_API_BASE_URL", "http://evil.example"),
            ("COUNTERSIGN_SLACK_TEAM_ID", "x"),
            ("COUNTERSIGN_REQUESTS_TABLE", "a b"),
            ("COUNTERSIGN_SECRET_CACHE_TTL_SECONDS", "-1"),
            ("COUNTERSIGN_SLACK_SECRET_GRACE_SECONDS", "10m"),
            ("COUNTERSIGN_SLACK_SECRET_GRACE_SECONDS", "3601"),
        ] {
            let mut m = base();
            m.insert(k, v);
            assert_eq!(load(Component::SlackInteractions, &m).unwrap_err().var, k, "{k}={v}");
        }
    }

    /// The template's environment: one secret per purpose, the signing secret only for slack-interactions.
    fn split() -> HashMap<&'static str, &'static str> {
        let mut m = base();
        m.remove(LEGACY_SLACK_SECRET_VAR);
        m.insert(BOT_TOKEN_SECRET_VAR, "countersign/slack-bot-token");
        m.insert(SIGNING_SECRET_VAR, "countersign/slack-signing-secret");
        m
    }

    #[test]
    fn t28_only_slack_interactions_is_configured_with_the_signing_secret() {
        // Even when the variable is (wrongly) set for them, request-api and sweeper never carry its value.
        for c in [Component::RequestApi, Component::Sweeper] {
            let cfg = load(c, &split()).unwrap();
            assert_eq!(cfg.slack_secrets.signing_secret, None, "{c:?}");
            assert_eq!(cfg.slack_secrets.bot_token, "countersign/slack-bot-token", "{c:?}");
            assert!(cfg.warnings.is_empty(), "{c:?}: {:?}", cfg.warnings);
        }
        let cfg = load(Component::SlackInteractions, &split()).unwrap();
        assert_eq!(cfg.slack_secrets.signing_secret.as_deref(), Some("countersign/slack-signing-secret"));
        assert_eq!(cfg.slack_secrets.bot_token, "countersign/slack-bot-token");
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    }

    #[test]
    fn t28_each_function_needs_only_its_own_secret_variables() {
        // request-api and sweeper start without the signing secret's variable at all.
        let mut m = split();
        m.remove(SIGNING_SECRET_VAR);
        assert!(load(Component::RequestApi, &m).is_ok());
        assert!(load(Component::Sweeper, &m).is_ok());
        assert_eq!(load(Component::SlackInteractions, &m).unwrap_err().var, SIGNING_SECRET_VAR);
        let mut m = split();
        m.remove(BOT_TOKEN_SECRET_VAR);
        for c in [Component::RequestApi, Component::Sweeper, Component::SlackInteractions] {
            assert_eq!(load(c, &m).unwrap_err().var, BOT_TOKEN_SECRET_VAR, "{c:?}");
        }
    }

    #[test]
    fn t28_legacy_combined_secret_is_accepted_with_one_warning_naming_the_replacement() {
        // base() has only COUNTERSIGN_SLACK_SECRET_ID.
        for c in [Component::RequestApi, Component::Sweeper] {
            let cfg = load(c, &base()).unwrap();
            assert_eq!(
                cfg.slack_secrets,
                SlackSecretIds { signing_secret: None, bot_token: "countersign/slack".into() }
            );
            assert_eq!(cfg.warnings.len(), 1, "{c:?}: {:?}", cfg.warnings);
            assert!(cfg.warnings[0].contains(BOT_TOKEN_SECRET_VAR), "{}", cfg.warnings[0]);
            // Never tell an operator to give these functions the signing secret.
            assert!(!cfg.warnings[0].contains(SIGNING_SECRET_VAR), "{}", cfg.warnings[0]);
        }
        let cfg = load(Component::SlackInteractions, &base()).unwrap();
        assert_eq!(cfg.slack_secrets.signing_secret.as_deref(), Some("countersign/slack"));
        assert_eq!(cfg.warnings.len(), 1, "{:?}", cfg.warnings);
        assert!(cfg.warnings[0].contains(SIGNING_SECRET_VAR) && cfg.warnings[0].contains(BOT_TOKEN_SECRET_VAR));
        assert!(!cfg.warnings[0].contains('\n'));
        // Only the missing one falls back (and is named).
        let mut m = base();
        m.insert(SIGNING_SECRET_VAR, "countersign/slack-signing-secret");
        let cfg = load(Component::SlackInteractions, &m).unwrap();
        assert_eq!(cfg.slack_secrets.signing_secret.as_deref(), Some("countersign/slack-signing-secret"));
        assert_eq!(cfg.slack_secrets.bot_token, "countersign/slack");
        assert_eq!(cfg.warnings.len(), 1);
        assert!(!cfg.warnings[0].contains(SIGNING_SECRET_VAR), "{}", cfg.warnings[0]);
        // Nothing at all: the error names the new variable.
        let mut m = base();
        m.remove(LEGACY_SLACK_SECRET_VAR);
        assert_eq!(load(Component::RequestApi, &m).unwrap_err().var, BOT_TOKEN_SECRET_VAR);
    }

    #[test]
    fn t27_grace_period_is_configurable_down_to_never() {
        let mut m = base();
        m.insert("COUNTERSIGN_SLACK_SECRET_GRACE_SECONDS", "0");
        assert_eq!(load(Component::SlackInteractions, &m).unwrap().slack_secret_grace, Duration::ZERO);
        m.insert("COUNTERSIGN_SLACK_SECRET_GRACE_SECONDS", "120");
        assert_eq!(load(Component::SlackInteractions, &m).unwrap().slack_secret_grace, Duration::from_secs(120));
        m.insert("COUNTERSIGN_SLACK_SECRET_GRACE_SECONDS", "ten");
        let e = load(Component::SlackInteractions, &m).unwrap_err();
        assert_eq!(
            e.to_string(),
            "configuration error: COUNTERSIGN_SLACK_SECRET_GRACE_SECONDS: \"ten\" is not a whole number of seconds \
             from 0 to 3600"
        );
    }

    #[test]
    fn t34_team_id_takes_a_list_of_workspaces_and_at_most_one_enterprise() {
        for ok in ["T0123ABCD", "E0GRID001", "T0123ABCD,T0456EFGH", " T0123ABCD , T0456EFGH, E0GRID001 "] {
            let mut m = base();
            m.insert("COUNTERSIGN_SLACK_TEAM_ID", ok);
            assert!(load(Component::SlackInteractions, &m).is_ok(), "{ok:?}");
        }
        for bad in ["E0GRID001,E0GRID002", "T0123ABCD,,T0456EFGH", "T0123ABCD,x", "T0123ABCD;T0456EFGH", "U0123ABCD"] {
            let mut m = base();
            m.insert("COUNTERSIGN_SLACK_TEAM_ID", bad);
            let e = load(Component::SlackInteractions, &m).unwrap_err();
            assert_eq!(e.var, "COUNTERSIGN_SLACK_TEAM_ID", "{bad:?}");
        }
    }

    #[test]
    fn t39_slack_api_base_url_is_parsed_not_prefix_matched() {
        let accepted = [
            ("https://slack.com/api", "https://slack.com/api"),
            ("https://slack.com/api/", "https://slack.com/api"),
            ("https://slack.example:8443/api", "https://slack.example:8443/api"),
            ("http://localhost:8787/slack/api", "http://localhost:8787/slack/api"),
            ("http://LOCALHOST:8787/slack/api", "http://localhost:8787/slack/api"),
            ("http://127.0.0.1:8787/slack/api", "http://127.0.0.1:8787/slack/api"),
            ("http://127.0.0.1/", "http://127.0.0.1"),
            ("http://[::1]:8787/slack/api", "http://[::1]:8787/slack/api"),
            ("http://[0:0::1]:8787", "http://[::1]:8787"),
        ];
        for (u, want) in accepted {
            assert_eq!(check_slack_api_base_url(u).as_deref(), Ok(want), "{u}");
        }
        let refused = [
            ("http://localhost.attacker.example", "plain http:// is allowed only to the exact hosts"),
            ("http://127.0.0.1.attacker.example/api", "plain http:// is allowed only"),
            ("http://localhostattacker.example", "plain http:// is allowed only"),
            ("http://127.0.0.1@evil.example", "user info"),
            ("http://localhost:8787@evil.example/api", "user info"),
            ("https://user:pass@slack.com/api", "user info"),
            ("http://evil.example", "plain http:// is allowed only"),
            ("http://10.0.0.1/api", "plain http:// is allowed only"),
            ("http://[::ffff:127.0.0.1]/api", "plain http:// is allowed only"),
            ("http://localhost./api", "plain http:// is allowed only"),
            ("ftp://localhost/api", "scheme \"ftp\""),
            ("file:///etc/passwd", "scheme \"file\""),
            ("https://slack.com/api?token=x", "no query or fragment"),
            ("https://slack.com/api#x", "no query or fragment"),
            ("slack.com/api", "not a URL"),
            ("https://", "not a URL"),
        ];
        for (u, why) in refused {
            let e = check_slack_api_base_url(u).unwrap_err();
            assert!(e.starts_with(&format!("{u:?} is refused: ")) && e.contains(why), "{u}: {e}");
        }
    }

    #[test]
    fn t39_the_lambda_configuration_refuses_a_look_alike_loopback_url() {
        let mut m = base();
        m.insert("COUNTERSIGN_SLACK_API_BASE_URL", "http://localhost.attacker.example");
        let e = load(Component::RequestApi, &m).unwrap_err();
        assert_eq!(e.var, "COUNTERSIGN_SLACK_API_BASE_URL");
        assert!(e.to_string().contains("plain http:// is allowed only to the exact hosts"), "{e}");
    }

    #[test]
    fn the_event_bus_is_a_name_or_an_arn() {
        let mut m = base();
        assert_eq!(load(Component::Sweeper, &m).unwrap().event_bus, None);
        for ok in ["countersign-prod", "arn:aws:events:eu-west-1:111122223333:event-bus/countersign-prod"] {
            m.insert("COUNTERSIGN_EVENT_BUS", ok);
            assert_eq!(load(Component::Sweeper, &m).unwrap().event_bus.as_deref(), Some(ok));
        }
        for bad in ["has space", "arn:aws:sqs:eu-west-1:111122223333:queue", "arn:aws:events:eu-west-1:1:rule/x"] {
            m.insert("COUNTERSIGN_EVENT_BUS", bad);
            assert_eq!(load(Component::Sweeper, &m).unwrap_err().var, "COUNTERSIGN_EVENT_BUS", "{bad}");
        }
    }

    #[test]
    fn lists_are_parsed() {
        let mut m = base();
        m.insert("COUNTERSIGN_ALLOWED_ACCOUNTS", " 111122223333, 444455556666 ,");
        m.insert("COUNTERSIGN_SENSITIVE_ENVIRONMENTS", "production,prod-eu");
        let c = load(Component::RequestApi, &m).unwrap();
        assert_eq!(c.allowed_accounts.len(), 2);
        assert_eq!(c.sensitive_environments.len(), 2);
    }

    #[test]
    fn request_api_needs_the_receipt_key_and_the_issuer_defaults_to_countersign() {
        let mut m = base();
        m.remove("COUNTERSIGN_RECEIPT_KEY_ID");
        let e = LambdaConfig::from_lookup(Component::RequestApi, |k| m.get(k).map(ToString::to_string)).unwrap_err();
        assert_eq!(e.to_string(), "configuration error: COUNTERSIGN_RECEIPT_KEY_ID: is required but not set");
        let c = LambdaConfig::from_lookup(Component::Sweeper, |k| m.get(k).map(ToString::to_string)).unwrap();
        assert_eq!((c.receipt_key_id, c.receipt_issuer.as_str()), (None, "countersign"));
        m.insert("COUNTERSIGN_RECEIPT_KEY_ID", "alias/k");
        m.insert("COUNTERSIGN_RECEIPT_PREVIOUS_KEY_IDS", " k1 , k2,");
        m.insert("COUNTERSIGN_RECEIPT_ISSUER", "https://countersign.example.com");
        let c = LambdaConfig::from_lookup(Component::RequestApi, |k| m.get(k).map(ToString::to_string)).unwrap();
        assert_eq!(c.receipt_previous_key_ids, ["k1", "k2"]);
        assert_eq!(c.receipt_issuer, "https://countersign.example.com");
    }
}

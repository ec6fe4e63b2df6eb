//! Local mode's configuration: one TOML file (`countersign dev --config FILE`), every key optional.
//!
//! Relative paths (`data_dir`, `policies`) are relative to the directory `countersign dev` runs in, so the
//! same file works from the repository root whether it lives there or under the data directory. Unknown keys
//! are refused (a typo must not silently fall back to a default). Documented in docs/local-mode.md.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use countersign_core::domain::principal::valid_account;
use countersign_core::domain::{CredentialType, Environment, Principal, SlackChannelId, SlackGroupId, SlackUserId};
use countersign_core::ports::SecretString;

use super::sigv4::DevIdentity;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
pub const DEFAULT_DATA_DIR: &str = ".countersign";
pub const DEFAULT_REGION: &str = "us-east-1";
pub const DEFAULT_POLICIES: &str = "infra/policies.example.yaml";
/// The config `countersign dev` writes (and then reads) under the data directory when no `--config` is given.
pub const CONFIG_FILE_NAME: &str = "dev.toml";
pub const DEFAULT_BOT_TOKEN: &str = "xoxb-local-dev";
pub const DEFAULT_TEAM_ID: &str = "T0LOCAL01";
pub const DEFAULT_APP_ID: &str = "A0LOCAL01";
pub const DEFAULT_SWEEP_INTERVAL_SECONDS: u64 = 10;

/// One problem, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

fn err(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError { key: key.into(), problem: problem.into() }
}

/// A Slack user the simulator knows (who you can act as).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimUser {
    pub id: SlackUserId,
    pub name: String,
    /// Shown under the name (e.g. "SRE on call").
    pub title: Option<String>,
    /// `deactivated = true`: `users.info` answers `deleted: true` (the account may not vote).
    pub deactivated: bool,
    /// `guest = true`: `users.info` answers `is_restricted: true`, a multi-channel guest (may not vote).
    pub guest: bool,
}

/// A Slack user group (`usergroups.users.list` answers with its members).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimGroup {
    pub id: SlackGroupId,
    pub handle: String,
    pub members: Vec<SlackUserId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimChannel {
    pub id: SlackChannelId,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct SlackConfig {
    /// `None`: the built-in simulator, `http://LISTEN/slack/api`.
    pub api_base_url: Option<String>,
    pub bot_token: SecretString,
    pub signing_secret: SecretString,
    /// `T…` workspace ids and at most one `E…` organization id, comma-separated (as
    /// `COUNTERSIGN_SLACK_TEAM_ID`); the simulator acts as the first `T…` one.
    pub team_id: String,
    pub app_id: String,
    pub users: Vec<SimUser>,
    pub groups: Vec<SimGroup>,
    pub channels: Vec<SimChannel>,
}

#[derive(Debug, Clone)]
pub struct DevConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub region: String,
    /// Loaded into the store at start; `None` leaves the store's policies as they are.
    pub policies: Option<PathBuf>,
    pub sensitive_environments: BTreeSet<Environment>,
    pub allowed_accounts: BTreeSet<String>,
    pub sweep_interval: Duration,
    pub slack: SlackConfig,
    pub identities: Vec<DevIdentity>,
    pub events: EventsConfig,
}

/// `[events]`: decision events go to `<data-dir>/events.jsonl` always, and to `webhook_url` when set, signed
/// with `webhook_secret` (docs/events.md).
#[derive(Debug, Clone, Default)]
pub struct EventsConfig {
    pub webhook_url: Option<reqwest::Url>,
    pub webhook_secret: Option<SecretString>,
}

// ---- the TOML schema --------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    region: Option<String>,
    policies: Option<PathBuf>,
    sensitive_environments: Option<Vec<String>>,
    allowed_accounts: Option<Vec<String>>,
    sweep_interval_seconds: Option<u64>,
    #[serde(default)]
    slack: RawSlack,
    #[serde(default)]
    identities: Vec<RawIdentity>,
    #[serde(default)]
    events: RawEvents,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvents {
    webhook_url: Option<String>,
    webhook_secret: Option<String>,
}

fn events(raw: RawEvents) -> Result<EventsConfig, ConfigError> {
    let webhook_url = match raw.webhook_url.filter(|u| !u.trim().is_empty()) {
        None => None,
        Some(u) => match reqwest::Url::parse(u.trim()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => Some(url),
            _ => return Err(err("events.webhook_url", format!("{u:?} is not an http(s) URL"))),
        },
    };
    let webhook_secret = raw.webhook_secret.filter(|s| !s.is_empty()).map(SecretString::new);
    if webhook_url.is_some() && webhook_secret.as_ref().is_none_or(|s| s.expose().len() < 16) {
        return Err(err("events.webhook_secret", "must be set (16 characters or more) when webhook_url is set"));
    }
    Ok(EventsConfig { webhook_url, webhook_secret })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlack {
    api_base_url: Option<String>,
    bot_token: Option<String>,
    signing_secret: Option<String>,
    team_id: Option<String>,
    app_id: Option<String>,
    #[serde(default)]
    users: Vec<RawUser>,
    #[serde(default)]
    groups: Vec<RawGroup>,
    #[serde(default)]
    channels: Vec<RawChannel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    id: String,
    name: String,
    title: Option<String>,
    #[serde(default)]
    deactivated: bool,
    #[serde(default)]
    guest: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    id: String,
    handle: String,
    #[serde(default)]
    members: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    id: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    access_key_id: String,
    secret_access_key: String,
    arn: String,
}

fn is_slack_id(s: &str, prefixes: &[char]) -> bool {
    (3..=32).contains(&s.len())
        && s.starts_with(prefixes)
        && s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// Display names and handles: 1 to 80 printable characters.
fn check_name(key: &str, s: &str) -> Result<String, ConfigError> {
    let t = s.trim();
    if t.is_empty() || t.chars().count() > 80 || t.chars().any(char::is_control) {
        return Err(err(key, format!("{s:?} must be 1 to 80 printable characters")));
    }
    Ok(t.to_string())
}

/// A deterministic stand-in for IAM's unique ids (`AROA…` for roles, `AIDA…` for users).
fn unique_id(p: &Principal) -> String {
    let prefix = match p.kind {
        countersign_core::domain::principal::PrincipalKind::Role => "AROA",
        countersign_core::domain::principal::PrincipalKind::User => "AIDA",
    };
    let digest = hex::encode(Sha256::digest(p.identity().as_bytes())).to_uppercase();
    format!("{prefix}{}", &digest[..17])
}

impl DevConfig {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|e| err(path.display().to_string(), e.to_string()))?;
        Self::parse(&src)
    }

    /// Parses and validates TOML text; a missing signing secret gets a random one (for this run only).
    pub fn parse(src: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(src).map_err(|e| err("config", e.to_string().trim_end().to_string()))?;
        let listen_s = raw.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen: SocketAddr = listen_s
            .parse()
            .map_err(|_| err("listen", format!("{listen_s:?} is not an address like 127.0.0.1:8787")))?;
        let region = raw.region.unwrap_or_else(|| DEFAULT_REGION.to_string());
        let region_ok = !region.is_empty()
            && region.len() <= 32
            && region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !region_ok {
            return Err(err("region", format!("{region:?} is not an AWS region name")));
        }
        let mut sensitive_environments = BTreeSet::new();
        for e in raw.sensitive_environments.unwrap_or_else(|| vec!["production".to_string()]) {
            sensitive_environments
                .insert(Environment::parse(&e).map_err(|x| err("sensitive_environments", x.to_string()))?);
        }
        let mut allowed_accounts = BTreeSet::new();
        for a in raw.allowed_accounts.unwrap_or_default() {
            if !valid_account(&a) {
                return Err(err("allowed_accounts", format!("{a:?} is not a 12-digit account id")));
            }
            allowed_accounts.insert(a);
        }
        let sweep = raw.sweep_interval_seconds.unwrap_or(DEFAULT_SWEEP_INTERVAL_SECONDS);
        if !(1..=3600).contains(&sweep) {
            return Err(err("sweep_interval_seconds", format!("must be 1 to 3600, got {sweep}")));
        }
        Ok(Self {
            listen,
            data_dir: raw.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            region,
            policies: raw.policies,
            sensitive_environments,
            allowed_accounts,
            sweep_interval: Duration::from_secs(sweep),
            slack: slack(raw.slack)?,
            identities: identities(raw.identities)?,
            events: events(raw.events)?,
        })
    }

    /// The workspace the simulator acts as: the first `T…` id of `slack.team_id` (the default one when it
    /// lists only an `E…` id).
    pub fn simulator_team_id(&self) -> String {
        countersign_core::domain::SlackWorkspaces::parse(&self.slack.team_id)
            .ok()
            .and_then(|w| w.teams().next().map(str::to_string))
            .unwrap_or_else(|| DEFAULT_TEAM_ID.to_string())
    }

    /// Whether Slack calls go to the built-in simulator (no real Slack configured).
    pub fn uses_simulator(&self) -> bool {
        self.slack.api_base_url.is_none()
    }
}

fn slack(raw: RawSlack) -> Result<SlackConfig, ConfigError> {
    let api_base_url = match raw.api_base_url {
        None => None,
        Some(u) if u.trim().is_empty() => None,
        Some(u) => Some(
            countersign_lambda::config::check_slack_api_base_url(u.trim()).map_err(|p| err("slack.api_base_url", p))?,
        ),
    };
    let team_id = raw.team_id.unwrap_or_else(|| DEFAULT_TEAM_ID.to_string());
    // The same list as COUNTERSIGN_SLACK_TEAM_ID, by the same (domain) rule.
    if let Err(p) = countersign_core::domain::SlackWorkspaces::parse(&team_id) {
        return Err(err("slack.team_id", p));
    }
    let app_id = raw.app_id.unwrap_or_else(|| DEFAULT_APP_ID.to_string());
    if !is_slack_id(&app_id, &['A']) {
        return Err(err("slack.app_id", format!("{app_id:?} is not a Slack app id (A…)")));
    }
    let bot_token = raw.bot_token.unwrap_or_else(|| DEFAULT_BOT_TOKEN.to_string());
    if bot_token.is_empty() || !bot_token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(err("slack.bot_token", "must be printable ASCII without spaces"));
    }
    let signing_secret = match raw.signing_secret {
        Some(s) if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic()) => {
            return Err(err("slack.signing_secret", "must be printable ASCII without spaces"))
        }
        Some(s) => s,
        None => random_hex(16).map_err(|e| err("slack.signing_secret", e))?,
    };
    let mut seen = HashSet::new();
    let mut users = Vec::new();
    for (i, u) in raw.users.into_iter().enumerate() {
        let key = format!("slack.users[{i}]");
        let id = SlackUserId::parse(&u.id).map_err(|e| err(format!("{key}.id"), e.to_string()))?;
        if !seen.insert(id.clone()) {
            return Err(err(format!("{key}.id"), format!("{id} is listed twice")));
        }
        let title = u.title.map(|t| check_name(&format!("{key}.title"), &t)).transpose()?;
        let name = check_name(&format!("{key}.name"), &u.name)?;
        users.push(SimUser { id, name, title, deactivated: u.deactivated, guest: u.guest });
    }
    let mut groups = Vec::new();
    for (i, g) in raw.groups.into_iter().enumerate() {
        let key = format!("slack.groups[{i}]");
        let id = SlackGroupId::parse(&g.id).map_err(|e| err(format!("{key}.id"), e.to_string()))?;
        let members = g
            .members
            .iter()
            .map(|m| SlackUserId::parse(m).map_err(|e| err(format!("{key}.members"), e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        groups.push(SimGroup { id, handle: check_name(&format!("{key}.handle"), &g.handle)?, members });
    }
    let mut channels = Vec::new();
    for (i, c) in raw.channels.into_iter().enumerate() {
        let key = format!("slack.channels[{i}]");
        let id = SlackChannelId::parse(&c.id).map_err(|e| err(format!("{key}.id"), e.to_string()))?;
        channels.push(SimChannel { id, name: check_name(&format!("{key}.name"), &c.name)? });
    }
    Ok(SlackConfig {
        api_base_url,
        bot_token: SecretString::new(bot_token),
        signing_secret: SecretString::new(signing_secret),
        team_id,
        app_id,
        users,
        groups,
        channels,
    })
}

fn identities(raw: Vec<RawIdentity>) -> Result<Vec<DevIdentity>, ConfigError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let key = format!("identities[{i}]");
        let k = &r.access_key_id;
        if !(16..=128).contains(&k.len()) || !k.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) {
            return Err(err(format!("{key}.access_key_id"), "must be 16 to 128 upper-case letters and digits"));
        }
        if !seen.insert(k.clone()) {
            return Err(err(format!("{key}.access_key_id"), format!("{k} is listed twice")));
        }
        let s = &r.secret_access_key;
        if s.is_empty() || s.len() > 128 || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(err(format!("{key}.secret_access_key"), "must be 1 to 128 printable characters, no spaces"));
        }
        let p = Principal::parse(&r.arn).map_err(|e| err(format!("{key}.arn"), e.to_string()))?;
        // AWS signs a role session only with temporary (ASIA…) keys: an AKIA… key on one would make local mode
        // answer what AWS never could (row 40: `credentials: temporary` policies tell the two apart).
        if p.session.is_some() && CredentialType::of(Some(k)) == CredentialType::LongTerm {
            return Err(err(
                format!("{key}.access_key_id"),
                format!(
                    "{}… is a long-term IAM user key, but {} is a role session, which AWS signs only with \
                     temporary keys: start the key with ASIA (configs written before 2026-12 used AKIALOCAL…)",
                    &k[..4],
                    r.arn
                ),
            ));
        }
        let uid = unique_id(&p);
        let caller = match &p.session {
            Some(session) => format!("{uid}:{session}"),
            None => uid,
        };
        out.push(DevIdentity {
            access_key_id: r.access_key_id,
            secret_access_key: SecretString::new(r.secret_access_key),
            arn: r.arn,
            account_id: p.account,
            caller,
        });
    }
    Ok(out)
}

// ---- randomness and the generated first-run config --------------------------------------------------------

fn random_bytes(n: usize) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| format!("no randomness available: {e}"))?;
    Ok(buf)
}

/// `n` random bytes as lower-case hex.
pub fn random_hex(n: usize) -> Result<String, String> {
    random_bytes(n).map(hex::encode)
}

/// `n` characters from `alphabet`, uniformly (rejection sampling).
fn random_from(alphabet: &[u8], n: usize) -> Result<String, String> {
    let limit = 256 - (256 % alphabet.len());
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in random_bytes(n * 2)? {
            if usize::from(b) < limit && out.len() < n {
                out.push(char::from(alphabet[usize::from(b) % alphabet.len()]));
            }
        }
    }
    Ok(out)
}

const UPPER_DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The text of a fresh dev config with random secrets, matching the example policies
/// (`infra/policies.example.yaml`): two identities, the approvers, owners and groups those policies name.
pub fn generate(data_dir: &Path) -> Result<String, ConfigError> {
    let r = |key: &str, f: Result<String, String>| f.map_err(|e| err(key, e));
    let signing_secret = r("slack.signing_secret", random_hex(16))?;
    let key1 = r("identities", random_from(UPPER_DIGITS, 11))?;
    let key2 = r("identities", random_from(UPPER_DIGITS, 11))?;
    let secret1 = r("identities", random_from(SECRET_CHARS, 40))?;
    let secret2 = r("identities", random_from(SECRET_CHARS, 40))?;
    let webhook_secret = r("events.webhook_secret", random_hex(32))?;
    let data_dir = data_dir.display().to_string().replace('\\', "/").replace('"', "");
    Ok(format!(
        r#"# Countersign local mode (`countersign dev`). Written on the first run with random dev secrets; edit freely.
# Every key is optional. Relative paths are relative to the directory you run `countersign dev` in.
# Reference: docs/local-mode.md

listen = "{DEFAULT_LISTEN}"
data_dir = "{data_dir}"
region = "{DEFAULT_REGION}"
# Loaded into the store at every start; each change is audited as a policy change.
policies = "{DEFAULT_POLICIES}"
# The Approve button asks for confirmation in these environments.
sensitive_environments = ["production"]
# How often the sweeper runs (expiry, Slack retries, reminders).
sweep_interval_seconds = {DEFAULT_SWEEP_INTERVAL_SECONDS}

[slack]
# Unset: the built-in Slack simulator (http://LISTEN/slack/). To post to a real workspace instead, set
# api_base_url = "https://slack.com/api" and a real bot_token, signing_secret, team_id and app_id.
bot_token = "{DEFAULT_BOT_TOKEN}"
signing_secret = "{signing_secret}"
team_id = "{DEFAULT_TEAM_ID}"
app_id = "{DEFAULT_APP_ID}"

[events]
# Decision events are always appended to DATA_DIR/events.jsonl. Set webhook_url to also POST each one,
# signed with webhook_secret in a Countersign-Signature header (docs/events.md shows how to verify it).
# webhook_url = "http://127.0.0.1:9000/countersign"
webhook_secret = "{webhook_secret}"

# Who you can act as in the simulator. Users named by the policies but not listed here appear under their id.
[[slack.users]]
id = "U012AB3CD"
name = "alice"
title = "Payments engineer"

[[slack.users]]
id = "U045EF6GH"
name = "bob"
title = "Payments engineer"

[[slack.users]]
id = "U0SRE0001"
name = "carol"
title = "SRE on call"

[[slack.users]]
id = "U0OWNER01"
name = "olivia"
title = "Owns the deploy pipeline"

[[slack.users]]
id = "U0SEC0001"
name = "sam"
title = "Security"

[[slack.users]]
id = "U0OWNER02"
name = "omar"
title = "Owns the rotation job"

[[slack.users]]
id = "U0VISITOR"
name = "victor"
title = "Not an approver"

# User groups (usergroups.users.list answers with these members).
[[slack.groups]]
id = "S0614TZR7"
handle = "sre-oncall"
members = ["U0SRE0001"]

[[slack.groups]]
id = "S0SECURITY"
handle = "security"
members = ["U0SEC0001"]

[[slack.channels]]
id = "C0APPROVALS"
name = "deploy-approvals"

[[slack.channels]]
id = "C0SECURITY"
name = "security-approvals"

[[slack.channels]]
id = "C0DATABASE"
name = "db-approvals"

[[slack.channels]]
id = "C0DEPLOYS"
name = "deploys"

[[slack.channels]]
id = "C0BREAKGLASS"
name = "break-glass"

# Stand-ins for IAM principals: a request signed with this key is made by this ARN. ASIA… keys stand for
# temporary STS credentials (a role session always has one); an AKIA… key stands for an IAM user's long-term
# key, which policies with `credentials: temporary` refuse.
[[identities]]
access_key_id = "ASIALOCAL{key1}"
secret_access_key = "{secret1}"
arn = "arn:aws:sts::111122223333:assumed-role/github-deploy/run-42"

[[identities]]
access_key_id = "ASIALOCAL{key2}"
secret_access_key = "{secret2}"
arn = "arn:aws:sts::111122223333:assumed-role/secret-rotator/rotation-7"
"#
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn empty_config_takes_every_default() {
        let c = DevConfig::parse("").unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.region, "us-east-1");
        assert!(c.uses_simulator());
        assert_eq!(c.slack.team_id, DEFAULT_TEAM_ID);
        assert_eq!(c.slack.signing_secret.expose().len(), 32, "a random secret for this run");
        assert!(c.identities.is_empty());
        assert!(c.policies.is_none());
        assert_eq!(c.sweep_interval, Duration::from_secs(DEFAULT_SWEEP_INTERVAL_SECONDS));
    }

    #[test]
    fn generated_config_parses_with_fresh_random_secrets_each_time() {
        let a = DevConfig::parse(&generate(Path::new(".countersign")).unwrap()).unwrap();
        let b = DevConfig::parse(&generate(Path::new(".countersign")).unwrap()).unwrap();
        assert_eq!(a.identities.len(), 2);
        assert_ne!(a.slack.signing_secret, b.slack.signing_secret);
        assert_ne!(a.identities[0].access_key_id, b.identities[0].access_key_id);
        assert_ne!(a.identities[0].secret_access_key, b.identities[0].secret_access_key);
        assert_eq!(a.identities[0].access_key_id.len(), 20);
        assert_eq!(a.identities[0].secret_access_key.expose().len(), 40);
        assert_eq!(a.identities[0].account_id, "111122223333");
        assert!(a.identities[0].caller.ends_with(":run-42"), "{}", a.identities[0].caller);
        assert_eq!(a.policies.as_deref(), Some(Path::new(DEFAULT_POLICIES)));
        assert_eq!(a.slack.groups[0].members[0].as_str(), "U0SRE0001");
    }

    #[test]
    fn the_issue_example_config_loads() {
        let c = DevConfig::parse(
            r#"
listen = "127.0.0.1:8787"
data_dir = ".countersign"
region = "us-east-1"
policies = "infra/policies.example.yaml"
[slack]
api_base_url = "http://127.0.0.1:8787/slack/api"
bot_token = "xoxb-local-dev"
signing_secret = "s3cr3t"
team_id = "T0LOCAL01"
app_id = "A0LOCAL01"
[[identities]]
access_key_id = "ASIALOCALDEV0000001"
secret_access_key = "abc"
arn = "arn:aws:sts::111122223333:assumed-role/github-deploy/run-42"
"#,
        )
        .unwrap();
        assert_eq!(c.slack.api_base_url.as_deref(), Some("http://127.0.0.1:8787/slack/api"));
        assert_eq!(c.identities[0].arn, "arn:aws:sts::111122223333:assumed-role/github-deploy/run-42");
    }

    #[test]
    fn bad_values_are_refused_by_key() {
        for (src, key) in [
            ("listen = \"8787\"", "listen"),
            ("region = \"US East\"", "region"),
            ("colour = \"red\"", "config"),
            ("sweep_interval_seconds = 0", "sweep_interval_seconds"),
            ("sensitive_environments = [\"Prod\"]", "sensitive_environments"),
            ("[slack]\napi_base_url = \"http://slack.example\"", "slack.api_base_url"),
            ("[slack]\napi_base_url = \"http://localhost.attacker.example\"", "slack.api_base_url"),
            ("[slack]\napi_base_url = \"http://127.0.0.1@evil.example\"", "slack.api_base_url"),
            ("[slack]\nteam_id = \"X1\"", "slack.team_id"),
            ("[slack]\napp_id = \"T0123\"", "slack.app_id"),
            ("[slack]\nsigning_secret = \"\"", "slack.signing_secret"),
            ("[[slack.users]]\nid = \"C0CHANNEL\"\nname = \"x\"", "slack.users[0].id"),
            ("[[slack.groups]]\nid = \"S0G\"\nhandle = \"g\"\nmembers = [\"nope\"]", "slack.groups[0].members"),
            (
                "[[identities]]\naccess_key_id = \"short\"\nsecret_access_key = \"x\"\narn = \"arn:aws:iam::111122223333:user/x\"",
                "identities[0].access_key_id",
            ),
            (
                "[[identities]]\naccess_key_id = \"AKIAAAAAAAAAAAAAAAAA\"\nsecret_access_key = \"x\"\narn = \"arn:aws:iam::111122223333:root\"",
                "identities[0].arn",
            ),
            (
                "[[identities]]\naccess_key_id = \"AKIALOCAL00000000001\"\nsecret_access_key = \"x\"\narn = \"arn:aws:sts::111122223333:assumed-role/github-deploy/run-1\"",
                "identities[0].access_key_id",
            ),
        ] {
            assert_eq!(DevConfig::parse(src).unwrap_err().key, key, "{src}");
        }
    }

    #[test]
    fn t34_team_id_list_and_deactivated_or_guest_users_are_read() {
        let c = DevConfig::parse(
            "[slack]\nteam_id = \"E0ORG0001, T0AAA0001,T0BBB0002\"\n\
             [[slack.users]]\nid = \"U0GONE001\"\nname = \"gone\"\ndeactivated = true\n\
             [[slack.users]]\nid = \"U0GUEST01\"\nname = \"guest\"\nguest = true\n\
             [[slack.users]]\nid = \"U0ALICE01\"\nname = \"alice\"\n",
        )
        .unwrap();
        assert_eq!(c.simulator_team_id(), "T0AAA0001");
        let flags: Vec<(bool, bool)> = c.slack.users.iter().map(|u| (u.deactivated, u.guest)).collect();
        assert_eq!(flags, [(true, false), (false, true), (false, false)]);
        assert_eq!(DevConfig::parse("").unwrap().simulator_team_id(), DEFAULT_TEAM_ID);
        for bad in ["E0ORG0001,E0ORG0002", "T0AAA0001,junk"] {
            let e = DevConfig::parse(&format!("[slack]\nteam_id = \"{bad}\"")).unwrap_err();
            assert_eq!(e.key, "slack.team_id", "{bad}");
        }
        let e = DevConfig::parse("[[slack.users]]\nid = \"U0X000001\"\nname = \"x\"\ndeactivated = \"yes\"");
        assert!(e.is_err());
    }

    #[test]
    fn duplicate_access_keys_are_refused() {
        let one = "[[identities]]\naccess_key_id = \"AKIAAAAAAAAAAAAAAAAA\"\nsecret_access_key = \"x\"\narn = \"arn:aws:iam::111122223333:user/x\"\n";
        let e = DevConfig::parse(&format!("{one}{one}")).unwrap_err();
        assert_eq!(e.key, "identities[1].access_key_id");
    }

    #[test]
    fn config_errors_never_show_secret_values() {
        let e = DevConfig::parse(
            "[[identities]]\naccess_key_id = \"AKIAAAAAAAAAAAAAAAAA\"\nsecret_access_key = \"has space\"\narn = \"x\"",
        )
        .unwrap_err();
        assert!(!e.to_string().contains("has space"), "{e}");
    }
}

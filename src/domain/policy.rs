//! Policies as code: the YAML schema, its validation, and the pure decision "which policy governs this
//! request". Deny by default: no matching policy, no request.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ids::{Action, Environment, PolicyName, Resource, SlackChannelId, SlackGroupId, SlackUserId};
use super::principal::{stems_overlap, Principal, PrincipalPattern};

mod overlap;
pub use overlap::{shadowing, CommonRequest, Shadowing};

/// Bounds on `max_ttl`.
pub const MIN_TTL_SECONDS: u64 = 60;
pub const MAX_TTL_SECONDS: u64 = 7 * 24 * 3600;
/// Bounds on `required_approvals` and `max_pending`.
pub const MAX_REQUIRED_APPROVALS: u32 = 10;
pub const MAX_PENDING_LIMIT: u32 = 1000;
pub const DEFAULT_MAX_PENDING: u32 = 5;
/// A policy file holds at most this many policies and this many bytes.
pub const MAX_POLICIES: usize = 10_000;
pub const MAX_POLICY_FILE_BYTES: usize = 4 * 1024 * 1024;

/// An action, environment or resource pattern: exact, `*`, or a prefix ending in `*`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pattern(String);

impl Pattern {
    fn parse(s: &str, check: impl Fn(&str) -> Result<(), String>) -> Result<Self, String> {
        if s == "*" {
            return Ok(Self(s.to_string()));
        }
        let stars = s.matches('*').count();
        match s.strip_suffix('*') {
            Some(stem) if stars == 1 => {
                // The stem must be a valid prefix of a valid value: check it with a filler appended.
                check(&format!("{stem}x")).map_err(|e| format!("{s:?}: {e}"))?;
                Ok(Self(s.to_string()))
            }
            None if stars == 0 => {
                check(s).map_err(|e| format!("{s:?}: {e}"))?;
                Ok(Self(s.to_string()))
            }
            _ => Err(format!("{s:?}: a wildcard is only allowed once, at the end")),
        }
    }

    pub fn matches(&self, v: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(stem) => v.starts_with(stem),
            None => self.0 == v,
        }
    }

    /// Whether some value could match both patterns (`*` overlaps everything).
    pub fn overlaps(&self, other: &Self) -> bool {
        stems_overlap(self.stem(), other.stem())
    }

    /// `(stem, is_prefix)`: `db:*` is `("db:", true)`, `deploy` is `("deploy", false)`.
    fn stem(&self) -> (&str, bool) {
        match self.0.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (&self.0, false),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A policy's `principals:` entries, parsed once when the policy is loaded (from the file or the store), so
/// matching a request compares fields instead of re-parsing ARNs. Serializes as the strings of the file, so
/// stored policies and [`Policy::version`] are unchanged.
///
/// An entry that does not parse (impossible for a validated file; only a stored item edited by hand or
/// written by another version) is kept for serialization and never matches, as before.
#[derive(Debug, Clone, Default)]
pub struct Principals {
    sources: Vec<String>,
    patterns: Vec<PrincipalPattern>,
}

impl Principals {
    pub fn new(sources: Vec<String>) -> Self {
        let patterns = sources.iter().filter_map(|p| PrincipalPattern::parse(p).ok()).collect();
        Self { sources, patterns }
    }

    /// The entries as written in the policy file.
    pub fn as_strs(&self) -> &[String] {
        &self.sources
    }

    pub fn matches(&self, who: &Principal) -> bool {
        self.patterns.iter().any(|p| p.matches(who))
    }
}

/// Equal when the entries are: the parsed patterns follow from them.
impl PartialEq for Principals {
    fn eq(&self, other: &Self) -> bool {
        self.sources == other.sources
    }
}

impl Eq for Principals {}

impl Serialize for Principals {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.sources.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Principals {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<String>::deserialize(d).map(Self::new)
    }
}

/// Who may vote.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Approvers {
    pub users: Vec<SlackUserId>,
    pub groups: Vec<SlackGroupId>,
}

/// A validated policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub name: PolicyName,
    pub description: String,
    pub principals: Principals,
    pub actions: Vec<Pattern>,
    pub environments: Vec<Pattern>,
    pub resources: Vec<Pattern>,
    pub approvers: Approvers,
    pub required_approvals: u32,
    pub owners: Vec<SlackUserId>,
    pub channel: SlackChannelId,
    /// Seconds.
    pub max_ttl: u64,
    pub require_reason: bool,
    pub max_pending: u32,
}

impl Policy {
    /// The policy's version: SHA-256 of its canonical JSON, first 16 hex digits. Stored on every request.
    pub fn version(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(bytes))[..16].to_string()
    }

    /// Cheapest checks first: string patterns, then the principal patterns (parsed once, at load).
    pub fn matches(&self, who: &Principal, action: &Action, env: &Environment, resource: Option<&Resource>) -> bool {
        self.actions.iter().any(|p| p.matches(action.as_str()))
            && self.environments.iter().any(|p| p.matches(env.as_str()))
            && match resource {
                Some(r) => self.resources.iter().any(|p| p.matches(r.as_str())),
                None => self.resources.iter().any(|p| p.as_str() == "*"),
            }
            && self.principals.matches(who)
    }

    /// May this Slack user vote on a request governed by this policy? `owners` are the owners of the
    /// requesting identity ([`Owners::of`]); `in_approver_group` says whether the user belongs to one of this
    /// policy's approver groups (looked up by the caller). Owners never may, whatever the groups say.
    pub fn approver_check(
        &self,
        user: &SlackUserId,
        owners: &Owners,
        in_approver_group: bool,
    ) -> Result<(), NotApprover> {
        if owners.contains(user) || self.owners.contains(user) {
            return Err(NotApprover::Owner);
        }
        if self.approvers.users.contains(user) || in_approver_group {
            return Ok(());
        }
        Err(NotApprover::NotListed)
    }

    /// Whether group membership can change [`Policy::approver_check`]'s answer for `user`: not for an owner
    /// (refused whatever the groups say, so a failing group lookup cannot turn an owner's refusal into
    /// "try again") nor for a listed approver.
    pub fn needs_group_lookup(&self, user: &SlackUserId, owners: &Owners) -> bool {
        !owners.contains(user) && !self.owners.contains(user) && !self.approvers.users.contains(user)
    }

    /// Sort key for "strictest wins": most approvals, then shortest max_ttl, then name.
    fn strictness_key(&self) -> (std::cmp::Reverse<u32>, u64, &str) {
        (std::cmp::Reverse(self.required_approvals), self.max_ttl, self.name.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotApprover {
    #[error("you own the identity that made this request, so you cannot approve it")]
    Owner,
    #[error("you are not an approver for this policy")]
    NotListed,
}

/// Picks the governing policy: deny by default; when several match, the strictest.
pub fn select<'a>(
    policies: impl IntoIterator<Item = &'a Policy>,
    who: &Principal,
    action: &Action,
    env: &Environment,
    resource: Option<&Resource>,
) -> Option<&'a Policy> {
    strictest(policies.into_iter().filter(|p| p.matches(who, action, env, resource)))
}

/// The one "strictest wins" ordering: [`select`] applies it to the matching policies, the shadowing lint
/// to a pair that can match the same request.
fn strictest<'a>(policies: impl IntoIterator<Item = &'a Policy>) -> Option<&'a Policy> {
    policies.into_iter().min_by(|a, b| a.strictness_key().cmp(&b.strictness_key()))
}

/// The owners of a requesting identity (row 30): everyone listed in `owners` of **any** policy whose
/// `principals` match it, whatever that policy's actions, environments or resources. Owners belong to the
/// identity, not to one policy: otherwise a broader policy for the same principal (a "platform" policy that
/// lists the owner as an approver) would let the owner approve their own pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owners(BTreeSet<SlackUserId>);

impl Owners {
    pub fn of<'a>(policies: impl IntoIterator<Item = &'a Policy>, who: &Principal) -> Self {
        Self(
            policies
                .into_iter()
                .filter(|p| !p.owners.is_empty() && p.principals.matches(who))
                .flat_map(|p| p.owners.iter().cloned())
                .collect(),
        )
    }

    pub fn contains(&self, user: &SlackUserId) -> bool {
        self.0.contains(user)
    }

    pub fn iter(&self) -> impl Iterator<Item = &SlackUserId> {
        self.0.iter()
    }
}

/// Parses `1h`, `30m`, `90s`, `2h30m`, `1d`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(format!("{s:?} is not a duration like 90s, 30m, 1h or 2h30m")),
        };
        let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration like 90s, 30m, 1h or 2h30m"))?;
        total = total.saturating_add(n.saturating_mul(unit));
        num.clear();
    }
    if !num.is_empty() {
        return Err(format!("{s:?} is missing a unit after {num} (s, m, h or d)"));
    }
    Ok(total)
}

pub fn format_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    for (n, u) in [(d, "d"), (h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{u}"));
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

// ---- the YAML schema ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    version: u32,
    #[serde(default)]
    policies: Vec<RawPolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApprovers {
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: String,
    #[serde(default)]
    description: String,
    principals: Vec<String>,
    actions: Vec<String>,
    environments: Vec<String>,
    resources: Option<Vec<String>>,
    approvers: Option<RawApprovers>,
    required_approvals: u32,
    #[serde(default)]
    owners: Vec<String>,
    channel: String,
    max_ttl: serde_yaml::Value,
    #[serde(default)]
    require_reason: bool,
    max_pending: Option<u32>,
}

/// One problem in a policy file: where (policy, field, line) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub policy: Option<String>,
    pub field: Option<String>,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = self.line {
            write!(f, "line {l}: ")?;
        }
        match (&self.policy, &self.field) {
            (Some(p), Some(fld)) => write!(f, "policy {p:?}, field {fld}: ")?,
            (Some(p), None) => write!(f, "policy {p:?}: ")?,
            (None, Some(fld)) => write!(f, "field {fld}: ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)
    }
}

/// All problems found in a policy file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Finds the 1-based line where `policies[idx]` starts, for errors found after parsing.
fn policy_lines(src: &str) -> Vec<usize> {
    // Policies are list items directly under `policies:`; record the line of each `- ` at that indent.
    let mut lines = Vec::new();
    let mut in_policies = false;
    let mut indent: Option<usize> = None;
    for (i, l) in src.lines().enumerate() {
        let trimmed = l.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let ind = l.len() - trimmed.len();
        if ind == 0 {
            in_policies = trimmed.starts_with("policies:");
            continue;
        }
        if in_policies && trimmed.starts_with("- ") && indent.is_none_or(|x| x == ind) {
            indent = Some(ind);
            lines.push(i + 1);
        }
    }
    lines
}

/// Parses and validates a policy file. Every problem is reported, not just the first.
pub fn parse_policies(src: &str) -> Result<Vec<Policy>, PolicyErrors> {
    if src.len() > MAX_POLICY_FILE_BYTES {
        return Err(PolicyErrors(vec![PolicyError {
            policy: None,
            field: None,
            line: None,
            message: format!("file is larger than {MAX_POLICY_FILE_BYTES} bytes"),
        }]));
    }
    let raw: RawFile = match serde_yaml::from_str(src) {
        Ok(r) => r,
        Err(e) => return Err(PolicyErrors(vec![structural_error(src, &e)])),
    };
    let mut errors = Vec::new();
    let file_err =
        |field: &str, message: String| PolicyError { policy: None, field: Some(field.into()), line: None, message };
    if raw.version != 1 {
        errors.push(file_err("version", format!("unsupported version {}; expected 1", raw.version)));
    }
    if raw.policies.len() > MAX_POLICIES {
        errors.push(file_err("policies", format!("at most {MAX_POLICIES} policies per file")));
    }
    let lines = policy_lines(src);
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, rp) in raw.policies.into_iter().enumerate() {
        let label = if rp.name.is_empty() { format!("#{}", i + 1) } else { rp.name.clone() };
        let line = lines.get(i).copied();
        let mut errs = Vec::new();
        let policy = validate_policy(rp, &mut |field: &str, message: String| {
            errs.push(PolicyError { policy: Some(label.clone()), field: Some(field.to_string()), line, message });
        });
        if let Some(p) = &policy {
            if !seen.insert(p.name.clone()) {
                errs.push(PolicyError {
                    policy: Some(label.clone()),
                    field: Some("name".into()),
                    line,
                    message: "duplicate policy name".into(),
                });
            }
        }
        match policy {
            Some(p) if errs.is_empty() => out.push(p),
            _ => errors.extend(errs),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(PolicyErrors(errors))
    }
}

fn structural_error(src: &str, e: &serde_yaml::Error) -> PolicyError {
    let line = e.location().map(|l| l.line());
    let msg = e.to_string();
    // serde_yaml reports the path as `policies[N].field: …`; name the policy when we can.
    let mut policy = None;
    let mut field = None;
    if let Some(rest) = msg.strip_prefix("policies[") {
        if let Some((idx, tail)) = rest.split_once(']') {
            if let Ok(i) = idx.parse::<usize>() {
                let names: Option<String> = serde_yaml::from_str::<serde_yaml::Value>(src)
                    .ok()
                    .and_then(|v| v.get("policies")?.get(i)?.get("name")?.as_str().map(str::to_string));
                policy = Some(names.unwrap_or_else(|| format!("#{}", i + 1)));
                if let Some(f) = tail.strip_prefix('.') {
                    field = f.split(':').next().map(str::to_string);
                }
            }
        }
    }
    let message = match msg.split_once(": ") {
        Some((path, m)) if path.starts_with("policies") || !path.contains(' ') => m.to_string(),
        _ => msg.clone(),
    };
    let message = match message.rsplit_once(" at line ") {
        Some((m, _)) => m.to_string(),
        None => message,
    };
    PolicyError { policy, field, line, message }
}

fn validate_policy(rp: RawPolicy, err: &mut dyn FnMut(&str, String)) -> Option<Policy> {
    let name = PolicyName::parse(&rp.name).map_err(|e| err("name", e.problem)).ok();
    if rp.principals.is_empty() {
        err("principals", "at least one principal ARN is required".into());
    }
    for p in &rp.principals {
        if let Err(e) = PrincipalPattern::parse(p) {
            err("principals", format!("{p:?}: {e}"));
        }
    }
    let mut patterns = |field: &str, values: &[String], check: fn(&str) -> Result<(), String>| -> Vec<Pattern> {
        if values.is_empty() {
            err(field, "at least one entry is required".into());
        }
        values.iter().filter_map(|v| Pattern::parse(v, check).map_err(|e| err(field, e)).ok()).collect()
    };
    let actions = patterns("actions", &rp.actions, |s| Action::parse(s).map(|_| ()).map_err(|e| e.problem));
    let environments =
        patterns("environments", &rp.environments, |s| Environment::parse(s).map(|_| ()).map_err(|e| e.problem));
    let resources = patterns("resources", rp.resources.as_deref().unwrap_or(&["*".to_string()]), |s| {
        Resource::parse(s).map(|_| ()).map_err(|e| e.problem)
    });
    let raw_approvers = rp.approvers.unwrap_or(RawApprovers { users: vec![], groups: vec![] });
    let users: Vec<SlackUserId> = raw_approvers
        .users
        .iter()
        .filter_map(|u| SlackUserId::parse(u).map_err(|e| err("approvers.users", format!("{u:?}: {e}"))).ok())
        .collect();
    let groups: Vec<SlackGroupId> = raw_approvers
        .groups
        .iter()
        .filter_map(|g| SlackGroupId::parse(g).map_err(|e| err("approvers.groups", format!("{g:?}: {e}"))).ok())
        .collect();
    let owners: Vec<SlackUserId> = rp
        .owners
        .iter()
        .filter_map(|u| SlackUserId::parse(u).map_err(|e| err("owners", format!("{u:?}: {e}"))).ok())
        .collect();
    for o in &owners {
        if users.contains(o) {
            err(
                "approvers.users",
                format!("{o} is also an owner: owners can never approve, so remove them from approvers"),
            );
        }
    }
    if rp.required_approvals > MAX_REQUIRED_APPROVALS {
        err("required_approvals", format!("must be 0 to {MAX_REQUIRED_APPROVALS}, got {}", rp.required_approvals));
    }
    if rp.required_approvals > 0
        && users.is_empty()
        && groups.is_empty()
        && raw_approvers.users.is_empty()
        && raw_approvers.groups.is_empty()
    {
        err("approvers", "required_approvals > 0 but no approvers are listed: nobody could ever approve".into());
    }
    if groups.is_empty()
        && raw_approvers.groups.is_empty()
        && !users.is_empty()
        && (rp.required_approvals as usize) > users.len()
    {
        err(
            "required_approvals",
            format!("{} approvals required but only {} approver(s) listed", rp.required_approvals, users.len()),
        );
    }
    let channel = SlackChannelId::parse(&rp.channel).map_err(|e| err("channel", e.to_string())).ok();
    let max_ttl = match &rp.max_ttl {
        serde_yaml::Value::String(s) => parse_duration(s).map_err(|e| err("max_ttl", e)).ok(),
        serde_yaml::Value::Number(n) => n.as_u64().or_else(|| {
            err("max_ttl", format!("{n} is not a whole number of seconds"));
            None
        }),
        _ => {
            err("max_ttl", "must be a duration such as 30m or 1h".into());
            None
        }
    };
    if let Some(t) = max_ttl {
        if !(MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(&t) {
            err("max_ttl", format!("must be between 1m and 7d, got {}", format_duration(t)));
        }
    }
    let max_pending = rp.max_pending.unwrap_or(DEFAULT_MAX_PENDING);
    if !(1..=MAX_PENDING_LIMIT).contains(&max_pending) {
        err("max_pending", format!("must be 1 to {MAX_PENDING_LIMIT}, got {max_pending}"));
    }
    if rp.description.chars().count() > 500 {
        err("description", "must be at most 500 characters".into());
    }
    Some(Policy {
        name: name?,
        description: rp.description,
        principals: Principals::new(rp.principals),
        actions,
        environments,
        resources,
        approvers: Approvers { users, groups },
        required_approvals: rp.required_approvals,
        owners,
        channel: channel?,
        max_ttl: max_ttl?,
        require_reason: rp.require_reason,
        max_pending,
    })
}

/// Field-by-field differences between two versions of a policy, for `policy diff` and audit details.
pub fn diff_fields(old: &Policy, new: &Policy) -> BTreeMap<String, (String, String)> {
    let a = serde_json::to_value(old).unwrap_or_default();
    let b = serde_json::to_value(new).unwrap_or_default();
    let mut out = BTreeMap::new();
    if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
        for (k, va) in a {
            let vb = b.get(k).cloned().unwrap_or_default();
            if *va != vb {
                out.insert(k.clone(), (va.to_string(), vb.to_string()));
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests;

//! Policies as code: the validated model and the pure decision "which policy governs this request". Deny
//! by default: no matching policy, no request. The file format (YAML schema, limits, errors) is [`file`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::credentials::CredentialRule;
use super::ids::{Action, Environment, PolicyName, Resource, SlackChannelId, SlackGroupId, SlackUserId};
use super::principal::{stems_overlap, Principal, PrincipalPattern};

mod cases;
mod explain;
mod file;
mod overlap;
pub use cases::{parse_cases, run_case, Case, CaseError, CaseResult, Expect, MAX_CASES, MAX_CASES_FILE_BYTES};
pub use explain::{evaluate, policies_for, why_stricter, Evaluation, Outcome};
pub(crate) use file::yaml_options;
pub use file::{parse_policies, PolicyError, PolicyErrors};
pub use overlap::{shadowing, CommonRequest, Shadowing};

/// Bounds on `max_ttl`.
pub const MIN_TTL_SECONDS: u64 = 60;
pub const MAX_TTL_SECONDS: u64 = 7 * 24 * 3600;
/// Bounds on `required_approvals` and `max_pending`.
pub const MAX_REQUIRED_APPROVALS: u32 = 10;
pub const MAX_PENDING_LIMIT: u32 = 1000;
pub const DEFAULT_MAX_PENDING: u32 = 5;
/// Bounds and default of `use_within`: how long after approval the approval may be redeemed (row 35).
pub const MIN_USE_WITHIN_SECONDS: u64 = 60;
pub const MAX_USE_WITHIN_SECONDS: u64 = 24 * 3600;
pub const DEFAULT_USE_WITHIN_SECONDS: u64 = 15 * 60;
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
    /// Seconds after approval during which the requester may redeem it, once (row 35). Left out of the
    /// canonical JSON at its default, so policies written before it existed keep their version.
    #[serde(default = "default_use_within", skip_serializing_if = "is_default_use_within")]
    pub use_within: u64,
    /// Redemption must come from the session that created the request, not only the same principal.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bind_session: bool,
    /// Row 40: `temporary` refuses requests signed with a long-term IAM user key ([`super::credentials::check_credentials`]).
    #[serde(default, skip_serializing_if = "CredentialRule::is_any")]
    pub credentials: CredentialRule,
    /// Row 41: lets its principals break the glass ([`super::break_glass`]); `None` refuses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<super::break_glass::BreakGlassPolicy>,
    /// Row 42: the principals this policy matches may start reviewer drills under it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drills: bool,
}

fn default_use_within() -> u64 {
    DEFAULT_USE_WITHIN_SECONDS
}

fn is_default_use_within(s: &u64) -> bool {
    *s == DEFAULT_USE_WITHIN_SECONDS
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
    policies.into_iter().min_by(|a, b| stricter_first(a, b))
}

/// The strictest-wins order as a comparison: `Less` when `a` would govern rather than `b`. [`select`]
/// picks the least; `policy explain` lists every match in this order.
pub fn stricter_first(a: &Policy, b: &Policy) -> std::cmp::Ordering {
    a.strictness_key().cmp(&b.strictness_key())
}

/// The policies whose `principals` match `who`, whatever their actions, environments and resources: what
/// [`Owners::of`] unions and what `GET /v1/whoami` lists.
pub fn for_principal<'a, 'w, I>(policies: I, who: &'w Principal) -> impl Iterator<Item = &'a Policy> + 'w
where
    I: IntoIterator<Item = &'a Policy>,
    I::IntoIter: 'w,
    'a: 'w,
{
    policies.into_iter().filter(move |p| p.principals.matches(who))
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
            for_principal(policies, who)
                .filter(|p| !p.owners.is_empty())
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

/// Field-by-field differences between two versions of a policy, for `policy diff` and audit details.
pub fn diff_fields(old: &Policy, new: &Policy) -> BTreeMap<String, (String, String)> {
    let a = serde_json::to_value(old).unwrap_or_default();
    let b = serde_json::to_value(new).unwrap_or_default();
    let mut out = BTreeMap::new();
    if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
        // Both sides' keys: a field left out at its default (use_within, bind_session) on one side only
        // is still a change.
        let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for k in keys {
            let (va, vb) = (a.get(k).cloned().unwrap_or_default(), b.get(k).cloned().unwrap_or_default());
            if va != vb {
                out.insert(k.clone(), (va.to_string(), vb.to_string()));
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests;

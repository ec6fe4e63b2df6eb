//! The policy file: its YAML schema, the limits a file is read under, validation into [`Policy`] values,
//! and errors that name the policy, the field and the line. Nothing here decides anything about a request.

use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;

use super::*;
use crate::domain::break_glass::BreakGlassPolicy;
use crate::domain::credentials::CredentialRule;
use crate::domain::ids::{Action, Environment, PolicyName, Resource, SlackChannelId, SlackGroupId, SlackUserId};
use crate::domain::principal::PrincipalPattern;

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
    max_ttl: RawTtl,
    #[serde(default)]
    require_reason: bool,
    max_pending: Option<u32>,
    use_within: Option<RawTtl>,
    #[serde(default)]
    bind_session: bool,
    credentials: Option<String>,
    break_glass: Option<RawBreakGlass>,
    #[serde(default)]
    drills: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBreakGlass {
    channel: String,
    notify: Option<RawApprovers>,
    max_per_day: Option<u32>,
    review_within: Option<RawTtl>,
}

/// `max_ttl` as written: a duration string (`1h`), a number of seconds, or something else that validation
/// reports as a field error. Read through a visitor rather than an untagged enum: serde buffers an untagged
/// enum's input whole, so an aliased tree there would be copied before being refused.
#[derive(Debug)]
enum RawTtl {
    Text(String),
    Seconds(u64),
    /// A negative or fractional number, as written.
    NotWhole(String),
    Other,
}

impl<'de> Deserialize<'de> for RawTtl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawTtl;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 30m or 1h, or a number of seconds")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawTtl, E> {
                Ok(RawTtl::Text(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawTtl, E> {
                Ok(RawTtl::Seconds(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawTtl, E> {
                Ok(u64::try_from(v).map_or_else(|_| RawTtl::NotWhole(v.to_string()), RawTtl::Seconds))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<RawTtl, E> {
                Ok(RawTtl::NotWhole(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<RawTtl, E> {
                Ok(RawTtl::Other)
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<RawTtl, E> {
                Ok(RawTtl::Other)
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<RawTtl, E> {
                Ok(RawTtl::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawTtl, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(RawTtl::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<RawTtl, A::Error> {
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(RawTtl::Other)
            }
        }
        d.deserialize_any(V)
    }
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

/// The 1-based line of each list item directly under the top-level `key` (`policies:`, `cases:`): where
/// `policies[idx]` starts, for errors found after parsing.
pub(super) fn item_lines(src: &str, key: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    let mut in_list = false;
    let mut indent: Option<usize> = None;
    for (i, l) in src.lines().enumerate() {
        let trimmed = l.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let ind = l.len() - trimmed.len();
        if ind == 0 {
            in_list = trimmed.starts_with(key);
            continue;
        }
        if in_list && trimmed.starts_with("- ") && indent.is_none_or(|x| x == ind) {
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
    let raw: RawFile = match serde_saphyr::from_str_with_options(src, yaml_options()) {
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
    let lines = item_lines(src, "policies:");
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

/// Limits for reading a policy file. Policy files are small and come from whoever can open a policy PR, so
/// the budget follows this module's own caps instead of serde-saphyr's defaults (64 MiB of text, 255 nested
/// flow collections). Text and nodes replayed through aliases count against the same budget, which is what
/// refuses an alias bomb ("billion laughs") before it is built:
/// - text: at most `MAX_POLICY_FILE_BYTES` in all, so aliases cannot grow a file past the size we accept;
/// - nodes: room for `MAX_POLICIES` policies of ~100 nodes each (a realistic policy has ~30), events twice that;
/// - depth: the schema needs 5 levels; 16 leaves room for flow style and nothing for a nesting attack;
/// - alias replays: 20 events per policy (a shared principal list or approvers block is 3 to 10), not 1M;
/// - one document. The alias/anchor ratio heuristic is off: one `&anchor` reused by every policy is a
///   legitimate file, and the caps above already bound what aliases can expand to.
///
/// And the YAML of serde_yaml 0.9, which the files were written for: only `true`/`false` are booleans (so
/// `require_reason: yes` is an error, not a yes); an empty or `~` string field is that text (so
/// `channel: #approvals`, a comment, is reported as a bad channel id); no `<<` merge keys (a policy must say
/// its own `required_approvals` where the reviewer reads it). Stricter than serde_yaml: application tags
/// (`!disabled`) are refused rather than silently dropped, since they mean nothing here.
pub(crate) fn yaml_options() -> serde_saphyr::Options {
    const MAX_NODES: usize = 100 * MAX_POLICIES;
    const MAX_REPLAYED_EVENTS: usize = 20 * MAX_POLICIES;
    serde_saphyr::options! {
        alias_limits: serde_saphyr::alias_limits! { max_total_replayed_events: MAX_REPLAYED_EVENTS },
        budget: serde_saphyr::budget! {
            max_total_scalar_bytes: MAX_POLICY_FILE_BYTES,
            max_nodes: MAX_NODES,
            max_events: 2 * MAX_NODES,
            max_depth: 16,
            flow_nesting_limit: 16,
            max_documents: 1,
            enforce_alias_anchor_ratio: false,
        },
        strict_booleans: true,
        null_as_string: true,
        merge_keys: serde_saphyr::MergeKeyPolicy::Error,
        reject_unsupported_tags: true,
        with_snippet: false,
    }
}

/// Turns a deserialization error into a [`PolicyError`]: the line from the error's location, the message
/// without it (the line is its own field), and the policy and field found by [`locate`].
fn structural_error(src: &str, e: &serde_saphyr::Error) -> PolicyError {
    let location = e.location().filter(|l| l.line() > 0);
    let mut line = location.and_then(|l| usize::try_from(l.line()).ok());
    let (mut policy, mut field) = (None, None);
    // A file over the budget would only trip it again: the line is enough.
    let over_budget = matches!(
        original(e),
        serde_saphyr::Error::Budget { .. }
            | serde_saphyr::Error::AliasReplayLimitExceeded { .. }
            | serde_saphyr::Error::AliasExpansionLimitExceeded { .. }
            | serde_saphyr::Error::AliasReplayStackDepthExceeded { .. }
    );
    if let Some(path) = location.filter(|_| !over_budget).and_then(|l| locate(src, (l.line(), l.column()))) {
        if let Some(at) = path.policy {
            policy = Some(at.name.unwrap_or_else(|| format!("#{}", at.index + 1)));
            // serde-saphyr puts a missing field at the policy's last key; the policy's first line is where
            // the reader should look, as before.
            if matches!(original(e), serde_saphyr::Error::SerdeMissingField { .. }) {
                line = at.line;
            }
        }
        field = path.field;
    } else if let Some(index) = line.and_then(|l| policy_at_line(src, l)) {
        // No tree (a syntax error, or a file over the budget): the policy by its position, as serde_yaml did.
        policy = Some(format!("#{}", index + 1));
    }
    // The wording for people who write the files ("duplicate mapping key `x` is not allowed here"), not the
    // developer wording ("set DuplicateKeyPolicy in Options if acceptable").
    let message = e.render_with_formatter(&serde_saphyr::UserMessageFormatter.with_localizer(&NoLocations));
    PolicyError { policy, field, line, message }
}

/// The error under the alias wrappers that say where an aliased value was used and defined.
fn original(mut e: &serde_saphyr::Error) -> &serde_saphyr::Error {
    while let serde_saphyr::Error::AliasError { error, .. } = e {
        e = error;
    }
    e
}

/// serde-saphyr's messages without "at line X, column Y" suffixes: [`PolicyError`] carries the
/// line. Rendering through it still escapes control characters in the message.
pub(super) struct NoLocations;

impl serde_saphyr::Localizer for NoLocations {
    fn attach_location<'a>(
        &self,
        base: std::borrow::Cow<'a, str>,
        _: serde_saphyr::Location,
    ) -> std::borrow::Cow<'a, str> {
        base
    }
    fn alias_defined_at(&self, _: serde_saphyr::Location) -> String {
        String::new()
    }
    fn alias_used_at(&self, _: serde_saphyr::Location) -> String {
        String::new()
    }
}

/// Where a structural error is: which policy (`policies[N]`) and which field inside it, or which top-level
/// field. serde-saphyr errors carry a location but not serde_yaml's `policies[N].field` path, so the path is
/// rebuilt by reading the file again as a plain tree, with the same limits, and walking down to the node
/// at the error's position.
struct ErrorPath {
    policy: Option<PolicyAt>,
    field: Option<String>,
}

struct PolicyAt {
    index: usize,
    name: Option<String>,
    line: Option<usize>,
}

/// A YAML node that remembers where its children start. Strings are kept (a policy's name); other
/// scalars are not needed.
enum Node {
    Str(String),
    Seq(Vec<serde_saphyr::Spanned<Node>>),
    Map(Vec<(serde_saphyr::Spanned<Node>, serde_saphyr::Spanned<Node>)>),
    Other,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Other)
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Other)
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Other)
            }
            fn visit_i128<E: serde::de::Error>(self, _: i128) -> Result<Node, E> {
                Ok(Node::Other)
            }
            fn visit_u128<E: serde::de::Error>(self, _: u128) -> Result<Node, E> {
                Ok(Node::Other)
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Other)
            }
            fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<Node, E> {
                Ok(Node::Other)
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Node, E> {
                Ok(Node::Other)
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Node, E> {
                Ok(Node::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Node::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// The file as a [`Node`] tree, with the same limits as the typed read but none of its strictness: the tree
/// must reach whatever the typed read refused (a duplicate key, a tag, a merge key).
fn read_tree(src: &str) -> Option<Node> {
    let mut options = yaml_options();
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
    options.merge_keys = serde_saphyr::MergeKeyPolicy::AsOrdinary;
    options.reject_unsupported_tags = false;
    serde_saphyr::from_str_with_options(src, options).ok()
}

/// Which policy a line falls in, from the layout alone ([`item_lines`]): for errors in files that do not
/// read as YAML at all.
fn policy_at_line(src: &str, line: usize) -> Option<usize> {
    let top = src
        .lines()
        .take(line)
        .filter(|l| !l.is_empty() && !l.starts_with(char::is_whitespace) && !l.starts_with('#'))
        .last()?;
    if !top.starts_with("policies:") {
        return None;
    }
    item_lines(src, "policies:").iter().rposition(|&start| start <= line)
}

/// `(line, column)`, 1-based, for ordering positions.
type Pos = (u64, u64);

fn pos(l: &serde_saphyr::Location) -> Pos {
    (l.line(), l.column())
}

/// Rebuilds the path to the node at `at`: in a mapping, the last key that starts at or before `at` (and stop
/// there if `at` is that key itself: the error is about the key, like an unknown field); in a sequence, the
/// last item that starts at or before `at`. `None` when the file cannot be read as a tree at all.
///
/// A typed read can fail before a syntax error further down that the tree cannot get past, so when the
/// whole file does not read as a tree, the lines up to the error are tried.
fn locate(src: &str, at: Pos) -> Option<ErrorPath> {
    let upto_error: usize = src.split_inclusive('\n').take(usize::try_from(at.0).ok()?).map(str::len).sum();
    let root = read_tree(src).or_else(|| read_tree(&src[..upto_error]))?;
    let mut segments: Vec<String> = Vec::new();
    let mut policy = None;
    let mut node = &root;
    loop {
        match node {
            Node::Map(entries) => {
                let Some((key, value)) = entries.iter().rev().find(|(k, _)| pos(&k.referenced) <= at) else {
                    break;
                };
                let Node::Str(name) = &key.value else { break };
                if pos(&key.referenced) == at {
                    break;
                }
                segments.push(name.clone());
                node = &value.value;
            }
            Node::Seq(items) => {
                let Some((index, item)) = items.iter().enumerate().rev().find(|(_, i)| pos(&i.referenced) <= at) else {
                    break;
                };
                if segments.len() == 1 && segments[0] == "policies" && policy.is_none() {
                    let name = match &item.value {
                        Node::Map(entries) => entries.iter().find_map(|(k, v)| match (&k.value, &v.value) {
                            (Node::Str(k), Node::Str(v)) if k == "name" => Some(v.clone()),
                            _ => None,
                        }),
                        _ => None,
                    };
                    let line = usize::try_from(item.referenced.line()).ok().filter(|l| *l > 0);
                    policy = Some(PolicyAt { index, name, line });
                    segments.clear();
                } else if let Some(last) = segments.last_mut() {
                    last.push_str(&format!("[{index}]"));
                }
                node = &item.value;
            }
            Node::Str(_) | Node::Other => break,
        }
    }
    let field = (!segments.is_empty()).then(|| segments.join("."));
    Some(ErrorPath { policy, field })
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
    let mut duration = |field: &str, raw: &RawTtl, bounds: std::ops::RangeInclusive<u64>, range: &str| {
        let seconds = match raw {
            RawTtl::Text(s) => parse_duration(s).map_err(|e| err(field, e)).ok(),
            RawTtl::Seconds(n) => Some(*n),
            RawTtl::NotWhole(n) => {
                err(field, format!("{n} is not a whole number of seconds"));
                None
            }
            RawTtl::Other => {
                err(field, "must be a duration such as 30m or 1h".into());
                None
            }
        };
        match seconds {
            Some(t) if !bounds.contains(&t) => {
                err(field, format!("must be between {range}, got {}", format_duration(t)));
                None
            }
            t => t,
        }
    };
    let max_ttl = duration("max_ttl", &rp.max_ttl, MIN_TTL_SECONDS..=MAX_TTL_SECONDS, "1m and 7d");
    let use_within = match &rp.use_within {
        None => Some(DEFAULT_USE_WITHIN_SECONDS),
        Some(raw) => duration("use_within", raw, MIN_USE_WITHIN_SECONDS..=MAX_USE_WITHIN_SECONDS, "1m and 24h"),
    };
    let review_within = {
        use crate::domain::break_glass::MIN_REVIEW_WITHIN_SECONDS as MIN;
        use crate::domain::break_glass::{DEFAULT_REVIEW_WITHIN_SECONDS, MAX_REVIEW_WITHIN_SECONDS as MAX};
        match rp.break_glass.as_ref().and_then(|b| b.review_within.as_ref()) {
            None => Some(DEFAULT_REVIEW_WITHIN_SECONDS),
            Some(r) => duration("break_glass.review_within", r, MIN..=MAX, "5m and 7d"),
        }
    };
    let max_pending = rp.max_pending.unwrap_or(DEFAULT_MAX_PENDING);
    if !(1..=MAX_PENDING_LIMIT).contains(&max_pending) {
        err("max_pending", format!("must be 1 to {MAX_PENDING_LIMIT}, got {max_pending}"));
    }
    let credentials = match rp.credentials.as_deref().map(CredentialRule::parse) {
        None => Some(CredentialRule::Any),
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => {
            err("credentials", e);
            None
        }
    };
    let break_glass = match &rp.break_glass {
        None => Some(None),
        Some(raw) => {
            let (policy, problems) = break_glass_of(raw, review_within, &rp.channel);
            for (field, problem) in problems {
                err(field, problem);
            }
            policy.map(Some)
        }
    };
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
        use_within: use_within?,
        bind_session: rp.bind_session,
        credentials: credentials?,
        break_glass: break_glass?,
        drills: rp.drills,
    })
}

/// A policy's `break_glass` section, validated (row 41), with `review_within` already read (`None`: it was
/// refused) and the policy's own `channel`. Returns the section when nothing is wrong, and every problem found.
fn break_glass_of(
    raw: &RawBreakGlass,
    review_within: Option<u64>,
    policy_channel: &str,
) -> (Option<BreakGlassPolicy>, Vec<(&'static str, String)>) {
    use crate::domain::break_glass::{Notify, DEFAULT_MAX_PER_DAY, MAX_MAX_PER_DAY};
    let mut problems = Vec::new();
    if raw.channel == policy_channel {
        problems.push(("break_glass.channel", "must differ from channel: every break-glass is posted to both".into()));
    }
    let channel =
        SlackChannelId::parse(&raw.channel).map_err(|e| problems.push(("break_glass.channel", e.to_string()))).ok();
    let (raw_users, raw_groups) = raw.notify.as_ref().map_or((&[][..], &[][..]), |n| (&n.users[..], &n.groups[..]));
    let users: Vec<SlackUserId> = raw_users
        .iter()
        .filter_map(|u| {
            SlackUserId::parse(u).map_err(|e| problems.push(("break_glass.notify.users", format!("{u:?}: {e}")))).ok()
        })
        .collect();
    let groups: Vec<SlackGroupId> = raw_groups
        .iter()
        .filter_map(|g| {
            SlackGroupId::parse(g).map_err(|e| problems.push(("break_glass.notify.groups", format!("{g:?}: {e}")))).ok()
        })
        .collect();
    let max_per_day = raw.max_per_day.unwrap_or(DEFAULT_MAX_PER_DAY);
    if !(1..=MAX_MAX_PER_DAY).contains(&max_per_day) {
        problems.push(("break_glass.max_per_day", format!("must be 1 to {MAX_MAX_PER_DAY}, got {max_per_day}")));
    }
    let policy = match (channel, review_within) {
        (Some(channel), Some(review_within)) if problems.is_empty() => {
            Some(BreakGlassPolicy { channel, notify: Notify { users, groups }, max_per_day, review_within })
        }
        _ => None,
    };
    (policy, problems)
}

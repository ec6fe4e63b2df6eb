//! Reviewer drills (threat row 42): a deliberately suspicious request, sent by a principal a `drills: true`
//! policy matches, that reviewers see as any other. It is marked only in the store and the audit trail; it
//! can never be redeemed; once decided or expired its message reveals it, with the signs that should have
//! raised suspicion. An approved drill is a failed drill.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::audit::{AuditEvent, AuditKind};
use super::ids::SlackUserId;
use super::policy::Policy;
use super::text::check_visible;
use super::time::Timestamp;

/// A scenarios file is at most this large, and holds at most [`MAX_SCENARIOS`].
pub const MAX_SCENARIO_FILE_BYTES: usize = 64 * 1024;
pub const MAX_SCENARIOS: usize = 50;

/// At most this many signs per drill, each at most [`MAX_SIGN_CHARS`] characters.
pub const MAX_SIGNS: usize = 10;
pub const MAX_SIGN_CHARS: usize = 300;
/// A scenario name: `[a-z0-9][a-z0-9._-]{0,63}`.
pub const MAX_SCENARIO_CHARS: usize = 64;

/// What a drill request carries beyond a normal one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drill {
    pub scenario: String,
    /// What should have raised suspicion, revealed once the drill is over.
    pub signs: Vec<String>,
}

impl Drill {
    /// Validates a drill as the API receives it; the error names the problem (the field is `drill`).
    pub fn parse(scenario: &str, signs: &[String]) -> Result<Self, String> {
        let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-');
        let first_ok = scenario.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !first_ok || scenario.chars().count() > MAX_SCENARIO_CHARS || !scenario.chars().all(ok_char) {
            return Err(format!(
                "drill.scenario must be 1 to {MAX_SCENARIO_CHARS} characters [a-z0-9._-], starting with a letter or digit"
            ));
        }
        if signs.is_empty() || signs.len() > MAX_SIGNS {
            return Err(format!("drill.signs must list 1 to {MAX_SIGNS} signs of suspicion"));
        }
        let mut out = Vec::with_capacity(signs.len());
        for s in signs {
            let s = s.trim();
            if s.is_empty() || s.chars().count() > MAX_SIGN_CHARS || s.chars().any(char::is_control) {
                return Err(format!("drill.signs: each must be 1 to {MAX_SIGN_CHARS} printable characters"));
            }
            check_visible(s).map_err(|h| format!("drill.signs: {h}"))?;
            out.push(s.to_string());
        }
        Ok(Self { scenario: scenario.to_string(), signs: out })
    }
}

/// One scenario of a drill scenarios file (`infra/drill-scenarios.yaml`): what the drill request says, and
/// what about it should raise suspicion.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub reason: String,
    #[serde(default)]
    pub resource: Option<String>,
    #[serde(default)]
    pub details: BTreeMap<String, String>,
    pub signs: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    version: u32,
    scenarios: Vec<Scenario>,
}

/// Parses a scenarios file: `version: 1`, then `scenarios:` (unique names, each a valid [`Drill`]).
pub fn parse_scenarios(src: &str) -> Result<Vec<Scenario>, String> {
    if src.len() > MAX_SCENARIO_FILE_BYTES {
        return Err(format!("the scenarios file is larger than {MAX_SCENARIO_FILE_BYTES} bytes"));
    }
    let f: ScenarioFile =
        serde_saphyr::from_str_with_options(src, super::policy::yaml_options()).map_err(|e| e.to_string())?;
    if f.version != 1 {
        return Err(format!("version: {} is not supported (only 1)", f.version));
    }
    if f.scenarios.is_empty() || f.scenarios.len() > MAX_SCENARIOS {
        return Err(format!("scenarios: 1 to {MAX_SCENARIOS} are required"));
    }
    let mut names = BTreeSet::new();
    for s in &f.scenarios {
        Drill::parse(&s.name, &s.signs).map_err(|e| format!("scenario {:?}: {e}", s.name))?;
        if !names.insert(s.name.as_str()) {
            return Err(format!("scenario {:?} is listed twice", s.name));
        }
    }
    Ok(f.scenarios)
}

/// How one reviewer did on the drills of a period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReviewerResult {
    pub user: String,
    /// Approved a drill: each one is a failed drill.
    pub approved: u32,
    pub denied: u32,
    /// Was a listed approver of a drill's policy and did not vote on it (group members are counted only when
    /// they voted: groups cannot be expanded from the audit trail).
    pub left: u32,
}

/// Every drill of a period and how each reviewer did (`countersign drill results`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DrillResults {
    pub since: Timestamp,
    pub drills: u32,
    /// Drills that ended approved.
    pub failed: u32,
    pub denied: u32,
    /// Expired or cancelled without a decision, or still pending.
    pub undecided: u32,
    pub reviewers: Vec<ReviewerResult>,
}

/// [`DrillResults`] from the audit trail (records in chain order) and the policies as they are now (for who
/// was asked: each drill's policy's `approvers.users`).
pub fn results(trail: &[AuditEvent], policies: &[Policy], since: Timestamp) -> DrillResults {
    let mut out = DrillResults { since, drills: 0, failed: 0, denied: 0, undecided: 0, reviewers: vec![] };
    let mut drills: BTreeMap<String, (String, Option<AuditKind>)> = BTreeMap::new();
    let mut votes: BTreeMap<String, BTreeMap<String, AuditKind>> = BTreeMap::new();
    for e in trail {
        let Some(id) = e.request_id.map(|i| i.to_string()) else { continue };
        match e.kind {
            AuditKind::RequestCreated
                if e.at >= since && e.details.get("drill").map(String::as_str) == Some("true") =>
            {
                drills.insert(id, (e.details.get("policy").cloned().unwrap_or_default(), None));
            }
            AuditKind::VoteApprove | AuditKind::VoteDeny if drills.contains_key(&id) => {
                let user = e.actor.0.strip_prefix("slack:").unwrap_or(&e.actor.0).to_string();
                votes.entry(id).or_default().entry(user).or_insert(e.kind);
            }
            AuditKind::RequestApproved
            | AuditKind::RequestDenied
            | AuditKind::RequestExpired
            | AuditKind::RequestCancelled => {
                if let Some(d) = drills.get_mut(&id) {
                    d.1.get_or_insert(e.kind);
                }
            }
            _ => {}
        }
    }
    let mut by_user: BTreeMap<String, ReviewerResult> = BTreeMap::new();
    for (id, (policy, outcome)) in &drills {
        out.drills += 1;
        match outcome {
            Some(AuditKind::RequestApproved) => out.failed += 1,
            Some(AuditKind::RequestDenied) => out.denied += 1,
            _ => out.undecided += 1,
        }
        let voted = votes.get(id).cloned().unwrap_or_default();
        for (user, kind) in &voted {
            let r = by_user
                .entry(user.clone())
                .or_insert_with(|| ReviewerResult { user: user.clone(), ..Default::default() });
            if *kind == AuditKind::VoteApprove {
                r.approved += 1;
            } else {
                r.denied += 1;
            }
        }
        let asked = policies.iter().find(|p| p.name.as_str() == policy).map(|p| p.approvers.users.clone());
        for user in asked.unwrap_or_default().iter().map(SlackUserId::to_string) {
            if !voted.contains_key(&user) {
                by_user.entry(user.clone()).or_insert_with(|| ReviewerResult { user, ..Default::default() }).left += 1;
            }
        }
    }
    out.reviewers = by_user.into_values().collect();
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_shipped_scenarios_parse_and_each_is_a_valid_drill() {
        let s = parse_scenarios(include_str!("../../../../infra/drill-scenarios.yaml")).unwrap();
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["unknown-commit-at-3am", "reason-contradicts-details", "resource-in-unexpected-account"]);
        assert!(parse_scenarios("version: 1\nscenarios: []\n").is_err());
        let twice =
            "version: 1\nscenarios:\n  - {name: a, reason: r, signs: [x]}\n  - {name: a, reason: r, signs: [y]}\n";
        assert!(parse_scenarios(twice).unwrap_err().contains("twice"));
        assert!(parse_scenarios("version: 1\nscenarios:\n  - {name: a, reason: r, signs: [x], extra: 1}\n").is_err());
    }

    #[test]
    fn t42_a_drill_needs_a_scenario_name_and_visible_signs() {
        let signs = vec!["The commit is not on main".to_string()];
        assert_eq!(Drill::parse("unknown-commit", &signs).unwrap().signs, signs);
        assert!(Drill::parse("Unknown", &signs).is_err());
        assert!(Drill::parse("", &signs).is_err());
        assert!(Drill::parse("ok", &[]).is_err());
        assert!(Drill::parse("ok", &["x\u{202E}y".to_string()]).is_err());
        assert!(Drill::parse("ok", &vec!["s".to_string(); MAX_SIGNS + 1]).is_err());
        assert!(Drill::parse("ok", &["x".repeat(MAX_SIGN_CHARS + 1)]).is_err());
    }
}

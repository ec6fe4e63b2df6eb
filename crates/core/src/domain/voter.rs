//! Who may vote (threat rows 8 and 34): the Slack workspaces Countersign serves, and whether one Slack
//! account, as Slack's directory (`users.info`) describes it at vote time, is an active full member of one
//! of them. The rule lives here once; the callback handler and the vote service only ask it.
//!
//! Must never: admit an account on what the callback payload alone says (the directory is re-read at vote
//! time), or admit anyone when the configuration lists no workspace.

use std::collections::BTreeSet;

/// The configured workspaces: `T…` workspace ids and at most one `E…` Enterprise Grid organization id
/// (`COUNTERSIGN_SLACK_TEAM_ID`, local mode's `slack.team_id`). The empty set (the default) admits nobody.
///
/// - Only `T…` ids: the callback's workspace and the voter's own workspace must both be listed.
/// - `E…` alone: any workspace of that organization (the voter's organization must be it).
/// - `E…` and `T…` ids: the organization must be it and the voter's workspace one of those listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlackWorkspaces {
    teams: BTreeSet<String>,
    enterprise: Option<String>,
}

fn is_id(s: &str, prefix: char) -> bool {
    (3..=32).contains(&s.len())
        && s.starts_with(prefix)
        && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

impl SlackWorkspaces {
    /// Parses a comma-separated list (`T0A,T0B,E0ORG`); spaces around ids are ignored. Refuses an empty
    /// list, anything that is not a `T…`/`E…` id, and a second `E…` id.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut w = Self::default();
        for id in list.split(',').map(str::trim) {
            if is_id(id, 'T') {
                w.teams.insert(id.to_string());
            } else if is_id(id, 'E') {
                match &w.enterprise {
                    Some(e) if e != id => {
                        return Err(format!("at most one Enterprise Grid (E…) id, got {e:?} and {id:?}"));
                    }
                    _ => w.enterprise = Some(id.to_string()),
                }
            } else {
                return Err(format!("{id:?} is not a Slack team (T…) or enterprise (E…) id"));
            }
        }
        if w.teams.is_empty() && w.enterprise.is_none() {
            return Err("lists no Slack team (T…) or enterprise (E…) id".into());
        }
        Ok(w)
    }

    pub fn teams(&self) -> impl Iterator<Item = &str> {
        self.teams.iter().map(String::as_str)
    }

    pub fn enterprise(&self) -> Option<&str> {
        self.enterprise.as_deref()
    }

    /// Row 8: a callback from workspace `team` (in organization `enterprise`) by a user of `user_team`.
    pub fn admits_callback(
        &self,
        team: &str,
        enterprise: Option<&str>,
        user_team: Option<&str>,
    ) -> Result<(), &'static str> {
        match &self.enterprise {
            Some(e) if enterprise != Some(e.as_str()) => return Err("enterprise id does not match"),
            Some(_) => {}
            None if !self.teams.contains(team) => return Err("team id does not match"),
            None => {}
        }
        let Some(user_team) = user_team else { return Err("user has no team") };
        if !self.teams.is_empty() && !self.teams.contains(user_team) {
            return Err("user belongs to another workspace");
        }
        Ok(())
    }

    /// Row 34: whether the directory places `account` in our workspaces.
    fn admits_account(&self, a: &SlackAccount) -> bool {
        let listed = |t: &str| self.teams.contains(t);
        match &self.enterprise {
            // A Grid user may belong to several workspaces of the organization: one listed is enough.
            Some(e) => {
                let ours = a.enterprise_id.as_deref() == Some(e.as_str()) || a.team_id == *e;
                ours && (self.teams.is_empty() || listed(&a.team_id) || a.enterprise_teams.iter().any(|t| listed(t)))
            }
            None => listed(&a.team_id),
        }
    }
}

/// A Slack account as Slack's directory (`users.info`) describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlackAccount {
    pub id: String,
    /// The account's workspace (`T…`; `E…` for some organization-level accounts).
    pub team_id: String,
    /// `enterprise_user.enterprise_id`, on Enterprise Grid.
    pub enterprise_id: Option<String>,
    /// `enterprise_user.teams`: every workspace of the organization the account belongs to.
    pub enterprise_teams: Vec<String>,
    pub deleted: bool,
    pub is_bot: bool,
    pub is_app_user: bool,
    /// A multi-channel guest.
    pub is_restricted: bool,
    /// A single-channel guest.
    pub is_ultra_restricted: bool,
}

/// Why an account may not vote. [`Ineligible::code`] is the `reason` of its `vote.rejected` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ineligible {
    Deactivated,
    Bot,
    AppUser,
    Guest,
    SingleChannelGuest,
    /// Not a member of a configured workspace (Slack Connect, another organization).
    ForeignWorkspace,
    /// The directory answered about another account.
    WrongAccount,
}

impl Ineligible {
    pub fn code(self) -> &'static str {
        match self {
            Self::Deactivated => "deactivated",
            Self::Bot => "bot",
            Self::AppUser => "app_user",
            Self::Guest => "guest",
            Self::SingleChannelGuest => "single_channel_guest",
            Self::ForeignWorkspace => "foreign_workspace",
            Self::WrongAccount => "wrong_account",
        }
    }

    /// Safe to show the voter.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Deactivated => "your Slack account is deactivated",
            Self::Bot => "bot accounts cannot vote",
            Self::AppUser => "app accounts cannot vote",
            Self::Guest | Self::SingleChannelGuest => "guest accounts cannot vote",
            Self::ForeignWorkspace => "your Slack account is not a member of this workspace",
            Self::WrongAccount => "Slack described another account",
        }
    }
}

/// Row 34: only an active, full (non-guest), human member of one of our workspaces may vote.
pub fn eligibility(user: &str, a: &SlackAccount, ours: &SlackWorkspaces) -> Result<(), Ineligible> {
    if a.id != user {
        return Err(Ineligible::WrongAccount);
    }
    if a.deleted {
        return Err(Ineligible::Deactivated);
    }
    if a.is_bot {
        return Err(Ineligible::Bot);
    }
    if a.is_app_user {
        return Err(Ineligible::AppUser);
    }
    if a.is_ultra_restricted {
        return Err(Ineligible::SingleChannelGuest);
    }
    if a.is_restricted {
        return Err(Ineligible::Guest);
    }
    if !ours.admits_account(a) {
        return Err(Ineligible::ForeignWorkspace);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn member(team: &str) -> SlackAccount {
        SlackAccount { id: "UALICE0001".into(), team_id: team.into(), ..SlackAccount::default() }
    }

    #[test]
    fn t34_workspace_list_parses_several_teams_and_one_enterprise() {
        let w = SlackWorkspaces::parse(" T0AAA0001, T0BBB0002 ,E0ORG0001").unwrap();
        assert_eq!(w.teams().collect::<Vec<_>>(), ["T0AAA0001", "T0BBB0002"]);
        assert_eq!(w.enterprise(), Some("E0ORG0001"));
        // The old single-id forms still parse.
        assert_eq!(SlackWorkspaces::parse("T0AAA0001").unwrap().teams().count(), 1);
        assert_eq!(SlackWorkspaces::parse("E0ORG0001").unwrap().enterprise(), Some("E0ORG0001"));
        assert!(SlackWorkspaces::parse("E0ORG0001,E0ORG0002").unwrap_err().contains("at most one"));
        for junk in ["", ",", "T0AAA0001,", "t0aaa0001", "U0AAA0001", "T0AAA0001;T0BBB0002", "T0 AAA", "T"] {
            assert!(SlackWorkspaces::parse(junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn t34_callback_rule_with_a_team_list_and_an_enterprise() {
        let w = SlackWorkspaces::parse("T0AAA0001,T0BBB0002").unwrap();
        assert!(w.admits_callback("T0BBB0002", None, Some("T0AAA0001")).is_ok());
        assert!(w.admits_callback("T0CCC0003", None, Some("T0AAA0001")).is_err());
        assert!(w.admits_callback("T0AAA0001", None, Some("T0PARTNER")).is_err());
        let g = SlackWorkspaces::parse("E0ORG0001,T0AAA0001").unwrap();
        assert!(g.admits_callback("T0ANY0001", Some("E0ORG0001"), Some("T0AAA0001")).is_ok());
        assert!(g.admits_callback("T0ANY0001", Some("E0ORG0001"), Some("T0ZZZ0009")).is_err());
        assert!(g.admits_callback("T0AAA0001", Some("E0OTHER01"), Some("T0AAA0001")).is_err());
        assert!(g.admits_callback("T0AAA0001", None, Some("T0AAA0001")).is_err());
    }

    #[test]
    fn t34_only_active_full_members_of_our_workspaces_are_eligible() {
        let w = SlackWorkspaces::parse("T0TEAM0001").unwrap();
        assert_eq!(eligibility("UALICE0001", &member("T0TEAM0001"), &w), Ok(()));
        type Change = fn(&mut SlackAccount);
        let cases: [(Change, Ineligible); 7] = [
            (|a| a.deleted = true, Ineligible::Deactivated),
            (|a| a.is_bot = true, Ineligible::Bot),
            (|a| a.is_app_user = true, Ineligible::AppUser),
            (|a| a.is_restricted = true, Ineligible::Guest),
            (|a| a.is_ultra_restricted = true, Ineligible::SingleChannelGuest),
            (|a| a.team_id = "T0PARTNER9".into(), Ineligible::ForeignWorkspace),
            (|a| a.id = "UMALLORY01".into(), Ineligible::WrongAccount),
        ];
        for (change, want) in cases {
            let mut a = member("T0TEAM0001");
            change(&mut a);
            assert_eq!(eligibility("UALICE0001", &a, &w), Err(want));
        }
        assert_eq!(
            eligibility("UALICE0001", &member("T0TEAM0001"), &SlackWorkspaces::default()),
            Err(Ineligible::ForeignWorkspace)
        );
    }

    #[test]
    fn t34_grid_members_are_eligible_through_any_listed_workspace_of_the_organization() {
        let g = SlackWorkspaces::parse("E0ORG0001,T0AAA0001").unwrap();
        let mut a = member("T0OTHER01");
        a.enterprise_id = Some("E0ORG0001".into());
        assert_eq!(eligibility("UALICE0001", &a, &g), Err(Ineligible::ForeignWorkspace));
        a.enterprise_teams = vec!["T0OTHER01".into(), "T0AAA0001".into()];
        assert_eq!(eligibility("UALICE0001", &a, &g), Ok(()));
        a.enterprise_id = Some("E0OTHER01".into());
        assert_eq!(eligibility("UALICE0001", &a, &g), Err(Ineligible::ForeignWorkspace));
        let org = SlackWorkspaces::parse("E0ORG0001").unwrap();
        a.enterprise_id = Some("E0ORG0001".into());
        assert_eq!(eligibility("UALICE0001", &a, &org), Ok(()));
        assert_eq!(eligibility("UALICE0001", &member("T0OTHER01"), &org), Err(Ineligible::ForeignWorkspace));
    }
}

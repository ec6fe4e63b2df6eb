//! `GET /v1/whoami`: the caller as the API identifies it (the very [`RequestService::identify`] every route
//! runs, so account and organization refusals are the same), the kind of key it signed with, and the
//! policies whose `principals` match it ([`crate::domain::policy::policies_for`], the matching the request
//! path uses). Refusals are audited like every route's. Reveals nothing a caller could not learn by asking
//! for approvals: the names, actions and environments of the policies that already govern it; never their
//! approvers, owners or channels.

use crate::domain::policy::policies_for;
use crate::domain::request::Requester;
use crate::domain::CredentialType;

use super::{Caller, RequestError, RequestService};

/// The answer of `GET /v1/whoami`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhoAmI {
    pub requester: Requester,
    pub credential: CredentialType,
    /// In the order of the policy set.
    pub policies: Vec<PolicySummary>,
}

/// A policy that matches the caller's principal, by what it lets the caller ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySummary {
    pub name: String,
    pub actions: Vec<String>,
    pub environments: Vec<String>,
}

impl RequestService {
    pub async fn whoami(&self, caller: &Caller) -> Result<WhoAmI, RequestError> {
        match self.try_whoami(caller).await {
            Ok(w) => Ok(w),
            Err(e) => Err(self.refuse(caller, None, None, e).await),
        }
    }

    async fn try_whoami(&self, caller: &Caller) -> Result<WhoAmI, RequestError> {
        let principal = self.identify(caller)?;
        let set = self.stores.current_policies().await?;
        let policies = policies_for(&set.policies, &principal)
            .into_iter()
            .map(|p| PolicySummary {
                name: p.name.to_string(),
                actions: p.actions.iter().map(|a| a.as_str().to_string()).collect(),
                environments: p.environments.iter().map(|e| e.as_str().to_string()).collect(),
            })
            .collect();
        Ok(WhoAmI {
            // The key id is the caller's own, but only its type is answered: it is never echoed whole.
            requester: Requester::from_principal(&principal, None),
            credential: CredentialType::of(caller.access_key.as_deref()),
            policies,
        })
    }
}

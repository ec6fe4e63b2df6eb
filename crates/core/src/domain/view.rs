//! The request object as the API shows it (`GET /v1/requests/{id}`, docs/api.md), and as decision events
//! carry it in their `detail` (docs/events.md). One shape, one function: never build a second rendering of a
//! request for another consumer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::request::NotificationState;
use super::ApprovalRequest;

/// The request object of the API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RequestView {
    pub id: String,
    pub status: String,
    pub action: String,
    pub environment: String,
    pub resource: Option<String>,
    pub reason: Option<String>,
    pub details: BTreeMap<String, String>,
    pub requester: RequesterView,
    pub policy: PolicyView,
    pub required_approvals: u32,
    pub approvals: Vec<ApprovalView>,
    pub denial: Option<DenialView>,
    pub created_at: String,
    pub expires_at: String,
    pub decided_at: Option<String>,
    pub notification: String,
    pub artifact: Option<String>,
    pub usable_until: Option<String>,
    pub redeemed_at: Option<String>,
    pub redeemed_by: Option<String>,
    /// Row 41: approved at once under the policy's `break_glass` section, owing a review.
    #[serde(default)]
    pub break_glass: bool,
    /// The review a break-glass owes; `null` for any other request.
    #[serde(default)]
    pub review: Option<ReviewView>,
}

/// A break-glass's review, as the request object shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReviewView {
    /// `pending`, `ok`, `flagged` or `overdue`.
    pub status: String,
    pub by: Option<String>,
    pub at: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RequesterView {
    pub arn: String,
    pub account_id: String,
    pub principal: String,
    pub session: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PolicyView {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApprovalView {
    pub user_id: String,
    pub at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DenialView {
    pub user_id: String,
    pub reason: String,
    pub at: String,
}

impl From<&ApprovalRequest> for RequestView {
    fn from(r: &ApprovalRequest) -> Self {
        Self {
            id: r.id.to_string(),
            status: r.status.as_str().to_string(),
            action: r.action.to_string(),
            environment: r.environment.to_string(),
            resource: r.resource.as_ref().map(ToString::to_string),
            reason: r.reason.clone(),
            details: r.details.clone(),
            requester: RequesterView {
                arn: r.requester.arn.clone(),
                account_id: r.requester.account_id.clone(),
                principal: r.requester.principal.clone(),
                session: r.requester.session.clone(),
            },
            policy: PolicyView { name: r.policy.name.to_string(), version: r.policy.version.clone() },
            required_approvals: r.required_approvals,
            approvals: r
                .approvals
                .iter()
                .map(|a| ApprovalView { user_id: a.user_id.to_string(), at: a.at.to_rfc3339() })
                .collect(),
            denial: r.denial.as_ref().map(|d| DenialView {
                user_id: d.user_id.to_string(),
                reason: d.reason.clone(),
                at: d.at.to_rfc3339(),
            }),
            created_at: r.created_at.to_rfc3339(),
            expires_at: r.expires_at.to_rfc3339(),
            decided_at: r.decided_at.map(|t| t.to_rfc3339()),
            notification: match r.notification.state {
                NotificationState::Pending => "pending",
                NotificationState::Posted => "posted",
                NotificationState::Retrying => "retrying",
            }
            .to_string(),
            artifact: r.artifact.as_ref().map(ToString::to_string),
            usable_until: r.usable_until.map(|t| t.to_rfc3339()),
            redeemed_at: r.redeemed_at.map(|t| t.to_rfc3339()),
            redeemed_by: r.redeemed_by.clone(),
            break_glass: r.break_glass.is_some(),
            review: r.break_glass.as_ref().map(|b| ReviewView {
                status: b.review.status.as_str().to_string(),
                by: b.review.by.as_ref().map(ToString::to_string),
                at: b.review.at.map(|t| t.to_rfc3339()),
                reason: b.review.reason.clone(),
            }),
        }
    }
}

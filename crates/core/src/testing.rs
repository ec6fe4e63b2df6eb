//! Test support, feature `testing` (and this crate's own tests): a clock set by hand, the sample request and
//! the example policy file the tests, benches and the conformance suite share. Never linked into what ships.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use crate::domain::request::{Notification, NotificationState, PolicyRef, Requester, Status};
use crate::domain::{
    Action, ApprovalRequest, Environment, PolicyName, Principal, RequestId, Resource, SlackChannelId, Timestamp,
};

pub use crate::ports::ManualClock;

/// `infra/policies.example.yaml`, the example policy file that ships.
pub const EXAMPLE_POLICIES: &str = include_str!("../../../infra/policies.example.yaml");

/// The session the sample requests come from.
pub const SAMPLE_CALLER: &str = "arn:aws:sts::111122223333:assumed-role/github-deploy/run-42";

/// A pending request (approved when `required` is 0) for `github-deploy` to deploy `service/payments` to
/// production under `deploy-production`, created at `now`.
pub fn sample_request(required: u32, now: Timestamp) -> ApprovalRequest {
    sample_request_for(SAMPLE_CALLER, "deploy-production", required, now, 7)
}

/// [`sample_request`] from the caller `arn` under `policy`, with `n` in its id to tell several apart.
pub fn sample_request_for(arn: &str, policy: &str, required: u32, now: Timestamp, n: u128) -> ApprovalRequest {
    let p = Principal::parse(arn).unwrap();
    ApprovalRequest {
        id: RequestId::from_parts(now.unix_millis() as u64, n),
        status: if required == 0 { Status::Approved } else { Status::Pending },
        action: Action::parse("deploy").unwrap(),
        environment: Environment::parse("production").unwrap(),
        resource: Some(Resource::parse("service/payments").unwrap()),
        reason: Some("release".into()),
        details: BTreeMap::new(),
        requester: Requester::from_principal(&p, Some("AKIAEXAMPLE00001234".into())),
        policy: PolicyRef { name: PolicyName::parse(policy).unwrap(), version: "abc".into() },
        required_approvals: required,
        approvals: vec![],
        denial: None,
        created_at: now,
        expires_at: now.plus_seconds(1800),
        decided_at: if required == 0 { Some(now) } else { None },
        notification: Notification {
            state: NotificationState::Pending,
            channel: SlackChannelId::parse("C0APPROVALS").unwrap(),
            ts: None,
            attempts: 0,
            next_attempt_at: None,
            update_pending: false,
            reminders_sent: 0,
        },
        idempotency_key: None,
        body_hash: None,
        version: 1,
        artifact: None,
        use_within: crate::domain::policy::DEFAULT_USE_WITHIN_SECONDS,
        bind_session: false,
        usable_until: (required == 0).then(|| now.plus_seconds(900)),
        redeemed_at: None,
        redeemed_by: None,
        unused_at: None,
        break_glass: None,
        drill: None,
    }
}

//! Slack: Block Kit rendering, request signature verification, interactivity payload parsing, the Web API
//! client, and a fake Slack for tests and local mode.
//!
//! - [`blocks`]: pure functions from a request to Block Kit JSON. No I/O.
//! - [`signature`]: `X-Slack-Signature` verification over the raw body bytes, clock injected.
//! - [`interaction`]: the verified form body → a typed, allow-listed [`interaction::Interaction`].
//! - [`client`]: `chat.postMessage` and friends over HTTPS, bounded by a timeout, token never logged.
//! - [`fake`]: a loopback HTTP server that speaks Slack's wire format and enforces its limits.
//!
//! Nothing outside this module sees Slack's JSON: services get typed values.

pub mod blocks;
pub mod client;
pub mod fake;
pub mod interaction;
pub mod notifier;
pub mod signature;

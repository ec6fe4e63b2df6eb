//! Slack: Block Kit rendering, request signature verification, interactivity payload parsing, the Web API
//! client, and (feature `emulator`) the one Slack Web API emulator, for tests and local mode.
//!
//! - [`blocks`]: pure functions from a request to Block Kit JSON. No I/O.
//! - [`signature`]: `X-Slack-Signature` verification over the raw body bytes, clock injected.
//! - [`interaction`]: the verified form body → a typed, allow-listed [`interaction::Interaction`].
//! - [`client`]: `chat.postMessage` and friends over HTTPS, bounded by a timeout, token never logged.
//! - [`emulator`]: the one Slack Web API emulator (workspace state, the methods, Slack's limits).
//! - [`fake`]: the emulator behind a loopback HTTP server, with the tests' failure knobs.
//!
//! Nothing outside this crate sees Slack's JSON: services get typed values.

pub mod blocks;
pub mod client;
#[cfg(feature = "emulator")]
pub mod emulator;
#[cfg(feature = "emulator")]
pub mod fake;
pub mod interaction;
pub mod notifier;
pub mod signature;

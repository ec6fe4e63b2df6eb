//! Countersign's core: the approval domain, the ports it needs, and the services that run it.
//!
//! - [`domain`]: pure model (principals, policies, requests, votes, audit chain). No I/O.
//! - [`ports`]: the traits the services need (stores, clock, Slack).
//! - [`service`]: the use cases (create, vote, notify, sweep), written against the ports.
//! - [`error::error_chain`]: an error and its causes on one line, the one place that loop is written.
//!
//! This crate must never depend on an AWS, HTTP, Slack, SQLite or Lambda crate: the workspace's crate graph
//! enforces it (`integration::layering`).

pub mod domain;
pub mod error;
pub mod ports;
pub mod service;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

//! Countersign: a human in the loop, in Slack, whenever a non-human identity asks to do something that
//! matters.
//!
//! - [`domain`]: pure model (principals, policies, requests, votes, audit chain). No I/O.
//! - [`ports`]: the traits the services need (stores, clock, Slack).
//! - [`adapters`]: DynamoDB, the embedded store, Slack, Secrets Manager.
//! - [`config`]: configuration from the environment (Lambda) or files (local mode).
//! - [`cli`]: the `countersign` command.
//! - [`local`]: local mode (`countersign dev`): one server, embedded store, SigV4 verifier, Slack simulator.

pub mod adapters;
pub mod app;
pub mod cli;
pub mod config;
pub mod domain;
pub mod http;
pub mod local;
pub mod ports;
pub mod service;
pub mod telemetry;

//! Countersign's three Lambda functions: the HTTP routers, the one error mapping, the wiring ([`app`]), the
//! configuration from the environment and the telemetry. The bins in `src/bin/` only call these.

pub mod app;
pub mod config;
pub mod http;
pub mod roots;
pub mod sweep;
pub mod telemetry;
pub mod transport;

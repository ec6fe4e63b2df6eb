//! Adapters
pub mod secrets;

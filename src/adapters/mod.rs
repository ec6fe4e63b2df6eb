//! Adapters

pub mod embedded;

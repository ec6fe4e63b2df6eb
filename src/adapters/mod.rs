//! Adapters: the ports implemented against the outside world. Adapters never use each other.

pub mod dynamodb;
pub mod embedded;

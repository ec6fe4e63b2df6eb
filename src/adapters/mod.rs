//! Adapters

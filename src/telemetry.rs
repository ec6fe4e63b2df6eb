//! Telemetry

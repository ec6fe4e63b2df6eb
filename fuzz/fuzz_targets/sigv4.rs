//! cargo-fuzz target; the body lives in fuzz/targets.rs so the normal test build replays kept inputs too.
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::sigv4(data));

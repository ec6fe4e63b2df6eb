//! The body of every fuzz target, shared by the cargo-fuzz binaries (fuzz/fuzz_targets/) and by the
//! regression tests of the normal build (tests/integration/fuzz_regressions.rs), which replay every input kept
//! in fuzz/regressions/<target>/ through the very same function. Each must never panic on any input.

use countersign::adapters::slack::signature::{decode_body, sign, single_header, verify, verify_any};

const NOW: i64 = 1_700_000_000;

/// Slack signature headers and verification. Layout: `[flags][ts len][sig len][ts][sig][body...]`. Any
/// header values and body give Ok or a `SignatureError`; a body signed with the secret verifies, with another
/// secret or a changed body it does not.
pub fn slack_signature(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let flags = data[0];
    let (ts_len, sig_len) = (data[1] as usize % 24, data[2] as usize % 80);
    let rest = &data[3..];
    let ts_raw = &rest[..ts_len.min(rest.len())];
    let rest = &rest[ts_raw.len()..];
    let sig_raw = &rest[..sig_len.min(rest.len())];
    let body = &rest[sig_raw.len()..];

    let ts = single_header(if flags & 1 == 0 { vec![ts_raw] } else { vec![ts_raw, ts_raw] }).ok().flatten();
    let sig = single_header([sig_raw]).ok().flatten();
    let _ = decode_body(body, flags & 2 != 0);
    let secret = b"fuzz-signing-secret";
    let _ = verify(secret, ts, sig, body, NOW);
    let _ = verify_any(&[("AWSCURRENT", b"".as_slice()), ("AWSPREVIOUS", secret)], ts, sig, body, NOW);

    let ts_ok = NOW.to_string();
    let good = sign(secret, &ts_ok, body);
    assert_eq!(verify(secret, Some(&ts_ok), Some(&good), body, NOW), Ok(()));
    assert!(verify(b"another-secret", Some(&ts_ok), Some(&good), body, NOW).is_err());
    if !body.is_empty() {
        let mut changed = body.to_vec();
        changed[0] ^= 1;
        assert!(verify(secret, Some(&ts_ok), Some(&good), &changed, NOW).is_err());
    }
}

/// Interactivity payload parsing (form-encoded `payload=<JSON>`).
pub fn slack_interaction(data: &[u8]) {
    let _ = countersign::adapters::slack::interaction::parse(data);
}

/// Policy YAML parsing and validation; whatever parses has a version.
pub fn policy_yaml(data: &[u8]) {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(policies) = countersign::domain::policy::parse_policies(src) {
        for p in &policies {
            let _ = p.version();
        }
    }
}

/// Request API bodies (`POST /v1/requests`).
pub fn api_body(data: &[u8]) {
    let _ = countersign::http::api::parse_body(data);
}

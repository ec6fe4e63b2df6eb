//! Verifies that a callback really comes from Slack (`X-Slack-Signature`, `X-Slack-Request-Timestamp`).
//!
//! The MAC is HMAC-SHA256 over `v0:{timestamp}:{raw body bytes}` with the app's signing secret, compared in
//! constant time. It is checked over the exact bytes Slack signed, before anything parses the body. The
//! clock is a parameter so tests pin time.
//!
//! Must never: put the secret, the computed MAC or the received signature in an error, a log line or a
//! response. [`SignatureError`] carries no data for that reason.

use std::fmt;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// How far the request timestamp may be from our clock, in either direction.
pub const MAX_SKEW_SECONDS: u64 = 300;
/// Header names, lower-case as HTTP/2 and API Gateway deliver them.
pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
pub const SIGNATURE_HEADER: &str = "x-slack-signature";

const PREFIX: &str = "v0=";
const MAX_TIMESTAMP_DIGITS: usize = 12;

/// Why a callback was refused. Every variant maps to `401`. No variant carries data: nothing here may
/// echo a MAC, a signature or a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing request timestamp header")]
    MissingTimestamp,
    #[error("missing signature header")]
    MissingSignature,
    #[error("a signature or timestamp header was sent more than once")]
    DuplicateHeader,
    #[error("a signature or timestamp header is not ASCII")]
    NonAsciiHeader,
    #[error("malformed request timestamp (ASCII digits only)")]
    MalformedTimestamp,
    #[error("malformed signature (v0= followed by 64 lowercase hex digits)")]
    MalformedSignature,
    #[error("request timestamp is more than 300 seconds from now")]
    Stale,
    #[error("signature does not match")]
    Mismatch,
    #[error("no signing secret is configured")]
    NoSecret,
    #[error("body is not valid base64")]
    BadBase64,
    #[error("body is not valid UTF-8")]
    NotUtf8,
}

impl SignatureError {
    /// The failed check in stable snake_case words, for the `reason` of the refusal's audit record
    /// (`callback.rejected`). Compliance queries depend on these strings: never rename one.
    pub fn reason(self) -> &'static str {
        match self {
            Self::MissingTimestamp => "missing_timestamp",
            Self::MissingSignature => "missing_signature",
            Self::DuplicateHeader => "duplicate_header",
            Self::NonAsciiHeader => "non_ascii_header",
            Self::MalformedTimestamp => "malformed_timestamp",
            Self::MalformedSignature => "malformed_signature",
            Self::Stale => "stale_timestamp",
            Self::Mismatch => "signature_mismatch",
            Self::NoSecret => "no_signing_secret",
            Self::BadBase64 => "body_not_base64",
            Self::NotUtf8 => "body_not_utf8",
        }
    }
}

/// The one value of a header that must appear at most once. `values` are the raw values of every
/// occurrence (e.g. `headers.get_all(name).iter().map(|v| v.as_bytes())`).
pub fn single_header<'a, I>(values: I) -> Result<Option<&'a str>, SignatureError>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut it = values.into_iter();
    let Some(first) = it.next() else {
        return Ok(None);
    };
    if it.next().is_some() {
        return Err(SignatureError::DuplicateHeader);
    }
    if !first.is_ascii() {
        return Err(SignatureError::NonAsciiHeader);
    }
    std::str::from_utf8(first).map(Some).map_err(|_| SignatureError::NonAsciiHeader)
}

/// API Gateway proxy events carry binary or non-text bodies base64-encoded (`isBase64Encoded`). Slack signs
/// the decoded bytes, which are always UTF-8 form data: anything else is refused before verification.
pub fn decode_body(body: &[u8], is_base64: bool) -> Result<Vec<u8>, SignatureError> {
    let bytes = if is_base64 {
        base64::engine::general_purpose::STANDARD.decode(body).map_err(|_| SignatureError::BadBase64)?
    } else {
        body.to_vec()
    };
    if std::str::from_utf8(&bytes).is_err() {
        return Err(SignatureError::NotUtf8);
    }
    Ok(bytes)
}

/// The header as sent (it is part of the signed string) and its value.
fn parse_timestamp(header: Option<&str>) -> Result<(&str, i64), SignatureError> {
    let ts = header.ok_or(SignatureError::MissingTimestamp)?;
    if ts.is_empty() || ts.len() > MAX_TIMESTAMP_DIGITS || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::MalformedTimestamp);
    }
    let secs = ts.parse::<i64>().map_err(|_| SignatureError::MalformedTimestamp)?;
    Ok((ts, secs))
}

fn parse_signature(header: Option<&str>) -> Result<[u8; 32], SignatureError> {
    let sig = header.ok_or(SignatureError::MissingSignature)?;
    let hex_part = sig.strip_prefix(PREFIX).ok_or(SignatureError::MalformedSignature)?;
    if hex_part.len() != 64 || !hex_part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(SignatureError::MalformedSignature);
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).map_err(|_| SignatureError::MalformedSignature)?;
    Ok(out)
}

/// Checks headers and freshness once; the MAC is then tried per secret.
fn precheck<'h>(
    timestamp_header: Option<&'h str>,
    signature_header: Option<&str>,
    now_unix: i64,
) -> Result<(&'h str, [u8; 32]), SignatureError> {
    let (ts, secs) = parse_timestamp(timestamp_header)?;
    let sig = parse_signature(signature_header)?;
    if now_unix.abs_diff(secs) > MAX_SKEW_SECONDS {
        return Err(SignatureError::Stale);
    }
    Ok((ts, sig))
}

fn mac_matches(secret: &[u8], ts: &str, body: &[u8], sig: &[u8; 32]) -> bool {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(b"v0:");
    mac.update(ts.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.verify_slice(sig).is_ok()
}

/// Verifies one request against one signing secret.
pub fn verify(
    secret: &[u8],
    timestamp_header: Option<&str>,
    signature_header: Option<&str>,
    body: &[u8],
    now_unix: i64,
) -> Result<(), SignatureError> {
    verify_any(&[("", secret)], timestamp_header, signature_header, body, now_unix).map(|_| ())
}

/// Verifies against each `(stage label, secret)` in order (AWSCURRENT, then AWSPREVIOUS) and returns the
/// label of the one that matched, for logging. An empty list is [`SignatureError::NoSecret`]: never accept.
pub fn verify_any<'a>(
    secrets: &[(&'a str, &[u8])],
    timestamp_header: Option<&str>,
    signature_header: Option<&str>,
    body: &[u8],
    now_unix: i64,
) -> Result<&'a str, SignatureError> {
    if secrets.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let (ts, sig) = precheck(timestamp_header, signature_header, now_unix)?;
    secrets
        .iter()
        .find(|(_, secret)| !secret.is_empty() && mac_matches(secret, ts, body, &sig))
        .map(|(label, _)| *label)
        .ok_or(SignatureError::Mismatch)
}

/// The signing secrets currently in force, by stage, for callers that keep them in state.
#[derive(Clone, Default)]
pub struct SlackVerifier {
    secrets: Vec<(String, Vec<u8>)>,
}

impl fmt::Debug for SlackVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stages: Vec<&str> = self.secrets.iter().map(|(l, _)| l.as_str()).collect();
        f.debug_struct("SlackVerifier").field("stages", &stages).finish_non_exhaustive()
    }
}

impl SlackVerifier {
    /// `secrets` in the order to try them, e.g. `[("AWSCURRENT", cur), ("AWSPREVIOUS", prev)]`.
    pub fn new(secrets: Vec<(String, Vec<u8>)>) -> Self {
        Self { secrets }
    }

    pub fn stages(&self) -> impl Iterator<Item = &str> {
        self.secrets.iter().map(|(l, _)| l.as_str())
    }

    /// See [`verify_any`]; returns the matching stage label.
    pub fn verify(
        &self,
        timestamp_header: Option<&str>,
        signature_header: Option<&str>,
        body: &[u8],
        now_unix: i64,
    ) -> Result<&str, SignatureError> {
        let refs: Vec<(&str, &[u8])> = self.secrets.iter().map(|(l, s)| (l.as_str(), s.as_slice())).collect();
        verify_any(&refs, timestamp_header, signature_header, body, now_unix)
    }
}

/// Signs a body as Slack would. For tests, the fake Slack and local mode's simulator only.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    format!("{PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const NOW: i64 = 1_531_420_618;
    const BODY: &[u8] = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn check(ts: &str, sig: &str, body: &[u8], now: i64) -> Result<(), SignatureError> {
        verify(SECRET, Some(ts), Some(sig), body, now)
    }

    #[test]
    fn t01_slack_published_example_verifies() {
        assert_eq!(check(TS, SIG, BODY, NOW), Ok(()));
        assert_eq!(sign(SECRET, TS, BODY), SIG);
    }

    #[test]
    fn t01_one_byte_change_to_body_is_rejected() {
        for i in 0..BODY.len() {
            let mut b = BODY.to_vec();
            b[i] ^= 0x01;
            assert_eq!(check(TS, SIG, &b, NOW), Err(SignatureError::Mismatch), "byte {i}");
        }
        let mut longer = BODY.to_vec();
        longer.push(b'&');
        assert_eq!(check(TS, SIG, &longer, NOW), Err(SignatureError::Mismatch));
        assert_eq!(check(TS, SIG, &BODY[..BODY.len() - 1], NOW), Err(SignatureError::Mismatch));
        assert_eq!(check(TS, SIG, b"", NOW), Err(SignatureError::Mismatch));
    }

    #[test]
    fn t01_one_byte_change_to_timestamp_is_rejected() {
        for i in 0..TS.len() {
            let mut t = TS.as_bytes().to_vec();
            // Stay a digit and stay within the window so only the MAC can catch it.
            t[i] = if t[i] == b'9' { b'8' } else { t[i] + 1 };
            let t = String::from_utf8(t).unwrap();
            let now: i64 = t.parse().unwrap();
            assert_eq!(check(&t, SIG, BODY, now), Err(SignatureError::Mismatch), "digit {i}");
        }
        // One second off, with the clock following it.
        assert_eq!(check("1531420619", SIG, BODY, NOW + 1), Err(SignatureError::Mismatch));
    }

    #[test]
    fn t01_one_byte_change_to_signature_is_rejected() {
        for i in 3..SIG.len() {
            let mut s = SIG.as_bytes().to_vec();
            s[i] = if s[i] == b'0' { b'1' } else { b'0' };
            let s = String::from_utf8(s).unwrap();
            assert_eq!(check(TS, &s, BODY, NOW), Err(SignatureError::Mismatch), "char {i}");
        }
        assert_eq!(check(TS, &SIG.replacen("v0=", "v1=", 1), BODY, NOW), Err(SignatureError::MalformedSignature));
    }

    #[test]
    fn t01_wrong_secret_is_rejected() {
        assert_eq!(
            verify(b"8f742231b10e8888abcd99yyyzzz85a6", Some(TS), Some(SIG), BODY, NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify(b"", Some(TS), Some(SIG), BODY, NOW), Err(SignatureError::Mismatch));
    }

    #[test]
    fn t02_timestamp_window_is_300_seconds_both_ways() {
        assert_eq!(check(TS, SIG, BODY, NOW + 300), Ok(()));
        assert_eq!(check(TS, SIG, BODY, NOW - 300), Ok(()));
        assert_eq!(check(TS, SIG, BODY, NOW + 301), Err(SignatureError::Stale));
        assert_eq!(check(TS, SIG, BODY, NOW - 301), Err(SignatureError::Stale));
        assert_eq!(check(TS, SIG, BODY, i64::MAX), Err(SignatureError::Stale));
        assert_eq!(check(TS, SIG, BODY, i64::MIN), Err(SignatureError::Stale));
    }

    #[test]
    fn t03_odd_timestamps_are_malformed_never_a_panic() {
        let huge = "9".repeat(40);
        let cases = [
            "abc",
            "1.5",
            " 123",
            "123 ",
            "+123",
            "-1",
            "",
            "0x10",
            "1531420618\n",
            "１２３",
            "1e9",
            "9999999999999",
            huge.as_str(),
        ];
        for ts in cases {
            assert_eq!(check(ts, SIG, BODY, NOW), Err(SignatureError::MalformedTimestamp), "{ts:?}");
        }
        // Well-formed but far away: stale, not malformed.
        assert_eq!(check("0", SIG, BODY, NOW), Err(SignatureError::Stale));
        assert_eq!(check("999999999999", SIG, BODY, NOW), Err(SignatureError::Stale));
        assert_eq!(verify(SECRET, None, Some(SIG), BODY, NOW), Err(SignatureError::MissingTimestamp));
    }

    #[test]
    fn t03_signature_shape_is_strict() {
        let upper = format!("v0={}", SIG[3..].to_uppercase());
        let cases = [
            upper.as_str(),
            &SIG[3..],
            &SIG[..SIG.len() - 1],
            "v0=",
            "",
            "V0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            " v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b5033",
            "v0=g2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b50é",
        ];
        for sig in cases {
            assert_eq!(check(TS, sig, BODY, NOW), Err(SignatureError::MalformedSignature), "{sig:?}");
        }
        assert_eq!(verify(SECRET, Some(TS), None, BODY, NOW), Err(SignatureError::MissingSignature));
    }

    #[test]
    fn t03_duplicate_headers_are_refused() {
        let one: [&[u8]; 1] = [TS.as_bytes()];
        let two: [&[u8]; 2] = [TS.as_bytes(), TS.as_bytes()];
        let none: [&[u8]; 0] = [];
        assert_eq!(single_header(one), Ok(Some(TS)));
        assert_eq!(single_header(two), Err(SignatureError::DuplicateHeader));
        assert_eq!(single_header(none), Ok(None));
        assert_eq!(single_header([&[0xff_u8][..]]), Err(SignatureError::NonAsciiHeader));
    }

    #[test]
    fn t04_base64_and_plain_bodies_verify_the_same() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(BODY);
        let plain = decode_body(BODY, false).unwrap();
        let decoded = decode_body(b64.as_bytes(), true).unwrap();
        assert_eq!(plain, decoded);
        assert_eq!(check(TS, SIG, &decoded, NOW), Ok(()));
        // The encoded bytes themselves are not what Slack signed.
        assert_eq!(check(TS, SIG, b64.as_bytes(), NOW), Err(SignatureError::Mismatch));
        assert_eq!(decode_body(b"not base64!", true), Err(SignatureError::BadBase64));
    }

    #[test]
    fn t04_invalid_utf8_is_rejected() {
        assert_eq!(decode_body(b"payload=\xff\xfe", false), Err(SignatureError::NotUtf8));
        let b64 = base64::engine::general_purpose::STANDARD.encode(b"payload=\xc3");
        assert_eq!(decode_body(b64.as_bytes(), true), Err(SignatureError::NotUtf8));
    }

    #[test]
    fn rotation_tries_current_then_previous_and_names_the_stage() {
        let cur: &[u8] = b"new-secret-000000000000000000000";
        let secrets = [("AWSCURRENT", cur), ("AWSPREVIOUS", SECRET)];
        assert_eq!(verify_any(&secrets, Some(TS), Some(SIG), BODY, NOW), Ok("AWSPREVIOUS"));
        let only_new = [("AWSCURRENT", cur)];
        assert_eq!(verify_any(&only_new, Some(TS), Some(SIG), BODY, NOW), Err(SignatureError::Mismatch));
        assert_eq!(verify_any(&[], Some(TS), Some(SIG), BODY, NOW), Err(SignatureError::NoSecret));
        let v = SlackVerifier::new(vec![("AWSCURRENT".into(), SECRET.to_vec())]);
        assert_eq!(v.verify(Some(TS), Some(SIG), BODY, NOW), Ok("AWSCURRENT"));
    }

    #[test]
    fn t07_errors_and_debug_never_contain_mac_or_secret() {
        let secret_str = std::str::from_utf8(SECRET).unwrap();
        let wrong_sig = format!("v0={}", "0".repeat(64));
        let computed = sign(SECRET, TS, BODY);
        let mut outputs = Vec::new();
        for (ts, sig, now) in [(TS, wrong_sig.as_str(), NOW), (TS, SIG, NOW + 301), ("x", SIG, NOW), (TS, "v0=zz", NOW)]
        {
            let e = check(ts, sig, b"tampered", now).unwrap_err();
            outputs.push(format!("{e} {e:?}"));
        }
        let v = SlackVerifier::new(vec![("AWSCURRENT".into(), SECRET.to_vec())]);
        outputs.push(format!("{v:?}"));
        for out in outputs {
            assert!(!out.contains(secret_str), "{out}");
            assert!(!out.contains(&computed[3..]), "{out}");
            assert!(!out.contains(&SIG[3..]), "{out}");
            assert!(!out.contains(&"0".repeat(64)), "{out}");
        }
    }
}

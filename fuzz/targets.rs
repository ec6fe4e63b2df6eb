//! The body of every fuzz target, shared by the cargo-fuzz binaries (fuzz/fuzz_targets/) and by the
//! regression tests of the normal build (tests/integration/fuzz_regressions.rs), which replay every input kept
//! in fuzz/regressions/<target>/ through the very same function. Each must never panic on any input.

use std::sync::OnceLock;

use aws_sigv4::http_request::{sign as aws_sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use countersign_core::ports::SecretString;
use countersign_local::sigv4::{DevIdentity, SigV4Error, SignedRequest, Verifier};
use countersign_slack::signature::{decode_body, sign, single_header, verify, verify_any};

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
    let _ = countersign_slack::interaction::parse(data);
}

/// Policy YAML parsing and validation; whatever parses has a version.
pub fn policy_yaml(data: &[u8]) {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(policies) = countersign_core::domain::policy::parse_policies(src) {
        for p in &policies {
            let _ = p.version();
        }
    }
}

/// Request API bodies (`POST /v1/requests`).
pub fn api_body(data: &[u8]) {
    let _ = countersign_lambda::http::api::parse_body(data);
}

/// The sigv4 target's clock: 2026-12-03T10:54:53Z, when its seeds (fuzz/seeds/sigv4/) were signed by aws-sigv4
/// and by `curl --aws-sigv4` with the identity below.
pub const SIGV4_NOW: i64 = 1_796_295_293;
const SIGV4_KEY_ID: &str = "AKIAFUZZEXAMPLE00001";
const SIGV4_SECRET: &str = "fuzz/secret+access+key";
const SIGV4_REGION: &str = "us-east-1";

fn sigv4_verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        Verifier::new(
            SIGV4_REGION,
            [DevIdentity {
                access_key_id: SIGV4_KEY_ID.into(),
                secret_access_key: SecretString::new(SIGV4_SECRET),
                arn: "arn:aws:iam::111122223333:role/fuzz".into(),
                account_id: "111122223333".into(),
                caller: "AROAFUZZ:fuzz".into(),
            }],
        )
    })
}

/// A request as raw HTTP/1.1 text, the shape of the AWS SigV4 test suite's files.
pub struct RawRequest {
    pub method: String,
    /// The request target (`/path?query`) as sent.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl RawRequest {
    fn path_and_query(&self) -> (&str, Option<&str>) {
        match self.target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (self.target.as_str(), None),
        }
    }
}

/// Lenient parse: `METHOD TARGET [VERSION]`, then `Name:value` lines (LF or CRLF; values kept as written,
/// lines that are not a valid header skipped), a blank line, the body as raw bytes.
pub fn parse_raw_request(data: &[u8]) -> RawRequest {
    let find = |pat: &[u8]| data.windows(pat.len()).position(|w| w == pat).map(|i| (i, i + pat.len()));
    let split = match (find(b"\r\n\r\n"), find(b"\n\n")) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    };
    let (head, body) = match split {
        Some((end, start)) => (&data[..end], &data[start..]),
        None => (data, &[][..]),
    };
    let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let mut parts = request_line.splitn(3, ' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let mut value = &line[colon + 1..];
        while let [b' ' | b'\t', rest @ ..] = value {
            value = rest;
        }
        while let [rest @ .., b' ' | b'\t'] = value {
            value = rest;
        }
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(value)) {
            headers.append(name, value);
        }
    }
    RawRequest { method, target, headers, body: body.to_vec() }
}

/// The verifier's answer for a raw request at [`SIGV4_NOW`].
pub fn sigv4_verify_raw(data: &[u8]) -> Result<(), SigV4Error> {
    let req = parse_raw_request(data);
    let (raw_path, raw_query) = req.path_and_query();
    let signed = SignedRequest { method: &req.method, raw_path, raw_query, headers: &req.headers, body: &req.body };
    sigv4_verifier().verify(&signed, SIGV4_NOW).map(|_| ())
}

/// The local-mode SigV4 verifier. Input: a raw HTTP request (method, path, query, headers, `Authorization`,
/// body; any bytes). The verifier answers without panicking; then the same request, its signing headers
/// replaced by what `aws-sigv4` (the Rust SDK's signer, as the CLI uses) produces for it with the configured
/// secret, must verify, and must be refused as expired 301 s later: a refusal there is a client the verifier
/// wrongly rejects, an acceptance later a window not enforced.
pub fn sigv4(data: &[u8]) {
    let _ = sigv4_verify_raw(data);

    let req = parse_raw_request(data);
    if !req.target.starts_with('/') {
        return;
    }
    let Ok(uri) = format!("https://fuzz.example{}", req.target).parse::<Uri>() else { return };
    // What the server sees is what aws-sigv4 signed: the URI as http parses it, only text header values.
    let mut headers = req.headers.clone();
    for name in ["authorization", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token"] {
        headers.remove(name);
    }
    let names: Vec<HeaderName> = headers.keys().cloned().collect();
    for name in names {
        if headers.get_all(&name).iter().any(|v| v.to_str().is_err()) {
            headers.remove(&name);
        }
    }
    if !headers.contains_key("host") {
        headers.insert("host", HeaderValue::from_static("fuzz.example"));
    }
    let pairs: Vec<(&str, &str)> =
        headers.iter().filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v))).collect();
    let identity = aws_credential_types::Credentials::new(SIGV4_KEY_ID, SIGV4_SECRET, None, None, "fuzz").into();
    let Ok(params) = v4::SigningParams::builder()
        .identity(&identity)
        .region(SIGV4_REGION)
        .name("execute-api")
        .time(std::time::UNIX_EPOCH + std::time::Duration::from_secs(SIGV4_NOW as u64))
        .settings(SigningSettings::default())
        .build()
    else {
        return;
    };
    let uri_text = uri.to_string();
    let Ok(signable) = SignableRequest::new(&req.method, &uri_text, pairs.into_iter(), SignableBody::Bytes(&req.body))
    else {
        return;
    };
    let Ok(out) = aws_sign(signable, &params.into()) else { return };
    let (instructions, _) = out.into_parts();
    for (k, v) in instructions.headers() {
        let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) else { return };
        headers.insert(k, v);
    }
    let signed = SignedRequest {
        method: &req.method,
        raw_path: uri.path(),
        raw_query: uri.query(),
        headers: &headers,
        body: &req.body,
    };
    let verifier = sigv4_verifier();
    let got = verifier.verify(&signed, SIGV4_NOW).map(|i| i.access_key_id.as_str());
    assert_eq!(got, Ok(SIGV4_KEY_ID), "a request aws-sigv4 signed with the configured secret is refused");
    assert_eq!(verifier.verify(&signed, SIGV4_NOW + 301).err(), Some(SigV4Error::Expired));
}

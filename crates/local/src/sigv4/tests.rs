#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Every stage of the verifier against the published AWS SigV4 test suite (tests/fixtures/sigv4/), then the
//! verifier as a whole against requests it must refuse.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::*;

const KEY_ID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const AMZ_DATE: &str = "20150830T123600Z";
const NOW: i64 = 1_440_938_160;
const SCOPE: &str = "20150830/us-east-1/service/aws4_request";

/// The vectors whose canonical forms match API Gateway's (double-encoded paths, normalized).
const VECTORS: &[&str] = &[
    "get-vanilla",
    "get-vanilla-query-order-key-case",
    "get-header-value-trim",
    "post-x-www-form-urlencoded",
    "get-vanilla-query-order-encoded",
    "get-vanilla-query-unreserved",
    "get-vanilla-empty-query-key",
    "get-slashes-normalized",
    "get-relative-relative-normalized",
    "get-utf8",
    "get-header-key-duplicate",
    "get-header-value-order",
    "get-vanilla-with-session-token",
    "post-vanilla",
    "post-vanilla-query",
    "post-header-key-sort",
];

fn fixture(vector: &str, file: &str) -> String {
    let path = format!("{}/../../tests/fixtures/sigv4/{vector}/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

struct Raw {
    method: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// Parses the suite's raw HTTP text: request line, `Name:value` lines (values kept as written, spaces and
/// all), a blank line, the body.
fn parse_raw(text: &str) -> Raw {
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let request_line = lines.next().unwrap();
    let target = request_line.strip_suffix(" HTTP/1.1").unwrap();
    let (method, target) = target.split_once(' ').unwrap();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };
    let mut headers = HeaderMap::new();
    for l in lines {
        let (name, value) = l.split_once(':').unwrap();
        headers.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
    }
    Raw { method: method.to_string(), path, query, headers, body: body.trim_end_matches('\n').as_bytes().to_vec() }
}

fn suite_verifier() -> Verifier {
    Verifier::new(
        "us-east-1",
        [DevIdentity {
            access_key_id: KEY_ID.into(),
            secret_access_key: SecretString::new(SECRET),
            arn: "arn:aws:iam::111122223333:user/example".into(),
            account_id: "111122223333".into(),
            caller: "AIDAEXAMPLE".into(),
        }],
    )
}

/// The suite signs for service `service`; the verifier only accepts `execute-api`. Stages are checked with the
/// suite's values; the end-to-end check re-signs with our own stages for `execute-api` below.
fn signed_headers_of(raw: &Raw) -> Vec<String> {
    let auth = raw.headers.get("authorization").unwrap().to_str().unwrap();
    parse_authorization(auth).unwrap().signed_headers
}

#[test]
fn canonical_request_matches_every_published_vector() {
    for v in VECTORS {
        let signed = parse_raw(&fixture(v, "header-signed-request.txt"));
        let creq = canonical_request(
            &signed.method,
            &signed.path,
            signed.query.as_deref(),
            &signed.headers,
            &signed_headers_of(&signed),
            &sha256_hex(&signed.body),
        )
        .unwrap();
        assert_eq!(creq, fixture(v, "header-canonical-request.txt").trim_end_matches('\n'), "{v}");
    }
}

#[test]
fn string_to_sign_matches_every_published_vector() {
    for v in VECTORS {
        let creq = fixture(v, "header-canonical-request.txt");
        let sts = string_to_sign(AMZ_DATE, SCOPE, creq.trim_end_matches('\n'));
        assert_eq!(sts, fixture(v, "header-string-to-sign.txt").trim_end_matches('\n'), "{v}");
    }
}

#[test]
fn signature_matches_every_published_vector_and_nothing_else() {
    let key = signing_key(SECRET, "20150830", "us-east-1", "service");
    for v in VECTORS {
        let sts = fixture(v, "header-string-to-sign.txt");
        let sts = sts.trim_end_matches('\n');
        let mut sig = [0u8; 32];
        hex::decode_to_slice(fixture(v, "header-signature.txt").trim(), &mut sig).unwrap();
        assert!(signature_matches(&key, sts, &sig), "{v}");
        for i in 0..32 {
            let mut bad = sig;
            bad[i] ^= 0x01;
            assert!(!signature_matches(&key, sts, &bad), "{v}: byte {i}");
        }
        assert!(!signature_matches(&key, &format!("{sts} "), &sig), "{v}: altered string to sign");
    }
}

#[test]
fn authorization_header_of_every_vector_parses_to_its_scope() {
    for v in VECTORS {
        let signed = parse_raw(&fixture(v, "header-signed-request.txt"));
        let auth = parse_authorization(signed.headers.get("authorization").unwrap().to_str().unwrap()).unwrap();
        assert_eq!(auth.access_key_id, KEY_ID);
        assert_eq!(auth.scope(), SCOPE, "{v}");
        assert_eq!(hex::encode(auth.signature), fixture(v, "header-signature.txt").trim(), "{v}");
    }
}

#[test]
fn every_published_signed_request_verifies_end_to_end_and_fails_a_second_later_out_of_window() {
    let v = suite_verifier().for_service("service");
    for name in VECTORS {
        let raw = parse_raw(&fixture(name, "header-signed-request.txt"));
        assert!(check(&v, &raw, NOW).is_ok(), "{name}");
        assert_eq!(check(&v, &raw, NOW + 301), Err(SigV4Error::Expired), "{name}");
        // The same request is refused on execute-api, which is all local mode accepts.
        assert_eq!(check(&suite_verifier(), &raw, NOW), Err(SigV4Error::WrongService), "{name}");
    }
}

#[test]
fn published_api_gateway_path_is_double_encoded() {
    // double-encode-path: an execute-api WebSocket connection path with `@` and an encoded `=`.
    let raw = parse_raw(&fixture("double-encode-path", "request.txt"));
    let expected = fixture("double-encode-path", "header-canonical-request.txt");
    assert_eq!(canonical_uri(&raw.path), expected.lines().nth(1).unwrap());
    assert_eq!(canonical_uri(&raw.path), "/test/%40connections/JBDvjfGEIAMCERw%253D");
}

#[test]
fn amz_date_parses_to_unix_seconds_and_refuses_other_shapes() {
    assert_eq!(parse_amz_date(AMZ_DATE), Ok(NOW));
    for bad in
        ["", "20150830T123600", "2015-08-30T12:36:00Z", "20151330T123600Z", "20150830T256000Z", "2015083OT123600Z"]
    {
        assert_eq!(parse_amz_date(bad), Err(SigV4Error::MalformedDate), "{bad}");
    }
}

// ---- the verifier as a whole, on execute-api ------------------------------------------------------------

/// Signs `raw` as a client would for `execute-api` with our own stages (checked above against the suite).
fn sign(raw: &mut Raw, key_id: &str, secret: &str, amz_date: &str, region: &str, service: &str) {
    raw.headers.insert("x-amz-date", HeaderValue::from_str(amz_date).unwrap());
    let mut names: Vec<String> = raw.headers.keys().map(|k| k.as_str().to_string()).collect();
    names.retain(|n| n != "authorization");
    names.sort();
    names.dedup();
    let creq =
        canonical_request(&raw.method, &raw.path, raw.query.as_deref(), &raw.headers, &names, &sha256_hex(&raw.body))
            .unwrap();
    let scope = format!("{}/{region}/{service}/aws4_request", &amz_date[..8]);
    let sts = string_to_sign(amz_date, &scope, &creq);
    let key = signing_key(secret, &amz_date[..8], region, service);
    let mut mac = HmacSha256::new_from_slice(&key).unwrap();
    mac.update(sts.as_bytes());
    let sig = hex::encode(mac.finalize().into_bytes());
    let header = format!("{ALGORITHM} Credential={key_id}/{scope}, SignedHeaders={}, Signature={sig}", names.join(";"));
    raw.headers.insert("authorization", HeaderValue::from_str(&header).unwrap());
}

fn post(body: &str) -> Raw {
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("127.0.0.1:8787"));
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    Raw { method: "POST".into(), path: "/v1/requests".into(), query: None, headers, body: body.as_bytes().to_vec() }
}

fn check(v: &Verifier, raw: &Raw, now: i64) -> Result<String, SigV4Error> {
    let req = SignedRequest {
        method: &raw.method,
        raw_path: &raw.path,
        raw_query: raw.query.as_deref(),
        headers: &raw.headers,
        body: &raw.body,
    };
    v.verify(&req, now).map(|id| id.arn.clone())
}

fn signed_post() -> Raw {
    let mut r = post(r#"{"action":"deploy","environment":"production"}"#);
    sign(&mut r, KEY_ID, SECRET, AMZ_DATE, "us-east-1", SERVICE);
    r
}

#[test]
fn a_correctly_signed_execute_api_request_yields_its_identity() {
    assert_eq!(check(&suite_verifier(), &signed_post(), NOW).as_deref(), Ok("arn:aws:iam::111122223333:user/example"));
}

#[test]
fn any_change_to_method_path_query_signed_header_or_body_is_refused() {
    let v = suite_verifier();
    let mut r = signed_post();
    r.method = "PUT".into();
    assert_eq!(check(&v, &r, NOW), Err(SigV4Error::SignatureMismatch));
    let mut r = signed_post();
    r.path = "/v1/requests/x".into();
    assert_eq!(check(&v, &r, NOW), Err(SigV4Error::SignatureMismatch));
    let mut r = signed_post();
    r.query = Some("wait=20".into());
    assert_eq!(check(&v, &r, NOW), Err(SigV4Error::SignatureMismatch));
    let mut r = signed_post();
    r.headers.insert("content-type", HeaderValue::from_static("text/plain"));
    assert_eq!(check(&v, &r, NOW), Err(SigV4Error::SignatureMismatch));
    let mut r = signed_post();
    r.headers.insert("host", HeaderValue::from_static("evil.example"));
    assert_eq!(check(&v, &r, NOW), Err(SigV4Error::SignatureMismatch));
    let original = signed_post();
    for i in 0..original.body.len() {
        let mut r = signed_post();
        r.body[i] ^= 0x01;
        assert_eq!(check(&v, &r, NOW), Err(SigV4Error::SignatureMismatch), "body byte {i}");
    }
}

#[test]
fn unsigned_extra_headers_do_not_matter() {
    let mut r = signed_post();
    r.headers.insert("user-agent", HeaderValue::from_static("anything"));
    assert!(check(&suite_verifier(), &r, NOW).is_ok());
}

#[test]
fn signed_headers_named_with_any_token_character_are_accepted_and_other_names_refused() {
    // Found by the sigv4 fuzz target: aws-sigv4 signs any header name `http` accepts, `!#$%&'*+^`|~` included;
    // the verifier refused those as malformed, locking such clients out.
    let mut r = post("{}");
    for name in ["x-trace!id", "x#y", "a$b%c&d'e*f+g^h`i|j~k", "x_y.z"] {
        r.headers.insert(HeaderName::from_static(name), HeaderValue::from_static("v"));
    }
    sign(&mut r, KEY_ID, SECRET, AMZ_DATE, "us-east-1", SERVICE);
    assert!(check(&suite_verifier(), &r, NOW).is_ok());

    let sig = "0".repeat(64);
    for bad in ["Host;x-amz-date", "host;x amz", "host;x\"y", "host;(x)", "host;x/y", "host;x:y", "host;", "host;x@y"] {
        let header = format!("{ALGORITHM} Credential={KEY_ID}/{SCOPE}, SignedHeaders={bad}, Signature={sig}");
        assert!(matches!(parse_authorization(&header), Err(SigV4Error::Malformed(_))), "{bad}");
    }
}

#[test]
fn missing_or_malformed_authorization_is_refused_without_detail() {
    let v = suite_verifier();
    let mut r = post("{}");
    r.headers.insert("x-amz-date", HeaderValue::from_static(AMZ_DATE));
    assert_eq!(check(&v, &r, NOW), Err(SigV4Error::MissingAuthorization));
    let cases: &[(&str, SigV4Error)] = &[
        ("AWS4-HMAC-SHA1 Credential=a", SigV4Error::UnsupportedAlgorithm),
        ("Bearer abc", SigV4Error::UnsupportedAlgorithm),
        ("AWS4-HMAC-SHA256", SigV4Error::Malformed("no parameters")),
        (
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date",
            SigV4Error::Malformed("Signature is missing"),
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/execute-api/aws4_request, SignedHeaders=x-amz-date;host, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            SigV4Error::Malformed("SignedHeaders must be sorted and unique"),
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature=5FA00FA31553B73EBF1942676E86291E8372FF2A2260956D9B8AAE1D763FBF31",
            SigV4Error::Malformed("Signature must be 64 lower-case hex digits"),
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/execute-api, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            SigV4Error::Malformed("Credential must be KEY/DATE/REGION/SERVICE/aws4_request"),
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            SigV4Error::Malformed("a parameter appears twice"),
        ),
    ];
    for (header, want) in cases {
        let mut r = post("{}");
        r.headers.insert("x-amz-date", HeaderValue::from_static(AMZ_DATE));
        r.headers.insert("authorization", HeaderValue::from_str(header).unwrap());
        assert_eq!(check(&v, &r, NOW), Err(*want), "{header}");
    }
    let mut r = signed_post();
    let again = r.headers.get("authorization").unwrap().clone();
    r.headers.append("authorization", again);
    assert_eq!(check(&v, &r, NOW), Err(SigV4Error::DuplicateHeader("authorization")));
}

#[test]
fn wrong_region_service_or_unknown_key_is_refused() {
    let v = suite_verifier();
    let mut r = post("{}");
    sign(&mut r, KEY_ID, SECRET, AMZ_DATE, "eu-west-1", SERVICE);
    assert_eq!(check(&v, &r, NOW), Err(SigV4Error::WrongRegion));
    let mut r = post("{}");
    sign(&mut r, KEY_ID, SECRET, AMZ_DATE, "us-east-1", "service");
    assert_eq!(check(&v, &r, NOW), Err(SigV4Error::WrongService));
    let mut r = post("{}");
    sign(&mut r, "AKIDUNKNOWN", SECRET, AMZ_DATE, "us-east-1", SERVICE);
    assert_eq!(check(&v, &r, NOW), Err(SigV4Error::UnknownAccessKey));
    let mut r = post("{}");
    sign(&mut r, KEY_ID, "not-the-secret", AMZ_DATE, "us-east-1", SERVICE);
    assert_eq!(check(&v, &r, NOW), Err(SigV4Error::SignatureMismatch));
}

#[test]
fn x_amz_date_must_be_within_five_minutes_either_way_and_match_the_scope() {
    let v = suite_verifier();
    let r = signed_post();
    assert!(check(&v, &r, NOW + 300).is_ok());
    assert!(check(&v, &r, NOW - 300).is_ok());
    assert_eq!(check(&v, &r, NOW + 301), Err(SigV4Error::Expired));
    assert_eq!(check(&v, &r, NOW - 301), Err(SigV4Error::Expired));
    let mut r = post("{}");
    r.headers.insert("authorization", signed_post().headers.get("authorization").unwrap().clone());
    assert_eq!(check(&v, &r, NOW), Err(SigV4Error::MissingDate));
    let mut r = signed_post();
    r.headers.insert("x-amz-date", HeaderValue::from_static("20150831T000100Z"));
    assert_eq!(check(&v, &r, 1_440_979_260), Err(SigV4Error::ScopeDateMismatch));
    let mut r = signed_post();
    r.headers.insert("x-amz-date", HeaderValue::from_static("yesterday"));
    assert_eq!(check(&v, &r, NOW), Err(SigV4Error::MalformedDate));
}

#[test]
fn host_and_x_amz_date_must_be_signed_and_signed_headers_present() {
    let v = suite_verifier();
    let mut r = post("{}");
    r.headers.insert("x-amz-date", HeaderValue::from_static(AMZ_DATE));
    let header = format!(
        "{ALGORITHM} Credential={KEY_ID}/20150830/us-east-1/{SERVICE}/aws4_request, SignedHeaders=x-amz-date, \
         Signature={}",
        "0".repeat(64)
    );
    r.headers.insert("authorization", HeaderValue::from_str(&header).unwrap());
    assert_eq!(check(&v, &r, NOW), Err(SigV4Error::RequiredHeaderNotSigned("host")));
    let mut r = signed_post();
    r.headers.remove("content-type");
    assert_eq!(check(&v, &r, NOW), Err(SigV4Error::SignedHeaderAbsent));
}

#[test]
fn a_payload_hash_header_that_disagrees_with_the_body_is_refused() {
    let v = suite_verifier();
    let mut r = post("{}");
    r.headers.insert("x-amz-content-sha256", HeaderValue::from_str(&sha256_hex(b"{}")).unwrap());
    sign(&mut r, KEY_ID, SECRET, AMZ_DATE, "us-east-1", SERVICE);
    assert!(check(&v, &r, NOW).is_ok());
    r.body = b"{ }".to_vec();
    assert_eq!(check(&v, &r, NOW), Err(SigV4Error::PayloadHashMismatch));
    let mut r = post("{}");
    r.headers.insert("x-amz-content-sha256", HeaderValue::from_static("UNSIGNED-PAYLOAD"));
    sign(&mut r, KEY_ID, SECRET, AMZ_DATE, "us-east-1", SERVICE);
    assert_eq!(check(&v, &r, NOW), Err(SigV4Error::PayloadHashMismatch));
}

#[test]
fn errors_never_carry_the_secret_or_a_signature() {
    let v = suite_verifier();
    let mut r = post("{}");
    sign(&mut r, KEY_ID, "wrong", AMZ_DATE, "us-east-1", SERVICE);
    let sent = r.headers.get("authorization").unwrap().to_str().unwrap().to_string();
    let sent_sig = sent.rsplit("Signature=").next().unwrap().to_string();
    let e = check(&v, &r, NOW).unwrap_err();
    for text in [e.to_string(), e.api_gateway_message(), format!("{e:?}")] {
        assert!(!text.contains(SECRET) && !text.contains(&sent_sig), "{text}");
    }
}

#[test]
fn path_and_query_canonicalization_follow_aws_sigv4() {
    assert_eq!(canonical_uri(""), "/");
    assert_eq!(canonical_uri("/v1/requests/req_01ABC"), "/v1/requests/req_01ABC");
    assert_eq!(canonical_uri("/a/./b/../c//d/"), "/a/c/d/");
    assert_eq!(canonical_uri("/a%20b"), "/a%2520b");
    assert_eq!(canonical_query(Some("wait=20")), "wait=20");
    assert_eq!(canonical_query(Some("b=2&a=2&a=1")), "a=1&a=2&b=2");
    assert_eq!(canonical_query(Some("k=a+b&j=%7e")), "j=~&k=a%20b");
    assert_eq!(canonical_query(Some("")), "");
    assert_eq!(canonical_query(None), "");
}

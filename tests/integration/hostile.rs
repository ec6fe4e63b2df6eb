//! Hostile input to both public endpoints: oversized bodies, deeply nested JSON, invalid UTF-8, NUL bytes,
//! odd, duplicate and huge headers, wrong methods and odd paths. Every answer must be a 4xx with a JSON
//! error code: never a 5xx, never a panic (a panic in a handler would surface here as a failed `oneshot`
//! or a 500), and never an empty body a client cannot act on.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use countersign_slack::signature::sign;
use serde_json::Value;
use tower::ServiceExt;

use countersign_testkit::app::{api_event, spawn_app, NowTs, StoreKind, TestApp, DEPLOY_ARN, SIGNING_SECRET};
use countersign_testkit::on_both_stores;

const KIB: usize = 1024;

type Headers<'a> = Vec<(&'a str, Vec<u8>)>;
const MIB: usize = 1024 * 1024;

/// One hostile call: what it is, the method, the path, extra headers and the body.
struct Case {
    what: String,
    /// A well-formed call with odd headers may be served (2xx); it still must never be a 5xx.
    may_succeed: bool,
    method: &'static [u8],
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

fn case(what: impl Into<String>, method: &'static [u8], path: impl Into<String>, body: impl Into<Vec<u8>>) -> Case {
    Case { what: what.into(), may_succeed: false, method, path: path.into(), headers: Vec::new(), body: body.into() }
}

impl Case {
    fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self.may_succeed = true;
        self
    }
}

fn valid_body() -> Vec<u8> {
    br#"{"action":"deploy","environment":"production","reason":"release"}"#.to_vec()
}

fn nested(depth: usize) -> Vec<u8> {
    let mut v = vec![b'['; depth];
    v.extend(std::iter::repeat_n(b']', depth));
    v
}

/// The cases for the request API. Bodies are sent with `content-type: application/json` unless a case says
/// otherwise.
fn api_cases() -> Vec<Case> {
    let long_id = "A".repeat(8 * KIB);
    let mut cases = vec![
        case("body of 16 KiB + 1", b"POST", "/v1/requests", vec![b' '; 16 * KIB + 1]),
        case("body of 1 MiB + 1", b"POST", "/v1/requests", vec![b'{'; MIB + 1]),
        case("100k nested arrays", b"POST", "/v1/requests", nested(100_000)),
        case("8k nested arrays (under the size limit)", b"POST", "/v1/requests", nested(8_000)),
        case("8k nested objects", b"POST", "/v1/requests", {
            let mut v = b"{\"details\":".repeat(1_400);
            v.extend(b"1");
            v.extend(std::iter::repeat_n(b'}', 1_400));
            v
        }),
        case("invalid UTF-8 in a string", b"POST", "/v1/requests", b"{\"action\":\"dep\xffloy\"}".to_vec()),
        case("lone surrogate escape", b"POST", "/v1/requests", br#"{"action":"\ud800","environment":"x"}"#.to_vec()),
        case("raw NUL byte in a string", b"POST", "/v1/requests", b"{\"action\":\"de\x00ploy\"}".to_vec()),
        case(
            "escaped NUL in every field",
            b"POST",
            "/v1/requests",
            br#"{"action":"de\u0000ploy","environment":"pro\u0000duction","reason":"\u0000"}"#.to_vec(),
        ),
        case("UTF-16 BOM", b"POST", "/v1/requests", b"\xfe\xff\x00{\x00}".to_vec()),
        case("UTF-8 BOM", b"POST", "/v1/requests", [b"\xef\xbb\xbf".as_slice(), &valid_body()].concat()),
        case("empty body", b"POST", "/v1/requests", Vec::new()),
        case("only NUL bytes", b"POST", "/v1/requests", vec![0u8; 512]),
        case("huge number", b"POST", "/v1/requests", br#"{"ttl_seconds":1e999999}"#.to_vec()),
        case("duplicate keys", b"POST", "/v1/requests", br#"{"action":"deploy","action":"x"}"#.to_vec()),
        case("10k keys", b"POST", "/v1/requests", {
            let keys: Vec<String> = (0..1_500).map(|i| format!("\"k{i}\":1")).collect();
            format!("{{{}}}", keys.join(",")).into_bytes()
        }),
        case("NUL in the id", b"GET", "/v1/requests/%00", Vec::new()),
        case("NUL in the cancel id", b"POST", "/v1/requests/%00/cancel", b"{}".to_vec()),
        case("dot-dot id", b"GET", "/v1/requests/..", Vec::new()),
        case("dot-dot traversal", b"GET", "/v1/requests/../../etc/passwd", Vec::new()),
        case("encoded traversal", b"GET", "/v1/requests/%2e%2e%2f%2e%2e%2fadmin", Vec::new()),
        case("invalid percent-encoding", b"GET", "/v1/requests/%ff%fe%zz", Vec::new()),
        case("8 KiB id", b"GET", format!("/v1/requests/{long_id}"), Vec::new()),
        case("8 KiB id, cancel", b"POST", format!("/v1/requests/{long_id}/cancel"), b"{}".to_vec()),
        case("8 KiB wait", b"GET", format!("/v1/requests/01J0000000000000000000000?wait={long_id}"), Vec::new()),
        case("negative wait", b"GET", "/v1/requests/01J0000000000000000000000?wait=-1", Vec::new()),
        case("repeated wait", b"GET", "/v1/requests/01J0000000000000000000000?wait=1&wait=2", Vec::new()),
        case("empty id", b"GET", "/v1/requests/", Vec::new()),
        case("double slash", b"GET", "/v1//requests", Vec::new()),
        case("unknown path", b"GET", "/v2/requests", Vec::new()),
        case("extra segment", b"POST", "/v1/requests/x/cancel/again", b"{}".to_vec()),
        case("DELETE", b"DELETE", "/v1/requests", Vec::new()),
        case("PUT", b"PUT", "/v1/requests/01J0000000000000000000000", valid_body()),
        case("PATCH", b"PATCH", "/v1/requests", valid_body()),
        case("GET on the cancel route", b"GET", "/v1/requests/x/cancel", Vec::new()),
        case("made-up method", b"FROBNICATE", "/v1/requests", valid_body()),
        case("TRACE", b"TRACE", "/healthz", Vec::new()),
    ];
    let extra_headers: Vec<Case> = vec![
        case("content-type twice", b"POST", "/v1/requests", valid_body()).header("content-type", "application/json"),
        case("content-type text/plain added", b"POST", "/v1/requests", valid_body())
            .header("content-type", "text/plain"),
        case("64 KiB header value", b"POST", "/v1/requests", valid_body()).header("x-filler", vec![b'a'; 64 * KIB]),
        case("obs-text header bytes", b"POST", "/v1/requests", valid_body()).header("x-odd", b"\x80\xff\xfe".to_vec()),
        case("odd idempotency header", b"POST", "/v1/requests", valid_body())
            .header("idempotency-key", vec![b'\xff'; 300]),
        case("odd content-length", b"POST", "/v1/requests", valid_body())
            .header("content-length", "99999999999999999999"),
        case("transfer-encoding", b"POST", "/v1/requests", valid_body()).header("transfer-encoding", "chunked, gzip"),
        case("content-encoding gzip", b"POST", "/v1/requests", valid_body()).header("content-encoding", "gzip"),
    ];
    cases.extend(extra_headers);
    // 1000 extra headers on one call.
    let mut many = case("1000 headers", b"POST", "/v1/requests", valid_body());
    for i in 0..1000 {
        many = many.header(&format!("x-h{i}"), "v");
    }
    cases.push(many);
    cases
}

/// Media-type cases: the body is fine, the declared type is not.
fn media_type_cases() -> Vec<(&'static str, &'static [u8])> {
    vec![
        ("text/plain", b"text/plain"),
        ("two types in one value", b"text/plain, application/json"),
        ("obs-text type", b"application/\xffjson"),
        ("empty type", b""),
        ("json-ish", b"application/jsonx"),
    ]
}

/// An API Gateway event for the request API with everything hostile the case carries.
fn api_request(c: &Case, content_type: Option<&[u8]>) -> Request<Body> {
    let ev = api_event("GET", "/healthz", None, Some(DEPLOY_ARN));
    let (mut parts, _) = ev.into_parts();
    parts.method = Method::from_bytes(c.method).unwrap();
    parts.uri = c.path.parse().unwrap_or_else(|e| panic!("{}: uri {e}", c.what));
    parts.headers.insert("content-type", HeaderValue::from_bytes(content_type.unwrap_or(b"application/json")).unwrap());
    for (k, v) in &c.headers {
        parts.headers.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_bytes(v).unwrap());
    }
    Request::from_parts(parts, Body::from(c.body.clone()))
}

async fn answer(router: axum::Router, req: Request<Body>, what: &str) -> (StatusCode, Value) {
    let resp = tokio::time::timeout(std::time::Duration::from_secs(30), router.oneshot(req))
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer in 30 s"))
        .unwrap_or_else(|e| panic!("{what}: router error {e}"));
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 4 * MIB).await.expect("body reads");
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json)
}

fn assert_4xx_with_code(what: &str, status: StatusCode, json: &Value) {
    assert_coded(what, status, json, false);
}

/// A 4xx with a JSON error code; or, when `may_succeed`, a 2xx.
fn assert_coded(what: &str, status: StatusCode, json: &Value, may_succeed: bool) {
    if may_succeed && status.is_success() {
        return;
    }
    assert!(status.is_client_error(), "{what}: expected a 4xx, got {status}: {json}");
    let code = json["error"]["code"].as_str().unwrap_or("");
    assert!(!code.is_empty(), "{what}: {status} without a JSON error code: {json}");
}

async fn request_api_answers_every_hostile_input_with_a_coded_4xx(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    for c in api_cases() {
        let (status, json) = answer(t.app.request_api(), api_request(&c, None), &c.what).await;
        assert_coded(&c.what, status, &json, c.may_succeed);
    }
    for (what, ct) in media_type_cases() {
        let c = case(what, b"POST", "/v1/requests", valid_body());
        let (status, json) = answer(t.app.request_api(), api_request(&c, Some(ct)), what).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{what}: {json}");
        assert_4xx_with_code(what, status, &json);
    }
    // The app still serves, and the audit chain is intact.
    let a = t.call_api(api_event("GET", "/healthz", None, Some(DEPLOY_ARN))).await;
    assert_eq!(a.status, 200);
    countersign_core::domain::audit::verify_chain(&t.audit().await).expect("the audit chain is intact");
}

/// A Slack callback: `signed` signs the exact body with the real secret, so the parser behind the signature
/// check sees the hostile bytes too.
fn slack_request(t: &TestApp, c: &Case, signed: bool) -> Request<Body> {
    let mut b = Request::builder()
        .method(Method::from_bytes(c.method).unwrap())
        .uri(c.path.as_str())
        .header("content-type", "application/x-www-form-urlencoded");
    if signed {
        let ts = t.clock.now_ts().unix_seconds().to_string();
        b = b
            .header("x-slack-request-timestamp", ts.as_str())
            .header("x-slack-signature", sign(SIGNING_SECRET.as_bytes(), &ts, &c.body).as_str());
    }
    for (k, v) in &c.headers {
        b = b.header(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_bytes(v).unwrap());
    }
    b.body(Body::from(c.body.clone())).unwrap()
}

fn form(json: &[u8]) -> Vec<u8> {
    let mut out = b"payload=".to_vec();
    out.extend(countersign_testkit::app::urlencode(&String::from_utf8_lossy(json)).into_bytes());
    out
}

fn slack_cases() -> Vec<Case> {
    let p = "/slack/interactions";
    vec![
        case("body of 16 KiB + 1", b"POST", p, form(&vec![b'a'; 16 * KIB + 1])),
        case("body of 1 MiB + 1", b"POST", p, vec![b'a'; MIB + 1]),
        case("100k nested arrays", b"POST", p, form(&nested(100_000))),
        case("invalid UTF-8", b"POST", p, b"payload=%7B\xff\xfe%7D".to_vec()),
        case("percent-encoded invalid UTF-8", b"POST", p, b"payload=%7B%22type%22%3A%22%FF%22%7D".to_vec()),
        case("NUL bytes", b"POST", p, b"payload=\x00\x00\x00".to_vec()),
        case("escaped NUL in the JSON", b"POST", p, form(br#"{"type":"block_actions\u0000"}"#)),
        case("two payload fields", b"POST", p, b"payload=%7B%7D&payload=%7B%7D".to_vec()),
        case("no payload field", b"POST", p, b"other=1".to_vec()),
        case("empty body", b"POST", p, Vec::new()),
        case("payload is not JSON", b"POST", p, b"payload=not-json".to_vec()),
        case("payload is a huge number", b"POST", p, form(b"1e999999")),
        case("broken percent-encoding", b"POST", p, b"payload=%zz%".to_vec()),
        case("64 KiB header", b"POST", p, form(b"{}")).header("x-filler", vec![b'a'; 64 * KIB]),
        case("obs-text header bytes", b"POST", p, form(b"{}")).header("x-odd", b"\x80\xff".to_vec()),
        case("GET", b"GET", p, Vec::new()),
        case("PUT", b"PUT", p, form(b"{}")),
        case("made-up method", b"FROBNICATE", p, form(b"{}")),
        case("unknown path", b"POST", "/slack/interactions/..", form(b"{}")),
        case("NUL in the path", b"POST", "/slack/%00", form(b"{}")),
        case("long path", b"POST", format!("/slack/{}", "a".repeat(8 * KIB)), form(b"{}")),
    ]
}

async fn slack_endpoint_answers_every_hostile_input_with_a_coded_4xx(kind: StoreKind) {
    let Some(t) = spawn_app(kind).await else { return };
    for signed in [false, true] {
        for c in slack_cases() {
            let what = format!("{} ({})", c.what, if signed { "signed" } else { "unsigned" });
            let (status, json) = answer(t.app.slack_interactions(), slack_request(&t, &c, signed), &what).await;
            assert_4xx_with_code(&what, status, &json);
        }
    }
    // Duplicate and odd Slack headers on an otherwise valid body.
    let body = form(b"{}");
    let ts = t.clock.now_ts().unix_seconds().to_string();
    let sig = sign(SIGNING_SECRET.as_bytes(), &ts, &body);
    let header_cases: Vec<(&str, Headers)> = vec![
        (
            "timestamp twice",
            vec![("x-slack-request-timestamp", ts.clone().into()), ("x-slack-signature", sig.clone().into())],
        ),
        ("signature twice", vec![("x-slack-signature", sig.clone().into())]),
        ("huge timestamp", vec![("x-slack-request-timestamp", vec![b'9'; 10_000])]),
        ("obs-text signature", vec![("x-slack-signature", b"v0=\xff\xfe".to_vec())]),
    ];
    for (what, extra) in header_cases {
        let mut c = case(what, b"POST", "/slack/interactions", body.clone());
        for (k, v) in extra {
            c = c.header(k, v);
        }
        let (status, json) = answer(t.app.slack_interactions(), slack_request(&t, &c, true), what).await;
        assert_4xx_with_code(what, status, &json);
    }
    countersign_core::domain::audit::verify_chain(&t.audit().await).expect("the audit chain is intact");
}

on_both_stores!(
    request_api_answers_every_hostile_input_with_a_coded_4xx,
    slack_endpoint_answers_every_hostile_input_with_a_coded_4xx,
);

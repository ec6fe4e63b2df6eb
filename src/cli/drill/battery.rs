//! `countersign drill --endpoint URL --slack-url URL`: attack your own deployment, safely. A battery of
//! hostile and accidental calls, each with the answer a sound deployment gives; every case is a call that
//! must be refused, so the drill needs no Slack secret and creates nothing reviewers see (a case that was
//! wrongly accepted is cleaned up where it can be: a created request is cancelled at once).
//!
//! With `--store …` it then checks that every refusal it provoked past the authorizer is in the audit trail
//! (`request.refused` with its code, `callback.rejected`), and says so when it cannot.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde::Serialize;
use serde_json::{json, Value};

use countersign_core::domain::{AuditKind, RequestId, Timestamp};
use countersign_core::ports::{Clock, SystemClock};

use crate::cli::api::{ApiClient, Signing};
use crate::cli::{exit, CliError, StoreArgs};

/// A Slack body over the interactions endpoint's 1 MiB limit.
const OVERSIZED_BYTES: usize = (1 << 20) + 4096;
const SLACK_TIMEOUT: Duration = Duration::from_secs(15);

/// One case: what was tried, what a sound deployment answers, what this one answered.
#[derive(Debug, Clone, Serialize)]
pub struct Case {
    pub name: String,
    pub target: &'static str,
    pub expected: String,
    pub actual: String,
    pub pass: bool,
}

/// A case that could not run, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub name: String,
    pub why: String,
}

/// Whether the refusals are in the audit trail.
#[derive(Debug, Clone, Serialize)]
pub struct AuditCheck {
    pub checked: bool,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub cases: Vec<Case>,
    pub passed: usize,
    pub failed: usize,
    pub skipped: Vec<Skipped>,
    pub audit: AuditCheck,
}

impl Report {
    /// 0 only when every defence held and, when checked, every refusal was audited.
    pub fn exit_code(&self) -> u8 {
        if self.failed == 0 && (!self.audit.checked || self.audit.ok) {
            exit::OK
        } else {
            exit::FAILED
        }
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.cases {
            let verdict = if c.pass { "PASS" } else { "FAIL" };
            out.push_str(&format!(
                "{verdict}  {:<5} {:<52} expected {}, got {}\n",
                c.target, c.name, c.expected, c.actual
            ));
        }
        for s in &self.skipped {
            out.push_str(&format!("SKIP  {:<5} {:<52} {}\n", "api", s.name, s.why));
        }
        let audit = match (&self.audit.checked, self.audit.ok) {
            (false, _) => format!("audit: not checked ({})", self.audit.detail),
            (true, true) => format!("audit: every refusal is in the audit trail ({})", self.audit.detail),
            (true, false) => format!("audit: FAIL: {}", self.audit.detail),
        };
        out.push_str(&format!(
            "{audit}\n{} passed, {} failed, {} skipped\n",
            self.passed,
            self.failed,
            self.skipped.len()
        ));
        out
    }
}

/// What the battery needs.
pub struct Battery<'a> {
    pub api: &'a ApiClient,
    pub slack_url: &'a str,
    /// A request of the caller's own that is not approved, for the redeem case.
    pub own_request: Option<&'a str>,
    pub store: Option<&'a StoreArgs>,
}

/// Refusals a case expects in the audit trail (past the authorizer).
#[derive(Default)]
struct Expected {
    refused: BTreeMap<String, usize>,
    callbacks: usize,
}

impl Battery<'_> {
    pub async fn run(&self) -> Result<Report, CliError> {
        let started = SystemClock.now();
        let mut cases = Vec::new();
        let mut skipped = Vec::new();
        let mut expected = Expected::default();
        self.api_cases(&mut cases, &mut skipped, &mut expected).await?;
        self.slack_cases(&mut cases, &mut expected).await?;
        let audit = match self.store {
            None => AuditCheck {
                checked: false,
                ok: false,
                detail: "give --store … to check that every refusal was audited".into(),
            },
            Some(store) => check_audit(store, started, &expected).await?,
        };
        let passed = cases.iter().filter(|c| c.pass).count();
        let failed = cases.len() - passed;
        Ok(Report { cases, passed, failed, skipped, audit })
    }

    async fn api_cases(
        &self,
        cases: &mut Vec<Case>,
        skipped: &mut Vec<Skipped>,
        expected: &mut Expected,
    ) -> Result<(), CliError> {
        let random = RequestId::generate().to_string();
        let get = format!("/v1/requests/{random}");
        for (name, how) in [
            ("no signature at all", Signing::None),
            ("a signature made with a wrong secret", Signing::WrongSecret),
            ("a stale X-Amz-Date (20 minutes old)", Signing::Age(Duration::from_secs(20 * 60))),
        ] {
            let p = self.api.probe(Method::GET, &get, None, how).await?;
            // API Gateway answers 403; so does local mode. A 401 is a refusal too, but not the contract.
            cases.push(case(name, "api", "403", p.status == 403, &p.status.to_string(), p.code.as_deref()));
        }

        let suffix = &random[random.len() - 8..].to_ascii_lowercase();
        let (action, environment) = ("countersign-drill.probe", format!("drill-{suffix}"));
        let body = json!({"action": action, "environment": environment, "reason": "countersign drill"});
        let p = self.post("/v1/requests", &body).await?;
        if p.status == 201 {
            self.clean_up(&p.body).await;
        }
        let ok = p.status == 403 && p.code.as_deref() == Some("no_matching_policy");
        cases.push(case(
            "an action no policy grants",
            "api",
            "403 no_matching_policy",
            ok,
            &p.status.to_string(),
            p.code.as_deref(),
        ));
        *expected.refused.entry("no_matching_policy".into()).or_default() += 1;

        let mut refused_bodies = Vec::new();
        for (field, value) in [
            ("channel", json!("C0ATTACKER")),
            ("approvers", json!({"users": ["U0ATTACKER"]})),
            ("required_approvals", json!(0)),
        ] {
            let mut b = body.clone();
            b[field] = value;
            refused_bodies.push((format!("the body sets {field}"), b, "400 invalid_request", Some("invalid_request")));
        }
        let mut bidi = body.clone();
        bidi["resource"] = json!("service/\u{202E}gnigats-stnemyap");
        refused_bodies.push(("a bidi-override resource".into(), bidi, "400", None));
        for (name, b, want, code) in refused_bodies {
            let p = self.post("/v1/requests", &b).await?;
            if p.status == 201 {
                self.clean_up(&p.body).await;
            }
            let ok = p.status == 400 && code.is_none_or(|c| p.code.as_deref() == Some(c));
            cases.push(case(&name, "api", want, ok, &p.status.to_string(), p.code.as_deref()));
            *expected.refused.entry("invalid_request".into()).or_default() += 1;
        }

        let foreign = "REQ_3f2b6c1e-9a41-4d2e-8f0a-5b7c9d1e2f30";
        for (name, method, path) in [
            ("a random request id", Method::GET, get.clone()),
            ("a foreign-looking request id", Method::GET, format!("/v1/requests/{foreign}")),
            ("cancel of someone else's id", Method::POST, format!("/v1/requests/{random}/cancel")),
            ("redeem of someone else's id", Method::POST, format!("/v1/requests/{random}/redeem")),
        ] {
            let body = (method == Method::POST).then(|| b"{}".to_vec());
            let p = self.api.probe(method, &path, body.as_deref(), Signing::Proper).await?;
            cases.push(case(name, "api", "404", p.status == 404, &p.status.to_string(), p.code.as_deref()));
            *expected.refused.entry("not_found".into()).or_default() += 1;
        }

        match self.own_request {
            Some(id) => {
                let p = self.api.probe(Method::POST, &format!("/v1/requests/{id}/redeem"), Some(b"{}"), Signing::Proper).await?;
                cases.push(case("redeem of a non-approved request of its own", "api", "409", p.status == 409, &p.status.to_string(), p.code.as_deref()));
                if let Some(code) = p.code.filter(|_| p.status == 409) {
                    *expected.refused.entry(code).or_default() += 1;
                }
            }
            None => skipped.push(Skipped {
                name: "redeem of a non-approved request of its own".into(),
                why: "give --own-request ID (a request of yours that is pending, denied, expired or cancelled): the drill creates nothing reviewers see".into(),
            }),
        }
        Ok(())
    }

    async fn post(&self, path: &str, body: &Value) -> Result<crate::cli::api::Probed, CliError> {
        let bytes = serde_json::to_vec(body).map_err(|e| CliError::failed("cannot encode a drill body", &e))?;
        self.api.probe(Method::POST, path, Some(&bytes), Signing::Proper).await
    }

    /// A case the deployment wrongly accepted made a request: withdraw it at once.
    async fn clean_up(&self, created: &Option<Value>) {
        if let Some(id) = created.as_ref().and_then(|b| b["id"].as_str()) {
            let _ =
                self.api.probe(Method::POST, &format!("/v1/requests/{id}/cancel"), Some(b"{}"), Signing::Proper).await;
        }
    }

    async fn slack_cases(&self, cases: &mut Vec<Case>, expected: &mut Expected) -> Result<(), CliError> {
        // A fresh connection per case: a server that refuses a body without reading it (the oversized case)
        // closes the connection, which must not be taken as the next case's answer.
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(SLACK_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("countersign-drill/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::failed("cannot build the HTTP client", &e))?;
        let form = format!("payload={}", urlencode(&click_payload().to_string()));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let ts = |offset: i64| (now as i64 + offset).to_string();
        let sig = random_signature();
        let probes: Vec<SlackProbe> = vec![
            ("unsigned", vec![], form.clone().into_bytes()),
            (
                "a wrong signature",
                vec![("x-slack-request-timestamp", ts(0)), ("x-slack-signature", sig.clone())],
                form.clone().into_bytes(),
            ),
            (
                "a timestamp 301 s in the past",
                vec![("x-slack-request-timestamp", ts(-301)), ("x-slack-signature", sig.clone())],
                form.clone().into_bytes(),
            ),
            (
                "a timestamp 301 s in the future",
                vec![("x-slack-request-timestamp", ts(301)), ("x-slack-signature", sig.clone())],
                form.clone().into_bytes(),
            ),
            ("the ssl_check=1&payload=… smuggle", vec![], format!("ssl_check=1&{form}").into_bytes()),
            (
                "a body that is not UTF-8",
                vec![("x-slack-request-timestamp", ts(0)), ("x-slack-signature", sig.clone())],
                b"payload=\xff\xfe\xfd%7B%7D".to_vec(),
            ),
            (
                "an oversized body (1 MiB + 4 KiB)",
                vec![("x-slack-request-timestamp", ts(0)), ("x-slack-signature", sig.clone())],
                oversized(&form),
            ),
            (
                "duplicate signature headers",
                vec![
                    ("x-slack-request-timestamp", ts(0)),
                    ("x-slack-signature", sig.clone()),
                    ("x-slack-signature", random_signature()),
                ],
                form.clone().into_bytes(),
            ),
        ];
        for (name, headers, body) in probes {
            let mut req =
                http.post(self.slack_url).header("content-type", "application/x-www-form-urlencoded").body(body);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let (ok, actual) = match req.send().await {
                Ok(resp) => {
                    let s = resp.status().as_u16();
                    let ok = s == 401 || (name.starts_with("an oversized") && s == 413);
                    (ok, s.to_string())
                }
                Err(e) => (false, format!("no answer ({})", countersign_core::error::error_chain(&e))),
            };
            let want = if name.starts_with("an oversized") { "401 or 413" } else { "401" };
            cases.push(case(name, "slack", want, ok, &actual, None));
            expected.callbacks += 1;
        }
        Ok(())
    }
}

/// A Slack case: its name, the headers it sends, its body.
type SlackProbe = (&'static str, Vec<(&'static str, String)>, Vec<u8>);

fn case(name: &str, target: &'static str, expected: &str, pass: bool, status: &str, code: Option<&str>) -> Case {
    let actual = match code {
        Some(c) => format!("{status} {c}"),
        None => status.to_string(),
    };
    Case { name: name.to_string(), target, expected: expected.to_string(), actual, pass }
}

/// A click on Approve as Slack shapes it, for a request that does not exist.
fn click_payload() -> Value {
    let id = RequestId::generate().to_string();
    json!({
        "type": "block_actions", "api_app_id": "A0DRILL000", "team": {"id": "T0DRILL000"},
        "user": {"id": "U0DRILL000", "team_id": "T0DRILL000"},
        "container": {"type": "message", "message_ts": "1700000000.000100", "channel_id": "C0DRILL000"},
        "trigger_id": "1.2.drill", "response_url": "https://hooks.slack.com/actions/T0DRILL000/1/drill",
        "actions": [{"type": "button", "action_id": "countersign_approve", "block_id": "countersign_actions", "value": id}]
    })
}

fn random_signature() -> String {
    let hex: String = (0..2).map(|_| RequestId::generate().to_string()).collect::<String>();
    let digest = sha2::Sha256::digest(hex.as_bytes());
    format!("v0={}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn oversized(form: &str) -> Vec<u8> {
    let mut b = form.as_bytes().to_vec();
    b.extend(std::iter::repeat_n(b'a', OVERSIZED_BYTES.saturating_sub(b.len())));
    b
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

use sha2::Digest;

/// Every refusal the battery provoked past the authorizer, found in the audit trail since it started.
async fn check_audit(store: &StoreArgs, started: Timestamp, expected: &Expected) -> Result<AuditCheck, CliError> {
    let opened = crate::cli::store::open(store).await?;
    let trail = opened.whole_trail().await?;
    let since: Vec<_> = trail.iter().filter(|e| e.at >= started).collect();
    let mut problems = Vec::new();
    let mut found = Vec::new();
    for (code, want) in &expected.refused {
        let got =
            since.iter().filter(|e| e.kind == AuditKind::RequestRefused && e.details.get("code") == Some(code)).count();
        found.push(format!("{got} request.refused {code}"));
        if got < *want {
            problems.push(format!("{want} refusal(s) {code} provoked, {got} in the audit trail"));
        }
    }
    // Unauthenticated callbacks are recorded within a budget; a record counts those it stood for.
    let callbacks: usize = since
        .iter()
        .filter(|e| e.kind == AuditKind::CallbackRejected)
        .map(|e| 1 + e.details.get("suppressed").and_then(|s| s.parse::<usize>().ok()).unwrap_or(0))
        .sum();
    found.push(format!("{callbacks} callback.rejected"));
    if callbacks < expected.callbacks {
        problems.push(format!(
            "{} refused callback(s) provoked, {callbacks} accounted for in the audit trail",
            expected.callbacks
        ));
    }
    Ok(AuditCheck {
        checked: true,
        ok: problems.is_empty(),
        detail: if problems.is_empty() {
            format!("{}: {}", opened.description, found.join(", "))
        } else {
            problems.join("; ")
        },
    })
}

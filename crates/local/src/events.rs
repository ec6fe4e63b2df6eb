//! Local mode's decision events (issue 19): each event, as EventBridge would deliver it (less `id`,
//! `account` and `region`), appended as one JSON line to `<data-dir>/events.jsonl`, and, when
//! `[events] webhook_url` is set, POSTed there with
//! `Countersign-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(webhook_secret, "<t>.<body>")>`.
//!
//! The relay keeps an event owed until both are done. A line already in the file is not written again
//! when the webhook failed and the event is retried (the file's last line tells how far it got); the
//! webhook may get an event twice (at least once: deduplicate on `detail.event_id`). Never logs a payload
//! or the secret.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use countersign_core::domain::events::DecisionEvent;
use countersign_core::ports::{Clock, EventPublisher, PublishError, SecretString};

/// The file in the data directory.
pub const EVENTS_FILE: &str = "events.jsonl";
/// The header carrying the webhook signature.
pub const SIGNATURE_HEADER: &str = "Countersign-Signature";
/// How long one webhook POST may take.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &SecretString, t: i64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(), // HMAC takes keys of any length: unreachable
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

pub struct LocalEvents {
    path: PathBuf,
    webhook: Option<(reqwest::Url, SecretString)>,
    http: reqwest::Client,
    clock: std::sync::Arc<dyn Clock>,
    /// The highest `seq` in the file (`None`: not read yet). Held across a publication: one at a time.
    written: tokio::sync::Mutex<Option<u64>>,
}

fn failed(code: &str, message: impl Into<String>) -> PublishError {
    PublishError { code: code.into(), message: message.into() }
}

impl LocalEvents {
    pub fn new(
        data_dir: &std::path::Path,
        config: &crate::config::EventsConfig,
        clock: std::sync::Arc<dyn Clock>,
    ) -> Result<Self, reqwest::Error> {
        let webhook = match (&config.webhook_url, &config.webhook_secret) {
            (Some(u), Some(s)) => Some((u.clone(), s.clone())),
            _ => None,
        };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(WEBHOOK_TIMEOUT)
            .user_agent(concat!("countersign/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { path: data_dir.join(EVENTS_FILE), webhook, http, clock, written: tokio::sync::Mutex::new(None) })
    }

    /// The `detail.audit.seq` of the file's last line (0 for no file or no line).
    fn last_written(&self) -> Result<u64, std::io::Error> {
        let f = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut last = 0;
        for line in std::io::BufReader::new(f).lines() {
            let line = line?;
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                last = v["detail"]["audit"]["seq"].as_u64().unwrap_or(last);
            }
        }
        Ok(last)
    }

    fn open(&self) -> Result<std::fs::File, std::io::Error> {
        std::fs::OpenOptions::new().create(true).append(true).open(&self.path)
    }

    async fn post(&self, url: &reqwest::Url, secret: &SecretString, body: String) -> Result<(), PublishError> {
        let sig = signature(secret, self.clock.now().unix_seconds(), body.as_bytes());
        let resp = self
            .http
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, sig)
            .body(body)
            .send()
            .await
            .map_err(|e| failed("webhook_unreachable", e.without_url().to_string()))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(failed("webhook_refused", format!("the webhook answered {}", resp.status())))
        }
    }
}

#[async_trait]
impl EventPublisher for LocalEvents {
    async fn publish(&self, events: &[DecisionEvent]) -> Result<Vec<Result<(), PublishError>>, PublishError> {
        let mut written = self.written.lock().await;
        let mut upto = match *written {
            Some(s) => s,
            None => self.last_written().map_err(|e| failed("events_file", e.to_string()))?,
        };
        let mut out = Vec::with_capacity(events.len());
        let mut file: Option<std::fs::File> = None;
        for e in events {
            let body = e.envelope().to_string();
            if e.seq > upto {
                let line = format!("{body}\n");
                let appended = match &mut file {
                    Some(f) => f.write_all(line.as_bytes()),
                    None => self.open().and_then(|f| file.insert(f).write_all(line.as_bytes())),
                };
                if let Err(err) = appended {
                    out.push(Err(failed("events_file", err.to_string())));
                    break;
                }
                upto = e.seq;
            }
            if let Some((url, secret)) = &self.webhook {
                if let Err(err) = self.post(url, secret, body).await {
                    out.push(Err(err));
                    break;
                }
            }
            out.push(Ok(()));
        }
        // One sync per call. Until it returns, nothing counts as published: the entries stay owed (a crash
        // before it may lose lines the retry then writes again).
        if let Some(f) = file {
            f.sync_data().map_err(|e| failed("events_file", e.to_string()))?;
        }
        *written = Some(upto);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_t_dot_body() {
        // Checked against Python: hmac.new(b"0123456789abcdef", b"1700000000.{}", hashlib.sha256).hexdigest()
        let s = signature(&SecretString::new("0123456789abcdef"), 1_700_000_000, b"{}");
        assert_eq!(s, "t=1700000000,v1=e4f8e2ecae2295b2ddb2f0b5584c8275e226c0ebe9b3b819e70156bb67122e3e");
    }
}

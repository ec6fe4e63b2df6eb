//! `audit verify --checkpoints`: reading the checkpoints, checking their signatures and links, and the
//! verdict's checkpoint lines (issue 17, threat row 37); the newest
//! checkpoint of an export's summary line.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::json;

use countersign_core::domain::checkpoint::{CheckpointBreak, CheckpointCheck, CheckpointClaims, CHECKPOINT_TYP};
use countersign_core::domain::receipt::{parse_compact, Jwks};
use countersign_core::ports::CheckpointSink;
use countersign_local::checkpoints::DirSink;

use super::super::receipt::verify_jws_signature;
use super::super::{exit, CliError, Output};

/// Where `verify --checkpoints` reads the checkpoints: `checkpoints/{seq, 20 digits}.jwt` below a directory
/// (local mode's data directory) or below an S3 prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointSource {
    Dir(PathBuf),
    S3 { bucket: String, prefix: String },
}

/// `--checkpoints`: `s3://BUCKET[/PREFIX]`, or anything else as a directory.
pub fn parse_checkpoints(s: &str) -> Result<CheckpointSource, String> {
    match s.strip_prefix("s3://") {
        Some(rest) => {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err("expected s3://BUCKET[/PREFIX]: the bucket is missing".into());
            }
            Ok(CheckpointSource::S3 { bucket: bucket.into(), prefix: prefix.trim_matches('/').into() })
        }
        None if s.is_empty() => Err("expected a directory or s3://BUCKET[/PREFIX]".into()),
        None => Ok(CheckpointSource::Dir(PathBuf::from(s))),
    }
}

/// Why the store does not match its checkpoints: exit 1, named like the break.
#[derive(Debug)]
pub(super) struct AnchorBreak {
    pub(super) kind: &'static str,
    pub(super) message: String,
    /// What exactly failed, when the message alone does not say (which signature check).
    pub(super) detail: Option<String>,
}

impl From<CheckpointBreak> for AnchorBreak {
    fn from(b: CheckpointBreak) -> Self {
        let kind = match b {
            CheckpointBreak::Differs(_) => "checkpoint_differs",
            CheckpointBreak::Truncated { .. } => "checkpoint_truncated",
            CheckpointBreak::BadSignature(_) => "checkpoint_bad_signature",
            CheckpointBreak::Unlinked(_) => "checkpoint_unlinked",
        };
        Self { kind, message: b.to_string(), detail: None }
    }
}

/// What the chain was checked against, for the verdict.
#[derive(Debug, Clone, Copy)]
pub(super) enum Anchors {
    /// An export file: checkpoints do not apply.
    NotApplicable,
    /// The store, without --checkpoints: truncation and rewrites go unseen, and the verdict says so.
    Unchecked,
    Checked {
        count: usize,
        newest: u64,
    },
}

/// The sink behind a source, and how it is shown in messages.
async fn open_sink(source: &CheckpointSource) -> Result<(String, Box<dyn CheckpointSink>), CliError> {
    match source {
        CheckpointSource::S3 { bucket, prefix } => {
            let conf = super::super::store::aws_config().await;
            let s3 = countersign_aws::checkpoints::sdk::config::Builder::from(&conf)
                .force_path_style(custom_s3_endpoint(&conf))
                .build();
            let sink = countersign_aws::checkpoints::S3Sink::new(
                countersign_aws::checkpoints::sdk::Client::from_conf(s3),
                bucket.clone(),
                prefix.clone(),
            );
            Ok((format!("s3://{bucket}/{prefix}"), Box::new(sink)))
        }
        CheckpointSource::Dir(dir) => {
            if !dir.is_dir() {
                return Err(CliError::new(exit::USAGE, format!("--checkpoints {}: not a directory", dir.display())));
            }
            // The data directory, as local mode writes it; the `checkpoints` directory itself is accepted too.
            let root = match dir.parent() {
                Some(parent)
                    if !dir.join("checkpoints").is_dir() && dir.file_name().is_some_and(|n| n == "checkpoints") =>
                {
                    parent.to_path_buf()
                }
                _ => dir.clone(),
            };
            Ok((root.join("checkpoints").display().to_string(), Box::new(DirSink { root })))
        }
    }
}

/// The checkpoints as stored, `(seq from the object name, JWS)` in chain order.
pub(super) async fn read_checkpoints(source: &CheckpointSource) -> Result<(String, Vec<(u64, String)>), CliError> {
    let (shown, sink) = open_sink(source).await?;
    let found =
        sink.all().await.map_err(|e| CliError::failed(&format!("cannot read the checkpoints in {shown}"), &e))?;
    Ok((shown, found))
}

/// The newest checkpoint in `source`, for an export's summary line: its claims as signed (not verified here;
/// `verify --file --jwks` verifies them), or `None` when there is none yet.
pub(super) async fn newest_checkpoint(source: &CheckpointSource) -> Result<Option<SummaryCheckpoint>, CliError> {
    let (shown, sink) = open_sink(source).await?;
    let Some(jws) =
        sink.latest().await.map_err(|e| CliError::failed(&format!("cannot read the checkpoints in {shown}"), &e))?
    else {
        return Ok(None);
    };
    let claims = checkpoint_claims(&jws)
        .map_err(|why| CliError::new(exit::FAILED, format!("the newest checkpoint in {shown} is unreadable: {why}")))?;
    Ok(Some(SummaryCheckpoint { seq: claims.seq, hash: claims.hash, jws }))
}

/// The claims of a checkpoint JWS, without checking its signature.
pub(super) fn checkpoint_claims(jws: &str) -> Result<CheckpointClaims, String> {
    let parsed = parse_compact(jws)?;
    if parsed.header.typ != CHECKPOINT_TYP {
        return Err(format!("typ is {:?}, not {CHECKPOINT_TYP}", parsed.header.typ));
    }
    serde_json::from_value(parsed.claims).map_err(|e| format!("its claims are not a checkpoint: {e}"))
}

/// The newest checkpoint, as an export's summary line carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryCheckpoint {
    pub seq: u64,
    pub hash: String,
    pub jws: String,
}

/// Whether S3 is reached at a configured endpoint (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, or a profile's
/// `endpoint_url`, its `services` section included), resolved as the SDK resolves it for the S3 client. There
/// (an emulator, an S3-compatible store) buckets are addressed path-style: a name like `localhost` has no
/// bucket subdomains. Real S3 keeps virtual-hosted addressing.
fn custom_s3_endpoint(conf: &aws_config::SdkConfig) -> bool {
    let key = aws_types::service_config::ServiceConfigKey::builder()
        .service_id("S3")
        .env("AWS_ENDPOINT_URL")
        .profile("endpoint_url")
        .build();
    let for_s3 = key.ok().and_then(|k| conf.service_config().and_then(|c| c.load_config(k)));
    for_s3.is_some() || conf.endpoint_url().is_some()
}

/// Each checkpoint's signature, `typ` and claims; then their `prev` links, in the domain's check.
pub(super) fn check_checkpoints(
    found: Vec<(u64, String)>,
    jwks: &Jwks,
) -> Result<(CheckpointCheck, Anchors), AnchorBreak> {
    let bad = |seq: u64, detail: String| AnchorBreak {
        kind: "checkpoint_bad",
        message: format!("checkpoint {seq}: {detail}"),
        detail: None,
    };
    let mut claims = Vec::with_capacity(found.len());
    for (seq, jws) in found {
        let parsed = verify_jws_signature(&jws, jwks)
            .map_err(|why| AnchorBreak { detail: Some(why), ..CheckpointBreak::BadSignature(seq).into() })?;
        if parsed.header.typ != CHECKPOINT_TYP {
            return Err(bad(seq, format!("typ is {:?}, not {CHECKPOINT_TYP}", parsed.header.typ)));
        }
        let c: CheckpointClaims = serde_json::from_value(parsed.claims)
            .map_err(|e| bad(seq, format!("signed, but its claims are not a checkpoint: {e}")))?;
        if c.seq != seq {
            return Err(bad(seq, format!("stored under seq {seq} but signed for seq {}", c.seq)));
        }
        claims.push(c);
    }
    let count = claims.len();
    let newest = claims.iter().map(|c| c.seq).max().unwrap_or(0);
    let check = CheckpointCheck::new(claims)?;
    Ok((check, Anchors::Checked { count, newest }))
}

/// The store does not match its checkpoints (or they are not genuine): broken, exit 1.
pub(super) fn anchor_broken(what: &str, b: &AnchorBreak, output: Output) -> u8 {
    match output {
        Output::Text => {
            println!("BROKEN: {what}: {}", b.message);
            if let Some(d) = &b.detail {
                println!("  why: {d}");
            }
        }
        Output::Json => println!(
            "{}",
            json!({"intact": false, "break": {"kind": b.kind, "message": b.message, "detail": b.detail}})
        ),
    }
    exit::FAILED
}

impl Anchors {
    /// The verdict's last line, in text.
    pub(super) fn line(self) -> Option<String> {
        match self {
            Anchors::NotApplicable => None,
            Anchors::Unchecked => Some(
                "not checked against checkpoints: truncation and rewrites cannot be detected without them \
                 (--checkpoints DIR --jwks FILE)"
                    .into(),
            ),
            Anchors::Checked { count, newest } => {
                Some(format!("checkpoints: {count} verified, the newest at seq {newest}; the chain matches them"))
            }
        }
    }

    pub(super) fn json(self) -> serde_json::Value {
        match self {
            Anchors::Checked { count, newest } => json!({"verified": count, "newest_seq": newest}),
            Anchors::NotApplicable | Anchors::Unchecked => serde_json::Value::Null,
        }
    }
}

/// How far the signed checkpoints vouch for the chain, for `audit report`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Coverage {
    /// Where they were read; `None`: no source was given or found.
    pub source: Option<String>,
    pub found: usize,
    /// True when each signature was checked with `--jwks` and the links and the chain agree.
    pub verified: bool,
    pub newest_seq: Option<u64>,
    pub head_seq: u64,
    /// Why the chain does not match its checkpoints (or they are not genuine).
    pub broken: Option<String>,
}

impl Coverage {
    /// One line for people.
    pub fn line(&self) -> String {
        let Some(source) = &self.source else {
            return "checkpoints: none checked (no checkpoint source; pass --checkpoints DIR|s3://BUCKET and --jwks FILE)"
                .into();
        };
        if let Some(b) = &self.broken {
            return format!("checkpoints: BROKEN: {b}");
        }
        let Some(newest) = self.newest_seq else {
            return format!("checkpoints: none in {source}: truncation and rewrites cannot be detected");
        };
        let behind = self.head_seq.saturating_sub(newest);
        let how = if self.verified { "verified" } else { "found, signatures not checked (pass --jwks FILE)" };
        format!(
            "checkpoints: {} {how}, the newest at seq {newest} of {} records ({behind} record(s) written since)",
            self.found, self.head_seq
        )
    }
}

/// The coverage of `records` (the whole chain, in order) by the checkpoints in `source`; with `jwks`, each
/// checkpoint's signature is verified and the chain is checked against them, as `verify --checkpoints` does.
pub async fn coverage(
    records: &[countersign_core::domain::AuditEvent],
    source: Option<&CheckpointSource>,
    jwks: Option<&std::path::Path>,
) -> Result<Coverage, CliError> {
    let head_seq = records.last().map_or(0, |e| e.seq);
    let Some(source) = source else { return Ok(Coverage { head_seq, ..Coverage::default() }) };
    let keys = jwks.map(super::super::receipt::read_jwks).transpose()?;
    let (shown, found) = read_checkpoints(source).await?;
    let mut c = Coverage { source: Some(shown), found: found.len(), head_seq, ..Coverage::default() };
    let Some(keys) = keys else {
        c.newest_seq = found.last().and_then(|(_, jws)| checkpoint_claims(jws).ok()).map(|claims| claims.seq);
        return Ok(c);
    };
    if found.is_empty() {
        return Ok(c);
    }
    let (mut check, anchors) = match check_checkpoints(found, &keys) {
        Ok(x) => x,
        Err(b) => {
            c.broken = Some(b.message);
            return Ok(c);
        }
    };
    if let Anchors::Checked { newest, .. } = anchors {
        c.newest_seq = Some(newest);
    }
    let verdict = records.iter().try_for_each(|e| check.observe(e)).and_then(|()| check.finish());
    match verdict {
        Ok(()) => c.verified = true,
        Err(b) => c.broken = Some(b.to_string()),
    }
    Ok(c)
}

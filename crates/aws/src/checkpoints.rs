//! The audit checkpoints in AWS (row 37, issue 17): one S3 object per checkpoint at
//! `{prefix}checkpoints/{seq, 20 digits}.jwt`, in a bucket with Object Lock (`template.yaml`, `CheckpointBucket`).
//!
//! - `put` is a conditional `PutObject` (`If-None-Match: *`): a checkpoint is created once and never overwritten,
//!   even by a second sweeper racing this one. An existing object is refused, as the local `DirSink` refuses it.
//! - `latest` and `all` list the prefix's versions (every page) and read the *first* version of each checkpoint,
//!   of at most [`MAX_CHECKPOINT_BYTES`]: a later version or a delete marker (anyone with `s3:PutObject` can
//!   add one; Object Lock only keeps versions from being removed) does not replace or hide a checkpoint. Keys
//!   that are not checkpoints are skipped, as the directory sink skips other files.
//! - Throttling, 5xx, timeouts and connection failures are `StoreError::Unavailable` (the sweeper retries on its
//!   next run); everything else is `StoreError::Other` naming the operation and the S3 error code.
//!
//! This module never deletes anything and never logs a checkpoint's contents.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::ChecksumAlgorithm;

use countersign_core::domain::checkpoint::object_key;
use countersign_core::ports::{CheckpointSink, StoreError};

/// The SDK this adapter is built on, for callers (tests, wiring) that build its client.
pub use aws_sdk_s3 as sdk;

/// The largest checkpoint read back. A checkpoint is a few hundred bytes; anything bigger is not one of ours.
pub const MAX_CHECKPOINT_BYTES: usize = 16 * 1024;

/// The media type of a stored checkpoint (a compact JWS).
pub const CONTENT_TYPE: &str = "application/jwt";

/// Error codes that mean "try again later".
const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    // Another conditional write to the same key is in flight: S3 asks for a retry.
    "ConditionalRequestConflict",
];

/// The checkpoint sink on S3.
#[derive(Debug, Clone)]
pub struct S3Sink {
    pub client: aws_sdk_s3::Client,
    pub bucket: String,
    /// Prepended to every key: empty, or ending in `/` (see [`S3Sink::new`]).
    pub prefix: String,
    /// The newest checkpoint this process wrote or read, `(seq, JWS)`: `latest` then lists only the keys
    /// after it, so a warm sweeper makes one short listing a run instead of listing a year of checkpoints.
    /// Checkpoints are never removed, so a newer one can only appear after it.
    newest: Arc<Mutex<Option<(u64, String)>>>,
}

impl S3Sink {
    /// A sink on `bucket`, under `prefix` (`""` for the bucket's root; a missing trailing `/` is added).
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        let mut prefix = prefix.into();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self { client, bucket: bucket.into(), prefix, newest: Arc::default() }
    }

    fn remember(&self, seq: u64, jws: &str) {
        let mut newest = self.newest.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if newest.as_ref().is_none_or(|(s, _)| *s < seq) {
            *newest = Some((seq, jws.to_string()));
        }
    }

    fn key(&self, seq: u64) -> String {
        format!("{}{}", self.prefix, object_key(seq))
    }

    fn list_prefix(&self) -> String {
        format!("{}checkpoints/", self.prefix)
    }

    /// The seq of a listed key, if it is a checkpoint's: exactly 20 digits and `.jwt` below the prefix.
    fn seq_of(&self, key: &str) -> Option<u64> {
        let name = key.strip_prefix(&self.list_prefix())?.strip_suffix(".jwt")?;
        (name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit())).then(|| name.parse().ok()).flatten()
    }

    /// Every checkpoint's seq and the version first written under its key, in chain order, from every page of
    /// the version listing. The first version is the checkpoint: it was created with `If-None-Match` and Object
    /// Lock keeps it. A later version (an overwrite by whoever holds `s3:PutObject`) or a delete marker hides it
    /// from a plain `GetObject`, not from this; both are logged.
    async fn originals(&self, after: Option<u64>) -> Result<Vec<(u64, Option<String>)>, StoreError> {
        // seq → (the oldest version seen: last modified, version id), and how many versions and markers.
        let mut found: BTreeMap<u64, (Option<DateTime>, Option<String>, usize)> = BTreeMap::new();
        let mut hidden: BTreeMap<u64, usize> = BTreeMap::new();
        // The SDK has no paginator for this listing: follow the key and version-id markers.
        // After `after`: the listing starts past its key (and seqs at or before it are skipped regardless).
        let (mut key_marker, mut version_marker) = (after.map(|seq| self.key(seq)), None::<String>);
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(self.list_prefix())
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| from_sdk("ListObjectVersions", &self.bucket, e))?;
            for v in page.versions() {
                let Some(seq) = v.key().and_then(|k| self.seq_of(k)).filter(|s| after.is_none_or(|a| *s > a)) else {
                    continue;
                };
                let entry = found.entry(seq).or_insert((None, None, 0));
                entry.2 += 1;
                // Versions of a key are listed newest first; `<=` keeps the last listed among equal times.
                let older = match (v.last_modified(), entry.0) {
                    (Some(t), Some(best)) => *t <= best,
                    _ => true,
                };
                if older {
                    *entry = (v.last_modified().copied(), v.version_id().map(str::to_string), entry.2);
                }
            }
            for m in page.delete_markers() {
                if let Some(seq) = m.key().and_then(|k| self.seq_of(k)) {
                    *hidden.entry(seq).or_default() += 1;
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            version_marker = page.next_version_id_marker().map(str::to_string);
            if key_marker.is_none() && version_marker.is_none() {
                break;
            }
        }
        for (seq, (_, _, versions)) in &found {
            let markers = hidden.get(seq).copied().unwrap_or(0);
            if *versions > 1 || markers > 0 {
                tracing::warn!(seq, versions, markers, bucket = %self.bucket, "checkpoint was overwritten or hidden; reading its first version");
            }
        }
        // A version id of "null" is an object written before versioning was enabled: read it without one.
        Ok(found.into_iter().map(|(seq, (_, id, _))| (seq, id.filter(|i| i != "null"))).collect())
    }

    /// The JWS of checkpoint `seq`, read up to [`MAX_CHECKPOINT_BYTES`].
    async fn read(&self, seq: u64, version: Option<&str>) -> Result<String, StoreError> {
        let key = self.key(seq);
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .set_version_id(version.map(str::to_string))
            .send()
            .await
            .map_err(|e| from_sdk("GetObject", &self.bucket, e))?;
        let too_big = || StoreError::Corrupt(format!("checkpoint {seq} is larger than {MAX_CHECKPOINT_BYTES} bytes"));
        if out.content_length().is_some_and(|n| n < 0 || n as u64 > MAX_CHECKPOINT_BYTES as u64) {
            return Err(too_big());
        }
        // The length header is not trusted alone: stop reading as soon as the body passes the bound.
        let mut body = out.body;
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                StoreError::Unavailable(Box::new(S3CallFailed { op: "GetObject", code: None, source: Box::new(e) }))
            })?;
            if bytes.len() + chunk.len() > MAX_CHECKPOINT_BYTES {
                return Err(too_big());
            }
            bytes.extend_from_slice(&chunk);
        }
        String::from_utf8(bytes).map_err(|_| StoreError::Corrupt(format!("checkpoint {seq} is not UTF-8")))
    }
}

#[async_trait]
impl CheckpointSink for S3Sink {
    async fn put(&self, seq: u64, jws: &str) -> Result<(), StoreError> {
        if jws.len() > MAX_CHECKPOINT_BYTES {
            // Never write what `latest` would refuse to read back.
            return Err(StoreError::Other(format!(
                "checkpoint {seq} is {} bytes, over the {MAX_CHECKPOINT_BYTES}-byte limit",
                jws.len()
            )));
        }
        let key = self.key(seq);
        let sent = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .body(ByteStream::from(jws.as_bytes().to_vec()))
            .content_type(CONTENT_TYPE)
            // Object Lock buckets require an integrity checksum on every PutObject that gets a retention.
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .if_none_match("*")
            .send()
            .await;
        match sent {
            Ok(_) => {
                self.remember(seq, jws);
                Ok(())
            }
            Err(e) if is_precondition_failed(&e) => {
                tracing::warn!(seq, bucket = %self.bucket, "checkpoint already exists; not overwritten");
                Err(StoreError::Other(format!(
                    "checkpoint {seq} already exists at s3://{}/{key} and is never overwritten",
                    self.bucket
                )))
            }
            Err(e) => Err(from_sdk("PutObject", &self.bucket, e)),
        }
    }

    async fn latest(&self) -> Result<Option<String>, StoreError> {
        let known = self.newest.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        match self.originals(known.as_ref().map(|(seq, _)| *seq)).await?.last() {
            Some((seq, version)) => {
                let jws = self.read(*seq, version.as_deref()).await?;
                self.remember(*seq, &jws);
                Ok(Some(jws))
            }
            None => Ok(known.map(|(_, jws)| jws)),
        }
    }

    async fn all(&self) -> Result<Vec<(u64, String)>, StoreError> {
        let mut out = Vec::new();
        for (seq, version) in self.originals(None).await? {
            out.push((seq, self.read(seq, version.as_deref()).await?));
        }
        Ok(out)
    }
}

/// A failed S3 call: which operation and error code, wrapping the SDK error as its source.
#[derive(Debug)]
pub struct S3CallFailed {
    pub op: &'static str,
    pub code: Option<String>,
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl fmt::Display for S3CallFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(c) => write!(f, "S3 {} failed ({c})", self.op),
            None => write!(f, "S3 {} failed", self.op),
        }
    }
}

impl std::error::Error for S3CallFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

fn status<E, R: HasStatus>(e: &SdkError<E, R>) -> Option<u16> {
    e.raw_response().map(HasStatus::status_code)
}

/// The HTTP status of a raw response, whatever the SDK's response type.
trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// `If-None-Match: *` lost: the key exists (412 `PreconditionFailed`).
fn is_precondition_failed<E: ProvideErrorMetadata>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> bool {
    matches!(e, SdkError::ServiceError(_))
        && (status(e) == Some(412) || e.as_service_error().and_then(|s| s.code()) == Some("PreconditionFailed"))
}

fn is_transient<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>, status: Option<u16>) -> bool {
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(s) => {
            status.is_some_and(|s| s >= 500 || s == 429) || s.err().code().is_some_and(|c| TRANSIENT_CODES.contains(&c))
        }
        _ => false,
    }
}

/// Transient failures become `Unavailable` (the SDK error kept as the source); the rest `Other`, logged here
/// with the whole chain because `Other` carries only a short message.
fn from_sdk<E>(op: &'static str, bucket: &str, e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = status(&e);
    let code = e.as_service_error().and_then(|s| s.code()).map(str::to_string);
    if is_transient(&e, status) {
        tracing::warn!(op, bucket, code = code.as_deref().unwrap_or("none"), "S3 is unavailable");
        return StoreError::Unavailable(Box::new(S3CallFailed { op, code, source: Box::new(e) }));
    }
    tracing::error!(op, bucket, error = %DisplayErrorContext(&e), "S3 refused a call");
    match code {
        Some(c) => StoreError::Other(format!("S3 {op} on bucket {bucket} was refused ({c})")),
        None => StoreError::Other(format!("S3 {op} on bucket {bucket} failed (HTTP {})", status.unwrap_or(0))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sink(prefix: &str) -> S3Sink {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .build();
        S3Sink::new(aws_sdk_s3::Client::from_conf(conf), "b", prefix)
    }

    #[test]
    fn keys_are_the_domain_keys_below_the_prefix() {
        assert_eq!(sink("").key(12), "checkpoints/00000000000000000012.jwt");
        assert_eq!(sink("team-a").key(12), "team-a/checkpoints/00000000000000000012.jwt");
        assert_eq!(sink("team-a/").key(12), "team-a/checkpoints/00000000000000000012.jwt");
    }

    #[test]
    fn only_checkpoint_keys_are_listed() {
        let s = sink("p/");
        assert_eq!(s.seq_of("p/checkpoints/00000000000000000012.jwt"), Some(12));
        for other in [
            "checkpoints/00000000000000000012.jwt",
            "p/checkpoints/12.jwt",
            "p/checkpoints/00000000000000000012.jwt.bak",
            "p/checkpoints/sub/00000000000000000012.jwt",
            "p/checkpoints/+0000000000000000012.jwt",
        ] {
            assert_eq!(s.seq_of(other), None, "{other}");
        }
    }
}

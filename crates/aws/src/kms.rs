//! The receipt signer in AWS (row 36): an asymmetric KMS key (`ECC_NIST_P256`, `SIGN_VERIFY`) whose private
//! half never leaves KMS, behind `ports::Signer`.
//!
//! - The current key is read once with `GetPublicKey` (a failure is retried at the next call) and must be
//!   P-256 for signing; its `KeyId` answer, the key's ARN, is what every `Sign` names from then on, so an
//!   alias re-pointed while the process lives cannot sign with a key other than the one whose `kid` went into
//!   the JWS header.
//! - The DER of the public key (SubjectPublicKeyInfo) and of the signature (`SEQUENCE { r, s }`) are read
//!   by hand and strictly: this crate links into the Lambdas and needs no ECDSA implementation, only these two
//!   fixed shapes. Anything else is refused, never guessed at.
//! - Errors name the key and the KMS error code, nothing else: throttling, timeouts, 5xx and dispatch
//!   failures are `Unavailable` (503, retry later); everything KMS refuses for good (not found, disabled,
//!   wrong usage, access denied) is `Unusable`.
//!
//! It must never sign with a key it has not checked, nor return a signature it could not convert exactly.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyUsageType, MessageType, SigningAlgorithmSpec};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use countersign_core::domain::receipt::Jwk;
use countersign_core::ports::{SignError, Signer};

/// Longest wait for one KMS call, SDK retries included. The SDK has no read timeout by default, so a KMS
/// that accepts the connection and never answers would hold a redemption until the Lambda timeout.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// `Sign` takes at most this many bytes with `MessageType=RAW`; a longer message is hashed here and sent as
/// a `DIGEST`, which gives the same ES256 signature (ECDSA over SHA-256 of the message).
pub const MAX_RAW_MESSAGE: usize = 4096;

/// The DER SubjectPublicKeyInfo of every P-256 key up to its BIT STRING: `SEQUENCE { SEQUENCE { id-ecPublicKey,
/// prime256v1 }, BIT STRING (0 unused bits) }`, followed by the uncompressed point `04 ‖ x ‖ y`.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A key as checked: the ARN KMS named it by (a bare key id on some emulators, never an alias) and its JWK.
#[derive(Debug, Clone)]
struct CheckedKey {
    arn: String,
    jwk: Jwk,
}

/// ES256 signatures by a KMS key; the JWKS also lists the previous keys (rotation).
pub struct KmsSigner {
    client: aws_sdk_kms::Client,
    key_id: String,
    previous: Vec<String>,
    timeout: Duration,
    current: OnceCell<CheckedKey>,
    previous_keys: OnceCell<Vec<Jwk>>,
}

impl KmsSigner {
    /// `key_id`: the key receipts are signed with now (ARN, key id or alias); `previous`: keys that signed
    /// receipts still to verify, listed after it in the JWKS.
    pub fn new(client: aws_sdk_kms::Client, key_id: String, previous: Vec<String>) -> Self {
        Self {
            client,
            key_id,
            previous,
            timeout: CALL_TIMEOUT,
            current: OnceCell::new(),
            previous_keys: OnceCell::new(),
        }
    }

    /// Overrides [`CALL_TIMEOUT`].
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn current(&self) -> Result<&CheckedKey, SignError> {
        self.current.get_or_try_init(|| self.fetch(&self.key_id)).await
    }

    /// `GetPublicKey` of `key_id`, checked to be a P-256 signing key.
    async fn fetch(&self, key_id: &str) -> Result<CheckedKey, SignError> {
        let call = self.client.get_public_key().key_id(key_id).send();
        let out = bounded(self.timeout, key_id, "GetPublicKey", call).await?;
        // `CustomerMasterKeySpec` is the deprecated name of `KeySpec` (same values); KMS still returns both,
        // some emulators only the old one.
        let spec = out.key_spec().map(KeySpec::as_str).or_else(|| legacy_spec(&out));
        let usage = out.key_usage().map(KeyUsageType::as_str);
        if spec != Some(KeySpec::EccNistP256.as_str()) || usage != Some(KeyUsageType::SignVerify.as_str()) {
            return Err(SignError::Unusable(format!(
                "KMS key {key_id} is {} for {}, not ECC_NIST_P256 for SIGN_VERIFY",
                spec.unwrap_or("an unknown spec"),
                usage.unwrap_or("an unknown usage"),
            )));
        }
        if !out.signing_algorithms().is_empty()
            && !out.signing_algorithms().contains(&SigningAlgorithmSpec::EcdsaSha256)
        {
            return Err(SignError::Unusable(format!("KMS key {key_id} does not offer ECDSA_SHA_256")));
        }
        // The key's ARN (KMS) or bare id (emulators): either names this key for good, unlike an alias.
        let Some(arn) = out.key_id().filter(|a| !a.is_empty() && !a.contains("alias/")) else {
            return Err(SignError::Unusable(format!("KMS did not name the key behind {key_id}")));
        };
        let der = out.public_key().map(Blob::as_ref).unwrap_or_default();
        let (x, y) = p256_point_from_spki(der)
            .map_err(|why| SignError::Unusable(format!("KMS key {key_id}: public key {why}")))?;
        Ok(CheckedKey { arn: arn.to_string(), jwk: Jwk::p256(&x, &y) })
    }
}

#[async_trait]
impl Signer for KmsSigner {
    async fn current_key(&self) -> Result<Jwk, SignError> {
        Ok(self.current().await?.jwk.clone())
    }

    async fn sign(&self, message: &[u8]) -> Result<[u8; 64], SignError> {
        let key = self.current().await?;
        let request = self.client.sign().key_id(&key.arn).signing_algorithm(SigningAlgorithmSpec::EcdsaSha256);
        let request = if message.len() <= MAX_RAW_MESSAGE {
            request.message_type(MessageType::Raw).message(Blob::new(message))
        } else {
            request.message_type(MessageType::Digest).message(Blob::new(Sha256::digest(message).to_vec()))
        };
        let out = bounded(self.timeout, &key.arn, "Sign", request.send()).await?;
        if let Some(signer) = out.key_id().filter(|k| !same_key(k, &key.arn)) {
            return Err(SignError::Unusable(format!("KMS signed with {signer}, not with {}", key.arn)));
        }
        let der = out.signature().map(Blob::as_ref).unwrap_or_default();
        der_signature_to_raw(der).map_err(|why| SignError::Unusable(format!("KMS key {}: signature {why}", key.arn)))
    }

    async fn public_keys(&self) -> Result<Vec<Jwk>, SignError> {
        let current = self.current().await?.jwk.clone();
        let previous = self
            .previous_keys
            .get_or_try_init(|| async {
                let mut keys = Vec::with_capacity(self.previous.len());
                for id in &self.previous {
                    keys.push(self.fetch(id).await?.jwk);
                }
                Ok::<_, SignError>(keys)
            })
            .await?;
        let mut keys = vec![current];
        for k in previous {
            if !keys.iter().any(|seen| seen.kid == k.kid) {
                keys.push(k.clone());
            }
        }
        Ok(keys)
    }
}

#[allow(deprecated)] // read only when `KeySpec` is absent, which is why it is read at all
fn legacy_spec(out: &aws_sdk_kms::operation::get_public_key::GetPublicKeyOutput) -> Option<&str> {
    out.customer_master_key_spec().map(|s| s.as_str())
}

/// Whether two names of a key (ARN or bare key id, never an alias) are the same key.
fn same_key(a: &str, b: &str) -> bool {
    let id = |k: &str| k.rsplit_once(":key/").map_or(k, |(_, id)| id).to_string();
    a == b || (id(a) == id(b) && !(a.contains(':') && b.contains(':')))
}

/// Runs one KMS call for at most `timeout`, its error classified.
async fn bounded<T, E>(
    timeout: Duration,
    key_id: &str,
    operation: &str,
    call: impl std::future::Future<Output = Result<T, SdkError<E>>>,
) -> Result<T, SignError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(classify(key_id, operation, e)),
        Err(_) => {
            tracing::warn!(key_id, operation, "KMS did not answer in time");
            Err(SignError::Unavailable(Box::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("KMS {operation} did not answer within {timeout:?}"),
            ))))
        }
    }
}

/// KMS error codes that say "not now" rather than "never".
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "KMSInternalException",
    "KeyUnavailableException",
    "DependencyTimeoutException",
    "ServiceUnavailableException",
    "InternalFailure",
    "RequestTimeoutException",
];

fn classify<E>(key_id: &str, operation: &str, e: SdkError<E>) -> SignError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let transient = match &e {
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            status >= 500 || status == 429 || s.err().code().is_some_and(|c| TRANSIENT_CODES.contains(&c))
        }
        // Timeouts, connection failures, unreadable answers: KMS may answer next time.
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        _ => false,
    };
    let code = e.code().unwrap_or("no error code").to_string();
    if transient {
        tracing::warn!(key_id, operation, code, "KMS is unavailable");
        SignError::Unavailable(Box::new(e))
    } else {
        tracing::error!(key_id, operation, code, "KMS refused the receipt key");
        SignError::Unusable(format!("KMS refused {operation} with key {key_id}: {code}"))
    }
}

/// The point `(x, y)` of a DER SubjectPublicKeyInfo holding an uncompressed P-256 key; nothing else is read.
pub fn p256_point_from_spki(der: &[u8]) -> Result<([u8; 32], [u8; 32]), String> {
    let Some(point) = der.strip_prefix(&P256_SPKI_PREFIX[..]) else {
        return Err("is not a DER SubjectPublicKeyInfo of a P-256 key".into());
    };
    let Some(coordinates) = point.strip_prefix(&[0x04]) else {
        return Err("is not an uncompressed point".into());
    };
    if coordinates.len() != 64 {
        return Err(format!("has {} bytes of coordinates, not 64", coordinates.len()));
    }
    let mut x = [0u8; 32];
    let mut y = [0u8; 32];
    x.copy_from_slice(&coordinates[..32]);
    y.copy_from_slice(&coordinates[32..]);
    Ok((x, y))
}

/// The 64-byte `r‖s` of a DER ECDSA P-256 signature `SEQUENCE { INTEGER r, INTEGER s }`, strictly: short-form
/// lengths, minimal positive integers of at most 32 bytes (33 with the one leading zero a high bit needs), no
/// zero, nothing after the sequence.
pub fn der_signature_to_raw(der: &[u8]) -> Result<[u8; 64], String> {
    let body = match der {
        [0x30, len, body @ ..] if usize::from(*len) == body.len() && *len < 0x80 => body,
        [0x30, ..] => return Err("has a SEQUENCE length that does not match".into()),
        _ => return Err("is not a DER SEQUENCE".into()),
    };
    let (r, rest) = der_integer(body)?;
    let (s, rest) = der_integer(rest)?;
    if !rest.is_empty() {
        return Err("has bytes after s".into());
    }
    let mut out = [0u8; 64];
    out[32 - r.len()..32].copy_from_slice(r);
    out[64 - s.len()..].copy_from_slice(s);
    Ok(out)
}

/// One DER INTEGER at the start of `der`: its magnitude (≤ 32 bytes, no leading zero) and what follows.
fn der_integer(der: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let (len, rest) = match der {
        [0x02, len, rest @ ..] if *len < 0x80 => (usize::from(*len), rest),
        [0x02, ..] => return Err("has an INTEGER with a long-form length".into()),
        _ => return Err("is missing an INTEGER".into()),
    };
    if len == 0 || len > rest.len() {
        return Err("has an INTEGER of a bad length".into());
    }
    let (value, rest) = rest.split_at(len);
    let magnitude = match value {
        [first, ..] if first & 0x80 != 0 => return Err("has a negative INTEGER".into()),
        [0x00, second, ..] if second & 0x80 != 0 => &value[1..],
        [0x00, ..] if len > 1 => return Err("has an INTEGER with a superfluous leading zero".into()),
        _ => value,
    };
    if magnitude.len() > 32 {
        return Err("has an INTEGER longer than 32 bytes".into());
    }
    if magnitude.iter().all(|b| *b == 0) {
        return Err("has a zero INTEGER".into());
    }
    Ok((magnitude, rest))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// RFC 6979 A.2.5, P-256 with SHA-256, message "sample": r and s as the RFC gives them.
    const R: &str = "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716";
    const S: &str = "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8";

    #[test]
    fn a_key_named_by_arn_and_by_id_is_the_same_key_and_no_other() {
        let arn = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        assert!(same_key(arn, arn));
        assert!(same_key(arn, "1234abcd-12ab-34cd-56ef-1234567890ab"));
        assert!(same_key("1234abcd-12ab-34cd-56ef-1234567890ab", arn));
        assert!(!same_key(arn, "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"));
        assert!(!same_key(arn, "arn:aws:kms:us-east-1:111122223333:key/ffffffff-12ab-34cd-56ef-1234567890ab"));
    }

    #[test]
    fn a_der_signature_converts_to_r_then_s_each_left_padded_to_32_bytes() {
        // Both high bits set: each INTEGER carries one leading zero, 72 bytes in all.
        let der = unhex(&format!("3046 022100{R} 022100{S}"));
        let raw = der_signature_to_raw(&der).unwrap();
        assert_eq!(raw[..32], unhex(R)[..]);
        assert_eq!(raw[32..], unhex(S)[..]);

        // Short integers (31 bytes and 1 byte) are left-padded with zeros.
        let short_r = "7FD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF37";
        let der = unhex(&format!("3024 021f{short_r} 020101"));
        let raw = der_signature_to_raw(&der).unwrap();
        assert_eq!(raw[..1], [0]);
        assert_eq!(raw[1..32], unhex(short_r)[..]);
        assert_eq!(raw[32..63], [0; 31]);
        assert_eq!(raw[63], 1);
    }

    #[test]
    fn malformed_or_oversized_der_signatures_are_refused() {
        let ok = format!("022100{R} 022100{S}");
        for (why, bad) in [
            ("empty", String::new()),
            ("not a sequence", format!("3146 {ok}")),
            ("length too long", format!("3047 {ok}")),
            ("length too short", format!("3045 {ok}")),
            ("trailing byte after the sequence", format!("3046 {ok} 00")),
            ("bytes after s", format!("3049 {ok} 020101")),
            ("long-form sequence length", format!("308146 {ok}")),
            ("negative r", format!("3045 0220{R} 022100{S}")),
            ("superfluous leading zero", "3007 02020001 020101".to_string()),
            ("two leading zeros", format!("3047 02220000{R} 022100{S}")),
            ("33 bytes without a leading zero", format!("3046 0221 01{R} 022100{S}")),
            ("zero r", "3006 020100 020101".to_string()),
            ("empty INTEGER", "3005 0200 020101".to_string()),
            ("missing s", format!("3023 022100{R}")),
            ("s not an INTEGER", format!("3046 022100{R} 042100{S}")),
            ("INTEGER longer than the sequence", "3006 020501 020101".to_string()),
        ] {
            assert!(der_signature_to_raw(&unhex(&bad)).is_err(), "{why} was accepted");
        }
    }

    /// A P-256 public key as KMS's GetPublicKey returns it (DER SubjectPublicKeyInfo, 91 bytes).
    const X: &str = "60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6";
    const Y: &str = "7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299";

    #[test]
    fn a_p256_spki_yields_its_coordinates_and_anything_else_is_refused() {
        let spki = unhex(&format!("3059301306072a8648ce3d020106082a8648ce3d030107034200 04 {X}{Y}"));
        assert_eq!(spki.len(), 91);
        let (x, y) = p256_point_from_spki(&spki).unwrap();
        assert_eq!((x.to_vec(), y.to_vec()), (unhex(X), unhex(Y)));

        // P-384's curve OID, a compressed point, a truncated or extended key, an RSA key.
        let p384 = unhex(&format!("3059301306072a8648ce3d020106082a8648ce3d030122034200 04 {X}{Y}"));
        let compressed = unhex(&format!("3059301306072a8648ce3d020106082a8648ce3d030107034200 02 {X}{Y}"));
        let mut short = spki.clone();
        short.pop();
        let mut long = spki.clone();
        long.push(0);
        let rsa = unhex("30820122300d06092a864886f70d01010105000382010f00");
        for (why, bad) in [("p384", p384), ("compressed", compressed), ("short", short), ("long", long), ("rsa", rsa)] {
            assert!(p256_point_from_spki(&bad).is_err(), "{why} was accepted");
        }
    }
}

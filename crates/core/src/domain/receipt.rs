//! Receipts (row 36): what a redemption proves, as a JWS (RFC 7515, compact serialization, `ES256`) that
//! anyone can check with the published key (RFC 7517 JWKS). This module is the receipt's whole format: the
//! claims and how they are derived from a request, the digests, the JWK and its `kid` (the RFC 7638
//! thumbprint), the compact encoding, and the checks `receipt verify` makes on the claims. The signature
//! itself is made behind `ports::Signer` and checked by the verifier's own ECDSA code.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::audit::AuditEvent;
use super::ids::ArtifactDigest;
use super::request::ApprovalRequest;
use super::time::Timestamp;

/// The JWS `typ` of a receipt.
pub const RECEIPT_TYP: &str = "countersign-receipt+jwt";
/// The only algorithm: ECDSA P-256 with SHA-256, signature as the 64-byte `r‖s`.
pub const ALG: &str = "ES256";
/// The issuer when `COUNTERSIGN_RECEIPT_ISSUER` is not set.
pub const DEFAULT_ISSUER: &str = "countersign";
/// A receipt longer than this is refused unread (a real one is about 1.5 KB; 20 details of 500 characters
/// are hashed, not included).
pub const MAX_JWS_BYTES: usize = 16 * 1024;

/// The JOSE header of a receipt or checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwsHeader {
    pub alg: String,
    pub kid: String,
    pub typ: String,
}

/// `policy` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyClaim {
    pub name: String,
    pub version: String,
}

/// One entry of the `approvals` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalClaim {
    pub user_id: String,
    pub at: Timestamp,
}

/// A pointer into the audit chain: `{seq, hash}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainPoint {
    pub seq: u64,
    pub hash: String,
}

/// The claims of a receipt (docs/receipts.md lists them with their meaning).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptClaims {
    pub iss: String,
    /// The requesting principal, in its role or user ARN form.
    pub sub: String,
    /// The request id.
    pub jti: String,
    /// Redemption time and `usable_until`, in seconds since the epoch (`exp` rounded down).
    pub iat: i64,
    pub exp: i64,
    /// The session ARN that redeemed.
    pub session: String,
    pub action: String,
    pub environment: String,
    pub resource: Option<String>,
    pub artifact: Option<String>,
    pub details_sha256: String,
    pub reason_sha256: Option<String>,
    pub policy: PolicyClaim,
    pub required_approvals: u32,
    pub approvals: Vec<ApprovalClaim>,
    pub decided_at: Option<Timestamp>,
    pub audit: ChainPoint,
    /// Row 41: the approval was a break-glass (approved at once, reviewed afterwards). Receipts issued
    /// before it existed read as `false`.
    #[serde(default)]
    pub break_glass: bool,
}

/// SHA-256 (lowercase hex) of the details' canonical JSON: one object, keys sorted by code point, no
/// whitespace, strings escaped as JSON requires and nothing more (`{}` when there are none).
pub fn details_sha256(details: &BTreeMap<String, String>) -> String {
    hex::encode(Sha256::digest(serde_json::to_vec(details).unwrap_or_default()))
}

/// SHA-256 (lowercase hex) of the reason's UTF-8 bytes as stored (trimmed); `None` without a reason.
pub fn reason_sha256(reason: Option<&str>) -> Option<String> {
    reason.map(|r| hex::encode(Sha256::digest(r.as_bytes())))
}

impl ReceiptClaims {
    /// The claims for `r` just redeemed (`redeemed_at`, `redeemed_by` and `usable_until` set), whose
    /// `request.redeemed` record is `redeemed`.
    pub fn of(r: &ApprovalRequest, redeemed: &AuditEvent, issuer: &str) -> Self {
        let at = r.redeemed_at.unwrap_or(redeemed.at);
        Self {
            iss: issuer.to_string(),
            sub: r.requester.principal.clone(),
            jti: r.id.to_string(),
            iat: at.unix_seconds(),
            exp: r.usable_until.unwrap_or(at).unix_seconds(),
            session: r.redeemed_by.clone().unwrap_or_default(),
            action: r.action.to_string(),
            environment: r.environment.to_string(),
            resource: r.resource.as_ref().map(ToString::to_string),
            artifact: r.artifact.as_ref().map(ToString::to_string),
            details_sha256: details_sha256(&r.details),
            reason_sha256: reason_sha256(r.reason.as_deref()),
            policy: PolicyClaim { name: r.policy.name.to_string(), version: r.policy.version.clone() },
            required_approvals: r.required_approvals,
            approvals: r.approvals.iter().map(|a| ApprovalClaim { user_id: a.user_id.to_string(), at: a.at }).collect(),
            decided_at: r.decided_at,
            audit: ChainPoint { seq: redeemed.seq, hash: redeemed.hash.clone() },
            break_glass: r.break_glass.is_some(),
        }
    }
}

/// A public key as RFC 7517 publishes it (`kty EC`, `crv P-256`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub y: String,
    pub kid: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub use_: String,
}

/// A JWK Set: `{"keys": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

impl Jwk {
    /// The JWK of the P-256 point (`x`, `y`: 32-byte big-endian coordinates), its `kid` the RFC 7638
    /// thumbprint.
    pub fn p256(x: &[u8; 32], y: &[u8; 32]) -> Self {
        let (x, y) = (B64.encode(x), B64.encode(y));
        // RFC 7638 §3.2: the required members, in lexicographic order, no whitespace.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = B64.encode(Sha256::digest(canonical.as_bytes()));
        Self { kty: "EC".into(), crv: "P-256".into(), x, y, kid, alg: ALG.into(), use_: "sig".into() }
    }

    /// The point's coordinates, if this is a well-formed P-256 signing key for ES256.
    pub fn p256_coordinates(&self) -> Result<([u8; 32], [u8; 32]), String> {
        if self.kty != "EC" || self.crv != "P-256" {
            return Err(format!("key {} is {} {}, not EC P-256", self.kid, self.kty, self.crv));
        }
        let coord = |name: &str, v: &str| -> Result<[u8; 32], String> {
            let bytes = B64.decode(v).map_err(|e| format!("key {}: {name} is not base64url: {e}", self.kid))?;
            bytes.try_into().map_err(|_| format!("key {}: {name} is not 32 bytes", self.kid))
        };
        Ok((coord("x", &self.x)?, coord("y", &self.y)?))
    }
}

/// `BASE64URL(header) . BASE64URL(claims)`: the bytes a JWS signature covers.
pub fn signing_input<C: Serialize>(header: &JwsHeader, claims: &C) -> String {
    let h = serde_json::to_vec(header).unwrap_or_default();
    let c = serde_json::to_vec(claims).unwrap_or_default();
    format!("{}.{}", B64.encode(h), B64.encode(c))
}

/// The compact serialization: the signing input and the 64-byte `r‖s` signature.
pub fn compact(signing_input: &str, signature: &[u8; 64]) -> String {
    format!("{signing_input}.{}", B64.encode(signature))
}

/// A compact JWS taken apart, not yet verified.
#[derive(Debug, Clone)]
pub struct ParsedJws {
    pub header: JwsHeader,
    /// The claims as JSON (typed by the caller once the signature holds).
    pub claims: serde_json::Value,
    pub signing_input: String,
    pub signature: Vec<u8>,
}

/// Splits and decodes a compact JWS. Refuses anything but three base64url parts with a JSON header naming
/// `ES256` (no `none`, no algorithm confusion) and a JSON object as payload.
pub fn parse_compact(jws: &str) -> Result<ParsedJws, String> {
    let jws = jws.trim();
    if jws.len() > MAX_JWS_BYTES {
        return Err(format!("a receipt is at most {MAX_JWS_BYTES} bytes; this is {}", jws.len()));
    }
    let parts: Vec<&str> = jws.split('.').collect();
    let [h, c, s] = parts[..] else {
        return Err(format!("not a compact JWS: {} part(s) instead of 3", parts.len()));
    };
    let decode = |what: &str, v: &str| B64.decode(v).map_err(|e| format!("the {what} is not base64url: {e}"));
    let header: JwsHeader = serde_json::from_slice(&decode("header", h)?)
        .map_err(|e| format!("the header is not a JOSE header with alg, kid and typ: {e}"))?;
    if header.alg != ALG {
        return Err(format!("alg is {:?}; only {ALG} is accepted", header.alg));
    }
    let claims: serde_json::Value =
        serde_json::from_slice(&decode("payload", c)?).map_err(|e| format!("the payload is not JSON: {e}"))?;
    if !claims.is_object() {
        return Err("the payload is not a JSON object".into());
    }
    let signature = decode("signature", s)?;
    if signature.len() != 64 {
        return Err(format!("an ES256 signature is 64 bytes, this one is {}", signature.len()));
    }
    Ok(ParsedJws { header, claims, signing_input: format!("{h}.{c}"), signature })
}

/// What `receipt verify` was asked to hold, besides the signature.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    pub artifact: Option<ArtifactDigest>,
    pub action: Option<String>,
    pub environment: Option<String>,
    pub principal: Option<String>,
}

impl ReceiptClaims {
    /// Checks `exp` against `now` and every expectation given; the error names the failed check.
    pub fn check(&self, expect: &Expectations, now: Timestamp) -> Result<(), String> {
        if now.unix_seconds() >= self.exp {
            return Err(format!("exp: the receipt expired at {}", Timestamp::from_unix_seconds(self.exp).to_rfc3339()));
        }
        let differs = |name: &str, want: Option<&str>, got: Option<&str>| match want {
            Some(w) if Some(w) != got => {
                Err(format!("{name}: expected {w}, the receipt says {}", got.unwrap_or("none")))
            }
            _ => Ok(()),
        };
        differs("artifact", expect.artifact.as_ref().map(ArtifactDigest::as_str), self.artifact.as_deref())?;
        differs("action", expect.action.as_deref(), Some(&self.action))?;
        differs("environment", expect.environment.as_deref(), Some(&self.environment))?;
        differs("principal", expect.principal.as_deref(), Some(&self.sub))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn kid_is_the_rfc7638_thumbprint() {
        // RFC 7638's own example is RSA; this pins the EC encoding: the same point gives the same kid.
        let a = Jwk::p256(&[1; 32], &[2; 32]);
        assert_eq!(a.kid, Jwk::p256(&[1; 32], &[2; 32]).kid);
        assert_ne!(a.kid, Jwk::p256(&[1; 32], &[3; 32]).kid);
        assert_eq!(a.p256_coordinates().unwrap(), ([1; 32], [2; 32]));
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["use"], "sig");
        assert_eq!(json["alg"], "ES256");
    }

    #[test]
    fn compact_round_trips_and_refuses_other_algorithms() {
        let h = JwsHeader { alg: ALG.into(), kid: "k".into(), typ: RECEIPT_TYP.into() };
        let input = signing_input(&h, &serde_json::json!({"jti": "x"}));
        let jws = compact(&input, &[7; 64]);
        let p = parse_compact(&jws).unwrap();
        assert_eq!(p.header, h);
        assert_eq!(p.signing_input, input);
        assert_eq!(p.claims["jti"], "x");
        let none = JwsHeader { alg: "none".into(), ..h };
        let e = parse_compact(&compact(&signing_input(&none, &serde_json::json!({})), &[7; 64])).unwrap_err();
        assert!(e.contains("only ES256"), "{e}");
        assert!(parse_compact("a.b").unwrap_err().contains("2 part"));
    }

    #[test]
    fn details_digest_is_over_sorted_compact_json() {
        let d: BTreeMap<String, String> = [("b".into(), "2".into()), ("a".into(), "é".into())].into();
        assert_eq!(details_sha256(&d), hex::encode(Sha256::digest("{\"a\":\"é\",\"b\":\"2\"}".as_bytes())));
        assert_eq!(details_sha256(&BTreeMap::new()), hex::encode(Sha256::digest(b"{}")));
        assert_eq!(reason_sha256(None), None);
    }
}

//! AWS Signature Version 4 verification: local mode's stand-in for API Gateway's `AWS_IAM` authorizer.
//!
//! A request is accepted only when its `Authorization` header is `AWS4-HMAC-SHA256` with a credential scope
//! of `DATE/REGION/execute-api/aws4_request` for the configured region, an access key of a configured dev
//! identity, an `X-Amz-Date` within five minutes of our clock (and on the scope's date), `host` and
//! `x-amz-date` among the signed headers, and a signature that matches the one we compute from the canonical
//! request (method, normalized and double-encoded path, sorted query, exactly the signed headers, SHA-256 of
//! the body). Signatures are compared in constant time (`hmac`'s `verify_slice`).
//!
//! The canonical forms follow the `aws-sigv4` crate's signer (what the CLI and the AWS SDKs send):
//! `form_urlencoded` query parsing, percent-encoding of everything but `A-Z a-z 0-9 - . _ ~`, RFC 3986 dot
//! segment removal, header values trimmed with inner runs of spaces collapsed, repeated headers joined by `,`.
//! Each stage is tested against the published AWS SigV4 test suite (`tests/fixtures/sigv4/`).
//!
//! Must never: put the secret, the signing key, the computed signature or the received one in an error, a log
//! line or a response. [`SigV4Error`] carries no request data for that reason.

use std::collections::HashMap;

use axum::http::HeaderMap;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use countersign_core::ports::SecretString;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// API Gateway's signing name.
pub const SERVICE: &str = "execute-api";
/// How far `X-Amz-Date` may be from our clock, in either direction (API Gateway's window).
pub const MAX_SKEW_SECONDS: i64 = 300;
const TERMINATOR: &str = "aws4_request";

type HmacSha256 = Hmac<Sha256>;

/// Why a request was refused. Every variant answers `403`, as API Gateway does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    #[error("missing Authorization header")]
    MissingAuthorization,
    #[error("the {0} header was sent more than once")]
    DuplicateHeader(&'static str),
    #[error("only AWS4-HMAC-SHA256 is supported")]
    UnsupportedAlgorithm,
    #[error("malformed Authorization header: {0}")]
    Malformed(&'static str),
    #[error("credential should be scoped to a valid region")]
    WrongRegion,
    #[error("credential should be scoped to the execute-api service")]
    WrongService,
    #[error("credential scope must end in aws4_request")]
    WrongTerminator,
    #[error("the security token included in the request is invalid (unknown access key)")]
    UnknownAccessKey,
    #[error("missing X-Amz-Date header")]
    MissingDate,
    #[error("malformed X-Amz-Date header (expected YYYYMMDDTHHMMSSZ)")]
    MalformedDate,
    #[error("the credential scope's date is not the date of X-Amz-Date")]
    ScopeDateMismatch,
    #[error("signature expired: the request time is more than 5 minutes from the server's")]
    Expired,
    #[error("SignedHeaders must include {0}")]
    RequiredHeaderNotSigned(&'static str),
    #[error("a header listed in SignedHeaders is missing from the request")]
    SignedHeaderAbsent,
    #[error("a signed header value is not valid text")]
    BadHeaderValue,
    #[error("x-amz-content-sha256 does not match the body")]
    PayloadHashMismatch,
    #[error("the request signature we calculated does not match the signature you provided")]
    SignatureMismatch,
}

impl SigV4Error {
    /// API Gateway's `x-amzn-ErrorType` for this refusal.
    pub fn error_type(self) -> &'static str {
        match self {
            Self::MissingAuthorization => "MissingAuthenticationTokenException",
            Self::UnknownAccessKey => "UnrecognizedClientException",
            Self::Malformed(_) | Self::DuplicateHeader(_) | Self::MissingDate | Self::UnsupportedAlgorithm => {
                "IncompleteSignatureException"
            }
            _ => "InvalidSignatureException",
        }
    }

    /// The message API Gateway would answer with.
    pub fn api_gateway_message(self) -> String {
        match self {
            Self::MissingAuthorization => "Missing Authentication Token".into(),
            Self::UnknownAccessKey => "The security token included in the request is invalid.".into(),
            Self::SignatureMismatch => "The request signature we calculated does not match the signature you \
                                        provided. Check your AWS Secret Access Key and signing method. Consult the \
                                        service documentation for details."
                .into(),
            Self::WrongRegion => "Credential should be scoped to a valid region.".into(),
            Self::WrongService => "Credential should be scoped to correct service: 'execute-api'.".into(),
            other => other.to_string(),
        }
    }
}

/// A dev identity: an access key that stands for an IAM principal.
#[derive(Debug, Clone)]
pub struct DevIdentity {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    /// The principal's ARN as API Gateway reports it (`userArn`).
    pub arn: String,
    /// The principal's account (`accountId`).
    pub account_id: String,
    /// API Gateway's `caller` (the principal's unique id, with the session name for assumed roles).
    pub caller: String,
}

/// The parsed `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    pub date: String,
    pub region: String,
    pub service: String,
    /// Lower-case, sorted, unique.
    pub signed_headers: Vec<String>,
    pub signature: [u8; 32],
}

impl Authorization {
    /// `DATE/REGION/SERVICE/aws4_request`.
    pub fn scope(&self) -> String {
        format!("{}/{}/{}/{TERMINATOR}", self.date, self.region, self.service)
    }
}

/// A lower-case HTTP header name: RFC 9110 token characters, which is every name `http` accepts and `aws-sigv4`
/// signs (`x-trace!id` included). `;`, `,` and `=`, which delimit the `Authorization` parameters, are not tokens.
fn is_header_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses `AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request, SignedHeaders=a;b, Signature=hex`.
pub fn parse_authorization(header: &str) -> Result<Authorization, SigV4Error> {
    let (algorithm, rest) = header.trim().split_once(' ').ok_or(SigV4Error::Malformed("no parameters"))?;
    if algorithm != ALGORITHM {
        return Err(SigV4Error::UnsupportedAlgorithm);
    }
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or(SigV4Error::Malformed("a parameter has no value"))?;
        let slot = match k {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            _ => return Err(SigV4Error::Malformed("unknown parameter")),
        };
        if slot.replace(v).is_some() {
            return Err(SigV4Error::Malformed("a parameter appears twice"));
        }
    }
    let credential = credential.ok_or(SigV4Error::Malformed("Credential is missing"))?;
    let signed = signed.ok_or(SigV4Error::Malformed("SignedHeaders is missing"))?;
    let signature = signature.ok_or(SigV4Error::Malformed("Signature is missing"))?;

    let parts: Vec<&str> = credential.split('/').collect();
    let [key, date, region, service, terminator] = parts.as_slice() else {
        return Err(SigV4Error::Malformed("Credential must be KEY/DATE/REGION/SERVICE/aws4_request"));
    };
    if key.is_empty() || key.len() > 128 || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(SigV4Error::Malformed("access key id"));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SigV4Error::Malformed("credential date must be YYYYMMDD"));
    }
    if *terminator != TERMINATOR {
        return Err(SigV4Error::WrongTerminator);
    }

    let signed_headers: Vec<String> = signed.split(';').map(str::to_string).collect();
    if !signed_headers.iter().all(|h| is_header_name(h)) {
        return Err(SigV4Error::Malformed("SignedHeaders must be lower-case header names separated by ;"));
    }
    if !signed_headers.windows(2).all(|w| w[0] < w[1]) {
        return Err(SigV4Error::Malformed("SignedHeaders must be sorted and unique"));
    }

    if signature.len() != 64 || !signature.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(SigV4Error::Malformed("Signature must be 64 lower-case hex digits"));
    }
    let mut sig = [0u8; 32];
    hex::decode_to_slice(signature, &mut sig).map_err(|_| SigV4Error::Malformed("Signature is not hex"))?;

    Ok(Authorization {
        access_key_id: (*key).to_string(),
        date: (*date).to_string(),
        region: (*region).to_string(),
        service: (*service).to_string(),
        signed_headers,
        signature: sig,
    })
}

/// Percent-encodes every byte except `A-Z a-z 0-9 - . _ ~` (and `/` when `keep_slash`), upper-case hex.
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// RFC 3986 §5.2.4 dot-segment removal, empty segments dropped, as `aws-sigv4` normalizes paths.
fn normalize_path(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    let abs = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
    if !(abs.contains('.') || abs.contains("//")) {
        return abs;
    }
    let mut segments: Vec<&str> = Vec::new();
    for seg in abs.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = format!("/{}", segments.join("/"));
    let trailing = ["/", "/.", "/./", "/..", "/../"].iter().any(|s| abs.ends_with(s));
    if trailing && !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// The canonical URI: the path as received (already percent-encoded once by the client), normalized, then
/// encoded again — API Gateway's "double encoding" (`%` becomes `%25`).
pub fn canonical_uri(raw_path: &str) -> String {
    uri_encode(&normalize_path(raw_path), true)
}

/// The canonical query: parameters decoded (`form_urlencoded`), re-encoded, sorted by name then value.
pub fn canonical_query(raw_query: Option<&str>) -> String {
    let mut params: Vec<(String, String)> = form_urlencoded::parse(raw_query.unwrap_or("").as_bytes())
        .map(|(k, v)| (uri_encode(&k, false), uri_encode(&v, false)))
        .collect();
    params.sort();
    params.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// Trims spaces at both ends and collapses inner runs of spaces to one (spaces only, like `aws-sigv4`).
fn trim_all(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut prev_space = false;
    for c in v.trim_matches(' ').chars() {
        if c == ' ' {
            if !prev_space {
                out.push(c);
            }
            prev_space = true;
        } else {
            out.push(c);
            prev_space = false;
        }
    }
    out
}

/// `name:value\n` for each signed header, values of repeated headers joined by `,` in the order received.
pub fn canonical_headers(headers: &HeaderMap, signed: &[String]) -> Result<String, SigV4Error> {
    let mut out = String::new();
    for name in signed {
        let values: Vec<String> = headers
            .get_all(name.as_str())
            .iter()
            .map(|v| v.to_str().map(trim_all).map_err(|_| SigV4Error::BadHeaderValue))
            .collect::<Result<_, _>>()?;
        if values.is_empty() {
            return Err(SigV4Error::SignedHeaderAbsent);
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    Ok(out)
}

/// Hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The canonical request (task 1 of SigV4).
pub fn canonical_request(
    method: &str,
    raw_path: &str,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    signed: &[String],
    payload_hash: &str,
) -> Result<String, SigV4Error> {
    Ok(format!(
        "{method}\n{}\n{}\n{}\n{}\n{payload_hash}",
        canonical_uri(raw_path),
        canonical_query(raw_query),
        canonical_headers(headers, signed)?,
        signed.join(";"),
    ))
}

/// The string to sign (task 2).
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{}", sha256_hex(canonical_request.as_bytes()))
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail; an empty MAC would never verify anyway.
    match HmacSha256::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().into()
        }
        Err(_) => [0; 32],
    }
}

/// The signing key (task 3): `HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, TERMINATOR.as_bytes())
}

/// Constant-time check of `signature` over `string_to_sign` (task 4).
pub fn signature_matches(key: &[u8; 32], string_to_sign: &str, signature: &[u8; 32]) -> bool {
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
        return false;
    };
    mac.update(string_to_sign.as_bytes());
    mac.verify_slice(signature).is_ok()
}

/// `YYYYMMDDTHHMMSSZ` → Unix seconds.
pub fn parse_amz_date(s: &str) -> Result<i64, SigV4Error> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Result<u32, SigV4Error> {
        let part = b.get(r).ok_or(SigV4Error::MalformedDate)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(SigV4Error::MalformedDate);
        }
        std::str::from_utf8(part).ok().and_then(|p| p.parse().ok()).ok_or(SigV4Error::MalformedDate)
    };
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return Err(SigV4Error::MalformedDate);
    }
    let year = i32::try_from(digits(0..4)?).map_err(|_| SigV4Error::MalformedDate)?;
    let month = u8::try_from(digits(4..6)?).ok().and_then(|m| time::Month::try_from(m).ok());
    let month = month.ok_or(SigV4Error::MalformedDate)?;
    let day = u8::try_from(digits(6..8)?).map_err(|_| SigV4Error::MalformedDate)?;
    let (h, m, sec) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
    let date = time::Date::from_calendar_date(year, month, day).map_err(|_| SigV4Error::MalformedDate)?;
    let t = time::Time::from_hms(
        u8::try_from(h).map_err(|_| SigV4Error::MalformedDate)?,
        u8::try_from(m).map_err(|_| SigV4Error::MalformedDate)?,
        u8::try_from(sec).map_err(|_| SigV4Error::MalformedDate)?,
    )
    .map_err(|_| SigV4Error::MalformedDate)?;
    Ok(time::PrimitiveDateTime::new(date, t).assume_utc().unix_timestamp())
}

/// The one value of a header that must appear at most once.
fn single<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<Option<&'h str>, SigV4Error> {
    let mut it = headers.get_all(name).iter();
    let Some(first) = it.next() else {
        return Ok(None);
    };
    if it.next().is_some() {
        return Err(SigV4Error::DuplicateHeader(name));
    }
    first.to_str().map(Some).map_err(|_| SigV4Error::BadHeaderValue)
}

/// The request as the verifier needs it.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The path exactly as received (percent-encoded as the client sent it).
    pub raw_path: &'a str,
    pub raw_query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// Checks requests against the dev identities for one region.
#[derive(Debug, Clone)]
pub struct Verifier {
    region: String,
    /// Always [`SERVICE`] outside tests (the published test suite signs for `service`).
    service: String,
    identities: HashMap<String, DevIdentity>,
}

impl Verifier {
    pub fn new(region: &str, identities: impl IntoIterator<Item = DevIdentity>) -> Self {
        Self {
            region: region.to_string(),
            service: SERVICE.to_string(),
            identities: identities.into_iter().map(|i| (i.access_key_id.clone(), i)).collect(),
        }
    }

    #[cfg(test)]
    fn for_service(mut self, service: &str) -> Self {
        self.service = service.to_string();
        self
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// Verifies one request at `now_unix` and returns the identity that signed it.
    pub fn verify(&self, req: &SignedRequest<'_>, now_unix: i64) -> Result<&DevIdentity, SigV4Error> {
        let auth = single(req.headers, "authorization")?.ok_or(SigV4Error::MissingAuthorization)?;
        let auth = parse_authorization(auth)?;
        if auth.service != self.service {
            return Err(SigV4Error::WrongService);
        }
        if auth.region != self.region {
            return Err(SigV4Error::WrongRegion);
        }
        let identity = self.identities.get(&auth.access_key_id).ok_or(SigV4Error::UnknownAccessKey)?;
        let amz_date = single(req.headers, "x-amz-date")?.ok_or(SigV4Error::MissingDate)?;
        let at = parse_amz_date(amz_date)?;
        if amz_date[..8] != auth.date {
            return Err(SigV4Error::ScopeDateMismatch);
        }
        if (now_unix - at).abs() > MAX_SKEW_SECONDS {
            return Err(SigV4Error::Expired);
        }
        for required in ["host", "x-amz-date"] {
            if !auth.signed_headers.iter().any(|h| h == required) {
                return Err(SigV4Error::RequiredHeaderNotSigned(required));
            }
        }
        let payload_hash = sha256_hex(req.body);
        if let Some(claimed) = single(req.headers, "x-amz-content-sha256")? {
            if claimed != payload_hash {
                return Err(SigV4Error::PayloadHashMismatch);
            }
        }
        let creq = canonical_request(
            req.method,
            req.raw_path,
            req.raw_query,
            req.headers,
            &auth.signed_headers,
            &payload_hash,
        )?;
        let sts = string_to_sign(amz_date, &auth.scope(), &creq);
        let key = signing_key(identity.secret_access_key.expose(), &auth.date, &auth.region, &auth.service);
        if signature_matches(&key, &sts, &auth.signature) {
            Ok(identity)
        } else {
            Err(SigV4Error::SignatureMismatch)
        }
    }
}

#[cfg(test)]
mod tests;

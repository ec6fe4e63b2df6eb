//! `countersign redeem`, `receipt keys` and `receipt verify`, and the artifact flags `request` and `run`
//! share. Verification is offline: the receipt's ES256 signature against a JWKS file (RustCrypto `p256`),
//! then `exp` and each expectation given, with the claim rules of `countersign_core::domain::receipt`.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use serde_json::Value;
use sha2::{Digest, Sha256};

use countersign_core::domain::receipt::{parse_compact, Expectations, Jwks, ParsedJws, ReceiptClaims, RECEIPT_TYP};
use countersign_core::domain::{ArtifactDigest, Timestamp};
use countersign_core::ports::{Clock, SystemClock};

use super::api::ApiClient;
use super::{exit, parse_request_id, ApiArgs, CliError, Output};

/// The environment variable `run` passes the receipt in.
pub const RECEIPT_ENV: &str = "COUNTERSIGN_RECEIPT";
/// Largest JWKS file `receipt verify` reads.
const MAX_JWKS_BYTES: u64 = 1 << 20;

/// The artifact a request is bound to: a digest, or a file to hash.
#[derive(Debug, Clone, Default, Args)]
pub struct ArtifactArgs {
    /// Bind to this artifact digest (sha256: and 64 lowercase hex digits).
    #[arg(long, value_name = "sha256:…", value_parser = parse_artifact, conflicts_with = "artifact_file")]
    pub artifact: Option<ArtifactDigest>,
    /// Bind to this file's SHA-256 (the build, the plan, the migration).
    #[arg(long, value_name = "PATH")]
    pub artifact_file: Option<PathBuf>,
}

impl ArtifactArgs {
    /// The digest given, or the given file's, hashed now.
    pub fn digest(&self) -> Result<Option<ArtifactDigest>, CliError> {
        match (&self.artifact, &self.artifact_file) {
            (Some(a), _) => Ok(Some(a.clone())),
            (None, Some(p)) => hash_file(p).map(Some),
            (None, None) => Ok(None),
        }
    }
}

fn parse_artifact(s: &str) -> Result<ArtifactDigest, String> {
    ArtifactDigest::parse(s).map_err(|e| e.problem)
}

fn hash_file(path: &Path) -> Result<ArtifactDigest, CliError> {
    let shown = path.display().to_string();
    let mut f =
        std::fs::File::open(path).map_err(|e| CliError::new(exit::USAGE, format!("--artifact-file {shown}: {e}")))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(|e| CliError::failed(&format!("cannot read {shown}"), &e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(ArtifactDigest::from_sha256(hasher.finalize().into()))
}

#[derive(Debug, Subcommand)]
pub enum ReceiptCommand {
    /// Print the JWKS receipts are verified with (GET /v1/keys).
    Keys {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Verify a receipt offline: its signature against the JWKS, exp, and every expectation given.
    /// Exit 0 when valid; 1 naming the check that failed.
    Verify {
        /// The receipt (a compact JWS), or `-` for stdin.
        file: String,
        /// The JWKS file (from `countersign receipt keys`).
        #[arg(long, value_name = "FILE")]
        jwks: PathBuf,
        #[command(flatten)]
        artifact: ArtifactArgs,
        /// The action the receipt must be for.
        #[arg(long)]
        action: Option<String>,
        /// The environment the receipt must be for.
        #[arg(long = "env", value_name = "ENV")]
        environment: Option<String>,
        /// The principal (role or user ARN) the receipt must be for.
        #[arg(long, value_name = "ARN")]
        principal: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
}

/// `countersign redeem ID`: uses the approval once and prints (or writes) the receipt. A refused
/// redemption exits 9 with the API's code.
pub async fn redeem(id: &str, artifact: &ArtifactArgs, out: Option<&Path>, api: &ApiArgs) -> Result<u8, CliError> {
    let client = ApiClient::new(api).await?;
    let answer = redeem_with(&client, id, artifact.digest()?.as_ref()).await?;
    let receipt = receipt_of(&answer)?;
    match out {
        Some(path) => write_private(path, &receipt)?,
        None if api.output.output == Output::Json => println!("{answer}"),
        None => println!("{receipt}"),
    }
    Ok(exit::OK)
}

/// `POST /v1/requests/{id}/redeem`; a refusal (4xx) becomes exit 9, "approved but not usable".
pub async fn redeem_with(client: &ApiClient, id: &str, artifact: Option<&ArtifactDigest>) -> Result<Value, CliError> {
    client.redeem(id, artifact).await.map_err(|e| {
        if e.code == exit::REFUSED {
            CliError::new(exit::NOT_USABLE, format!("approved but not usable: {}", e.message))
        } else {
            e
        }
    })
}

pub fn receipt_of(answer: &Value) -> Result<String, CliError> {
    answer
        .get("receipt")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| CliError::new(exit::FAILED, "the API's redeem answer has no receipt"))
}

fn write_private(path: &Path, receipt: &str) -> Result<(), CliError> {
    std::fs::write(path, format!("{receipt}\n"))
        .map_err(|e| CliError::failed(&format!("cannot write {}", path.display()), &e))
}

pub async fn keys(api: &ApiArgs) -> Result<u8, CliError> {
    let client = ApiClient::new(api).await?;
    let jwks = client.keys().await?;
    println!("{}", serde_json::to_string_pretty(&jwks).unwrap_or_default());
    Ok(exit::OK)
}

/// What `receipt verify` checked, for `--output json`.
#[derive(Debug, serde::Serialize)]
struct Verdict {
    valid: bool,
    /// The failed check, when not valid.
    error: Option<String>,
    claims: Option<Value>,
}

#[allow(clippy::too_many_arguments)]
pub fn verify(
    file: &str,
    jwks: &Path,
    artifact: &ArtifactArgs,
    action: Option<String>,
    environment: Option<String>,
    principal: Option<String>,
    output: Output,
) -> Result<u8, CliError> {
    let jws = read_input(file)?;
    let jwks = read_jwks(jwks)?;
    let expect = Expectations { artifact: artifact.digest()?, action, environment, principal };
    let (verdict, code) = match check(&jws, &jwks, &expect, SystemClock.now()) {
        Ok(claims) => {
            if output == Output::Text {
                println!(
                    "valid: {} ({} in {}, redeemed by {})",
                    claims.jti, claims.action, claims.environment, claims.session
                );
            }
            (Verdict { valid: true, error: None, claims: serde_json::to_value(&claims).ok() }, exit::OK)
        }
        Err(e) => {
            if output == Output::Text {
                eprintln!("invalid receipt: {e}");
            }
            (Verdict { valid: false, error: Some(e), claims: None }, exit::FAILED)
        }
    };
    if output == Output::Json {
        println!("{}", serde_json::to_string(&verdict).unwrap_or_default());
    }
    Ok(code)
}

/// Signature first (with the key its `kid` names), then `typ`, then the claims.
pub fn check(jws: &str, jwks: &Jwks, expect: &Expectations, now: Timestamp) -> Result<ReceiptClaims, String> {
    let parsed = verify_jws_signature(jws, jwks)?;
    if parsed.header.typ != RECEIPT_TYP {
        return Err(format!("typ: {:?} is not {RECEIPT_TYP}", parsed.header.typ));
    }
    let claims: ReceiptClaims =
        serde_json::from_value(parsed.claims).map_err(|e| format!("claims: not a Countersign receipt: {e}"))?;
    claims.check(expect, now)?;
    Ok(claims)
}

/// Parses a compact ES256 JWS and verifies its signature with the JWKS key its `kid` names. Nothing of the
/// payload is trusted before this returns `Ok`; `typ` and the claims are the caller's to check. Receipts and
/// audit checkpoints share it.
pub fn verify_jws_signature(jws: &str, jwks: &Jwks) -> Result<ParsedJws, String> {
    let parsed = parse_compact(jws)?;
    let jwk = jwks
        .keys
        .iter()
        .find(|k| k.kid == parsed.header.kid)
        .ok_or_else(|| format!("signature: no key {:?} in the JWKS", parsed.header.kid))?;
    let (x, y) = jwk.p256_coordinates()?;
    let mut sec1 = vec![4u8];
    sec1.extend_from_slice(&x);
    sec1.extend_from_slice(&y);
    let key = VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| format!("key {} is not a P-256 point", jwk.kid))?;
    let sig =
        Signature::from_slice(&parsed.signature).map_err(|_| "signature: not a valid ES256 signature".to_string())?;
    key.verify(parsed.signing_input.as_bytes(), &sig)
        .map_err(|_| "signature: does not verify with the published key".to_string())?;
    Ok(parsed)
}

fn read_input(file: &str) -> Result<String, CliError> {
    let mut text = String::new();
    let limit = countersign_core::domain::receipt::MAX_JWS_BYTES as u64 + 1;
    let read = if file == "-" {
        std::io::stdin().take(limit).read_to_string(&mut text)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit).read_to_string(&mut text))
    };
    read.map_err(|e| CliError::new(exit::USAGE, format!("cannot read the receipt {file}: {e}")))?;
    Ok(text)
}

pub fn read_jwks(path: &Path) -> Result<Jwks, CliError> {
    let shown = path.display();
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_JWKS_BYTES).read_to_string(&mut text))
        .map_err(|e| CliError::new(exit::USAGE, format!("cannot read the JWKS {shown}: {e}")))?;
    serde_json::from_str(&text).map_err(|e| CliError::new(exit::USAGE, format!("{shown} is not a JWKS: {e}")))
}

/// `countersign redeem`'s arguments.
#[derive(Debug, Args)]
pub struct RedeemArgs {
    /// The request id (req_…).
    #[arg(value_parser = parse_request_id)]
    pub id: String,
    #[command(flatten)]
    pub artifact: ArtifactArgs,
    /// Write the receipt to FILE instead of printing it.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub api: ApiArgs,
}

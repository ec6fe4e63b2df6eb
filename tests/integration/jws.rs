//! What the product signs (receipts, audit checkpoints), checked with RustCrypto's `p256` directly: never with
//! the code that signed it or the CLI's verifier, so a bug shared by both cannot pass unseen. Also the KMS key
//! on the emulator that signs them in AWS, and a forger holding a key nobody published.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use serde_json::{json, Value};

/// The JWS `typ` of an audit checkpoint, spelled out here rather than taken from the product.
pub(crate) const CHECKPOINT_TYP: &str = "countersign-checkpoint+jwt";

/// Verifies a compact ES256 JWS with the JWKS, independently of the product's code; returns (header, claims).
pub(crate) fn verify_independently(jws: &str, jwks: &Value) -> Result<(Value, Value), String> {
    let parts: Vec<&str> = jws.split('.').collect();
    let [h, c, s] = parts[..] else { return Err("not three parts".into()) };
    let header: Value =
        serde_json::from_slice(&B64.decode(h).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let claims: Value =
        serde_json::from_slice(&B64.decode(c).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let key = jwks["keys"]
        .as_array()
        .and_then(|ks| ks.iter().find(|k| k["kid"] == header["kid"]))
        .ok_or("no key with the header's kid")?;
    let coord = |n: &str| B64.decode(key[n].as_str().unwrap_or_default()).map_err(|e| e.to_string());
    let mut sec1 = vec![4u8];
    sec1.extend(coord("x")?);
    sec1.extend(coord("y")?);
    let vk = VerifyingKey::from_sec1_bytes(&sec1).map_err(|e| e.to_string())?;
    let sig = Signature::from_slice(&B64.decode(s).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    vk.verify(format!("{h}.{c}").as_bytes(), &sig).map_err(|e| e.to_string())?;
    Ok((header, claims))
}

/// Every stored checkpoint `(seq from its name, JWS)`, oldest first, is genuine: it verifies with the JWKS,
/// is an ES256 `countersign-checkpoint+jwt` for the seq it is stored under, and links to the one before it
/// (`prev` names its seq and hash, `count` the records since). Returns their claims.
pub(crate) fn assert_genuine_checkpoints(found: &[(u64, String)], jwks: &Value) -> Vec<Value> {
    assert!(!found.is_empty(), "no checkpoints were written");
    let mut out: Vec<Value> = Vec::new();
    for (seq, jws) in found {
        let (header, claims) =
            verify_independently(jws, jwks).unwrap_or_else(|e| panic!("checkpoint {seq} does not verify: {e}"));
        assert_eq!((header["alg"].as_str(), header["typ"].as_str()), (Some("ES256"), Some(CHECKPOINT_TYP)), "{seq}");
        assert_eq!(claims["seq"], *seq, "checkpoint {seq} is signed for the seq it is stored under");
        let hash = claims["hash"].as_str().unwrap_or_default();
        assert!(hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()), "checkpoint {seq}: hash {hash:?}");
        assert!(claims["at"].is_string() || claims["at"].is_number(), "checkpoint {seq} says when: {claims}");
        let since = match out.last() {
            None => {
                assert_eq!(claims["prev"], Value::Null, "the first checkpoint has no prev: {claims}");
                0
            }
            Some(p) => {
                assert_eq!(claims["prev"], json!({"seq": p["seq"], "hash": p["hash"]}), "checkpoint {seq}'s prev");
                p["seq"].as_u64().unwrap()
            }
        };
        assert_eq!(claims["count"], seq - since, "checkpoint {seq} counts the records since its prev");
        out.push(claims);
    }
    out
}

/// A compact ES256 JWS of `claims` under `kid`, signed by a key that is in no JWKS: what someone who can
/// write checkpoints but not use the signing key can make.
pub(crate) fn forge(typ: &str, kid: &str, claims: &Value) -> String {
    let key = SigningKey::from_slice(&[0x37; 32]).expect("a P-256 scalar");
    let input = format!(
        "{}.{}",
        B64.encode(json!({"alg": "ES256", "typ": typ, "kid": kid}).to_string()),
        B64.encode(claims.to_string())
    );
    let sig: Signature = key.sign(input.as_bytes());
    format!("{input}.{}", B64.encode(sig.to_bytes()))
}

/// Receipts (and checkpoints) signed by a fresh ECC_NIST_P256 key on the emulator's KMS, through `KmsSigner`;
/// `None` when no emulator is configured outside CI.
pub(crate) async fn kms_receipts() -> Option<countersign_core::service::receipts::Receipts> {
    use aws_sdk_kms::types::{KeySpec, KeyUsageType};
    let endpoint = countersign_testkit::emulator::endpoint(countersign_testkit::emulator::Service::Kms)?;
    let client = aws_sdk_kms::Client::new(&countersign_testkit::emulator::sdk_config(&endpoint).await);
    let created = client
        .create_key()
        .key_spec(KeySpec::EccNistP256)
        .key_usage(KeyUsageType::SignVerify)
        .send()
        .await
        .expect("CreateKey on the emulator");
    let arn = created.key_metadata().map(|m| m.arn().unwrap_or(m.key_id()).to_string()).expect("key metadata");
    Some(countersign_core::service::receipts::Receipts {
        signer: std::sync::Arc::new(countersign_aws::kms::KmsSigner::new(client, arn, vec![])),
        issuer: "countersign".into(),
    })
}

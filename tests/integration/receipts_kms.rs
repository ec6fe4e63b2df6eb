//! Row 36 in AWS: receipts signed by a KMS key, through the real adapter (`countersign_aws::kms::KmsSigner`)
//! on the emulator, checked with an ECDSA implementation of its own (RustCrypto `p256`), not with ours.
//!
//! - A signature verifies with the JWK the signer publishes (x, y from the key's DER, `kid` its thumbprint),
//!   (`MessageType=RAW`); a message over KMS's 4096-byte RAW limit is sent as its SHA-256 (`DIGEST`).
//! - The request-api wiring (`countersign_lambda::app::receipts`) signs with the configured key.
//! - A key that is not P-256 for signing, or that does not exist, is `Unusable`, and the error names it;
//!   a KMS that cannot be reached is `Unavailable`.
//! - Previous keys are published after the current one; an alias re-pointed while the process lives does not
//!   change the key that signs (the signer names the key's ARN); a failed key lookup is retried.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use countersign_aws::kms::KmsSigner;
use countersign_core::domain::receipt::{ChainPoint, Jwk, PolicyClaim, ReceiptClaims};
use countersign_core::ports::{SignError, Signer};
use countersign_lambda::config::{Component, LambdaConfig};
use countersign_testkit::emulator::{endpoint, sdk_config, Service};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use sha2::Digest;

use aws_sdk_kms::types::{KeySpec, KeyUsageType};

// ---- helpers -------------------------------------------------------------------------------------------

/// A KMS client on the emulator; `None` when none is configured outside CI (a failure under `CI=true`).
async fn kms() -> Option<aws_sdk_kms::Client> {
    let endpoint = endpoint(Service::Kms)?;
    Some(aws_sdk_kms::Client::new(&sdk_config(&endpoint).await))
}

/// A new key of that spec and usage: its ARN.
async fn create_key(kms: &aws_sdk_kms::Client, spec: KeySpec, usage: KeyUsageType) -> String {
    let out = kms
        .create_key()
        .key_spec(spec)
        .key_usage(usage)
        .description("countersign receipts test")
        .send()
        .await
        .expect("CreateKey");
    out.key_metadata().and_then(|m| m.arn()).expect("the new key's ARN").to_string()
}

async fn p256_key(kms: &aws_sdk_kms::Client) -> String {
    create_key(kms, KeySpec::EccNistP256, KeyUsageType::SignVerify).await
}

/// Checks the `r‖s` signature of `message` with the JWK's point, independently of our code.
fn verify(jwk: &Jwk, message: &[u8], signature: &[u8; 64]) -> Result<(), String> {
    let x = B64.decode(&jwk.x).map_err(|e| e.to_string())?;
    let y = B64.decode(&jwk.y).map_err(|e| e.to_string())?;
    let mut sec1 = vec![0x04];
    sec1.extend_from_slice(&x);
    sec1.extend_from_slice(&y);
    let key = VerifyingKey::from_sec1_bytes(&sec1).map_err(|e| format!("not a P-256 point: {e}"))?;
    let sig = Signature::from_slice(signature).map_err(|e| format!("not an r‖s signature: {e}"))?;
    key.verify(message, &sig).map_err(|e| format!("does not verify: {e}"))
}

fn unusable(r: Result<impl std::fmt::Debug, SignError>) -> String {
    match r {
        Err(SignError::Unusable(why)) => why,
        other => panic!("expected Unusable, got {other:?}"),
    }
}

// ---- tests ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn t36_kms_signatures_verify_with_the_published_jwk() {
    let Some(kms) = kms().await else { return };
    let arn = p256_key(&kms).await;
    let signer = KmsSigner::new(kms, arn, Vec::new());
    let jwk = signer.current_key().await.unwrap();
    assert_eq!(
        (jwk.kty.as_str(), jwk.crv.as_str(), jwk.alg.as_str(), jwk.use_.as_str()),
        ("EC", "P-256", "ES256", "sig")
    );
    let (x, y) = jwk.p256_coordinates().unwrap();
    assert_eq!(Jwk::p256(&x, &y).kid, jwk.kid, "kid is the RFC 7638 thumbprint");

    // Many signatures, so that r or s with a high bit (a leading zero in DER) and short r or s both occur.
    for i in 0..24 {
        let message = format!("eyJhbGciOiJFUzI1NiJ9.receipt-{i}");
        let sig = signer.sign(message.as_bytes()).await.unwrap();
        verify(&jwk, message.as_bytes(), &sig).unwrap_or_else(|e| panic!("signature {i}: {e}"));
        let mut other = message.clone().into_bytes();
        other.push(b'!');
        assert!(verify(&jwk, &other, &sig).is_err(), "signature {i} verifies another message");
    }
    assert_eq!(signer.public_keys().await.unwrap(), vec![jwk]);
}

/// `(MessageType, Message)` of one `Sign` call.
type SignCall = (String, Vec<u8>);

/// Every `Sign` the client sends.
#[derive(Debug, Clone, Default)]
struct SignCalls(Arc<Mutex<Vec<SignCall>>>);

impl aws_sdk_kms::config::Intercept for SignCalls {
    fn name(&self) -> &'static str {
        "SignCalls"
    }

    fn read_before_execution(
        &self,
        context: &aws_sdk_kms::config::interceptors::BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut aws_sdk_kms::config::ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if let Some(i) = context.input().downcast_ref::<aws_sdk_kms::operation::sign::SignInput>() {
            let kind = i.message_type().map(|t| t.as_str().to_string()).unwrap_or_default();
            let message = i.message().map(|m| m.as_ref().to_vec()).unwrap_or_default();
            self.0.lock().unwrap().push((kind, message));
        }
        Ok(())
    }
}

#[tokio::test]
async fn t36_a_message_over_the_kms_raw_limit_is_sent_as_its_sha256_digest() {
    let Some(kms) = kms().await else { return };
    let arn = p256_key(&kms).await;
    let calls = SignCalls::default();
    let client = aws_sdk_kms::Client::from_conf(kms.config().to_builder().interceptor(calls.clone()).build());
    let signer = KmsSigner::new(client, arn, Vec::new());
    let limit = countersign_aws::kms::MAX_RAW_MESSAGE;
    let (at_limit, over) = (vec![b'a'; limit], vec![b'a'; limit + 1]);
    // moto ignores MessageType (it signs whatever it is sent as RAW), so only the limit's own side verifies
    // there; KMS signs a DIGEST as given, which makes the same ES256 signature as RAW over the message.
    let jwk = signer.current_key().await.unwrap();
    let sig = signer.sign(&at_limit).await.unwrap();
    verify(&jwk, &at_limit, &sig).unwrap();
    signer.sign(&over).await.unwrap();
    let sent = calls.0.lock().unwrap().clone();
    assert_eq!(sent.len(), 2);
    let shape = |(kind, message): &SignCall| format!("{kind}, {} bytes", message.len());
    assert!(sent[0] == ("RAW".to_string(), at_limit), "at the limit: {}", shape(&sent[0]));
    let digest = ("DIGEST".to_string(), sha2::Sha256::digest(&over).to_vec());
    assert!(sent[1] == digest, "over the limit: {}", shape(&sent[1]));
}

#[tokio::test]
async fn t36_request_api_wiring_signs_receipts_with_the_configured_kms_key() {
    let Some(kms) = kms().await else { return };
    let arn = p256_key(&kms).await;
    let env: HashMap<&str, String> = [
        ("COUNTERSIGN_POLICIES_TABLE", "cs-policies".to_string()),
        ("COUNTERSIGN_REQUESTS_TABLE", "cs-requests".to_string()),
        ("COUNTERSIGN_AUDIT_TABLE", "cs-audit".to_string()),
        ("COUNTERSIGN_SLACK_TEAM_ID", countersign_testkit::app::TEAM_ID.to_string()),
        ("COUNTERSIGN_SLACK_APP_ID", countersign_testkit::app::APP_ID.to_string()),
        ("COUNTERSIGN_SLACK_BOT_TOKEN_SECRET_ID", "countersign/slack-bot-token".to_string()),
        ("COUNTERSIGN_RECEIPT_KEY_ID", arn.clone()),
        ("COUNTERSIGN_RECEIPT_ISSUER", "https://countersign.example".to_string()),
    ]
    .into_iter()
    .collect();
    let cfg = LambdaConfig::from_lookup(Component::RequestApi, |k| env.get(k).cloned()).expect("configuration loads");
    let aws = sdk_config(&endpoint(Service::Kms).unwrap()).await;
    let receipts = countersign_lambda::app::receipts(&aws, &cfg);
    assert_eq!(receipts.issuer, "https://countersign.example");

    let claims = ReceiptClaims {
        iss: receipts.issuer.clone(),
        sub: "arn:aws:iam::111122223333:role/deployer".into(),
        jti: "01JREQUEST".into(),
        iat: 1_800_000_000,
        exp: 1_800_000_300,
        session: "arn:aws:sts::111122223333:assumed-role/deployer/ci".into(),
        action: "deploy".into(),
        environment: "production".into(),
        resource: None,
        artifact: None,
        details_sha256: "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a".into(),
        reason_sha256: None,
        policy: PolicyClaim { name: "deploys".into(), version: "1".into() },
        required_approvals: 1,
        approvals: Vec::new(),
        decided_at: None,
        audit: ChainPoint { seq: 7, hash: "00".repeat(32) },
        break_glass: false,
    };
    let jws = receipts.issue(&claims).await.unwrap();
    let jwks = receipts.keys().await.unwrap();
    assert_eq!(jwks.keys.len(), 1);
    let (input, sig) = jws.rsplit_once('.').unwrap();
    let sig: [u8; 64] = B64.decode(sig).unwrap().try_into().unwrap();
    verify(&jwks.keys[0], input.as_bytes(), &sig).unwrap();
    let header: serde_json::Value =
        serde_json::from_slice(&B64.decode(input.split('.').next().unwrap()).unwrap()).unwrap();
    assert_eq!(header["kid"], jwks.keys[0].kid.as_str());
    assert_eq!(header["alg"], "ES256");
}

#[tokio::test]
async fn t36_kms_key_of_the_wrong_spec_or_usage_is_unusable() {
    let Some(kms) = kms().await else { return };
    for (spec, usage) in [
        (KeySpec::Rsa2048, KeyUsageType::SignVerify),
        (KeySpec::SymmetricDefault, KeyUsageType::EncryptDecrypt),
        (KeySpec::EccNistP384, KeyUsageType::SignVerify),
    ] {
        let arn = create_key(&kms, spec.clone(), usage).await;
        let signer = KmsSigner::new(kms.clone(), arn.clone(), Vec::new());
        let why = unusable(signer.current_key().await);
        assert!(why.contains(&arn) && why.contains("ECC_NIST_P256"), "{spec:?}: {why}");
        // Nothing is signed with a key that was not checked.
        unusable(signer.sign(b"message").await);
        unusable(signer.public_keys().await);
        // Nor is such a key accepted as a previous key.
        let current = p256_key(&kms).await;
        let signer = KmsSigner::new(kms.clone(), current, vec![arn.clone()]);
        let why = unusable(signer.public_keys().await);
        assert!(why.contains(&arn), "{spec:?} as a previous key: {why}");
    }
}

#[tokio::test]
async fn t36_a_missing_kms_key_is_unusable_and_named() {
    let Some(kms) = kms().await else { return };
    let missing = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000";
    let signer = KmsSigner::new(kms.clone(), missing.to_string(), Vec::new());
    let why = unusable(signer.current_key().await);
    assert!(why.contains(missing), "{why}");
    unusable(signer.sign(b"message").await);

    // A lookup that failed is not cached: once the alias exists, the same signer works.
    let alias = format!("alias/countersign-test-{}", ulid::Ulid::new().to_string().to_lowercase());
    let signer = KmsSigner::new(kms.clone(), alias.clone(), Vec::new());
    let why = unusable(signer.current_key().await);
    assert!(why.contains(&alias), "{why}");
    let arn = p256_key(&kms).await;
    kms.create_alias().alias_name(&alias).target_key_id(&arn).send().await.unwrap();
    let jwk = signer.current_key().await.unwrap();
    let sig = signer.sign(b"after the alias").await.unwrap();
    verify(&jwk, b"after the alias", &sig).unwrap();
}

#[tokio::test]
async fn t36_previous_kms_keys_are_published_after_the_current_one() {
    let Some(kms) = kms().await else { return };
    let (current, old, older) = (p256_key(&kms).await, p256_key(&kms).await, p256_key(&kms).await);
    let jwk_of = |arn: String| {
        let kms = kms.clone();
        async move { KmsSigner::new(kms, arn, Vec::new()).current_key().await.unwrap() }
    };
    let want = vec![jwk_of(current.clone()).await, jwk_of(old.clone()).await, jwk_of(older.clone()).await];
    // The current key listed again among the previous ones is published once.
    let signer = KmsSigner::new(kms.clone(), current.clone(), vec![old, current, older]);
    let keys = signer.public_keys().await.unwrap();
    assert_eq!(keys, want);
    assert_eq!(signer.current_key().await.unwrap(), want[0]);
    // Receipts are signed with the current key only.
    let sig = signer.sign(b"current").await.unwrap();
    verify(&want[0], b"current", &sig).unwrap();
    assert!(verify(&want[1], b"current", &sig).is_err());
}

#[tokio::test]
async fn t36_an_alias_repointed_mid_process_does_not_change_the_signing_key() {
    let Some(kms) = kms().await else { return };
    let (first, second) = (p256_key(&kms).await, p256_key(&kms).await);
    let alias = format!("alias/countersign-test-{}", ulid::Ulid::new().to_string().to_lowercase());
    kms.create_alias().alias_name(&alias).target_key_id(&first).send().await.unwrap();
    let signer = KmsSigner::new(kms.clone(), alias.clone(), Vec::new());
    let jwk = signer.current_key().await.unwrap();
    kms.update_alias().alias_name(&alias).target_key_id(&second).send().await.unwrap();
    // The kid already handed out is the first key's: so must the signature be.
    let sig = signer.sign(b"after the re-point").await.unwrap();
    verify(&jwk, b"after the re-point", &sig).expect("signed with the key whose kid was published");
}

#[tokio::test]
async fn t36_an_unreachable_kms_is_unavailable_not_unusable() {
    // No emulator needed: nothing listens on port 9 of the loopback address.
    let aws = sdk_config("http://127.0.0.1:9").await;
    let signer = KmsSigner::new(aws_sdk_kms::Client::new(&aws), "alias/countersign-receipts".into(), Vec::new())
        .with_timeout(std::time::Duration::from_secs(5));
    match signer.current_key().await {
        Err(SignError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    match signer.sign(b"m").await {
        Err(SignError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

//! Redeeming an approval and issuing its receipt (rows 35, 36), and publishing the keys that verify it.
//!
//! A redemption is one conditional write (status `approved`, the version read): of any number of racing
//! redeems exactly one commits, and the others re-read a redeemed request. The receipt is signed after the
//! write, because it names the `request.redeemed` record the write sealed into the chain.

use std::sync::Arc;

use crate::domain::receipt::{compact, signing_input, Jwks, JwsHeader, ReceiptClaims, ALG, RECEIPT_TYP};
use crate::domain::{ApprovalRequest, ArtifactDigest, AuditKind};
use crate::ports::{Commit, Conflict, Guard, SignError, Signer, StoreError};

use super::requests::{invalid, Caller, RequestError, RequestService};

/// How receipts are signed and who they say issued them.
#[derive(Clone)]
pub struct Receipts {
    pub signer: Arc<dyn Signer>,
    /// The `iss` claim (`COUNTERSIGN_RECEIPT_ISSUER`, default `countersign`).
    pub issuer: String,
}

impl Receipts {
    /// Signs `claims` as a receipt JWS with the current key.
    pub async fn issue(&self, claims: &ReceiptClaims) -> Result<String, SignError> {
        self.sign_jws(RECEIPT_TYP, claims).await
    }

    /// Signs `claims` as a compact ES256 JWS of type `typ` with the current key (receipts, checkpoints).
    pub async fn sign_jws<C: serde::Serialize + Sync>(&self, typ: &str, claims: &C) -> Result<String, SignError> {
        let key = self.signer.current_key().await?;
        let header = JwsHeader { alg: ALG.into(), kid: key.kid, typ: typ.into() };
        let input = signing_input(&header, claims);
        let signature = self.signer.sign(input.as_bytes()).await?;
        Ok(compact(&input, &signature))
    }

    /// The JWKS: every key whose receipts still verify.
    pub async fn keys(&self) -> Result<Jwks, SignError> {
        Ok(Jwks { keys: self.signer.public_keys().await? })
    }
}

/// A redemption body as received: `{"artifact": "sha256:…"}`, or nothing.
#[derive(Debug, Clone, Default)]
pub struct RedeemInput {
    pub artifact: Option<String>,
}

/// A successful redemption: the request as now stored, and its receipt.
#[derive(Debug, Clone)]
pub struct Redeemed {
    pub request: ApprovalRequest,
    pub receipt: String,
}

/// Attempts before a redemption that keeps losing version races gives up (503).
const REDEEM_ATTEMPTS: usize = 50;

impl RequestService {
    /// The requesting principal uses its approval, once. Refusals (including `not_found`) are audited.
    pub async fn redeem(&self, caller: &Caller, id: &str, input: RedeemInput) -> Result<Redeemed, RequestError> {
        match self.try_redeem(caller, id, &input).await {
            Ok(r) => Ok(r),
            Err(e) => Err(self.refuse(caller, None, Some(id), e).await),
        }
    }

    async fn try_redeem(&self, caller: &Caller, id: &str, input: &RedeemInput) -> Result<Redeemed, RequestError> {
        let principal = self.identify(caller)?;
        let artifact = input
            .artifact
            .as_deref()
            .map(ArtifactDigest::parse)
            .transpose()
            .map_err(|e| invalid("artifact", e.problem))?;
        let mut key_checked = false;
        for _ in 0..REDEEM_ATTEMPTS {
            let r = self.owned(&principal, id).await?;
            let t = r.redeem(&principal, artifact.as_ref(), self.now())?;
            if !key_checked {
                // A key that cannot sign must not spend the approval: make sure it answers before writing.
                self.receipts.signer.current_key().await.map_err(RequestError::SigningUnavailable)?;
                key_checked = true;
            }
            let commit = Commit {
                expected_version: r.version,
                request: t.request.clone(),
                vote: None,
                events: t.events,
                guard: Guard::Approved,
            };
            let sealed = match self.stores.requests.commit(commit).await {
                Ok(sealed) => sealed,
                Err(StoreError::Conflict(Conflict::Stale)) => continue,
                Err(e) => return Err(e.into()),
            };
            let record = sealed.iter().find(|e| e.kind == AuditKind::RequestRedeemed).ok_or_else(|| {
                StoreError::Other("the redemption was committed without its request.redeemed record".into())
            })?;
            let claims = ReceiptClaims::of(&t.request, record, &self.receipts.issuer);
            let receipt = self.receipts.issue(&claims).await.map_err(|e| {
                // The approval is spent and audited, but its receipt could not be signed: the caller gets a
                // retryable error and needs a new approval (docs/receipts.md, "When signing fails").
                tracing::error!(request_id = %r.id, error = %crate::error::error_chain(&e), "receipt not signed after redemption");
                RequestError::SigningUnavailable(e)
            })?;
            let after = self.dispatcher.deliver_written(t.request.clone(), None).await.unwrap_or(None);
            return Ok(Redeemed { request: self.show(after.unwrap_or(t.request)), receipt });
        }
        Err(RequestError::Unavailable(StoreError::Contention("this request")))
    }

    /// The keys receipts are verified with (`GET /v1/keys`), for an identified caller.
    pub async fn keys(&self, caller: &Caller) -> Result<Jwks, RequestError> {
        if let Err(e) = self.identify(caller) {
            return Err(self.refuse(caller, None, None, e).await);
        }
        self.receipts.keys().await.map_err(RequestError::SigningUnavailable)
    }
}

/// The signer of a function given no receipt key (slack-interactions; the sweeper until checkpoints): every
/// use fails, naming the variable.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoReceiptKey;

#[async_trait::async_trait]
impl Signer for NoReceiptKey {
    async fn current_key(&self) -> Result<crate::domain::receipt::Jwk, SignError> {
        Err(Self::error())
    }
    async fn sign(&self, _: &[u8]) -> Result<[u8; 64], SignError> {
        Err(Self::error())
    }
    async fn public_keys(&self) -> Result<Vec<crate::domain::receipt::Jwk>, SignError> {
        Err(Self::error())
    }
}

impl NoReceiptKey {
    fn error() -> SignError {
        SignError::Unusable("this function is not configured with a receipt key (COUNTERSIGN_RECEIPT_KEY_ID)".into())
    }
}

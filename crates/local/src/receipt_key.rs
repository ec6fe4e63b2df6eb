//! Local mode's receipt key: a P-256 key generated on first start into the data directory
//! (`receipt-key.jwk`, a private JWK, mode 0600), behind the same `Signer` port as the KMS key in AWS.
//! Never used by the Lambdas.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use serde::{Deserialize, Serialize};

use countersign_core::domain::receipt::Jwk;
use countersign_core::ports::{SignError, Signer};

/// The key file's name in the data directory.
pub const KEY_FILE: &str = "receipt-key.jwk";

/// A P-256 signing key held in memory.
pub struct LocalKeySigner {
    key: SigningKey,
    public: Jwk,
}

/// The private JWK as stored: the public members and `d`.
#[derive(Serialize, Deserialize)]
struct PrivateJwk {
    #[serde(flatten)]
    public: Jwk,
    d: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or write the receipt key {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("the receipt key {path} is not a P-256 private JWK: {problem}")]
    Malformed { path: String, problem: String },
    #[error("no randomness available to generate the receipt key: {0}")]
    Random(String),
}

impl LocalKeySigner {
    /// A fresh key, never written anywhere (tests, benches).
    pub fn ephemeral() -> Result<Self, KeyError> {
        for _ in 0..8 {
            let mut d = [0u8; 32];
            getrandom::fill(&mut d).map_err(|e| KeyError::Random(e.to_string()))?;
            if let Ok(key) = SigningKey::from_slice(&d) {
                return Ok(Self::from_key(key));
            }
        }
        Err(KeyError::Random("no valid scalar in 8 draws".into()))
    }

    /// The key in `dir/receipt-key.jwk`, generated (mode 0600) if there is none yet.
    pub fn load_or_generate(dir: &Path) -> Result<Self, KeyError> {
        let path = dir.join(KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text).map_err(|problem| KeyError::Malformed { path: shown(&path), problem }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let signer = Self::ephemeral()?;
                signer.write_new(&path)?;
                Ok(signer)
            }
            Err(source) => Err(KeyError::Io { path: shown(&path), source }),
        }
    }

    fn from_key(key: SigningKey) -> Self {
        let point = key.verifying_key().to_sec1_point(false);
        let (mut x, mut y) = ([0u8; 32], [0u8; 32]);
        if let (Some(px), Some(py)) = (point.x(), point.y()) {
            x.copy_from_slice(px);
            y.copy_from_slice(py);
        }
        Self { public: Jwk::p256(&x, &y), key }
    }

    fn parse(text: &str) -> Result<Self, String> {
        let jwk: PrivateJwk = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let d = B64.decode(&jwk.d).map_err(|e| format!("d is not base64url: {e}"))?;
        let key = SigningKey::from_slice(&d).map_err(|_| "d is not a P-256 scalar".to_string())?;
        let signer = Self::from_key(key);
        if signer.public.x != jwk.public.x || signer.public.y != jwk.public.y {
            return Err("x and y do not belong to d".into());
        }
        Ok(signer)
    }

    fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        let io = |source| KeyError::Io { path: shown(path), source };
        let private = PrivateJwk { public: self.public.clone(), d: B64.encode(self.key.to_bytes()) };
        let text = serde_json::to_string_pretty(&private).unwrap_or_default();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(path).map_err(io)?;
        std::io::Write::write_all(&mut f, text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)
    }

    pub fn public_key(&self) -> &Jwk {
        &self.public
    }
}

fn shown(p: &Path) -> String {
    PathBuf::from(p).display().to_string()
}

#[async_trait]
impl Signer for LocalKeySigner {
    async fn current_key(&self) -> Result<Jwk, SignError> {
        Ok(self.public.clone())
    }

    async fn sign(&self, message: &[u8]) -> Result<[u8; 64], SignError> {
        let sig: Signature = self.key.sign(message);
        let bytes = sig.to_bytes();
        let mut out = [0u8; 64];
        out.copy_from_slice(&bytes);
        Ok(out)
    }

    async fn public_keys(&self) -> Result<Vec<Jwk>, SignError> {
        Ok(vec![self.public.clone()])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn generates_once_with_mode_0600_and_reloads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = LocalKeySigner::load_or_generate(dir.path()).unwrap();
        let b = LocalKeySigner::load_or_generate(dir.path()).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn refuses_a_key_file_whose_public_part_was_swapped() {
        let dir = tempfile::tempdir().unwrap();
        LocalKeySigner::load_or_generate(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        v["x"] = serde_json::json!(LocalKeySigner::ephemeral().unwrap().public_key().x);
        std::fs::write(&path, v.to_string()).unwrap();
        let e = LocalKeySigner::load_or_generate(dir.path()).err().unwrap();
        assert!(e.to_string().contains("do not belong"), "{e}");
    }
}

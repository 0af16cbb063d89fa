//! Where keys live. Every backend answers the same two questions: what is the public key, and
//! sign these bytes. The sign path never knows which backend it talks to.

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "azure")]
pub mod azure;
#[cfg(feature = "gcp")]
pub mod gcp;
pub mod local;
pub mod pkcs11;

use async_trait::async_trait;
use p256::pkcs8::DecodePublicKey;
use serde::{Deserialize, Serialize};

use crate::keys::{Algorithm, PublicKey, Signature};

/// Why a backend could not answer. `Transient` means "try again later" (network, throttling),
/// which the protocol fronts turn into a retryable answer; `Permanent` needs a person.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BackendError {
    #[error("backend temporarily unavailable: {0}")]
    Transient(String),
    #[error("{0}")]
    Permanent(String),
}

impl BackendError {
    pub fn is_transient(&self) -> bool {
        matches!(self, BackendError::Transient(_))
    }
}

#[async_trait]
pub trait KeyBackend: Send + Sync {
    /// A short name for metrics and logs: `local`, `pkcs11`, `gcpKms`, ...
    fn kind(&self) -> &'static str;

    async fn public_key(&self) -> Result<PublicKey, BackendError>;

    /// Signs `payload`: the message for Ed25519 keys, a 32-byte digest for ECDSA keys.
    async fn sign(&self, payload: &[u8]) -> Result<Signature, BackendError>;

    /// Whether the key answers now (after a failure; the public key is cached by then). Remote
    /// backends ask the service again, and refuse a key that changed under us.
    async fn check(&self) -> Result<(), BackendError> {
        self.public_key().await.map(drop)
    }
}

/// An error with its causes, `outer: inner: innermost`: SDK errors often say little at the top
/// ("non-transport error") and the reason (a 401 from the identity provider) in their sources.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// For `check`: the service must still hand out the public key we started with, or the chain
/// address changed under us.
pub fn unchanged(known: Option<&PublicKey>, now: &PublicKey, service: &str, key: &str) -> Result<(), BackendError> {
    match known {
        Some(known) if known != now => Err(BackendError::Permanent(format!(
            "{service} key {key}: its public key changed since startup; restart the signer after checking why"
        ))),
        _ => Ok(()),
    }
}

/// `keys.<name>.awsKms` in the config (the backend is in `aws.rs`, behind the `aws` feature).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsKmsKeyConfig {
    /// The key's id, ARN or alias (`alias/baker`).
    pub key_id: String,
    /// The region; default: the SDK's chain (`AWS_REGION`, profile, instance metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Another endpoint (an emulator, a VPC endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// `keys.<name>.gcpKms` in the config (the backend is in `gcp.rs`, behind the `gcp` feature).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcpKmsKeyConfig {
    /// The key version's resource name:
    /// `projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/V`.
    pub key_version: String,
    /// Another endpoint (a private endpoint, an emulator). An `http://` endpoint gets no
    /// credentials: a token must never travel in the clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// `keys.<name>.azureKeyVault` in the config (the backend is in `azure.rs`, behind the `azure`
/// feature). P-256 (`ES256`) and secp256k1 (`P-256K`, `ES256K`) keys: Key Vault has no Ed25519.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureKeyVaultKeyConfig {
    /// `https://<vault>.vault.azure.net` (or a Managed HSM's URL).
    pub vault_url: String,
    pub key_name: String,
    /// Pin one version; default: the key's current version, checked for changes while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_version: Option<String>,
    /// Whether the vault's authentication challenge must name the vault's own domain (default
    /// true: a token for Key Vault never goes to another host). Off only for emulators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_challenge_resource: Option<bool>,
}

/// A SubjectPublicKeyInfo (DER), as KMS services hand out public keys, for one of our algorithms.
pub fn public_key_from_spki(algorithm: Algorithm, der: &[u8]) -> Result<PublicKey, String> {
    let sec1 = match algorithm {
        // SubjectPublicKeyInfo for Ed25519: a 12-byte header, then the 32-byte key.
        Algorithm::Ed25519 => {
            let raw = der.get(12..).filter(|raw| raw.len() == 32).ok_or("malformed Ed25519 key")?;
            return PublicKey::from_bytes(algorithm, raw).map_err(|e| e.to_string());
        }
        Algorithm::Secp256k1 => k256::PublicKey::from_public_key_der(der).map_err(|e| e.to_string())?.to_sec1_bytes(),
        Algorithm::P256 => p256::PublicKey::from_public_key_der(der).map_err(|e| e.to_string())?.to_sec1_bytes(),
    };
    PublicKey::from_bytes(algorithm, &sec1).map_err(|e| e.to_string())
}

/// How a service encodes ECDSA signatures (Ed25519 is always the raw 64 bytes).
#[derive(Debug, Clone, Copy)]
pub enum EcdsaEncoding {
    /// ASN.1 DER (AWS KMS, GCP Cloud KMS, PKCS#11 never).
    Der,
    /// `r || s`, 32 bytes each (PKCS#11, Azure Key Vault).
    Raw,
}

/// A signature as a service returned it, made ours: decoded, low-S, and verified against the
/// key, so a service returning garbage never reaches the chain. The error says what was wrong.
pub fn accept_signature(
    public_key: &PublicKey,
    payload: &[u8],
    bytes: &[u8],
    encoding: EcdsaEncoding,
) -> Result<Signature, &'static str> {
    let algorithm = public_key.algorithm();
    let raw: [u8; 64] = match (algorithm, encoding) {
        (Algorithm::Ed25519, _) | (_, EcdsaEncoding::Raw) => bytes.try_into().map_err(|_| "not a 64-byte signature")?,
        (Algorithm::Secp256k1, EcdsaEncoding::Der) => {
            k256::ecdsa::Signature::from_der(bytes).map_err(|_| "not a DER signature")?.to_bytes().into()
        }
        (Algorithm::P256, EcdsaEncoding::Der) => {
            p256::ecdsa::Signature::from_der(bytes).map_err(|_| "not a DER signature")?.to_bytes().into()
        }
    };
    let signature = Signature::new(algorithm, raw).to_low_s().map_err(|_| "malformed signature")?;
    public_key.verify(payload, &signature).map_err(|_| "the signature does not verify against the key")?;
    Ok(signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;

    #[test]
    fn accept_signature_refuses_garbage_and_normalises_high_s() {
        let key = SecretKey::generate(Algorithm::Secp256k1);
        let digest = [7u8; 32];
        let good = key.sign(&digest).unwrap();
        let public = key.public_key();
        // A high-S twin of a valid signature is accepted and comes back low-S.
        let k1 = k256::ecdsa::Signature::from_slice(&good.to_bytes()).unwrap();
        let (r, s) = k1.split_scalars();
        let high = k256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
        let accepted = accept_signature(&public, &digest, high.to_der().as_bytes(), EcdsaEncoding::Der).unwrap();
        assert_eq!(accepted.to_bytes(), good.to_bytes());
        assert_eq!(accept_signature(&public, &digest, &[0u8; 64], EcdsaEncoding::Raw), Err("malformed signature"));
        assert_eq!(accept_signature(&public, &digest, &[1u8; 10], EcdsaEncoding::Der), Err("not a DER signature"));
        let other = SecretKey::generate(Algorithm::Secp256k1).sign(&digest).unwrap();
        assert_eq!(
            accept_signature(&public, &digest, &other.to_bytes(), EcdsaEncoding::Raw),
            Err("the signature does not verify against the key")
        );
    }

    /// A KMS or HSM key re-checked after a failure must still be the key the signer started
    /// with; another key behind the same name is a permanent error, not a new identity.
    #[test]
    fn a_public_key_that_changed_since_startup_is_refused() {
        let first = SecretKey::generate(Algorithm::Secp256k1).public_key();
        let other = SecretKey::generate(Algorithm::Secp256k1).public_key();
        assert!(unchanged(Some(&first), &first, "GCP KMS", "k").is_ok());
        assert!(unchanged(None, &other, "GCP KMS", "k").is_ok(), "nothing known yet");
        let changed = unchanged(Some(&first), &other, "GCP KMS", "k").unwrap_err();
        assert!(!changed.is_transient(), "{changed}");
        assert!(changed.to_string().contains("GCP KMS key k: its public key changed since startup"), "{changed}");
    }
}

//! Where keys live. Every backend answers the same two questions: what is the public key, and
//! sign these bytes. The sign path never knows which backend it talks to.
//!
//! A backend is one file: its config struct (`keys.<name>.<field>`), implementing
//! [`BackendConfig`] (validation, which keys it can hold, opening), and its [`KeyBackend`]. The
//! closed list is [`Backend`]; `config::KeyConfig` has one field per variant.

pub mod aws;
pub mod azure;
pub mod gcp;
pub mod local;
pub mod pkcs11;

use std::sync::Arc;

use async_trait::async_trait;
use p256::pkcs8::DecodePublicKey;

pub use aws::AwsKmsKeyConfig;
pub use azure::AzureKeyVaultKeyConfig;
pub use gcp::GcpKmsKeyConfig;

use crate::keys::{Algorithm, BlsScheme, PublicKey, Signature};

/// The key backends: the one list the config's one-of rule, its messages and the operator's
/// CRD derive from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Local,
    Pkcs11,
    AwsKms,
    GcpKms,
    AzureKeyVault,
}

impl Backend {
    pub const ALL: [Backend; 5] =
        [Backend::Local, Backend::Pkcs11, Backend::GcpKms, Backend::AwsKms, Backend::AzureKeyVault];

    /// Its field under `keys.<name>` in the config, and its name in logs and metrics.
    pub fn field(self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Pkcs11 => "pkcs11",
            Backend::AwsKms => "awsKms",
            Backend::GcpKms => "gcpKms",
            Backend::AzureKeyVault => "azureKeyVault",
        }
    }
}

/// `a, b or c`: the choices a one-of message lists.
pub fn one_of(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// What each backend's config says about itself.
pub trait BackendConfig: Send + Sync {
    fn backend(&self) -> Backend;

    /// Checks the fields before anything is opened.
    fn validate(&self) -> Result<(), InvalidField>;

    /// Why this key cannot be Ed25519 (which Atto and CometBFT need), when the config already
    /// says so: `Some("")` without a reason worth adding. Remote keys tell at startup.
    fn rules_out_ed25519(&self) -> Option<&'static str>;

    /// The backend, ready to ask (remote backends connect on first use). `key` names it in logs.
    fn open(&self, key: &str) -> Result<Arc<dyn KeyBackend>, OpenError>;
}

/// A config field that is wrong: which one (below `keys.<name>.<backend>`; `None` for the
/// backend's section as a whole) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidField {
    pub field: Option<&'static str>,
    pub message: String,
}

impl InvalidField {
    pub fn new(field: Option<&'static str>, message: impl Into<String>) -> Self {
        InvalidField { field, message: message.into() }
    }
}

/// Why a backend could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Local(#[from] local::LocalKeyError),
    /// A backend this build was compiled without (the fuzz build leaves the cloud SDKs out).
    #[error("this build has no {} support (cargo feature {feature})", backend.field())]
    NotBuilt { backend: Backend, feature: &'static str },
}

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

    /// Signs `payload`: the message for Ed25519 and BLS keys, a 32-byte digest for ECDSA keys.
    async fn sign(&self, payload: &[u8]) -> Result<Signature, BackendError>;

    /// Signs under another BLS scheme than the default. Only keys held in this process are BLS
    /// keys: no HSM or cloud KMS signs BLS12-381.
    async fn sign_bls(&self, scheme: BlsScheme, _message: &[u8]) -> Result<Signature, BackendError> {
        Err(BackendError::Permanent(format!("{} keys do not sign BLS12-381 ({scheme:?})", self.kind())))
    }

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

/// A public key a service handed out that is not one of ours.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpkiError {
    #[error("malformed Ed25519 key")]
    Ed25519,
    #[error("not a {algorithm} SubjectPublicKeyInfo: {reason}")]
    Der { algorithm: Algorithm, reason: String },
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
}

/// A SubjectPublicKeyInfo (DER), as KMS services hand out public keys, for one of our algorithms.
pub fn public_key_from_spki(algorithm: Algorithm, der: &[u8]) -> Result<PublicKey, SpkiError> {
    let not_ours = |e: p256::pkcs8::spki::Error| SpkiError::Der { algorithm, reason: e.to_string() };
    let sec1 = match algorithm {
        // SubjectPublicKeyInfo for Ed25519: a 12-byte header, then the 32-byte key.
        Algorithm::Ed25519 => {
            let raw = der.get(12..).filter(|raw| raw.len() == 32).ok_or(SpkiError::Ed25519)?;
            return Ok(PublicKey::from_bytes(algorithm, raw)?);
        }
        Algorithm::Secp256k1 => k256::PublicKey::from_public_key_der(der).map_err(not_ours)?.to_sec1_bytes(),
        Algorithm::P256 => p256::PublicKey::from_public_key_der(der).map_err(not_ours)?.to_sec1_bytes(),
        Algorithm::Bls12_381 => {
            return Err(SpkiError::Der { algorithm, reason: "no key service hands out BLS12-381 keys".into() })
        }
    };
    Ok(PublicKey::from_bytes(algorithm, &sec1)?)
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
        (Algorithm::Bls12_381, _) => return Err("no key service signs BLS12-381"),
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
        let k1 = k256::ecdsa::Signature::from_slice(good.as_bytes()).unwrap();
        let (r, s) = k1.split_scalars();
        let high = k256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
        let accepted = accept_signature(&public, &digest, high.to_der().as_bytes(), EcdsaEncoding::Der).unwrap();
        assert_eq!(accepted, good);
        assert_eq!(accept_signature(&public, &digest, &[0u8; 64], EcdsaEncoding::Raw), Err("malformed signature"));
        assert_eq!(accept_signature(&public, &digest, &[1u8; 10], EcdsaEncoding::Der), Err("not a DER signature"));
        let other = SecretKey::generate(Algorithm::Secp256k1).sign(&digest).unwrap();
        assert_eq!(
            accept_signature(&public, &digest, other.as_bytes(), EcdsaEncoding::Raw),
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

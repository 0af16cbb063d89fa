//! Where keys live. Every backend answers the same two questions: what is the public key, and
//! sign these bytes. The sign path never knows which backend it talks to.

#[cfg(feature = "aws")]
pub mod aws;
pub mod local;
pub mod pkcs11;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::keys::{PublicKey, Signature};

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

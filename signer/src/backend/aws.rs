//! A key in AWS KMS, with the default credential chain, so IRSA and EKS Pod Identity work
//! unchanged. Ed25519 keys (`ECC_NIST_EDWARDS25519`) sign the message with `ED25519_SHA_512` and
//! `MessageType RAW`; ECDSA keys (`ECC_SECG_P256K1`, `ECC_NIST_P256`) sign the 32-byte digest the
//! protocol front computed with `ECDSA_SHA_256` and `MessageType DIGEST` (KMS does not hash it
//! again, which is how a BLAKE2b digest gets signed). ECDSA answers are DER; they are turned raw,
//! made low-S, and verified against the public key before they leave. The Sign API:
//! <https://docs.aws.amazon.com/kms/latest/APIReference/API_Sign.html>.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Backend, BackendConfig, InvalidField, KeyBackend, OpenError};
#[cfg(feature = "aws")]
pub use client::AwsKmsBackend;

/// `keys.<name>.awsKms` in the config (the client behind the `aws` feature).
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

impl BackendConfig for AwsKmsKeyConfig {
    fn backend(&self) -> Backend {
        Backend::AwsKms
    }

    fn validate(&self) -> Result<(), InvalidField> {
        if self.key_id.trim().is_empty() {
            return Err(InvalidField::new(Some("keyId"), "name the key (id, ARN or alias/...)"));
        }
        Ok(())
    }

    fn rules_out_ed25519(&self) -> Option<&'static str> {
        None
    }

    fn open(&self, _key: &str) -> Result<Arc<dyn KeyBackend>, OpenError> {
        #[cfg(feature = "aws")]
        return Ok(Arc::new(AwsKmsBackend::new(self.clone())));
        #[cfg(not(feature = "aws"))]
        return Err(OpenError::NotBuilt { backend: self.backend(), feature: "aws" });
    }
}

#[cfg(feature = "aws")]
mod client {
    use super::AwsKmsKeyConfig;
    use std::time::Duration;

    use async_trait::async_trait;
    use aws_sdk_kms::error::ProvideErrorMetadata;
    use aws_sdk_kms::primitives::Blob;
    use aws_sdk_kms::types::{KeySpec, MessageType, SigningAlgorithmSpec};
    use tokio::sync::OnceCell;

    use crate::backend::{accept_signature, public_key_from_spki, unchanged, BackendError, EcdsaEncoding, KeyBackend};
    use crate::keys::{Algorithm, PublicKey, Signature};

    /// Each KMS call gets this long (the sign path's own deadline is longer).
    const CALL_TIMEOUT: Duration = Duration::from_secs(3);

    pub struct AwsKmsBackend {
        config: AwsKmsKeyConfig,
        client: OnceCell<aws_sdk_kms::Client>,
        public_key: OnceCell<PublicKey>,
    }

    impl AwsKmsBackend {
        pub fn new(config: AwsKmsKeyConfig) -> Self {
            AwsKmsBackend { config, client: OnceCell::new(), public_key: OnceCell::new() }
        }

        async fn client(&self) -> &aws_sdk_kms::Client {
            self.client
                .get_or_init(|| async {
                    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
                    if let Some(region) = &self.config.region {
                        loader = loader.region(aws_config::Region::new(region.clone()));
                    }
                    if let Some(endpoint) = &self.config.endpoint {
                        loader = loader.endpoint_url(endpoint);
                    }
                    let timeouts =
                        aws_config::timeout::TimeoutConfig::builder().operation_timeout(CALL_TIMEOUT).build();
                    aws_sdk_kms::Client::new(&loader.timeout_config(timeouts).load().await)
                })
                .await
        }

        fn failure<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
            &self,
            what: &str,
            error: aws_sdk_kms::error::SdkError<E>,
        ) -> BackendError {
            let code = error.as_service_error().and_then(|e| e.code()).map(str::to_string);
            let message = match &code {
                Some(code) => format!(
                    "AWS KMS {what} {}: {code}: {}",
                    self.config.key_id,
                    error.as_service_error().and_then(|e| e.message()).unwrap_or("")
                ),
                None => {
                    format!(
                        "AWS KMS {what} {}: {}",
                        self.config.key_id,
                        aws_sdk_kms::error::DisplayErrorContext(&error)
                    )
                }
            };
            match code.as_deref() {
                // Throttling and service trouble pass; a wrong key or missing permission does not.
                Some(
                    "ThrottlingException"
                    | "KMSInternalException"
                    | "DependencyTimeoutException"
                    | "KeyUnavailableException",
                )
                | None => BackendError::Transient(message),
                _ => BackendError::Permanent(message),
            }
        }

        async fn fetch_public_key(&self) -> Result<PublicKey, BackendError> {
            let answer = self
                .client()
                .await
                .get_public_key()
                .key_id(&self.config.key_id)
                .send()
                .await
                .map_err(|e| self.failure("GetPublicKey", e))?;
            let der = answer.public_key().map(|b| b.as_ref().to_vec()).unwrap_or_default();
            let invalid =
                |reason: String| BackendError::Permanent(format!("AWS KMS key {}: {reason}", self.config.key_id));
            let algorithm = match answer.key_spec() {
                Some(KeySpec::EccNistEdwards25519) => Algorithm::Ed25519,
                Some(KeySpec::EccSecgP256K1) => Algorithm::Secp256k1,
                Some(KeySpec::EccNistP256) => Algorithm::P256,
                other => {
                    return Err(invalid(format!(
                        "key spec {other:?}; sigil signs with ECC_NIST_EDWARDS25519, ECC_SECG_P256K1 or ECC_NIST_P256"
                    )))
                }
            };
            public_key_from_spki(algorithm, &der).map_err(|e| invalid(e.to_string()))
        }
    }

    #[async_trait]
    impl KeyBackend for AwsKmsBackend {
        fn kind(&self) -> &'static str {
            "awsKms"
        }

        async fn public_key(&self) -> Result<PublicKey, BackendError> {
            self.public_key.get_or_try_init(|| self.fetch_public_key()).await.cloned()
        }

        async fn check(&self) -> Result<(), BackendError> {
            unchanged(self.public_key.get(), &self.fetch_public_key().await?, "AWS KMS", &self.config.key_id)
        }

        async fn sign(&self, payload: &[u8]) -> Result<Signature, BackendError> {
            let public_key = self.public_key().await?;
            let algorithm = public_key.algorithm();
            let (message_type, signing) = match algorithm {
                Algorithm::Ed25519 => (MessageType::Raw, SigningAlgorithmSpec::Ed25519Sha512),
                Algorithm::Secp256k1 | Algorithm::P256 => (MessageType::Digest, SigningAlgorithmSpec::EcdsaSha256),
                // Never: AWS KMS has no BLS12-381 keys.
                Algorithm::Bls12_381 => return Err(BackendError::Permanent("AWS KMS does not sign BLS12-381".into())),
            };
            let answer = self
                .client()
                .await
                .sign()
                .key_id(&self.config.key_id)
                .message(Blob::new(payload.to_vec()))
                .message_type(message_type)
                .signing_algorithm(signing)
                .send()
                .await
                .map_err(|e| self.failure("Sign", e))?;
            let bytes = answer.signature().map(|b| b.as_ref().to_vec()).unwrap_or_default();
            accept_signature(&public_key, payload, &bytes, EcdsaEncoding::Der).map_err(|reason| {
                BackendError::Permanent(format!("AWS KMS key {}: {reason}; refused", self.config.key_id))
            })
        }
    }
}

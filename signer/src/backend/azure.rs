//! A key in Azure Key Vault, through Microsoft's own client. Credentials: Entra Workload Identity
//! when the pod has it (`AZURE_FEDERATED_TOKEN_FILE`, set by the AKS webhook), the managed
//! identity otherwise; no static secrets. Key Vault signs a digest it is given (`ES256` for P-256,
//! `ES256K` for secp256k1) and answers `r || s`; it has no Ed25519, so these keys serve Tezos
//! tz2/tz3 only. Signatures are made low-S and verified before they leave. The sign API:
//! <https://learn.microsoft.com/en-us/rest/api/keyvault/keys/sign/sign>.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Backend, BackendConfig, InvalidField, KeyBackend, OpenError};
#[cfg(feature = "azure")]
pub use client::AzureKeyVaultBackend;

/// `keys.<name>.azureKeyVault` in the config (the client behind the `azure`
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

impl BackendConfig for AzureKeyVaultKeyConfig {
    fn backend(&self) -> Backend {
        Backend::AzureKeyVault
    }

    fn validate(&self) -> Result<(), InvalidField> {
        if !self.vault_url.starts_with("https://") {
            return Err(InvalidField::new(
                Some("vaultUrl"),
                format!("{:?} must be https://<vault>.vault.azure.net", self.vault_url),
            ));
        }
        if self.key_name.is_empty() || self.key_name.contains('/') {
            return Err(InvalidField::new(Some("keyName"), "name the key (no slashes)"));
        }
        Ok(())
    }

    fn rules_out_ed25519(&self) -> Option<&'static str> {
        Some("Azure Key Vault has no Ed25519 keys: use GCP KMS, AWS KMS, an HSM or a local key")
    }

    fn open(&self, _key: &str) -> Result<Arc<dyn KeyBackend>, OpenError> {
        #[cfg(feature = "azure")]
        return Ok(Arc::new(AzureKeyVaultBackend::new(self.clone())));
        #[cfg(not(feature = "azure"))]
        return Err(OpenError::NotBuilt { backend: self.backend(), feature: "azure" });
    }
}

#[cfg(feature = "azure")]
mod client {
    use super::AzureKeyVaultKeyConfig;
    use std::sync::Arc;

    use async_trait::async_trait;
    use azure_core::credentials::TokenCredential;
    use azure_core::error::ErrorKind;
    use azure_core::http::{ClientOptions, ExponentialRetryOptions, RetryOptions};
    use azure_core::time::Duration;
    use azure_identity::{ManagedIdentityCredential, WorkloadIdentityCredential};
    use azure_security_keyvault_keys::models::{
        CurveName, KeyClientGetKeyOptions, KeyClientSignOptions, SignParameters, SignatureAlgorithm,
    };
    use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
    use tokio::sync::OnceCell;

    use crate::backend::{accept_signature, error_chain, unchanged, BackendError, EcdsaEncoding, KeyBackend};
    use crate::keys::{Algorithm, PublicKey, Signature};

    pub struct AzureKeyVaultBackend {
        config: AzureKeyVaultKeyConfig,
        client: OnceCell<KeyClient>,
        public_key: OnceCell<PublicKey>,
    }

    impl AzureKeyVaultBackend {
        pub fn new(config: AzureKeyVaultKeyConfig) -> Self {
            AzureKeyVaultBackend { config, client: OnceCell::new(), public_key: OnceCell::new() }
        }

        fn name(&self) -> String {
            let version = self.config.key_version.as_deref().map(|v| format!("/{v}")).unwrap_or_default();
            format!("{}/keys/{}{version}", self.config.vault_url.trim_end_matches('/'), self.config.key_name)
        }

        async fn client(&self) -> Result<&KeyClient, BackendError> {
            self.client
                .get_or_try_init(|| async {
                    let fail = |e: azure_core::Error| {
                        BackendError::Permanent(format!("Azure Key Vault client: {}", error_chain(&e)))
                    };
                    let credential: Arc<dyn TokenCredential> =
                        if std::env::var_os("AZURE_FEDERATED_TOKEN_FILE").is_some() {
                            WorkloadIdentityCredential::new(None).map_err(fail)?
                        } else {
                            ManagedIdentityCredential::new(None).map_err(fail)?
                        };
                    // A few quick retries of throttling and 5xx inside the sign path's own deadline.
                    let retry = RetryOptions::exponential(ExponentialRetryOptions {
                        initial_delay: Duration::milliseconds(50),
                        max_retries: 2,
                        max_total_elapsed: Duration::seconds(3),
                        max_delay: Duration::milliseconds(500),
                    });
                    let options = KeyClientOptions {
                        client_options: ClientOptions { retry, ..Default::default() },
                        verify_challenge_resource: self.config.verify_challenge_resource,
                        ..Default::default()
                    };
                    KeyClient::new(&self.config.vault_url, credential, Some(options)).map_err(fail)
                })
                .await
        }

        fn failure(&self, what: &str, error: azure_core::Error) -> BackendError {
            let message = format!("Azure Key Vault {what} {}: {}", self.name(), error_chain(&error));
            let transient = match error.kind() {
                ErrorKind::HttpResponse { status, .. } => {
                    let code = u16::from(*status);
                    code == 408 || code == 429 || code >= 500
                }
                ErrorKind::Connection | ErrorKind::Io => true,
                _ => false,
            };
            if transient {
                BackendError::Transient(message)
            } else {
                BackendError::Permanent(message)
            }
        }

        async fn fetch_public_key(&self) -> Result<PublicKey, BackendError> {
            let options = KeyClientGetKeyOptions { key_version: self.config.key_version.clone(), ..Default::default() };
            let key = self
                .client()
                .await?
                .get_key(&self.config.key_name, Some(options))
                .await
                .map_err(|e| self.failure("get key", e))?
                .into_model()
                .map_err(|e| self.failure("get key", e))?;
            let invalid =
                |reason: String| BackendError::Permanent(format!("Azure Key Vault key {}: {reason}", self.name()));
            let jwk = key.key.ok_or_else(|| invalid("the answer has no key".into()))?;
            let algorithm = match &jwk.crv {
                Some(CurveName::P256) => Algorithm::P256,
                Some(CurveName::P256K) => Algorithm::Secp256k1,
                other => return Err(invalid(format!("curve {other:?}; sigil signs with P-256 or P-256K"))),
            };
            let coordinate = |c: &Option<Vec<u8>>| c.clone().filter(|c| c.len() == 32);
            let (Some(x), Some(y)) = (coordinate(&jwk.x), coordinate(&jwk.y)) else {
                return Err(invalid("the key's x and y are not 32 bytes each".into()));
            };
            let sec1 = [&[0x04][..], &x, &y].concat();
            PublicKey::from_bytes(algorithm, &sec1).map_err(|e| invalid(e.to_string()))
        }
    }

    #[async_trait]
    impl KeyBackend for AzureKeyVaultBackend {
        fn kind(&self) -> &'static str {
            "azureKeyVault"
        }

        async fn public_key(&self) -> Result<PublicKey, BackendError> {
            self.public_key.get_or_try_init(|| self.fetch_public_key()).await.cloned()
        }

        async fn check(&self) -> Result<(), BackendError> {
            unchanged(self.public_key.get(), &self.fetch_public_key().await?, "Azure Key Vault", &self.name())
        }

        async fn sign(&self, payload: &[u8]) -> Result<Signature, BackendError> {
            let public_key = self.public_key().await?;
            let algorithm = match public_key.algorithm() {
                Algorithm::P256 => SignatureAlgorithm::Es256,
                Algorithm::Secp256k1 => SignatureAlgorithm::Es256K,
                // Never: fetch_public_key accepts P-256 and P-256K only.
                Algorithm::Ed25519 | Algorithm::Bls12_381 => {
                    return Err(BackendError::Permanent(format!("Azure Key Vault key {}: not an EC key", self.name())))
                }
            };
            let parameters = SignParameters { algorithm: Some(algorithm), value: Some(payload.to_vec()) };
            let options = KeyClientSignOptions { key_version: self.config.key_version.clone(), ..Default::default() };
            let answer = self
                .client()
                .await?
                .sign(&self.config.key_name, parameters.try_into().map_err(|e| self.failure("sign", e))?, Some(options))
                .await
                .map_err(|e| self.failure("sign", e))?
                .into_model()
                .map_err(|e| self.failure("sign", e))?;
            let bytes = answer.result.unwrap_or_default();
            accept_signature(&public_key, payload, &bytes, EcdsaEncoding::Raw).map_err(|reason| {
                BackendError::Permanent(format!("Azure Key Vault key {}: {reason}; refused", self.name()))
            })
        }
    }
}

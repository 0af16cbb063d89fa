//! A key version in GCP Cloud KMS, through Google's own client with Application Default
//! Credentials, so GKE Workload Identity and Workload Identity Federation work unchanged.
//! `EC_SIGN_ED25519` signs the message (`data`); `EC_SIGN_SECP256K1_SHA256` and
//! `EC_SIGN_P256_SHA256` sign the 32-byte digest the protocol front computed (`digest.sha256`:
//! KMS does not hash again, which is how a BLAKE2b digest gets signed). The sign API:
//! <https://cloud.google.com/kms/docs/reference/rest/v1/projects.locations.keyRings.cryptoKeys.cryptoKeyVersions/asymmetricSign>.
//!
//! Integrity: every request carries the CRC32C of what it asks to sign, and an answer counts only
//! if KMS confirms it saw those bytes, the signature's CRC32C matches and it names our version. A
//! corrupted exchange is asked again (twice at most); a sign is safe to repeat because the ratchet
//! lock is held around it. Then the signature is decoded, made low-S and verified like any other.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Backend, BackendConfig, InvalidField, KeyBackend, OpenError};
#[cfg(feature = "gcp")]
pub use client::GcpKmsBackend;

/// `keys.<name>.gcpKms` in the config (the client behind the `gcp` feature).
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

impl BackendConfig for GcpKmsKeyConfig {
    fn backend(&self) -> Backend {
        Backend::GcpKms
    }

    fn validate(&self) -> Result<(), InvalidField> {
        if !is_key_version_name(&self.key_version) {
            return Err(InvalidField::new(
                Some("keyVersion"),
                format!(
                    "{:?} is not a key version name; expected \
                     projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/V",
                    self.key_version
                ),
            ));
        }
        Ok(())
    }

    fn rules_out_ed25519(&self) -> Option<&'static str> {
        None
    }

    fn open(&self, _key: &str) -> Result<Arc<dyn KeyBackend>, OpenError> {
        #[cfg(feature = "gcp")]
        return Ok(Arc::new(GcpKmsBackend::new(self.clone())));
        #[cfg(not(feature = "gcp"))]
        return Err(OpenError::NotBuilt { backend: self.backend(), feature: "gcp" });
    }
}

/// `projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/V`, every part non-empty.
fn is_key_version_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    let labels = ["projects", "locations", "keyRings", "cryptoKeys", "cryptoKeyVersions"];
    parts.len() == 10 && parts.chunks(2).zip(labels).all(|(pair, label)| pair[0] == label && !pair[1].is_empty())
}

#[cfg(feature = "gcp")]
mod client {
    use super::GcpKmsKeyConfig;
    use std::time::Duration;

    use async_trait::async_trait;
    use google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder;
    use google_cloud_gax::options::RequestOptionsBuilder;
    use google_cloud_gax::retry_policy::{Aip194Strict, RetryPolicyExt};
    use google_cloud_kms_v1::client::KeyManagementService;
    use google_cloud_kms_v1::model::crypto_key_version::CryptoKeyVersionAlgorithm;
    use google_cloud_kms_v1::model::Digest;
    use tokio::sync::OnceCell;

    use crate::backend::{accept_signature, public_key_from_spki, unchanged, BackendError, EcdsaEncoding, KeyBackend};
    use crate::keys::{Algorithm, PublicKey, Signature};

    /// Each attempt gets this long; the client retries UNAVAILABLE and friends within `BUDGET`.
    const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
    const BUDGET: Duration = Duration::from_secs(3);
    /// Exchanges whose checksums did not match are asked again this many times in all.
    const INTEGRITY_ATTEMPTS: usize = 3;

    pub struct GcpKmsBackend {
        config: GcpKmsKeyConfig,
        client: OnceCell<KeyManagementService>,
        public_key: OnceCell<PublicKey>,
    }

    impl GcpKmsBackend {
        pub fn new(config: GcpKmsKeyConfig) -> Self {
            GcpKmsBackend { config, client: OnceCell::new(), public_key: OnceCell::new() }
        }

        async fn client(&self) -> Result<&KeyManagementService, BackendError> {
            self.client
                .get_or_try_init(|| async {
                    let backoff = ExponentialBackoffBuilder::new()
                        .with_initial_delay(Duration::from_millis(50))
                        .with_maximum_delay(Duration::from_millis(500))
                        .build()
                        .map_err(|e| BackendError::Permanent(format!("GCP KMS backoff: {e}")))?;
                    let mut builder = KeyManagementService::builder()
                        .with_attempt_timeout(ATTEMPT_TIMEOUT)
                        .with_retry_policy(Aip194Strict.with_time_limit(BUDGET).with_attempt_limit(4))
                        .with_backoff_policy(backoff);
                    if let Some(endpoint) = &self.config.endpoint {
                        builder = builder.with_endpoint(endpoint);
                        if endpoint.starts_with("http://") {
                            builder = builder
                                .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build());
                        }
                    }
                    // No credentials found is a configuration problem, not a passing one.
                    builder.build().await.map_err(|e| BackendError::Permanent(format!("GCP KMS client: {e}")))
                })
                .await
        }

        fn failure(&self, what: &str, error: google_cloud_kms_v1::Error) -> BackendError {
            use google_cloud_gax::error::rpc::Code;
            let message = format!("GCP KMS {what} {}: {error}", self.config.key_version);
            if let Some(status) = error.status() {
                return match status.code {
                    Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::ResourceExhausted
                    | Code::Aborted
                    | Code::Internal
                    | Code::Unknown => BackendError::Transient(message),
                    _ => BackendError::Permanent(message),
                };
            }
            if error.is_authentication() {
                let transient = std::error::Error::source(&error)
                    .and_then(|source| source.downcast_ref::<google_cloud_gax::error::CredentialsError>())
                    .is_some_and(|credentials| credentials.is_transient());
                return if transient { BackendError::Transient(message) } else { BackendError::Permanent(message) };
            }
            if error.is_timeout() || error.is_exhausted() || error.is_io() || error.is_connect() || error.is_transport()
            {
                return BackendError::Transient(message);
            }
            match error.http_status_code() {
                Some(429 | 500..=599) => BackendError::Transient(message),
                _ => BackendError::Permanent(message),
            }
        }

        fn invalid(&self, reason: impl std::fmt::Display) -> BackendError {
            BackendError::Permanent(format!("GCP KMS key {}: {reason}", self.config.key_version))
        }

        async fn fetch_public_key(&self) -> Result<PublicKey, BackendError> {
            let answer = self
                .client()
                .await?
                .get_public_key()
                .set_name(&self.config.key_version)
                .send()
                .await
                .map_err(|e| self.failure("getPublicKey", e))?;
            if answer.name != self.config.key_version {
                return Err(self.invalid(format!("the service answered for another version, {}", answer.name)));
            }
            if answer.pem_crc32c.is_some_and(|crc| crc != crc32c::crc32c(answer.pem.as_bytes()) as i64) {
                return Err(BackendError::Transient(format!(
                    "GCP KMS getPublicKey {}: the public key's checksum does not match",
                    self.config.key_version
                )));
            }
            let algorithm = match answer.algorithm {
                CryptoKeyVersionAlgorithm::EcSignEd25519 => Algorithm::Ed25519,
                CryptoKeyVersionAlgorithm::EcSignSecp256K1Sha256 => Algorithm::Secp256k1,
                CryptoKeyVersionAlgorithm::EcSignP256Sha256 => Algorithm::P256,
                other => {
                    return Err(self.invalid(format!(
                    "algorithm {}; sigil signs with EC_SIGN_ED25519, EC_SIGN_SECP256K1_SHA256 or EC_SIGN_P256_SHA256",
                    other.name().unwrap_or("unknown")
                )))
                }
            };
            let der = pem_body(&answer.pem).ok_or_else(|| self.invalid("the public key is not PEM"))?;
            public_key_from_spki(algorithm, &der).map_err(|e| self.invalid(e))
        }

        /// One `asymmetricSign` exchange; `Ok(None)` when its checksums did not match.
        async fn sign_once(&self, algorithm: Algorithm, payload: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
            let checksum = crc32c::crc32c(payload) as i64;
            let bytes = bytes::Bytes::copy_from_slice(payload);
            let request = self.client().await?.asymmetric_sign().set_name(&self.config.key_version);
            // Safe to repeat: the ratchet lock is held, and any valid signature will do.
            let request = request.with_idempotency(true);
            let request = if algorithm.signs_digest() {
                request.set_digest(Digest::new().set_sha256(bytes)).set_digest_crc32c(checksum)
            } else {
                request.set_data(bytes).set_data_crc32c(checksum)
            };
            let answer = request.send().await.map_err(|e| self.failure("asymmetricSign", e))?;
            let verified =
                if algorithm.signs_digest() { answer.verified_digest_crc32c } else { answer.verified_data_crc32c };
            let intact = verified
                && answer.name == self.config.key_version
                && answer.signature_crc32c == Some(crc32c::crc32c(&answer.signature) as i64);
            Ok(intact.then(|| answer.signature.to_vec()))
        }
    }

    /// The DER inside a PEM block.
    fn pem_body(pem: &str) -> Option<Vec<u8>> {
        use base64::Engine;
        let body: String = pem.lines().filter(|line| !line.starts_with("-----")).map(str::trim).collect();
        base64::engine::general_purpose::STANDARD.decode(body).ok()
    }

    #[async_trait]
    impl KeyBackend for GcpKmsBackend {
        fn kind(&self) -> &'static str {
            "gcpKms"
        }

        async fn public_key(&self) -> Result<PublicKey, BackendError> {
            self.public_key.get_or_try_init(|| self.fetch_public_key()).await.cloned()
        }

        async fn check(&self) -> Result<(), BackendError> {
            unchanged(self.public_key.get(), &self.fetch_public_key().await?, "GCP KMS", &self.config.key_version)
        }

        async fn sign(&self, payload: &[u8]) -> Result<Signature, BackendError> {
            let public_key = self.public_key().await?;
            for _ in 0..INTEGRITY_ATTEMPTS {
                if let Some(bytes) = self.sign_once(public_key.algorithm(), payload).await? {
                    return accept_signature(&public_key, payload, &bytes, EcdsaEncoding::Der)
                        .map_err(|reason| self.invalid(format!("{reason}; refused")));
                }
            }
            Err(BackendError::Transient(format!(
                "GCP KMS asymmetricSign {}: checksums did not match {INTEGRITY_ATTEMPTS} times in a row",
                self.config.key_version
            )))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn pem_body_reads_the_der() {
            let pem = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\nAAAA\n-----END PUBLIC KEY-----\n";
            assert_eq!(pem_body(pem).unwrap()[..5], [0x30, 0x2a, 0x30, 0x05, 0x06]);
            assert_eq!(pem_body("-----BEGIN-----\n!!\n-----END-----"), None);
        }
    }
}

//! The local backend: a software key in process memory, read from the config, a file or an
//! environment variable. Simple and fast; the key is as safe as the pod it runs in.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{Backend, BackendConfig, BackendError, InvalidField, KeyBackend, OpenError};
use crate::keys::tezos::{self, EncodingError};
use crate::keys::{cometbft, Algorithm, BlsScheme, KeyError, PublicKey, Redacted, SecretKey, Signature};

/// `keys.<name>.local` in the config: exactly one source of the secret. `Debug` shows where the
/// secret comes from, never an inline secret.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalKeyConfig {
    /// The secret inline: 64 hex characters, a Tezos `edsk…`/`spsk…`/`p2sk…` key, a CometBFT
    /// `priv_validator_key.json` or a tmkms base64 seed. Convenient for tests; prefer a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
    /// A file holding the secret (either form). Should be readable by the owner only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_file: Option<PathBuf>,
    /// The name of an environment variable holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_env: Option<String>,
    /// The curve of a hex secret. Defaults to ed25519; a Tezos key names its own curve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<Algorithm>,
}

impl fmt::Debug for LocalKeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKeyConfig")
            .field("secret_key", &self.secret_key.as_ref().map(|_| Redacted))
            .field("secret_key_file", &self.secret_key_file)
            .field("secret_key_env", &self.secret_key_env)
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LocalKeyError {
    #[error("set exactly one of secretKey, secretKeyFile or secretKeyEnv (found {0})")]
    SourceCount(usize),
    #[error("cannot read secretKeyFile {path}: {source}")]
    ReadFile { path: PathBuf, source: std::io::Error },
    #[error("environment variable {0} is not set or empty")]
    MissingEnv(String),
    #[error("{origin}: {source}")]
    Invalid { origin: String, source: KeyError },
    #[error("{origin}: not a Tezos secret key: {source}")]
    Tezos { origin: String, source: EncodingError },
    #[error("{origin}: {source}")]
    CometBft { origin: String, source: cometbft::KeyFileError },
    #[error("{origin}: the key is {found}, but algorithm says {configured}")]
    AlgorithmMismatch { origin: String, found: Algorithm, configured: Algorithm },
}

impl LocalKeyConfig {
    /// Reads the secret. Returns the key and, for a file readable by group or others, a warning.
    pub fn load(&self) -> Result<(SecretKey, Option<String>), LocalKeyError> {
        let algorithm = self.algorithm.unwrap_or(Algorithm::Ed25519);
        let sources = [self.secret_key.is_some(), self.secret_key_file.is_some(), self.secret_key_env.is_some()];
        let count = sources.iter().filter(|s| **s).count();
        if count != 1 {
            return Err(LocalKeyError::SourceCount(count));
        }
        let mut warning = None;
        let (text, origin) = if let Some(inline) = &self.secret_key {
            (Zeroizing::new(inline.clone()), "secretKey".to_string())
        } else if let Some(path) = &self.secret_key_file {
            warning = loose_permissions_warning(path);
            let text = crate::files::read_bounded(path, crate::files::SECRET_FILE_LIMIT)
                .map_err(|source| LocalKeyError::ReadFile { path: path.clone(), source })?;
            (text, format!("secretKeyFile {}", path.display()))
        } else {
            let name = self.secret_key_env.as_deref().unwrap_or_default();
            let value = std::env::var(name).ok().filter(|v| !v.trim().is_empty());
            let value = value.ok_or_else(|| LocalKeyError::MissingEnv(name.to_string()))?;
            (Zeroizing::new(value), format!("environment variable {name}"))
        };
        // Key files that name their own curve: CometBFT/tmkms and Tezos forms.
        let named = if cometbft::is_key_text(&text) {
            let reason = |source| LocalKeyError::CometBft { origin: origin.clone(), source };
            Some(cometbft::parse_secret_key(&text).map_err(reason)?)
        } else if tezos::is_secret_key_text(&text) {
            let tezos = |source| LocalKeyError::Tezos { origin: origin.clone(), source };
            Some(tezos::parse_secret_key(&text).map_err(tezos)?)
        } else {
            None
        };
        let key = match named {
            Some(key) => match self.algorithm {
                Some(configured) if configured != key.algorithm() => {
                    return Err(LocalKeyError::AlgorithmMismatch { origin, found: key.algorithm(), configured })
                }
                _ => key,
            },
            None => {
                SecretKey::from_hex(algorithm, &text).map_err(|source| LocalKeyError::Invalid { origin, source })?
            }
        };
        Ok((key, warning))
    }
}

impl BackendConfig for LocalKeyConfig {
    fn backend(&self) -> Backend {
        Backend::Local
    }

    fn validate(&self) -> Result<(), InvalidField> {
        let sources = [self.secret_key.is_some(), self.secret_key_file.is_some(), self.secret_key_env.is_some()];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err(InvalidField::new(None, "set exactly one of secretKey, secretKeyFile or secretKeyEnv"));
        }
        Ok(())
    }

    fn rules_out_ed25519(&self) -> Option<&'static str> {
        (self.algorithm.unwrap_or(Algorithm::Ed25519) != Algorithm::Ed25519).then_some("")
    }

    fn open(&self, key: &str) -> Result<Arc<dyn KeyBackend>, OpenError> {
        let (secret, warning) = self.load()?;
        if let Some(warning) = warning {
            tracing::warn!(key = %key, "{warning}");
        }
        Ok(Arc::new(LocalBackend::new(secret)))
    }
}

#[cfg(unix)]
fn loose_permissions_warning(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    // A Kubernetes Secret volume (the kubelet's atomic writer keeps a `..data` link beside the
    // files): its files are root's, so a non-root signer can read them only if others may, and
    // only the containers that mount the volume see it at all (the operator mounts the key into
    // the signer alone). The mode says nothing there.
    if path.parent().is_some_and(|dir| dir.join("..data").exists()) {
        return None;
    }
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "secret key file {} has mode {:o}: group or others can read it; chmod 600 it \
             (in Kubernetes, mount the key Secret into the signer container alone)",
            path.display(),
            mode & 0o777
        )
    })
}

#[cfg(not(unix))]
fn loose_permissions_warning(_path: &Path) -> Option<String> {
    None
}

pub struct LocalBackend {
    key: SecretKey,
    public_key: PublicKey,
}

impl LocalBackend {
    pub fn new(key: SecretKey) -> Self {
        let public_key = key.public_key();
        LocalBackend { key, public_key }
    }
}

#[async_trait]
impl KeyBackend for LocalBackend {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn public_key(&self) -> Result<PublicKey, BackendError> {
        Ok(self.public_key.clone())
    }

    async fn sign(&self, payload: &[u8]) -> Result<Signature, BackendError> {
        self.key.sign(payload).map_err(|e| BackendError::Permanent(e.to_string()))
    }

    async fn sign_bls(&self, scheme: BlsScheme, message: &[u8]) -> Result<Signature, BackendError> {
        self.key.sign_scheme(scheme, message).map_err(|e| BackendError::Permanent(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "0000000000000000000000000000000000000000000000000000000000000001";

    #[test]
    fn loads_from_each_source() {
        let inline = LocalKeyConfig { secret_key: Some(SEED.into()), ..Default::default() };
        let (key, warning) = inline.load().unwrap();
        assert_eq!(key.algorithm(), Algorithm::Ed25519);
        assert!(warning.is_none());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, format!("{SEED}\n")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let file = LocalKeyConfig {
            secret_key_file: Some(path.clone()),
            algorithm: Some(Algorithm::Secp256k1),
            ..Default::default()
        };
        let (from_file, warning) = file.load().unwrap();
        assert_eq!(from_file.algorithm(), Algorithm::Secp256k1);
        #[cfg(unix)]
        assert!(warning.unwrap().contains("chmod 600"));
        // The same file laid out as the kubelet lays out a Secret volume: no warning.
        #[cfg(unix)]
        {
            let volume = dir.path().join("volume");
            std::fs::create_dir_all(volume.join("..2026_12_02_06_00_00.1")).unwrap();
            std::fs::copy(&path, volume.join("..2026_12_02_06_00_00.1/secretKey")).unwrap();
            std::os::unix::fs::symlink("..2026_12_02_06_00_00.1", volume.join("..data")).unwrap();
            std::os::unix::fs::symlink("..data/secretKey", volume.join("secretKey")).unwrap();
            let mounted = LocalKeyConfig { secret_key_file: Some(volume.join("secretKey")), ..file.clone() };
            assert_eq!(mounted.load().unwrap().1, None, "the mode of a Secret volume's file is the kubelet's");
        }

        std::env::set_var("SIGIL_TEST_LOCAL_KEY", SEED);
        let env = LocalKeyConfig { secret_key_env: Some("SIGIL_TEST_LOCAL_KEY".into()), ..Default::default() };
        assert_eq!(env.load().unwrap().0.public_key(), key.public_key());
    }

    #[test]
    fn errors_say_what_is_wrong_without_the_secret() {
        let none = LocalKeyConfig::default();
        assert!(none.load().unwrap_err().to_string().contains("exactly one"));
        let missing = LocalKeyConfig { secret_key_env: Some("SIGIL_TEST_UNSET_VAR".into()), ..Default::default() };
        assert!(missing.load().unwrap_err().to_string().contains("SIGIL_TEST_UNSET_VAR"));
        let bad = LocalKeyConfig { secret_key: Some("c0ffee-secret".into()), ..Default::default() };
        let message = bad.load().unwrap_err().to_string();
        assert!(message.contains("64 hex"), "{message}");
        assert!(!message.contains("c0ffee"), "{message}");
        let tezos = LocalKeyConfig {
            secret_key: Some("spsk2oCGdj7yZFmAWr1wqopU512kDtCfWfs7N4FoRH6bkHhgXk5Tu5".into()),
            ..Default::default()
        };
        assert_eq!(tezos.load().unwrap().0.algorithm(), Algorithm::Secp256k1);
        let mismatch = LocalKeyConfig { algorithm: Some(Algorithm::P256), ..tezos };
        assert!(mismatch.load().unwrap_err().to_string().contains("the key is secp256k1, but algorithm says p256"));
        let broken = LocalKeyConfig {
            secret_key: Some("edsk3qAQSJaDBSYN2PCMdv7BuJoBKeRyDFq5uPAwDfFRAhQdwHxPMM".into()),
            ..Default::default()
        };
        let message = broken.load().unwrap_err().to_string();
        assert!(message.contains("not a Tezos secret key") && !message.contains("edsk3q"), "{message}");
        let nofile = LocalKeyConfig { secret_key_file: Some("/nonexistent/key".into()), ..Default::default() };
        assert!(nofile.load().unwrap_err().to_string().contains("/nonexistent/key"));
    }
}

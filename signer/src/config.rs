//! `SignerConfig`: what `sigil-signer --config FILE` reads, what the operator renders, and what
//! the upstream `ATTO_SIGNER_*` environment variables are translated into. One type, one parser.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backend::local::LocalKeyConfig;
use crate::backend::pkcs11::Pkcs11KeyConfig;
use crate::backend::{AwsKmsKeyConfig, AzureKeyVaultKeyConfig, GcpKmsKeyConfig};
use crate::keys::Algorithm;
use crate::protocol::atto::api::Capability;
use crate::protocol::cometbft::client::{parse_node_id, Endpoint};
pub use crate::protocol::cometbft::session::Version as CometBftVersion;
use crate::protocol::tezos::policy::{TezosKeyConfig, TezosPolicy};
use crate::server::auth::TokenSource;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignerConfig {
    /// Named keys, each in exactly one backend.
    pub keys: BTreeMap<String, KeyConfig>,
    /// Where high-water marks are kept. Defaults to memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratchet: Option<RatchetConfig>,
    /// The Atto signer REST API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub atto: Option<AttoConfig>,
    /// The Tezos remote-signer HTTP API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tezos: Option<TezosConfig>,
    /// CometBFT validators to dial (privval), one entry per node and chain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cometbft: Vec<CometBftConfig>,
    /// Health, readiness and metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management: Option<ManagementConfig>,
}

/// One key: set exactly one backend.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyConfig {
    /// A software key in process memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalKeyConfig>,
    /// A key in a PKCS#11 token (an HSM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs11: Option<Pkcs11KeyConfig>,
    /// A key in AWS KMS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_kms: Option<AwsKmsKeyConfig>,
    /// A key version in GCP Cloud KMS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp_kms: Option<GcpKmsKeyConfig>,
    /// A key in Azure Key Vault (ECDSA only: the service has no Ed25519).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_key_vault: Option<AzureKeyVaultKeyConfig>,
}

/// The backend a [`KeyConfig`] selects.
pub enum KeyBackendConfig<'a> {
    Local(&'a LocalKeyConfig),
    Pkcs11(&'a Pkcs11KeyConfig),
    AwsKms(&'a AwsKmsKeyConfig),
    GcpKms(&'a GcpKmsKeyConfig),
    AzureKeyVault(&'a AzureKeyVaultKeyConfig),
}

impl KeyBackendConfig<'_> {
    /// Whether the key can be Ed25519, which Atto and CometBFT need (remote keys tell at startup).
    pub fn may_be_ed25519(&self) -> bool {
        match self {
            KeyBackendConfig::Local(local) => local.algorithm.unwrap_or(Algorithm::Ed25519) == Algorithm::Ed25519,
            KeyBackendConfig::AzureKeyVault(_) => false,
            KeyBackendConfig::Pkcs11(_) | KeyBackendConfig::AwsKms(_) | KeyBackendConfig::GcpKms(_) => true,
        }
    }
}

impl KeyConfig {
    pub fn local(config: LocalKeyConfig) -> Self {
        KeyConfig { local: Some(config), ..Default::default() }
    }

    /// The one backend set, or an error naming the key.
    pub fn backend(&self, name: &str) -> Result<KeyBackendConfig<'_>, ConfigError> {
        let set: Vec<KeyBackendConfig<'_>> = [
            self.local.as_ref().map(KeyBackendConfig::Local),
            self.pkcs11.as_ref().map(KeyBackendConfig::Pkcs11),
            self.aws_kms.as_ref().map(KeyBackendConfig::AwsKms),
            self.gcp_kms.as_ref().map(KeyBackendConfig::GcpKms),
            self.azure_key_vault.as_ref().map(KeyBackendConfig::AzureKeyVault),
        ]
        .into_iter()
        .flatten()
        .collect();
        match <[_; 1]>::try_from(set) {
            Ok([one]) => Ok(one),
            Err(_) => Err(ConfigError::Invalid(format!(
                "keys.{name}: set exactly one backend: local, pkcs11, awsKms, gcpKms or azureKeyVault"
            ))),
        }
    }
}

/// Where high-water marks live: set exactly one store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RatchetConfig {
    /// In process memory: forgotten on restart. For tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryRatchetConfig>,
    /// Local files, fsynced before each signature is released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileRatchetConfig>,
    /// A Kubernetes ConfigMap shared by every replica, written with compare-and-swap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapRatchetConfig>,
}

/// The store a [`RatchetConfig`] selects.
pub enum RatchetStore<'a> {
    Memory,
    File(&'a FileRatchetConfig),
    ConfigMap(&'a ConfigMapRatchetConfig),
}

impl RatchetConfig {
    pub fn store(&self) -> Result<RatchetStore<'_>, ConfigError> {
        match (&self.memory, &self.file, &self.config_map) {
            (Some(_), None, None) => Ok(RatchetStore::Memory),
            (None, Some(file), None) => Ok(RatchetStore::File(file)),
            (None, None, Some(config_map)) => Ok(RatchetStore::ConfigMap(config_map)),
            _ => Err(ConfigError::Invalid("ratchet: set exactly one of memory, file or configMap".into())),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMapRatchetConfig {
    /// The ConfigMap (the operator's `<RemoteSigner>-ratchet`). It must exist and be sealed as a
    /// marks store (by sigil-operator, or `sigil-signer ratchet init`).
    pub name: String,
    pub namespace: String,
    /// Sign only with keys sigil-operator has checked no other RemoteSigner uses (it lists them
    /// in the ConfigMap). The operator renders this on; off for signers configured by hand.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait_for_key_check: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemoryRatchetConfig {}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileRatchetConfig {
    /// A directory only this signer uses (created mode 700); one file per key and chain.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TezosConfig {
    /// Address of the API listener. Defaults to 127.0.0.1:6732 (octez's default port, pod-local).
    #[serde(default = "default_tezos_listen")]
    pub listen: SocketAddr,
    /// The keys served, by name under `keys`, each with its policy.
    pub keys: BTreeMap<String, TezosKeyConfig>,
    /// Answer `GET /known_keys` (octez-signer's `--allow-list-known-keys`). Off by default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub list_known_keys: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttoConfig {
    /// Address of the API listener. Defaults to 127.0.0.1:9090 (pod-local).
    #[serde(default = "default_atto_listen")]
    pub listen: SocketAddr,
    /// The key to sign with: a name under `keys`, an ed25519 key.
    pub key: String,
    /// What the node may ask for: CHALLENGE, BLOCK, VOTE.
    pub capabilities: Vec<Capability>,
    /// A file holding the API token, re-read on change; `<file>.previous` is accepted too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// The name of an environment variable holding the API token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
}

impl AttoConfig {
    /// Where the API token comes from: exactly one of `tokenFile` and `tokenEnv`.
    pub fn token_source(&self) -> Result<TokenSource, ConfigError> {
        match (&self.token_file, &self.token_env) {
            (Some(file), None) => Ok(TokenSource::File(file.clone())),
            (None, Some(env)) => Ok(TokenSource::Env(env.clone())),
            _ => Err(ConfigError::Invalid("atto: set exactly one of tokenFile or tokenEnv".into())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CometBftConfig {
    /// The node's `priv_validator_laddr`: `tcp://host:port` (SecretConnection) or `unix:///path`.
    pub connect: String,
    /// The chain's id, as in its genesis; requests for any other chain are refused.
    pub chain_id: String,
    /// The key to sign with: a name under `keys`, an Ed25519 key.
    pub key: String,
    /// The node's privval layout: `v0.38` (v0.34 to v0.40; the default) or `v1.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<CometBftVersion>,
    /// sigil's SecretConnection identity (hex, base64 seed or priv_validator_key.json), created
    /// mode 600 when missing. Unset: a new identity each start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_key_file: Option<PathBuf>,
    /// The node's SecretConnection id to insist on (40 hex characters). Stock CometBFT makes a new
    /// one each start, so only set this for nodes that persist theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// The most a vote's or proposal's height may exceed the last signed height; anything further
    /// is refused, so that an impostor node cannot move the mark out of reach. Default 1000000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_height_jump: Option<u64>,
}

impl CometBftConfig {
    /// `maxHeightJump`, or its default.
    pub fn max_height_jump(&self) -> u64 {
        self.max_height_jump.unwrap_or(crate::protocol::cometbft::session::DEFAULT_MAX_HEIGHT_JUMP)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManagementConfig {
    /// Address of the management listener. Defaults to 127.0.0.1:9091.
    #[serde(default = "default_management_listen")]
    pub listen: SocketAddr,
}

impl Default for ManagementConfig {
    fn default() -> Self {
        ManagementConfig { listen: default_management_listen() }
    }
}

/// Why a key cannot be Ed25519, when the backend is the reason.
fn no_ed25519_hint(key: &KeyConfig) -> &'static str {
    if key.azure_key_vault.is_some() {
        " (Azure Key Vault has no Ed25519 keys: use GCP KMS, AWS KMS, an HSM or a local key)"
    } else {
        ""
    }
}

/// `projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/V`, every part non-empty.
fn is_key_version_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    let labels = ["projects", "locations", "keyRings", "cryptoKeys", "cryptoKeyVersions"];
    parts.len() == 10 && parts.chunks(2).zip(labels).all(|(pair, label)| pair[0] == label && !pair[1].is_empty())
}

fn default_atto_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}

fn default_tezos_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 6732))
}

fn default_management_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9091))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config: {0}")]
    Parse(String),
    #[error("config: {0}")]
    Invalid(String),
    #[error("{0}")]
    Env(String),
}

impl SignerConfig {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::from_yaml(&text)
    }

    /// Parses and validates. Errors name the field (`atto.capabilities[1]: ...`).
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        // serde_yaml's messages already carry the field path and the line.
        let config: SignerConfig = serde_yaml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("SignerConfig always serializes")
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        if self.keys.is_empty() {
            return invalid("keys: configure at least one key".into());
        }
        for (name, key) in &self.keys {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return invalid(format!("keys.{name}: key names use letters, digits, '-' and '_' only"));
            }
            match key.backend(name)? {
                KeyBackendConfig::Local(local) => {
                    let sources =
                        [local.secret_key.is_some(), local.secret_key_file.is_some(), local.secret_key_env.is_some()];
                    if sources.iter().filter(|s| **s).count() != 1 {
                        return invalid(format!(
                            "keys.{name}.local: set exactly one of secretKey, secretKeyFile or secretKeyEnv"
                        ));
                    }
                }
                KeyBackendConfig::Pkcs11(pkcs11) => {
                    if pkcs11.pin_file.is_some() == pkcs11.pin_env.is_some() {
                        return invalid(format!("keys.{name}.pkcs11: set exactly one of pinFile or pinEnv"));
                    }
                }
                KeyBackendConfig::AwsKms(aws) => {
                    if aws.key_id.trim().is_empty() {
                        return invalid(format!("keys.{name}.awsKms.keyId: name the key (id, ARN or alias/...)"));
                    }
                }
                KeyBackendConfig::GcpKms(gcp) => {
                    if !is_key_version_name(&gcp.key_version) {
                        return invalid(format!(
                            "keys.{name}.gcpKms.keyVersion: {:?} is not a key version name; expected \
                             projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/V",
                            gcp.key_version
                        ));
                    }
                }
                KeyBackendConfig::AzureKeyVault(azure) => {
                    if !azure.vault_url.starts_with("https://") {
                        return invalid(format!(
                            "keys.{name}.azureKeyVault.vaultUrl: {:?} must be https://<vault>.vault.azure.net",
                            azure.vault_url
                        ));
                    }
                    if azure.key_name.is_empty() || azure.key_name.contains('/') {
                        return invalid(format!("keys.{name}.azureKeyVault.keyName: name the key (no slashes)"));
                    }
                }
            }
        }
        if self.atto.is_none() && self.tezos.is_none() && self.cometbft.is_empty() {
            return invalid("nothing to serve: add an `atto`, `tezos` or `cometbft` section".into());
        }
        self.validate_cometbft()?;
        let mut listeners = vec![("management.listen", self.management.clone().unwrap_or_default().listen)];
        if let Some(atto) = &self.atto {
            self.validate_atto(atto)?;
            listeners.push(("atto.listen", atto.listen));
        }
        if let Some(tezos) = &self.tezos {
            self.validate_tezos(tezos)?;
            listeners.push(("tezos.listen", tezos.listen));
        }
        for (i, (name, addr)) in listeners.iter().enumerate() {
            if let Some((other, _)) = listeners[..i].iter().find(|(_, a)| a == addr && addr.port() != 0) {
                return invalid(format!("{name}: {addr} is already {other}"));
            }
        }
        if let Some(ratchet) = &self.ratchet {
            if let RatchetStore::File(file) = ratchet.store()? {
                if !file.dir.is_absolute() {
                    return invalid(format!(
                        "ratchet.file.dir: {:?} is relative, so the marks would depend on the directory the signer \
                         is started from (another directory is an empty store, and an empty store signs again what \
                         was signed); give an absolute path",
                        file.dir
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_atto(&self, atto: &AttoConfig) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        let Some(key) = self.keys.get(&atto.key) else {
            return invalid(format!("atto.key: {}", self.unknown_key(&atto.key)));
        };
        if !key.backend(&atto.key)?.may_be_ed25519() {
            return invalid(format!("atto.key: key {:?} must be ed25519 for Atto{}", atto.key, no_ed25519_hint(key)));
        }
        if atto.capabilities.is_empty() {
            return invalid("atto.capabilities: list at least one of CHALLENGE, BLOCK, VOTE".into());
        }
        atto.token_source()?;
        Ok(())
    }

    fn validate_tezos(&self, tezos: &TezosConfig) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        if tezos.keys.is_empty() {
            return invalid("tezos.keys: list at least one key to serve".into());
        }
        for (name, policy) in &tezos.keys {
            if !self.keys.contains_key(name) {
                return invalid(format!("tezos.keys.{name}: {}", self.unknown_key(name)));
            }
            if self.atto.as_ref().is_some_and(|a| a.key == *name) {
                return invalid(format!("tezos.keys.{name}: the key is also atto.key; give each protocol its own key"));
            }
            TezosPolicy::from_config(name, policy).map_err(ConfigError::Invalid)?;
        }
        if self.ratchet.is_none() {
            return invalid(
                "ratchet: Tezos needs a durable high-water mark; set ratchet.file.dir \
                 (or ratchet.memory: {} for tests only)"
                    .into(),
            );
        }
        Ok(())
    }

    fn validate_cometbft(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        for (i, validator) in self.cometbft.iter().enumerate() {
            let path = format!("cometbft[{i}]");
            Endpoint::parse(&validator.connect).map_err(|e| ConfigError::Invalid(format!("{path}.connect: {e}")))?;
            if validator.chain_id.trim().is_empty() {
                return invalid(format!("{path}.chainId: set the chain id from the node's genesis"));
            }
            let Some(key) = self.keys.get(&validator.key) else {
                return invalid(format!("{path}.key: {}", self.unknown_key(&validator.key)));
            };
            if !key.backend(&validator.key)?.may_be_ed25519() {
                return invalid(format!(
                    "{path}.key: key {:?} must be ed25519 for CometBFT{}",
                    validator.key,
                    no_ed25519_hint(key)
                ));
            }
            let other_protocol = self.atto.as_ref().is_some_and(|a| a.key == validator.key)
                || self.tezos.as_ref().is_some_and(|t| t.keys.contains_key(&validator.key));
            if other_protocol {
                return invalid(format!("{path}.key: key {:?} serves another protocol too", validator.key));
            }
            if let Some(node_id) = &validator.node_id {
                parse_node_id(node_id).map_err(|e| ConfigError::Invalid(format!("{path}.nodeId: {e}")))?;
            }
            if validator.max_height_jump == Some(0) {
                return invalid(format!(
                    "{path}.maxHeightJump: 0 would refuse every new height; set at least 1, or leave it out \
                     for the default ({})",
                    crate::protocol::cometbft::session::DEFAULT_MAX_HEIGHT_JUMP
                ));
            }
            let duplicate =
                self.cometbft[..i].iter().any(|v| v.chain_id == validator.chain_id && v.key == validator.key);
            if duplicate {
                return invalid(format!(
                    "{path}: key {:?} on chain {:?} is listed twice; one connection per validator",
                    validator.key, validator.chain_id
                ));
            }
        }
        if !self.cometbft.is_empty() && self.ratchet.is_none() {
            return invalid(
                "ratchet: CometBFT needs a durable high-water mark; set ratchet.file.dir \
                 (or ratchet.memory: {} for tests only)"
                    .into(),
            );
        }
        Ok(())
    }

    fn unknown_key(&self, name: &str) -> String {
        let known: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        format!("no key named {name:?} (configured: {})", known.join(", "))
    }

    /// The drop-in mode: attocash/signer's environment variables
    /// (<https://github.com/attocash/signer/blob/main/src/main/resources/application.yaml>). Every
    /// missing variable is named at once; there is no default key or token.
    pub fn from_atto_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let missing: Vec<&str> =
            ["ATTO_SIGNER_BACKEND", "ATTO_SIGNER_KEY", "ATTO_SIGNER_TOKEN", "ATTO_SIGNER_CAPABILITIES"]
                .into_iter()
                .filter(|name| get(name).is_none())
                .collect();
        if !missing.is_empty() {
            return Err(ConfigError::Env(format!(
                "missing environment variable{} {}: set them (see docs/atto.md) or pass --config FILE",
                if missing.len() > 1 { "s" } else { "" },
                missing.join(", ")
            )));
        }
        let backend = get("ATTO_SIGNER_BACKEND").unwrap_or_default();
        let key = match backend.trim().to_ascii_uppercase().as_str() {
            "LOCAL" => KeyConfig::local(LocalKeyConfig {
                secret_key_env: Some("ATTO_SIGNER_KEY".into()),
                algorithm: Some(Algorithm::Ed25519),
                ..Default::default()
            }),
            // Upstream's GCP backend: ATTO_SIGNER_KEY names the key version; credentials from ADC.
            "GCP" => KeyConfig {
                gcp_kms: Some(GcpKmsKeyConfig {
                    key_version: get("ATTO_SIGNER_KEY").unwrap_or_default().trim().to_string(),
                    endpoint: get("SIGIL_GCP_KMS_ENDPOINT"),
                }),
                ..Default::default()
            },
            _ => {
                return Err(ConfigError::Env(format!(
                    "ATTO_SIGNER_BACKEND={backend} is not supported in environment mode; use LOCAL or GCP, \
                     or a config file for other key backends"
                )))
            }
        };
        let capabilities = Capability::parse_list(&get("ATTO_SIGNER_CAPABILITIES").unwrap_or_default())
            .map_err(|e| ConfigError::Env(format!("ATTO_SIGNER_CAPABILITIES: {e}")))?;
        let port = |name: &str, default: u16| -> Result<u16, ConfigError> {
            match get(name) {
                None => Ok(default),
                Some(value) => value
                    .trim()
                    .parse()
                    .map_err(|_| ConfigError::Env(format!("{name}={value} is not a port number (0-65535)"))),
            }
        };
        // Like upstream, listen on every interface: Compose setups reach the signer by service name.
        let any = |port| SocketAddr::from(([0, 0, 0, 0], port));
        let config = SignerConfig {
            keys: BTreeMap::from([("atto".to_string(), key)]),
            ratchet: None,
            tezos: None,
            cometbft: Vec::new(),
            atto: Some(AttoConfig {
                listen: any(port("ATTO_SIGNER_PORT", 9090)?),
                key: "atto".into(),
                capabilities,
                token_file: None,
                token_env: Some("ATTO_SIGNER_TOKEN".into()),
            }),
            management: Some(ManagementConfig { listen: any(port("ATTO_SIGNER_MANAGEMENT_PORT", 9091)?) }),
        };
        config.validate().map_err(|e| ConfigError::Env(format!("environment: {e}")))?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
keys:
  voter: {local: {secretKeyFile: /run/sigil/key}}
atto:
  listen: 127.0.0.1:9090
  key: voter
  capabilities: [VOTE, challenge]
  tokenFile: /var/run/sigil/token/token
management: {listen: "0.0.0.0:9091"}
"#;

    #[test]
    fn parses_and_round_trips() {
        let config = SignerConfig::from_yaml(EXAMPLE).unwrap();
        let atto = config.atto.as_ref().unwrap();
        assert_eq!(atto.capabilities, vec![Capability::Vote, Capability::Challenge]);
        assert_eq!(config.management.as_ref().unwrap().listen.port(), 9091);
        assert_eq!(SignerConfig::from_yaml(&config.to_yaml()).unwrap(), config);
    }

    fn error_of(yaml: &str) -> String {
        SignerConfig::from_yaml(yaml).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (EXAMPLE.replace("tokenFile", "tokenFiel"), "atto: unknown field `tokenFiel`"),
            (
                EXAMPLE.replace("challenge", "send"),
                "atto.capabilities: unknown capability \"send\": expected CHALLENGE, BLOCK or VOTE at line 7",
            ),
            (EXAMPLE.replace("secretKeyFile", "secretKeyPath"), "keys.voter.local: unknown field `secretKeyPath`"),
            (EXAMPLE.replace("{local:", "{vault:"), "keys.voter: unknown field `vault`, expected one of `local`, `pkcs11`, `awsKms`, `gcpKms`, `azureKeyVault`"),
            (
                "keys: {a: {}}\natto: {key: a, capabilities: [VOTE], tokenEnv: T}\n".into(),
                "keys.a: set exactly one backend",
            ),
            (EXAMPLE.replace("key: voter", "key: baker"), "atto.key: no key named \"baker\" (configured: voter)"),
            (EXAMPLE.replace("127.0.0.1:9090", "localhost"), "atto.listen: invalid socket address"),
            (EXAMPLE.replace("[VOTE, challenge]", "[]"), "atto.capabilities: list at least one"),
            (
                EXAMPLE.replace("tokenFile: /var/run/sigil/token/token", "tokenEnv: T\n  tokenFile: /t"),
                "exactly one of tokenFile or tokenEnv",
            ),
            (EXAMPLE.replace("{secretKeyFile: /run/sigil/key}", "{}"), "keys.voter.local: set exactly one"),
            (EXAMPLE.replace("secretKeyFile: /run/sigil/key", "secretKeyFile: /k, algorithm: p256"), "must be ed25519"),
            (EXAMPLE.replace("0.0.0.0:9091", "127.0.0.1:9090"), "atto.listen: 127.0.0.1:9090 is already management.listen"),
            ("keys: {}\n".to_string(), "keys: configure at least one key"),
            ("keys: {a: {local: {secretKey: x}}}\n".to_string(), "nothing to serve"),
            (
                format!("{EXAMPLE}tezos: {{keys: {{voter: {{allow: [block]}}}}}}\nratchet: {{memory: {{}}}}\n"),
                "tezos.keys.voter: the key is also atto.key",
            ),
            (format!("{EXAMPLE}tezos: {{keys: {{baker: {{allow: [block]}}}}}}\n"), "tezos.keys.baker: no key named"),
            (format!("{EXAMPLE}ratchet: {{}}\n"), "ratchet: set exactly one of memory, file or configMap"),
            (
                format!("{EXAMPLE}ratchet: {{file: {{dir: ./marks}}}}\n"),
                "ratchet.file.dir: \"./marks\" is relative, so the marks would depend on the directory",
            ),
            (
                "keys: {v: {local: {secretKey: x}}}\ncometbft: [{connect: 'http://x:1', chainId: c, key: v}]\n".into(),
                "cometbft[0].connect: \"http://x:1\": expected tcp://host:port or unix:///path",
            ),
            (
                "keys: {v: {local: {secretKey: x}}}\ncometbft: [{connect: 'tcp://127.0.0.1:1', chainId: c, key: w}]\n".into(),
                "cometbft[0].key: no key named \"w\"",
            ),
            (
                "keys: {v: {local: {secretKey: x}}}\ncometbft: [{connect: 'tcp://127.0.0.1:1', chainId: c, key: v}]\n".into(),
                "CometBFT needs a durable high-water mark",
            ),
            (
                "keys: {v: {local: {secretKey: x}}}\nratchet: {memory: {}}\ncometbft: [{connect: 'tcp://127.0.0.1:1', chainId: c, key: v, version: v2}]\n".into(),
                "cometbft[0].version: unknown variant `v2`",
            ),
            (
                "keys: {v: {local: {secretKey: x}}}\nratchet: {memory: {}}\ncometbft: [{connect: 'tcp://127.0.0.1:1', chainId: c, key: v, nodeId: zz}]\n".into(),
                "cometbft[0].nodeId: nodeId \"zz\" is not hex",
            ),
            (
                "keys: {v: {local: {secretKey: x}}}\nratchet: {memory: {}}\ncometbft: [{connect: 'tcp://127.0.0.1:1', chainId: c, key: v, maxHeightJump: 0}]\n".into(),
                "cometbft[0].maxHeightJump: 0 would refuse every new height",
            ),
            (
                "keys: {v: {local: {secretKey: x}}}\nratchet: {memory: {}}\ncometbft: [{connect: 'tcp://127.0.0.1:1', chainId: c, key: v, maxHeightJump: -1}]\n".into(),
                "cometbft[0].maxHeightJump: invalid type: integer `-1`, expected u64",
            ),
            (
                "keys: {b: {local: {secretKey: x}}}\ntezos: {keys: {b: {allow: [block]}}}\n".to_string(),
                "Tezos needs a durable high-water mark",
            ),
            (
                "keys: {b: {local: {secretKey: x}}}\ntezos: {keys: {b: {allow: [blok]}}}\nratchet: {memory: {}}\n"
                    .to_string(),
                "tezos.keys.b.allow[0]: unknown kind",
            ),
            (
                "keys: {b: {local: {secretKey: x}}}\ntezos: {listen: '127.0.0.1:9091', keys: {b: {allow: [block]}}}\nratchet: {memory: {}}\n"
                    .to_string(),
                "tezos.listen: 127.0.0.1:9091 is already management.listen",
            ),
            ("keys: [\n".to_string(), "config: "),
        ];
        for (yaml, expected) in cases {
            let error = error_of(&yaml);
            assert!(error.contains(expected), "expected {expected:?} in {error:?}");
        }
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    const FULL_ENV: [(&str, &str); 4] = [
        ("ATTO_SIGNER_BACKEND", "LOCAL"),
        ("ATTO_SIGNER_KEY", "0000000000000000000000000000000000000000000000000000000000000000"),
        ("ATTO_SIGNER_TOKEN", "t"),
        ("ATTO_SIGNER_CAPABILITIES", "challenge, vote"),
    ];

    #[test]
    fn upstream_environment() {
        let config = SignerConfig::from_atto_env(env(&FULL_ENV)).unwrap();
        let atto = config.atto.unwrap();
        assert_eq!(atto.listen, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(config.management.unwrap().listen, "0.0.0.0:9091".parse().unwrap());
        assert_eq!(atto.capabilities, vec![Capability::Challenge, Capability::Vote]);
        assert_eq!(atto.token_env.as_deref(), Some("ATTO_SIGNER_TOKEN"));

        let mut ports = FULL_ENV.to_vec();
        ports.extend([("ATTO_SIGNER_PORT", "8080"), ("ATTO_SIGNER_MANAGEMENT_PORT", "8081")]);
        let config = SignerConfig::from_atto_env(env(&ports)).unwrap();
        assert_eq!(config.atto.unwrap().listen.port(), 8080);
    }

    #[test]
    fn azure_keys_cannot_serve_ed25519_protocols() {
        let azure = "{azureKeyVault: {vaultUrl: 'https://v.vault.azure.net', keyName: k}}";
        let yaml = EXAMPLE.replace("{local: {secretKeyFile: /run/sigil/key}}", azure);
        let error = SignerConfig::from_yaml(&yaml).unwrap_err().to_string();
        assert!(error.contains("must be ed25519 for Atto (Azure Key Vault has no Ed25519 keys"), "{error}");
        let plain = yaml.replace("https://", "http://");
        let error = SignerConfig::from_yaml(&plain).unwrap_err().to_string();
        assert!(error.contains("keys.voter.azureKeyVault.vaultUrl"), "{error}");
    }

    #[test]
    fn environment_errors() {
        let error = SignerConfig::from_atto_env(env(&[])).unwrap_err().to_string();
        assert!(
            error.contains("ATTO_SIGNER_BACKEND, ATTO_SIGNER_KEY, ATTO_SIGNER_TOKEN, ATTO_SIGNER_CAPABILITIES"),
            "{error}"
        );
        let mut aws = FULL_ENV.to_vec();
        aws[0] = ("ATTO_SIGNER_BACKEND", "AWS");
        assert!(SignerConfig::from_atto_env(env(&aws)).unwrap_err().to_string().contains("AWS is not supported"));
        // GCP: the key is a key version's name, and a seed is not one.
        let mut gcp = FULL_ENV.to_vec();
        gcp[0] = ("ATTO_SIGNER_BACKEND", "GCP");
        let error = SignerConfig::from_atto_env(env(&gcp)).unwrap_err().to_string();
        assert!(error.contains("keys.atto.gcpKms.keyVersion") && error.contains("cryptoKeyVersions/V"), "{error}");
        gcp[1] = ("ATTO_SIGNER_KEY", "projects/p/locations/global/keyRings/r/cryptoKeys/voter/cryptoKeyVersions/1");
        let config = SignerConfig::from_atto_env(env(&gcp)).unwrap();
        assert_eq!(config.keys["atto"].gcp_kms.as_ref().unwrap().key_version, gcp[1].1);
        let mut bad = FULL_ENV.to_vec();
        bad[3] = ("ATTO_SIGNER_CAPABILITIES", "VOTE,SING");
        assert!(SignerConfig::from_atto_env(env(&bad)).unwrap_err().to_string().contains("\"SING\""));
        let mut port = FULL_ENV.to_vec();
        port.push(("ATTO_SIGNER_PORT", "90000"));
        assert!(SignerConfig::from_atto_env(env(&port)).unwrap_err().to_string().contains("ATTO_SIGNER_PORT=90000"));
    }

    #[test]
    fn cometbft_max_height_jump_defaults_and_round_trips() {
        let yaml = "keys: {v: {local: {secretKey: x}}}\nratchet: {memory: {}}\n\
                    cometbft: [{connect: 'tcp://127.0.0.1:1', chainId: c, key: v}]\n";
        let config = SignerConfig::from_yaml(yaml).unwrap();
        assert_eq!(config.cometbft[0].max_height_jump, None);
        assert_eq!(config.cometbft[0].max_height_jump(), 1_000_000);
        let set = SignerConfig::from_yaml(&yaml.replace("key: v}", "key: v, maxHeightJump: 500}")).unwrap();
        assert_eq!(set.cometbft[0].max_height_jump(), 500);
        assert!(set.to_yaml().contains("maxHeightJump: 500"), "{}", set.to_yaml());
        assert_eq!(SignerConfig::from_yaml(&set.to_yaml()).unwrap(), set);
    }

    /// A relative marks directory depends on where the signer is started: started elsewhere, it
    /// would be an empty store, which signs again what was signed.
    #[test]
    fn a_relative_ratchet_dir_is_refused() {
        let yaml = |dir: &str| {
            format!("keys: {{b: {{local: {{secretKey: x}}}}}}\nratchet: {{file: {{dir: {dir}}}}}\ntezos: {{keys: {{b: {{allow: [block]}}}}}}\n")
        };
        for relative in ["marks", "./marks", "var/lib/sigil"] {
            let error = SignerConfig::from_yaml(&yaml(relative)).unwrap_err().to_string();
            assert!(error.contains("ratchet.file.dir") && error.contains("is relative"), "{relative}: {error}");
        }
        assert!(SignerConfig::from_yaml(&yaml("/var/lib/sigil")).is_ok());
    }

    /// Configs end up in logs and panic messages: `{:?}` must never show a secret.
    #[test]
    fn debug_never_prints_secrets() {
        const EDSK: &str = "edsk3qAQSJaDBSYN2PCMdv7BuJoBKeRyDFq5uPAwDfFRAhQdwHxPMN";
        const HEX: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
        const PIN: &str = "pin-4711-not-for-logs";
        std::env::set_var("SIGIL_TEST_DEBUG_PIN", PIN);
        let dir = tempfile::tempdir().unwrap();
        let pin_file = dir.path().join("pin");
        std::fs::write(&pin_file, PIN).unwrap();
        let yaml = format!(
            "keys:\n  baker: {{local: {{secretKey: {EDSK}}}}}\n  voter: {{local: {{secretKey: '{HEX}'}}}}\n  \
             hsm: {{pkcs11: {{module: /usr/lib/softhsm/libsofthsm2.so, tokenLabel: t, keyLabel: k, pinEnv: SIGIL_TEST_DEBUG_PIN}}}}\n  \
             hsm2: {{pkcs11: {{module: /usr/lib/softhsm/libsofthsm2.so, tokenLabel: t, keyLabel: k2, pinFile: {}}}}}\n\
             ratchet: {{memory: {{}}}}\n\
             tezos: {{keys: {{baker: {{allow: [block]}}}}}}\n\
             atto: {{key: voter, capabilities: [VOTE], tokenEnv: ATTO_TOKEN}}\n",
            pin_file.display()
        );
        let config = SignerConfig::from_yaml(&yaml).unwrap();
        assert_eq!(config.keys["baker"].local.as_ref().unwrap().secret_key.as_deref(), Some(EDSK));
        for text in [format!("{config:?}"), format!("{config:#?}")] {
            for secret in [EDSK, &EDSK[4..20], HEX, &HEX[..16], PIN] {
                assert!(!text.contains(secret), "{secret} in {text}");
            }
            assert_eq!(text.matches("<redacted>").count(), 2, "{text}");
            // Where secrets come from is not secret, and helps.
            assert!(text.contains("SIGIL_TEST_DEBUG_PIN") && text.contains("ATTO_TOKEN"), "{text}");
        }
        let (key, _) = config.keys["voter"].local.as_ref().unwrap().load().unwrap();
        assert!(!format!("{key:?}").contains(HEX), "{key:?}");
    }
}

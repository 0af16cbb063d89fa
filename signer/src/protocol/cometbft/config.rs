//! `cometbft` in the config: the validator nodes to dial, one entry per node and chain.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::connection::{self, parse_node_id, Client, Endpoint};
use super::validator::{self, SignBytesPolicy, Validator, Version, CHAIN_ID_PLACEHOLDER};
use crate::app::StartupError;
use crate::config::ConfigError;
use crate::keys::Algorithm;
use crate::policy::Policy;
use crate::protocol::{KeyDisplay, ProtocolConfig, Service};
use crate::sign::Signer;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CometBftConfig {
    /// The node's `priv_validator_laddr`: `tcp://host:port` (SecretConnection) or `unix:///path`.
    pub connect: String,
    /// The chain's id, as in its genesis; requests for any other chain are refused.
    pub chain_id: String,
    /// The key to sign with: a name under `keys`, an Ed25519 key.
    pub key: String,
    /// The node's CometBFT version: `v0.34`, `v0.37`, `v0.38` (also v0.39 and v0.40) or `v1`.
    /// Unset: sigil answers any of them (the public key in both layouts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
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
    /// CometBFT v1's `SignBytesRequest` (raw bytes), refused when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_bytes: Option<SignBytesConfig>,
}

/// Which raw bytes a v1 node may have signed: only values in one application's domain, naming
/// this chain, that cannot be a vote, proposal or vote extension, at a bounded rate (the model is
/// Celestia's CIP-040 use, signing its own p2p messages with the validator key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignBytesConfig {
    /// What every value must start with: the application's domain with `{chainId}` where the
    /// chain id goes, followed by at least one more character, e.g. `myapp/p2p/{chainId}/`.
    pub prefix: String,
    /// At most this many raw-bytes signatures a minute (a bucket of this size). Default 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_minute: Option<u32>,
}

impl SignBytesConfig {
    fn validate(&self, path: &str, version: Option<Version>, chain_id: &str) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(format!("{path}.signBytes{message}")));
        if version.is_some_and(|v| v != Version::V1) {
            return invalid(": only CometBFT v1 nodes send SignBytesRequest; set version v1 or leave it out".into());
        }
        // What follows the chain id must not occur in it: then a value names exactly one chain id
        // (with `app/{chainId}-` the signer of chain `foo` would also sign for `foo-1`).
        let parts: Vec<&str> = self.prefix.split(CHAIN_ID_PLACEHOLDER).collect();
        match parts.as_slice() {
            [before, after]
                if before.chars().count() >= 4 && after.chars().next().is_some_and(|c| !chain_id.contains(c)) => {}
            _ => {
                return invalid(format!(
                    ".prefix: {:?} must hold {CHAIN_ID_PLACEHOLDER} once, after a domain of at least 4 characters \
                     and before a character that is not in the chain id (e.g. \"myapp/p2p/{CHAIN_ID_PLACEHOLDER}/\"), \
                     so that every value names one application and exactly this chain",
                    self.prefix
                ))
            }
        }
        if self.max_per_minute == Some(0) {
            return invalid(".maxPerMinute: 0 would refuse every request; leave signBytes out instead".into());
        }
        Ok(())
    }
}

impl CometBftConfig {
    /// `maxHeightJump`, or its default.
    pub fn max_height_jump(&self) -> u64 {
        self.max_height_jump.unwrap_or(validator::DEFAULT_MAX_HEIGHT_JUMP)
    }
}

impl ProtocolConfig for Vec<CometBftConfig> {
    fn name(&self) -> &'static str {
        "CometBFT"
    }

    fn keys(&self) -> Vec<(String, &str)> {
        self.iter().enumerate().map(|(i, node)| (format!("cometbft[{i}].key"), node.key.as_str())).collect()
    }

    /// BLS12-381 for CometBFT v1 built with the `bls12381` tag.
    fn algorithms(&self) -> &'static [Algorithm] {
        &[Algorithm::Ed25519, Algorithm::Bls12_381]
    }

    fn needs_marks(&self) -> bool {
        true
    }

    fn listen(&self) -> Option<(&'static str, SocketAddr)> {
        None
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        for (i, node) in self.iter().enumerate() {
            let path = format!("cometbft[{i}]");
            Endpoint::parse(&node.connect).map_err(|e| ConfigError::Invalid(format!("{path}.connect: {e}")))?;
            if node.chain_id.trim().is_empty() {
                return invalid(format!("{path}.chainId: set the chain id from the node's genesis"));
            }
            if let Some(node_id) = &node.node_id {
                parse_node_id(node_id).map_err(|e| ConfigError::Invalid(format!("{path}.nodeId: {e}")))?;
            }
            if let Some(sign_bytes) = &node.sign_bytes {
                sign_bytes.validate(&path, node.version, &node.chain_id)?;
            }
            if node.max_height_jump == Some(0) {
                return invalid(format!(
                    "{path}.maxHeightJump: 0 would refuse every new height; set at least 1, or leave it out \
                     for the default ({})",
                    validator::DEFAULT_MAX_HEIGHT_JUMP
                ));
            }
            let duplicate = self[..i].iter().any(|v| v.chain_id == node.chain_id && v.key == node.key);
            if duplicate {
                return invalid(format!(
                    "{path}: key {:?} on chain {:?} is listed twice; one connection per validator",
                    node.key, node.chain_id
                ));
            }
        }
        Ok(())
    }

    fn policy(&self, key: &str) -> Result<Policy, ConfigError> {
        let sign_bytes = self.iter().any(|node| node.key == key && node.sign_bytes.is_some());
        let raw = sign_bytes.then_some(validator::SIGN_BYTES);
        Ok(Policy::allowing(validator::SIGN_KINDS.into_iter().chain(raw)))
    }

    fn display_key(&self) -> KeyDisplay {
        |public_key| match crate::keys::cometbft::address(public_key) {
            Some(address) => hex::encode_upper(address),
            None => public_key.id(),
        }
    }

    fn services(&self, signer: &Arc<Signer>) -> Result<Vec<Service>, StartupError> {
        let mut services = Vec::new();
        for (i, node) in self.iter().enumerate() {
            let invalid =
                |e: &dyn std::fmt::Display| StartupError::Config(ConfigError::Invalid(format!("cometbft[{i}]: {e}")));
            let client = Arc::new(Client {
                validator: Validator {
                    chain_id: node.chain_id.clone(),
                    key: node.key.clone(),
                    version: node.version,
                    max_height_jump: node.max_height_jump(),
                    sign_bytes: node.sign_bytes.as_ref().map(|config| {
                        let per_minute = config.max_per_minute.unwrap_or(validator::DEFAULT_SIGN_BYTES_PER_MINUTE);
                        SignBytesPolicy::new(&config.prefix, &node.chain_id, per_minute)
                    }),
                    node: node.connect.clone(),
                    signer: signer.clone(),
                },
                endpoint: Endpoint::parse(&node.connect).map_err(|e| invalid(&e))?,
                identity: connection::load_identity(node.identity_key_file.as_deref()).map_err(|e| invalid(&e))?,
                node_id: node.node_id.as_deref().map(parse_node_id).transpose().map_err(|e| invalid(&e))?,
            });
            services.push(Service::Dialer(Box::new(move |stop| Box::pin(client.run(stop)))));
        }
        Ok(services)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::SignerConfig;

    use super::*;

    fn load(node: &str) -> Result<SignerConfig, ConfigError> {
        SignerConfig::from_yaml(&format!(
            "keys: {{v: {{local: {{secretKey: {}}}}}}}\nratchet: {{memory: {{}}}}\n\
             cometbft: [{{connect: 'tcp://127.0.0.1:26659', chainId: c, key: v, {node}}}]\n",
            "11".repeat(32)
        ))
    }

    /// CometBFT keys are Ed25519 or (local) BLS12-381; any other curve is refused before startup.
    #[test]
    fn keys_must_be_ed25519_or_bls() {
        let config = |key: &str| {
            SignerConfig::from_yaml(&format!(
                "keys: {{v: {key}}}\nratchet: {{memory: {{}}}}\n\
                 cometbft: [{{connect: 'tcp://127.0.0.1:26659', chainId: c, key: v}}]\n"
            ))
        };
        assert!(config("{local: {secretKeyFile: /k, algorithm: bls12-381}}").is_ok());
        assert!(config("{local: {secretKeyFile: /k}}").is_ok());
        let error = config("{local: {secretKeyFile: /k, algorithm: p256}}").unwrap_err().to_string();
        assert!(error.contains("must be ed25519 or bls12-381 for CometBFT"), "{error}");
        let azure = "{azureKeyVault: {vaultUrl: 'https://v.vault.azure.net', keyName: k}}";
        assert!(config(azure).unwrap_err().to_string().contains("must be ed25519 or bls12-381"));
    }

    #[test]
    fn versions_and_sign_bytes_are_checked() {
        for (text, version) in [("v0.34", Version::V0_34), ("v0.37", Version::V0_37), ("v1", Version::V1)] {
            assert_eq!(load(&format!("version: {text}")).unwrap().cometbft[0].version, Some(version));
        }
        // The name earlier releases wrote.
        assert_eq!(load("version: v1.0").unwrap().cometbft[0].version, Some(Version::V1));
        assert!(load("version: v2").is_err());

        let sign_bytes = "signBytes: {prefix: 'myapp/{chainId}/'}";
        assert!(load(sign_bytes).is_ok());
        assert!(load(&format!("version: v1, {sign_bytes}")).is_ok());
        let message = load(&format!("version: v0.38, {sign_bytes}")).unwrap_err().to_string();
        assert!(message.contains("cometbft[0].signBytes: only CometBFT v1"), "{message}");
        // The chain id is `c`: a `c` after the placeholder could be part of another chain's id.
        let prefixes = [
            "'{chainId}/'",
            "'ap/{chainId}/'",
            "'myapp/{chainId}'",
            "'myapp/{chainId}/{chainId}/'",
            "'myapp/{chainId}c'",
        ];
        for prefix in prefixes {
            let message = load(&format!("signBytes: {{prefix: {prefix}}}")).unwrap_err().to_string();
            assert!(message.contains("signBytes.prefix"), "{prefix}: {message}");
        }
        let message = load("signBytes: {prefix: 'myapp/{chainId}/', maxPerMinute: 0}").unwrap_err().to_string();
        assert!(message.contains("maxPerMinute"), "{message}");
    }
}

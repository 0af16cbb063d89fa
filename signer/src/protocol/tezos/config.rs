//! `tezos` in the config: the Tezos remote-signer HTTP API and each key's policy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::api::{self, TezosKey};
use super::policy::{Refusal, TezosKeyConfig, TezosPolicy};
use crate::app::StartupError;
use crate::config::{ConfigError, SignerConfig};
use crate::keys::Algorithm;
use crate::policy::Policy;
use crate::protocol::{KeyDisplay, ProtocolConfig, Service};
use crate::server::http::Limits;
use crate::sign::Signer;

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
    /// The file this config was read from: re-read for the settings that change without a
    /// restart (`allowProofOfPossession`).
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
}

impl TezosConfig {
    fn key_policy(&self, name: &str) -> Result<TezosPolicy, ConfigError> {
        let config = self.keys.get(name).ok_or_else(|| ConfigError::Invalid(format!("tezos.keys: no key {name:?}")))?;
        TezosPolicy::from_config(name, config).map_err(|e| ConfigError::Invalid(e.to_string()))
    }
}

impl ProtocolConfig for TezosConfig {
    fn name(&self) -> &'static str {
        "Tezos"
    }

    fn keys(&self) -> Vec<(String, &str)> {
        self.keys.keys().map(|name| (format!("tezos.keys.{name}"), name.as_str())).collect()
    }

    fn algorithms(&self) -> &'static [Algorithm] {
        &Algorithm::ALL
    }

    fn needs_marks(&self) -> bool {
        true
    }

    fn listen(&self) -> Option<(&'static str, SocketAddr)> {
        Some(("tezos.listen", self.listen))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.keys.is_empty() {
            return Err(ConfigError::Invalid("tezos.keys: list at least one key to serve".into()));
        }
        for name in self.keys.keys() {
            self.key_policy(name)?;
        }
        Ok(())
    }

    fn policy(&self, key: &str) -> Result<Policy, ConfigError> {
        // The API checks the proof-of-possession switch at each request (it changes live).
        Ok(Policy::allowing(api::sign_kinds(&self.key_policy(key)?).chain([api::PROVE_POSSESSION])))
    }

    fn display_key(&self) -> KeyDisplay {
        crate::keys::tezos::pkh
    }

    fn services(&self, signer: &Arc<Signer>) -> Result<Vec<Service>, StartupError> {
        let mut keys = Vec::new();
        for name in self.keys.keys() {
            keys.push(TezosKey::new(name.clone(), self.key_policy(name)?));
        }
        let switches = Arc::new(LiveSwitches { started: self.clone() });
        let router = api::router(signer.clone(), keys, switches, Limits::TEZOS);
        Ok(vec![Service::Listener { name: "tezos API", addr: self.listen, router }])
    }
}

/// The settings read again at each use, from the config file as it is now (or as started, for a
/// config that came from no file), so that an operator can switch them without a restart.
pub struct LiveSwitches {
    started: TezosConfig,
}

impl LiveSwitches {
    fn current(&self) -> Result<TezosConfig, Refusal> {
        let Some(path) = &self.started.config_file else { return Ok(self.started.clone()) };
        let config = SignerConfig::from_file(path).map_err(|e| Refusal::ConfigUnreadable(e.to_string()))?;
        config.tezos.ok_or_else(|| Refusal::ConfigUnreadable(format!("{}: no tezos section", path.display())))
    }

    /// Whether key `name` may prove possession now.
    pub fn check_proof_of_possession(&self, name: &str) -> Result<(), Refusal> {
        let path = format!("tezos.keys.{name}");
        let config = self.current()?;
        let key = config.keys.get(name).ok_or_else(|| Refusal::ProofOfPossessionOff { path: path.clone() })?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        key.check_proof_of_possession(&path, i64::try_from(now).unwrap_or(i64::MAX))
    }

    pub fn list_known_keys(&self) -> bool {
        self.started.list_known_keys
    }
}

fn default_tezos_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 6732))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "
keys: {baker: {local: {secretKey: BLsk1eGhiPQXKtvvkBeXzmtVVJs6KPhEF45drF7MLjoCDcSnTGuyjL}}}
ratchet: {memory: {}}
tezos: {keys: {baker: {allow: [attestation], allowProofOfPossession: SWITCH}}}
";

    #[test]
    fn the_switch_is_read_from_the_file_at_each_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signer.yaml");
        std::fs::write(&path, CONFIG.replace("SWITCH", "false")).unwrap();
        let started = SignerConfig::from_file(&path).unwrap().tezos.unwrap();
        let switches = LiveSwitches { started };
        assert!(matches!(switches.check_proof_of_possession("baker"), Err(Refusal::ProofOfPossessionOff { .. })));
        std::fs::write(&path, CONFIG.replace("SWITCH", "true")).unwrap();
        assert_eq!(switches.check_proof_of_possession("baker"), Ok(()), "on without a restart");
        assert!(matches!(switches.check_proof_of_possession("other"), Err(Refusal::ProofOfPossessionOff { .. })));
        // A file that no longer parses (or is gone) refuses rather than keeps the last answer.
        std::fs::write(&path, "tezos: [").unwrap();
        assert!(matches!(switches.check_proof_of_possession("baker"), Err(Refusal::ConfigUnreadable(_))));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(switches.check_proof_of_possession("baker"), Err(Refusal::ConfigUnreadable(_))));
    }
}

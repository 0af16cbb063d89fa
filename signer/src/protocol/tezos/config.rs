//! `tezos` in the config: the Tezos remote-signer HTTP API and each key's policy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::api::{self, TezosKey};
use super::policy::{TezosKeyConfig, TezosPolicy};
use crate::app::StartupError;
use crate::config::ConfigError;
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

    fn needs_ed25519(&self) -> bool {
        false
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
        Ok(Policy::allowing(api::sign_kinds(&self.key_policy(key)?)))
    }

    fn display_key(&self) -> KeyDisplay {
        crate::keys::tezos::pkh
    }

    fn services(&self, signer: &Arc<Signer>) -> Result<Vec<Service>, StartupError> {
        let mut keys = Vec::new();
        for name in self.keys.keys() {
            keys.push(TezosKey::new(name.clone(), self.key_policy(name)?));
        }
        let router = api::router(signer.clone(), keys, self.list_known_keys, Limits::TEZOS);
        Ok(vec![Service::Listener { name: "tezos API", addr: self.listen, router }])
    }
}

fn default_tezos_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 6732))
}

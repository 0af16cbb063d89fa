//! `atto` in the config: the Atto signer REST API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::api::{self, Capability};
use super::model;
use crate::app::StartupError;
use crate::config::ConfigError;
use crate::keys::Algorithm;
use crate::policy::Policy;
use crate::protocol::{KeyDisplay, ProtocolConfig, Service};
use crate::server::auth::{TokenAuth, TokenSource};
use crate::server::http::Limits;
use crate::sign::Signer;

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

/// How often a token file is re-read.
const TOKEN_POLL: std::time::Duration = std::time::Duration::from_secs(1);

impl ProtocolConfig for AttoConfig {
    fn name(&self) -> &'static str {
        "Atto"
    }

    fn keys(&self) -> Vec<(String, &str)> {
        vec![("atto.key".into(), &self.key)]
    }

    fn algorithms(&self) -> &'static [Algorithm] {
        &[Algorithm::Ed25519]
    }

    fn needs_marks(&self) -> bool {
        false
    }

    fn listen(&self) -> Option<(&'static str, SocketAddr)> {
        Some(("atto.listen", self.listen))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        if self.capabilities.is_empty() {
            return invalid("atto.capabilities: list at least one of CHALLENGE, BLOCK, VOTE".into());
        }
        self.token_source()?;
        Ok(())
    }

    fn policy(&self, _key: &str) -> Result<Policy, ConfigError> {
        Ok(Policy::allowing(self.capabilities.iter().map(|c| c.kind())))
    }

    fn display_key(&self) -> KeyDisplay {
        |public_key| match <[u8; 32]>::try_from(public_key.as_bytes()) {
            Ok(ed25519) => model::address(&ed25519),
            Err(_) => public_key.id(),
        }
    }

    fn services(&self, signer: &Arc<Signer>) -> Result<Vec<Service>, StartupError> {
        let (auth, warning) = TokenAuth::load(self.token_source()?)?;
        if let Some(warning) = warning {
            tracing::warn!("{warning}");
        }
        let auth = Arc::new(auth);
        auth.spawn_watcher(TOKEN_POLL);
        let router = api::router(signer.clone(), &self.key, auth, Limits::ATTO);
        Ok(vec![Service::Listener { name: "atto API", addr: self.listen, router }])
    }
}

pub(crate) fn default_atto_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}

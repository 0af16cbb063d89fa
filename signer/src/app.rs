//! Startup: config → keys → signer → listeners. Everything that can fail because of the user's
//! input fails here, before the first request, with a message that names the culprit.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use crate::backend::local::{LocalBackend, LocalKeyError};
use crate::backend::pkcs11::Pkcs11Backend;
use crate::backend::KeyBackend;
use crate::config::{ConfigError, KeyBackendConfig, KeyConfig, RatchetStore, SignerConfig};
use crate::keys::{Algorithm, PublicKey};
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::policy::SignKind;
use crate::protocol::tezos::policy::TezosPolicy;
use crate::protocol::{atto, cometbft, tezos};
#[cfg(feature = "kubernetes")]
use crate::ratchet::configmap::{ConfigMapRatchet, Mode as ConfigMapMode};
use crate::ratchet::file::FileRatchet;
use crate::ratchet::memory::MemoryRatchet;
use crate::ratchet::{PublishedKey, Ratchet, RatchetError};
use crate::server::auth::{TokenAuth, TokenError};
use crate::server::http::{self, ConnectionLimits};
use crate::server::management;
use crate::sign::{KeyEntry, Signer};

/// How long a backend gets to answer one call before the request is refused as retryable.
pub const BACKEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How often token files are re-read.
pub const TOKEN_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("key {name}: {source}")]
    Key { name: String, source: LocalKeyError },
    #[error(transparent)]
    Ratchet(#[from] RatchetError),
    #[error("atto token: {0}")]
    Token(#[from] TokenError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { addr: SocketAddr, what: &'static str, source: std::io::Error },
}

/// A signer with its listeners bound, not yet serving.
pub struct App {
    signer: Arc<Signer>,
    listeners: Vec<(&'static str, TcpListener, Router)>,
    /// CometBFT nodes to dial.
    clients: Vec<Arc<cometbft::client::Client>>,
}

impl App {
    pub async fn start(config: &SignerConfig) -> Result<App, StartupError> {
        config.validate()?;
        let metrics = Arc::new(Metrics::default());
        let mut entries = Vec::new();
        let mut tezos_keys = Vec::new();
        for (name, key) in &config.keys {
            let backend = open_backend(name, key)?;
            let policy = if let Some(atto) = config.atto.as_ref().filter(|a| a.key == *name) {
                if backend_algorithm(&*backend).await.is_some_and(|a| a != Algorithm::Ed25519) {
                    return Err(StartupError::Config(ConfigError::Invalid(format!(
                        "atto.key: key {name:?} must be ed25519 for Atto"
                    ))));
                }
                Policy::allowing(atto.capabilities.iter().map(|c| c.kind()))
            } else if config.cometbft.iter().any(|c| c.key == *name) {
                if backend_algorithm(&*backend).await.is_some_and(|a| a != Algorithm::Ed25519) {
                    return Err(StartupError::Config(ConfigError::Invalid(format!(
                        "keys.{name}: CometBFT validator keys must be ed25519 here"
                    ))));
                }
                Policy::allowing(SignKind::COMETBFT)
            } else if let Some(tezos) = config.tezos.as_ref().and_then(|t| t.keys.get(name)) {
                let policy = TezosPolicy::from_config(name, tezos).map_err(ConfigError::Invalid)?;
                tezos_keys.push(tezos::api::TezosKey::new(name.clone(), policy.clone()));
                Policy::allowing(tezos::api::sign_kinds(&policy))
            } else {
                Policy::default()
            };
            entries.push(KeyEntry::new(name.clone(), backend, policy));
        }
        let ratchet: Arc<dyn Ratchet> = match config.ratchet.as_ref().map(|r| r.store()).transpose()? {
            None | Some(RatchetStore::Memory) => {
                if config.tezos.is_some() || !config.cometbft.is_empty() {
                    tracing::warn!(
                        "ratchet.memory: the high-water marks live in this process only and are FORGOTTEN on restart; \
                         a restarted signer can sign again what it signed before (a double sign). For tests only: \
                         use ratchet.file or ratchet.configMap for a validator"
                    );
                }
                Arc::new(MemoryRatchet::default())
            }
            Some(RatchetStore::File(file)) => {
                tracing::info!(dir = %file.dir.display(), "high-water marks in files");
                Arc::new(FileRatchet::open(&file.dir)?)
            }
            #[cfg(feature = "kubernetes")]
            Some(RatchetStore::ConfigMap(cm)) => {
                let mode = ConfigMapMode::Signer { await_key_check: cm.wait_for_key_check };
                Arc::new(ConfigMapRatchet::connect(&cm.name, &cm.namespace, mode).await?)
            }
            #[cfg(not(feature = "kubernetes"))]
            Some(RatchetStore::ConfigMap(_)) => {
                return Err(StartupError::Config(ConfigError::Invalid(
                    "ratchet.configMap: this build has no Kubernetes support (feature kubernetes)".into(),
                )))
            }
        };
        let signer = Arc::new(Signer::new(entries, ratchet, metrics, BACKEND_TIMEOUT));
        let protocols: Vec<(String, Protocol)> = config
            .keys
            .keys()
            .filter_map(|name| {
                let protocol = if config.atto.as_ref().is_some_and(|a| a.key == *name) {
                    Protocol::Atto
                } else if config.cometbft.iter().any(|c| c.key == *name) {
                    Protocol::CometBft
                } else if config.tezos.as_ref().is_some_and(|t| t.keys.contains_key(name)) {
                    Protocol::Tezos
                } else {
                    return None;
                };
                Some((name.clone(), protocol))
            })
            .collect();
        spawn_key_probe(signer.clone(), protocols).await;

        let mut clients = Vec::new();
        for (i, validator) in config.cometbft.iter().enumerate() {
            let invalid = |e: String| StartupError::Config(ConfigError::Invalid(format!("cometbft[{i}]: {e}")));
            let identity = cometbft::client::load_identity(validator.identity_key_file.as_deref()).map_err(invalid)?;
            clients.push(Arc::new(cometbft::client::Client {
                validator: cometbft::session::Validator {
                    chain_id: validator.chain_id.clone(),
                    key: validator.key.clone(),
                    version: validator.version.unwrap_or_default(),
                    max_height_jump: validator.max_height_jump(),
                    signer: signer.clone(),
                },
                endpoint: cometbft::client::Endpoint::parse(&validator.connect).map_err(invalid)?,
                identity,
                node_id: validator
                    .node_id
                    .as_deref()
                    .map(cometbft::client::parse_node_id)
                    .transpose()
                    .map_err(invalid)?,
            }));
        }

        let mut listeners = Vec::new();
        if let Some(atto) = &config.atto {
            let (auth, warning) = TokenAuth::load(atto.token_source()?)?;
            if let Some(warning) = warning {
                tracing::warn!("{warning}");
            }
            let auth = Arc::new(auth);
            auth.spawn_watcher(TOKEN_POLL);
            let router = atto::api::router(signer.clone(), &atto.key, auth, http::Limits::ATTO);
            listeners.push(("atto API", bind(atto.listen, "atto API").await?, router));
        }
        if let Some(tezos) = &config.tezos {
            let router = tezos::api::router(signer.clone(), tezos_keys, tezos.list_known_keys, http::Limits::TEZOS);
            listeners.push(("tezos API", bind(tezos.listen, "tezos API").await?, router));
        }
        let management = config.management.clone().unwrap_or_default();
        listeners.push((
            "management",
            bind(management.listen, "management").await?,
            management::router(signer.clone()),
        ));
        Ok(App { signer, listeners, clients })
    }

    pub fn signer(&self) -> &Arc<Signer> {
        &self.signer
    }

    /// The bound address of a listener: `"atto API"`, `"tezos API"` or `"management"`.
    pub fn local_addr(&self, what: &str) -> Option<SocketAddr> {
        self.listeners.iter().find(|(name, _, _)| *name == what).and_then(|(_, l, _)| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then drains in-flight requests.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        for (what, listener, router) in self.listeners {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "{what} listening");
            }
            let mut stopped = stopped.clone();
            let until = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            tasks.spawn(http::serve(listener, router, ConnectionLimits::default(), until));
        }
        for client in self.clients {
            tasks.spawn(client.run(stopped.clone()));
        }
        shutdown.await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
        while tasks.join_next().await.is_some() {}
    }
}

/// The backend a key's config names, ready to ask (remote backends connect on first use).
pub fn open_backend(name: &str, key: &KeyConfig) -> Result<Arc<dyn KeyBackend>, StartupError> {
    Ok(match key.backend(name)? {
        KeyBackendConfig::Local(local) => {
            let (secret, warning) =
                local.load().map_err(|source| StartupError::Key { name: name.to_string(), source })?;
            if let Some(warning) = warning {
                tracing::warn!(key = %name, "{warning}");
            }
            Arc::new(LocalBackend::new(secret))
        }
        KeyBackendConfig::Pkcs11(pkcs11) => Arc::new(Pkcs11Backend::new(pkcs11.clone())),
        #[cfg(feature = "aws")]
        KeyBackendConfig::AwsKms(aws) => Arc::new(crate::backend::aws::AwsKmsBackend::new(aws.clone())),
        #[cfg(not(feature = "aws"))]
        KeyBackendConfig::AwsKms(_) => return Err(left_out(name, "awsKms", "aws")),
        #[cfg(feature = "gcp")]
        KeyBackendConfig::GcpKms(gcp) => Arc::new(crate::backend::gcp::GcpKmsBackend::new(gcp.clone())),
        #[cfg(not(feature = "gcp"))]
        KeyBackendConfig::GcpKms(_) => return Err(left_out(name, "gcpKms", "gcp")),
        #[cfg(feature = "azure")]
        KeyBackendConfig::AzureKeyVault(azure) => {
            Arc::new(crate::backend::azure::AzureKeyVaultBackend::new(azure.clone()))
        }
        #[cfg(not(feature = "azure"))]
        KeyBackendConfig::AzureKeyVault(_) => return Err(left_out(name, "azureKeyVault", "azure")),
    })
}

/// A backend this build was compiled without (the fuzz build leaves the cloud SDKs out).
#[cfg_attr(all(feature = "aws", feature = "gcp", feature = "azure"), allow(dead_code))]
fn left_out(name: &str, field: &str, feature: &str) -> StartupError {
    StartupError::Config(ConfigError::Invalid(format!(
        "keys.{name}.{field}: this build has no {field} support (cargo feature {feature})"
    )))
}

/// The key's algorithm, when the backend answers at once (local keys always do).
async fn backend_algorithm(backend: &dyn KeyBackend) -> Option<Algorithm> {
    tokio::time::timeout(Duration::from_millis(100), backend.public_key()).await.ok()?.ok().map(|k| k.algorithm())
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr).await.map_err(|source| StartupError::Bind { addr, what, source })
}

/// Which protocol a key serves, for the name people know it by.
#[derive(Clone, Copy)]
enum Protocol {
    Atto,
    Tezos,
    CometBft,
}

/// The key as the store records it: `<algorithm>:<hex>`, and the protocol's own name for it.
fn published_key(name: &str, protocol: Protocol, public_key: &PublicKey) -> PublishedKey {
    let display = match (protocol, <[u8; 32]>::try_from(public_key.as_bytes())) {
        (Protocol::Atto, Ok(ed25519)) => atto::model::address(&ed25519),
        (Protocol::Tezos, _) => tezos::encoding::pkh(public_key),
        (Protocol::CometBft, _) => match cometbft::keys::address(public_key) {
            Some(address) => hex::encode_upper(address),
            None => public_key.id(),
        },
        (Protocol::Atto, Err(_)) => public_key.id(),
    };
    PublishedKey { name: name.to_string(), key: public_key.id(), display }
}

/// Asks every key for its public key now, then keeps a background probe: keys that did not
/// answer, or whose backend failed a sign since, are asked again (with backoff) until they do.
/// `/readyz` is ready exactly while every key is. Known public keys are published to the store
/// (the ConfigMap, where the operator reads them).
async fn spawn_key_probe(signer: Arc<Signer>, protocols: Vec<(String, Protocol)>) {
    let failures = signer.probe_keys().await;
    for failure in &failures {
        tracing::warn!(error = %failure, "key not ready; retrying in the background");
    }
    tokio::spawn(async move {
        let mut backoff = Duration::from_secs(1);
        let mut published = Vec::new();
        loop {
            let known: Vec<PublishedKey> = protocols
                .iter()
                .filter_map(|(name, protocol)| {
                    let key = signer.key(name)?.public_key()?;
                    Some(published_key(name, *protocol, key))
                })
                .collect();
            if known != published {
                match signer.ratchet().publish_keys(&known).await {
                    Ok(()) => {
                        for key in &known {
                            tracing::info!(key = %key.name, public_key = %key.display, "key published");
                        }
                        published = known;
                    }
                    Err(error) => tracing::warn!(%error, "could not publish the public keys; retrying"),
                }
            }
            for entry in signer.keys() {
                if let Some(other) = signer.same_key(entry) {
                    tracing::error!(key = %entry.name, other = %other.name, "two key names hold the same key; refusing to sign with either");
                }
            }
            if signer.is_ready() && published.len() == protocols.len() {
                signer.trouble().await;
                backoff = Duration::from_secs(1);
            } else {
                // Backoff between retries of a remote backend, not synchronisation.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            let failures = signer.probe_keys().await;
            for failure in &failures {
                tracing::warn!(error = %failure, "key not ready");
            }
            if failures.is_empty() {
                tracing::info!("all keys ready");
            }
        }
    });
}

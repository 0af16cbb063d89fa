//! Startup: config → keys → signer → listeners. Everything that can fail because of the user's
//! input fails here, before the first request, with a message that names the culprit.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use crate::audit::Audit;
use crate::backend::{KeyBackend, OpenError};
use crate::config::{ConfigError, KeyConfig, RatchetStore, SignerConfig};
use crate::keys::{Algorithm, PublicKey};
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::protocol::{KeyDisplay, Service, Task};
#[cfg(feature = "kubernetes")]
use crate::ratchet::configmap::{ConfigMapRatchet, Mode as ConfigMapMode};
use crate::ratchet::file::FileRatchet;
use crate::ratchet::memory::MemoryRatchet;
use crate::ratchet::{PublishedKey, Ratchet, RatchetError};
use crate::server::auth::TokenError;
use crate::server::http::{self, ConnectionLimits};
use crate::server::management;
use crate::sign::{KeyEntry, Signer};

/// How long a backend gets to answer one call before the request is refused as retryable.
pub const BACKEND_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("key {name}: {source}")]
    Key { name: String, source: OpenError },
    #[error(transparent)]
    Ratchet(#[from] RatchetError),
    #[error("atto token: {0}")]
    Token(#[from] TokenError),
    #[error("audit.file {path}: {source}")]
    Audit { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { addr: SocketAddr, what: &'static str, source: std::io::Error },
}

/// A signer with its listeners bound, not yet serving.
pub struct App {
    signer: Arc<Signer>,
    listeners: Vec<(&'static str, TcpListener, Router)>,
    /// Connections that dial out (CometBFT nodes).
    tasks: Vec<Task>,
}

impl App {
    pub async fn start(config: &SignerConfig) -> Result<App, StartupError> {
        config.validate()?;
        let metrics = Arc::new(Metrics::default());
        let protocols = config.protocols();
        let mut entries = Vec::new();
        let mut published = Vec::new();
        for (name, key) in &config.keys {
            let backend = open_backend(name, key)?;
            let served_by = protocols.iter().find(|p| p.keys().iter().any(|(_, key)| key == name));
            let mut display = None;
            let policy = match served_by {
                Some(protocol) => {
                    let algorithms = protocol.algorithms();
                    if backend_algorithm(&*backend).await.is_some_and(|a| !algorithms.contains(&a)) {
                        let names: Vec<&str> = algorithms.iter().map(|a| a.name()).collect();
                        return Err(StartupError::Config(ConfigError::Invalid(format!(
                            "keys.{name}: {} keys must be {}",
                            protocol.name(),
                            names.join(" or ")
                        ))));
                    }
                    published.push((name.clone(), protocol.display_key()));
                    display = Some(protocol.display_key());
                    protocol.policy(name)?
                }
                None => Policy::default(),
            };
            let entry = KeyEntry::new(name.clone(), backend, policy);
            entries.push(match display {
                Some(display) => entry.with_display(display),
                None => entry,
            });
        }
        let ratchet: Arc<dyn Ratchet> = match config.ratchet.as_ref().map(|r| r.store()).transpose()? {
            None | Some(RatchetStore::Memory) => {
                if protocols.iter().any(|p| p.needs_marks()) {
                    tracing::warn!(
                        "ratchet.memory: the high-water marks live in this process only and are FORGOTTEN on restart; \
                         a restarted signer can sign again what it signed before (a double sign). For tests only: \
                         use ratchet.file or ratchet.configMap for a validator"
                    );
                }
                Arc::new(MemoryRatchet::default())
            }
            Some(RatchetStore::File(file)) => {
                tracing::info!(dir = %file.dir.display(), reserve_next_step = file.reserve_next_step, "high-water marks in files");
                Arc::new(FileRatchet::open(&file.dir)?.reserving_next_steps(file.reserve_next_step))
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
        let audit = match &config.audit {
            Some(audit) => {
                let opened = Audit::open(audit, &metrics);
                opened.map_err(|source| StartupError::Audit { path: audit.file.clone(), source })?
            }
            None => Audit::default(),
        };
        let signer = Arc::new(Signer::new(entries, ratchet, metrics, BACKEND_TIMEOUT).with_audit(audit));
        spawn_key_probe(signer.clone(), published).await;

        let mut listeners = Vec::new();
        let mut tasks = Vec::new();
        for protocol in &protocols {
            for service in protocol.services(&signer)? {
                match service {
                    Service::Listener { name, addr, router } => listeners.push((name, bind(addr, name).await?, router)),
                    Service::Dialer(task) => tasks.push(task),
                }
            }
        }
        let management = config.management.clone().unwrap_or_default();
        listeners.push((
            "management",
            bind(management.listen, "management").await?,
            management::router(signer.clone()),
        ));
        Ok(App { signer, listeners, tasks })
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
        for task in self.tasks {
            tasks.spawn(task(stopped.clone()));
        }
        shutdown.await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
        while tasks.join_next().await.is_some() {}
    }
}

/// The backend a key's config names, ready to ask (remote backends connect on first use).
pub fn open_backend(name: &str, key: &KeyConfig) -> Result<Arc<dyn KeyBackend>, StartupError> {
    key.backend(name)?.open(name).map_err(|source| StartupError::Key { name: name.to_string(), source })
}

/// The key's algorithm, when the backend answers at once (local keys always do).
async fn backend_algorithm(backend: &dyn KeyBackend) -> Option<Algorithm> {
    tokio::time::timeout(Duration::from_millis(100), backend.public_key()).await.ok()?.ok().map(|k| k.algorithm())
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr).await.map_err(|source| StartupError::Bind { addr, what, source })
}

/// The key as the store records it: `<algorithm>:<hex>`, and the protocol's own name for it.
fn published_key(name: &str, display: KeyDisplay, public_key: &PublicKey) -> PublishedKey {
    PublishedKey { name: name.to_string(), key: public_key.id(), display: display(public_key) }
}

/// Asks every key for its public key now, then keeps a background probe: keys that did not
/// answer, or whose backend failed a sign since, are asked again (with backoff) until they do.
/// `/readyz` is ready exactly while every key is. Known public keys are published to the store
/// (the ConfigMap, where the operator reads them).
async fn spawn_key_probe(signer: Arc<Signer>, served: Vec<(String, KeyDisplay)>) {
    let failures = signer.probe_keys().await;
    for failure in &failures {
        tracing::warn!(error = %failure, "key not ready; retrying in the background");
    }
    tokio::spawn(async move {
        let mut backoff = Duration::from_secs(1);
        let mut published = Vec::new();
        loop {
            let known: Vec<PublishedKey> = served
                .iter()
                .filter_map(|(name, display)| {
                    let key = signer.key(name)?.public_key()?;
                    Some(published_key(name, *display, key))
                })
                .collect();
            if known != published {
                match signer.ratchet().publish_keys(&known).await {
                    Ok(()) => {
                        for key in &known {
                            tracing::info!(key = %key.name, address = %key.display, "key ready and published");
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
            if signer.is_ready() && published.len() == served.len() {
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

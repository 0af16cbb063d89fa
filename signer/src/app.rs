//! Startup: config → keys → signer → listeners. Everything that can fail because of the user's
//! input fails here, before the first request, with a message that names the culprit.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use crate::backend::local::{LocalBackend, LocalKeyError};
use crate::backend::KeyBackend;
use crate::config::{ConfigError, KeyBackendConfig, SignerConfig};
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::protocol::atto;
use crate::ratchet::memory::MemoryRatchet;
use crate::ratchet::Ratchet;
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
    #[error("atto token: {0}")]
    Token(#[from] TokenError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { addr: SocketAddr, what: &'static str, source: std::io::Error },
}

/// A signer with its listeners bound, not yet serving.
pub struct App {
    signer: Arc<Signer>,
    listeners: Vec<(&'static str, TcpListener, Router)>,
}

impl App {
    pub async fn start(config: &SignerConfig) -> Result<App, StartupError> {
        config.validate()?;
        let metrics = Arc::new(Metrics::default());
        let mut entries = Vec::new();
        for (name, key) in &config.keys {
            let backend: Arc<dyn KeyBackend> = match key.backend(name)? {
                KeyBackendConfig::Local(local) => {
                    let (secret, warning) =
                        local.load().map_err(|source| StartupError::Key { name: name.clone(), source })?;
                    if let Some(warning) = warning {
                        tracing::warn!(key = %name, "{warning}");
                    }
                    Arc::new(LocalBackend::new(secret))
                }
            };
            let policy = match &config.atto {
                Some(atto) if atto.key == *name => Policy::allowing(atto.capabilities.iter().map(|c| c.kind())),
                _ => Policy::default(),
            };
            entries.push(KeyEntry::new(name.clone(), backend, policy));
        }
        // Only the memory store exists so far; Atto has no consensus marks to keep.
        let ratchet: Arc<dyn Ratchet> = Arc::new(MemoryRatchet::default());
        let signer = Arc::new(Signer::new(entries, ratchet, metrics, BACKEND_TIMEOUT));
        spawn_key_probe(signer.clone()).await;

        let mut listeners = Vec::new();
        if let Some(atto) = &config.atto {
            let (auth, warning) = TokenAuth::load(atto.token_source()?)?;
            if let Some(warning) = warning {
                tracing::warn!("{warning}");
            }
            let auth = Arc::new(auth);
            auth.spawn_watcher(TOKEN_POLL);
            let router = atto::api::router(signer.clone(), &atto.key, auth, atto::api::Limits::default());
            listeners.push(("atto API", bind(atto.listen, "atto API").await?, router));
        }
        let management = config.management.clone().unwrap_or_default();
        listeners.push((
            "management",
            bind(management.listen, "management").await?,
            management::router(signer.clone()),
        ));
        Ok(App { signer, listeners })
    }

    pub fn signer(&self) -> &Arc<Signer> {
        &self.signer
    }

    /// The bound address of a listener: `"atto API"` or `"management"`.
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
        shutdown.await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
        while tasks.join_next().await.is_some() {}
    }
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr).await.map_err(|source| StartupError::Bind { addr, what, source })
}

/// Asks every key for its public key now, and keeps asking in the background (with backoff) for
/// the ones that did not answer: `/readyz` turns ready when all have.
async fn spawn_key_probe(signer: Arc<Signer>) {
    let failures = signer.probe_keys().await;
    if failures.is_empty() {
        return;
    }
    for failure in &failures {
        tracing::warn!(error = %failure, "key not ready; retrying in the background");
    }
    tokio::spawn(async move {
        let mut backoff = Duration::from_secs(1);
        loop {
            // Backoff between retries of a remote backend, not synchronisation.
            tokio::time::sleep(backoff).await;
            let failures = signer.probe_keys().await;
            if failures.is_empty() {
                tracing::info!("all keys ready");
                return;
            }
            for failure in &failures {
                tracing::warn!(error = %failure, "key not ready");
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    });
}

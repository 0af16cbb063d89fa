//! A ratchet in a Kubernetes ConfigMap, shared by every signer replica: etcd's compare-and-swap
//! decides which replica may release a signature (research/k8s.md §4.5).
//!
//! Each stream is one data key, `<key>.<chain>.<stream>`, holding the same JSON record as the file
//! store. A commit replaces the whole ConfigMap with `metadata.resourceVersion` set to the version
//! the check was made against: the API server accepts it only if nobody wrote in between. On 409
//! the commit re-reads, checks the rule again against what the other replica wrote, and either
//! retries or refuses. The signature, computed before the commit, leaves the process only if the
//! write succeeded, so two replicas can never both release conflicting signatures. Never a merge
//! patch, never a forced apply: those would skip the precondition.
//!
//! A cached copy, refreshed from every write and by a watch, makes the common case one
//! conditional write per signature. The cache only ever costs a retry when stale; safety rests on
//! the precondition alone. Any API failure, timeout or RBAC refusal is `Unavailable` (fail closed).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use tokio::sync::OwnedMutexGuard;

use super::file::Record;
use super::{check, Entry, Ratchet, RatchetError, State, StreamId, StreamLock};

/// Every API call gets this long; past it the request is refused as retryable.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How many 409s one commit rides out before refusing (each one means another replica wrote).
const MAX_CONFLICTS: usize = 8;

/// The last copy of the ConfigMap this process saw. Kept whole, so that a write keeps the
/// operator's labels and owner reference (a replace sets every field).
#[derive(Clone)]
struct Snapshot {
    object: ConfigMap,
}

/// What locks share with the store: the API and the cache.
struct Store {
    api: Api<ConfigMap>,
    name: String,
    namespace: String,
    snapshot: Mutex<Option<Snapshot>>,
    writer: tokio::sync::Mutex<()>,
}

pub struct ConfigMapRatchet {
    store: Arc<Store>,
    streams: Mutex<HashMap<StreamId, Arc<tokio::sync::Mutex<()>>>>,
}

/// The data key of a stream: `<key>.<chain>.<stream>`, the chain escaped to ConfigMap key
/// characters (`[-._a-zA-Z0-9]`), anything else as `_xx`.
pub fn data_key(stream: &StreamId) -> String {
    let mut chain = String::new();
    for byte in stream.chain.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            chain.push(byte as char);
        } else {
            chain.push_str(&format!("_{byte:02x}"));
        }
    }
    format!("{}.{chain}.{}", stream.key, stream.stream)
}

/// Reverses the `_xx` escaping of [`data_key`].
fn unescape(chain: &str) -> String {
    let mut out = Vec::new();
    let bytes = chain.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], chain.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'_', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl ConfigMapRatchet {
    /// Connects with the pod's ServiceAccount in a cluster, or `KUBECONFIG` outside one, and
    /// starts the watch that keeps the cache fresh.
    pub async fn connect(name: &str, namespace: &str) -> Result<Self, RatchetError> {
        crate::install_crypto_provider();
        let client = kube::Client::try_default()
            .await
            .map_err(|e| RatchetError::Unavailable(format!("no Kubernetes client (in-cluster or KUBECONFIG): {e}")))?;
        Ok(Self::with_client(client, name, namespace))
    }

    pub fn with_client(client: kube::Client, name: &str, namespace: &str) -> Self {
        let store = Arc::new(Store {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            namespace: namespace.to_string(),
            snapshot: Mutex::default(),
            writer: tokio::sync::Mutex::new(()),
        });
        store.spawn_watch();
        ConfigMapRatchet { store, streams: Mutex::default() }
    }
}

impl Store {
    /// Keeps the cache fresh with other replicas' writes. Needs `list` and `watch` on this one
    /// ConfigMap; without them the cache is refreshed on conflicts only.
    fn spawn_watch(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (api, store) = (self.api.clone(), Arc::downgrade(self));
        let config = watcher::Config::default().fields(&format!("metadata.name={}", self.name));
        runtime.spawn(async move {
            let mut events = std::pin::pin!(watcher(api, config));
            while let Some(event) = events.next().await {
                let Some(store) = store.upgrade() else { return };
                if let Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) = event {
                    store.remember(Snapshot { object });
                }
            }
        });
    }

    fn describe(&self) -> String {
        format!("ConfigMap {}/{}", self.namespace, self.name)
    }

    fn unavailable(&self, what: &str, error: impl std::fmt::Display) -> RatchetError {
        RatchetError::Unavailable(format!("{} {what}: {error}", self.describe()))
    }

    /// Reads the ConfigMap now and refreshes the cache.
    async fn read(&self) -> Result<Snapshot, RatchetError> {
        let object = tokio::time::timeout(CALL_TIMEOUT, self.api.get(&self.name))
            .await
            .map_err(|_| self.unavailable("read", format!("no answer within {CALL_TIMEOUT:?}")))?
            .map_err(|e| self.api_error("read", e))?;
        let snapshot = Snapshot { object };
        self.remember(snapshot.clone());
        Ok(snapshot)
    }

    fn remember(&self, snapshot: Snapshot) {
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Some(snapshot);
    }

    fn cached(&self) -> Option<Snapshot> {
        self.snapshot.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn api_error(&self, what: &str, error: kube::Error) -> RatchetError {
        match &error {
            kube::Error::Api(status) if status.code == 403 => self.unavailable(
                what,
                format!(
                    "forbidden ({}); the signer's ServiceAccount needs get, update, list and watch on \
                     this ConfigMap (the operator's Role {} grants exactly that)",
                    status.message, self.name
                ),
            ),
            kube::Error::Api(status) if status.code == 404 => {
                self.unavailable(what, "not found; the operator creates it, or kubectl create configmap it")
            }
            _ => self.unavailable(what, error),
        }
    }

    /// One conditional replace of `snapshot` as it is, at its resourceVersion: `Ok(Some)` written,
    /// `Ok(None)` somebody else wrote first (409).
    async fn replace(&self, snapshot: &Snapshot) -> Result<Option<Snapshot>, RatchetError> {
        if snapshot.object.metadata.resource_version.is_none() {
            return Err(self.unavailable("write", "no resourceVersion to write against"));
        }
        let params = PostParams::default();
        let write = self.api.replace(&self.name, &params, &snapshot.object);
        let written = tokio::time::timeout(CALL_TIMEOUT, write)
            .await
            .map_err(|_| self.unavailable("write", format!("no answer within {CALL_TIMEOUT:?}")))?;
        match written {
            Ok(object) => Ok(Some(Snapshot { object })),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
            Err(error) => Err(self.api_error("write", error)),
        }
    }
}

impl Snapshot {
    fn state(&self, key: &str) -> Result<Option<State>, String> {
        match self.object.data.as_ref().and_then(|d| d.get(key)) {
            None => Ok(None),
            Some(text) => {
                let record: Record = serde_json::from_str(text).map_err(|e| format!("entry {key} is damaged: {e}"))?;
                record.to_state().map(Some).ok_or_else(|| format!("entry {key} is damaged"))
            }
        }
    }
}

#[async_trait]
impl Ratchet for ConfigMapRatchet {
    fn kind(&self) -> &'static str {
        "configMap"
    }

    async fn lock(&self, stream: &StreamId) -> Result<Box<dyn StreamLock>, RatchetError> {
        let slot = {
            let mut streams = self.streams.lock().map_err(|_| RatchetError::Unavailable("lock poisoned".into()))?;
            streams.entry(stream.clone()).or_default().clone()
        };
        let guard = slot.lock_owned().await;
        let store = self.store.clone();
        let snapshot = match store.cached() {
            Some(snapshot) => snapshot,
            None => store.read().await?,
        };
        let key = data_key(stream);
        let current = snapshot.state(&key).map_err(|e| store.unavailable("read", e))?;
        Ok(Box::new(ConfigMapLock { store, stream: stream.clone(), key, snapshot, current, _guard: guard }))
    }

    async fn entries(&self) -> Result<Vec<Entry>, RatchetError> {
        let snapshot = self.store.read().await?;
        let mut entries = Vec::new();
        for (data_key, _) in snapshot.object.data.iter().flatten() {
            // `<key>.<chain>.<stream>`: key names have no dots, and the chain's are escaped.
            let mut parts = data_key.splitn(2, '.');
            let (Some(key), Some(rest)) = (parts.next(), parts.next()) else { continue };
            let Some((chain, stream)) = rest.rsplit_once('.') else { continue };
            let state = snapshot.state(data_key).map_err(|e| self.store.unavailable("read", e))?;
            if let Some(state) = state {
                entries.push(Entry { key: key.into(), chain: unescape(chain), stream: stream.into(), state });
            }
        }
        Ok(entries)
    }
}

struct ConfigMapLock {
    store: Arc<Store>,
    stream: StreamId,
    key: String,
    /// The version the check was made against.
    snapshot: Snapshot,
    current: Option<State>,
    _guard: OwnedMutexGuard<()>,
}

#[async_trait]
impl StreamLock for ConfigMapLock {
    fn current(&self) -> Option<&State> {
        self.current.as_ref()
    }

    async fn commit(&mut self, next: State) -> Result<(), RatchetError> {
        self.write(next, true).await
    }

    async fn overwrite(&mut self, next: State) -> Result<(), RatchetError> {
        self.write(next, false).await
    }
}

impl ConfigMapLock {
    /// The compare-and-swap loop; `enforce` applies the rule on every attempt.
    async fn write(&mut self, next: State, enforce: bool) -> Result<(), RatchetError> {
        let value =
            serde_json::to_string(&Record::from_state(&next)).map_err(|e| self.store.unavailable("write", e))?;
        // One write at a time from this process: streams share the object and its version, so
        // concurrent writers here would only make each other retry.
        let _writer = self.store.writer.lock().await;
        for _ in 0..MAX_CONFLICTS {
            // Start from the freshest copy: other streams of this process may have written since
            // the lock was taken, and the watch brings other replicas' writes.
            if let Some(latest) = self.store.cached() {
                self.current = latest.state(&self.key).map_err(|e| self.store.unavailable("read", e))?;
                self.snapshot = latest;
            }
            if enforce {
                check(&self.stream, self.current.as_ref(), &next)?;
            }
            let mut wanted = self.snapshot.clone();
            wanted.object.data.get_or_insert_with(BTreeMap::new).insert(self.key.clone(), value.clone());
            if let Some(written) = self.store.replace(&wanted).await? {
                self.store.remember(written.clone());
                self.snapshot = written;
                self.current = Some(next);
                return Ok(());
            }
            // Another replica wrote first: look at what it wrote, then decide again.
            self.snapshot = self.store.read().await?;
            self.current = self.snapshot.state(&self.key).map_err(|e| self.store.unavailable("read", e))?;
        }
        Err(self.store.unavailable("write", format!("{MAX_CONFLICTS} conflicting writes in a row; try again")))
    }
}

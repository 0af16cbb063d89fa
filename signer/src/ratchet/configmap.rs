//! A ratchet in a Kubernetes ConfigMap, shared by every signer replica: etcd's compare-and-swap
//! decides which replica may release a signature (see "Concurrency control and consistency" in
//! the Kubernetes API conventions,
//! <https://github.com/kubernetes/community/blob/master/contributors/devel/sig-architecture/api-conventions.md#concurrency-control-and-consistency>).
//!
//! Each stream is one data key, `<key>.<chain>.<stream>`, holding the same JSON record as the file
//! store. A commit replaces the whole ConfigMap with `metadata.resourceVersion` set to the version
//! the check was made against: the API server accepts it only if nobody wrote in between. On 409
//! the commit re-reads, checks the rule again against what the other replica wrote, and either
//! retries, refuses, or (the same request, already signed by the other replica) hands back the
//! stored signature. The signature, computed before the commit, leaves the process only if the
//! write succeeded, so two replicas can never both release conflicting signatures. Never a merge
//! patch, never a forced apply: those would skip the precondition.
//!
//! The store is one object, and a signer trusts only that object. It binds to the ConfigMap's UID
//! at its first read and from then on refuses to sign, for good, if the object is deleted, is
//! replaced by another with a new UID, or comes back with a mark lower than one it has seen: an
//! empty or older store would let it sign again what it already signed. A signer also refuses to
//! start from a store nobody set up on purpose: the operator (or `sigil-signer ratchet init`)
//! seals a store by writing its own UID into [`SEAL_ANNOTATION`], which a copy re-applied from a
//! backup or a `kubectl create` cannot carry.
//!
//! A cached copy, refreshed from every write and by a watch, makes the common case one
//! conditional write per signature. The cache only ever costs a retry when stale; safety rests on
//! the precondition alone. Any API failure, timeout or RBAC refusal is `Unavailable` (fail closed).
//!
//! Streams commit together: marks that arrive while a write is in flight wait for it, then go in
//! one conditional write, each decided by the one rule against the latest copy. Without
//! conflicts nobody waits longer than the write in flight and their own.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use tokio::sync::{oneshot, OwnedMutexGuard};

use super::file::Record;
use super::{commit_decision, Entry, PublishedKey, Ratchet, RatchetError, State, StreamId, StreamLock};

/// Holds the ConfigMap's own UID once somebody set the store up on purpose.
pub const SEAL_ANNOTATION: &str = "sigil.dev/store-uid";
/// Written by the signer: its keys' public keys, `{"<name>": {"key": …, "display": …}}`.
pub const PUBLIC_KEYS_ANNOTATION: &str = "sigil.dev/public-keys";
/// Written by the operator: the keys (`<algorithm>:<hex>`, comma-separated) it has checked no
/// other RemoteSigner in the namespace uses.
pub const CLEARED_KEYS_ANNOTATION: &str = "sigil.dev/cleared-keys";

/// Every API call gets this long; past it the request is refused as retryable.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How many 409s one commit rides out before refusing (each one means another replica wrote).
const MAX_CONFLICTS: usize = 8;

/// Who opens the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A running signer: only a sealed store, and never a lowered mark.
    Signer {
        /// Sign only with keys the operator has listed in [`CLEARED_KEYS_ANNOTATION`].
        await_key_check: bool,
    },
    /// `sigil-signer ratchet …`: an operator's deliberate edits, sealed or not.
    Admin,
}

/// The last copy of the ConfigMap this process accepted. Kept whole, so that a write keeps the
/// operator's labels and annotations (a replace sets every field).
#[derive(Clone)]
struct Snapshot {
    object: ConfigMap,
}

#[derive(Default)]
struct Health {
    /// The accepted copy; its UID is the store this process is bound to.
    snapshot: Option<Snapshot>,
    /// Set once, never cleared: the store was deleted, replaced or lowered.
    lost: Option<String>,
    /// The last failure to reach the store, cleared by the next success.
    trouble: Option<String>,
}

/// What locks share with the store: the API and the cache.
struct Store {
    api: Api<ConfigMap>,
    name: String,
    namespace: String,
    mode: Mode,
    health: Mutex<Health>,
    /// Held by whoever writes the object, so this process never races itself for its version.
    writer: tokio::sync::Mutex<()>,
    /// Marks waiting for the next write, oldest first.
    queued: Mutex<Vec<Queued>>,
}

/// A stream's mark waiting to be written, and where its outcome goes.
struct Queued {
    stream: StreamId,
    key: String,
    next: State,
    /// Apply the rule (a commit); false for `ratchet set --force`.
    enforce: bool,
    outcome: oneshot::Sender<Result<State, RatchetError>>,
    /// The stream stays locked until the mark is answered, even if its requester is gone.
    _stream_lock: Arc<OwnedMutexGuard<()>>,
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

/// Whether somebody set this ConfigMap up as a store on purpose: it carries its own UID.
pub fn is_sealed(object: &ConfigMap) -> bool {
    let seal = object.metadata.annotations.as_ref().and_then(|a| a.get(SEAL_ANNOTATION));
    seal.is_some() && seal == object.metadata.uid.as_ref()
}

/// The keys the operator has cleared, from [`CLEARED_KEYS_ANNOTATION`].
pub fn cleared_keys(object: &ConfigMap) -> Vec<&str> {
    let cleared = object.metadata.annotations.as_ref().and_then(|a| a.get(CLEARED_KEYS_ANNOTATION));
    cleared.map(|c| c.split(',').filter(|k| !k.is_empty()).collect()).unwrap_or_default()
}

/// The keys a signer published, from [`PUBLIC_KEYS_ANNOTATION`] (unreadable means none).
pub fn published_keys(object: &ConfigMap) -> BTreeMap<String, PublishedKey> {
    let text = object.metadata.annotations.as_ref().and_then(|a| a.get(PUBLIC_KEYS_ANNOTATION));
    let mut keys: BTreeMap<String, PublishedKey> = text.and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default();
    for (name, key) in keys.iter_mut() {
        key.name = name.clone();
    }
    keys
}

/// A resourceVersion as a number, to tell newer from older copies. Kubernetes calls them opaque,
/// but every API server backed by etcd hands out its revision; anything else compares as unknown.
fn version(object: &ConfigMap) -> Option<u64> {
    object.metadata.resource_version.as_deref()?.parse().ok()
}

impl ConfigMapRatchet {
    /// Connects with the pod's ServiceAccount in a cluster, or `KUBECONFIG` outside one, reads
    /// the store once (a failure is reported by [`Ratchet::health`], not here: the signer starts
    /// and stays not ready until the store is usable) and starts the watch that keeps the cache
    /// fresh.
    pub async fn connect(name: &str, namespace: &str, mode: Mode) -> Result<Self, RatchetError> {
        crate::install_crypto_provider();
        let client = kube::Client::try_default()
            .await
            .map_err(|e| RatchetError::Unavailable(format!("no Kubernetes client (in-cluster or KUBECONFIG): {e}")))?;
        let ratchet = Self::with_client(client, name, namespace, mode);
        if let Err(error) = ratchet.store.read().await {
            tracing::warn!(%error, "marks store not usable yet");
        }
        Ok(ratchet)
    }

    pub fn with_client(client: kube::Client, name: &str, namespace: &str, mode: Mode) -> Self {
        let store = Arc::new(Store {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            namespace: namespace.to_string(),
            mode,
            health: Mutex::default(),
            writer: tokio::sync::Mutex::new(()),
            queued: Mutex::default(),
        });
        if mode != Mode::Admin {
            store.spawn_watch();
        }
        ConfigMapRatchet { store, streams: Mutex::default() }
    }
}

impl Store {
    /// Keeps the cache fresh with other replicas' writes and notices a deleted store. Needs
    /// `list` and `watch` on this one ConfigMap; without them the cache is refreshed on
    /// conflicts only, and a deletion is noticed at the next write. Errors back off (up to a
    /// few seconds) instead of re-listing in a tight loop.
    fn spawn_watch(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (api, store) = (self.api.clone(), Arc::downgrade(self));
        let config = watcher::Config::default().fields(&format!("metadata.name={}", self.name));
        runtime.spawn(async move {
            let mut events = std::pin::pin!(watcher(api, config).default_backoff());
            let mut listed = false;
            let mut forbidden_reported = false;
            while let Some(event) = events.next().await {
                let Some(store) = store.upgrade() else { return };
                match event {
                    Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                        listed = true;
                        if let Err(error) = store.accept(object) {
                            tracing::debug!(%error, "marks store copy from the watch not accepted");
                        }
                    }
                    Ok(watcher::Event::Delete(_)) => {
                        store.lose("was deleted");
                    }
                    Ok(watcher::Event::Init) => listed = false,
                    Ok(watcher::Event::InitDone) => {
                        // A re-list without our object: it was deleted while the watch was down.
                        if !listed && store.is_bound() {
                            store.lose("was deleted (it was missing when the watch listed it again)");
                        }
                        store.clear_trouble();
                    }
                    Err(watcher::Error::InitialListFailed(kube::Error::Api(status)))
                    | Err(watcher::Error::WatchFailed(kube::Error::Api(status)))
                        if status.code == 403 =>
                    {
                        if !forbidden_reported {
                            tracing::info!(store = %store.describe(), "no list/watch permission on the marks store; its cache refreshes on conflicts only");
                            forbidden_reported = true;
                        }
                    }
                    Err(error) => store.note_trouble(format!("watch: {error}")),
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

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_bound(&self) -> bool {
        self.health().snapshot.is_some()
    }

    fn lost_error(&self, reason: &str) -> RatchetError {
        RatchetError::Unavailable(format!(
            "marks store {} {reason}; refusing to sign until the signer restarts on a store set up on purpose \
             (restore the marks with `sigil-signer ratchet import`, or see docs/ratchet.md#a-lost-store)",
            self.describe()
        ))
    }

    /// The store this process was bound to is gone: refuse from now on, whatever comes later.
    fn lose(&self, reason: &str) -> RatchetError {
        let mut health = self.health();
        if self.mode != Mode::Admin && health.snapshot.is_some() && health.lost.is_none() {
            tracing::error!(store = %self.describe(), reason, "marks store lost; refusing to sign");
            health.lost = Some(reason.to_string());
        }
        self.lost_error(health.lost.as_deref().unwrap_or(reason))
    }

    fn note_trouble(&self, trouble: String) {
        self.health().trouble = Some(trouble);
    }

    fn clear_trouble(&self) {
        self.health().trouble = None;
    }

    /// Takes a copy read from the API (a read, a write's answer, a watch event) if it is the
    /// store this process is bound to and no older than the cached copy. Binding happens at
    /// the first copy accepted, which a signer accepts only sealed.
    fn accept(&self, object: ConfigMap) -> Result<Snapshot, RatchetError> {
        let mut health = self.health();
        if let Some(reason) = &health.lost {
            return Err(self.lost_error(reason));
        }
        let Some(current) = &health.snapshot else {
            if self.mode != Mode::Admin && !is_sealed(&object) {
                let error = self.unavailable(
                    "is not set up as a marks store",
                    format!(
                        "annotation {SEAL_ANNOTATION} does not hold its own UID, so nobody initialised it on purpose \
                         (an empty or copied store would let the signer sign again what it signed before); \
                         sigil-operator seals the stores it creates, or run `sigil-signer ratchet init` \
                         (or `ratchet import`) against it"
                    ),
                );
                health.trouble = Some(error.to_string());
                return Err(error);
            }
            let snapshot = Snapshot { object };
            health.snapshot = Some(snapshot.clone());
            health.trouble = None;
            return Ok(snapshot);
        };
        if object.metadata.uid != current.object.metadata.uid {
            let reason = format!(
                "was replaced by another object (UID {} is now {})",
                current.object.metadata.uid.as_deref().unwrap_or("?"),
                object.metadata.uid.as_deref().unwrap_or("?")
            );
            drop(health);
            return Err(self.lose(&reason));
        }
        match (version(&object), version(&current.object)) {
            // An older copy (a watch event behind our own write): keep the newer one.
            (Some(new), Some(old)) if new < old => return Ok(current.clone()),
            (Some(new), Some(old)) if new == old => return Ok(current.clone()),
            _ => {}
        }
        if self.mode != Mode::Admin {
            if let Some(lowered) = lowered(&current.object, &object) {
                drop(health);
                return Err(self.lose(&lowered));
            }
        }
        let snapshot = Snapshot { object };
        health.snapshot = Some(snapshot.clone());
        health.trouble = None;
        Ok(snapshot)
    }

    /// Reads the ConfigMap now and refreshes the cache.
    async fn read(&self) -> Result<Snapshot, RatchetError> {
        let read = tokio::time::timeout(CALL_TIMEOUT, self.api.get(&self.name)).await;
        let object = match read {
            Err(_) => return Err(self.trouble("read", format!("no answer within {CALL_TIMEOUT:?}"))),
            Ok(Err(error)) => return Err(self.api_error("read", error)),
            Ok(Ok(object)) => object,
        };
        self.accept(object)
    }

    fn cached(&self) -> Option<Snapshot> {
        self.health().snapshot.clone()
    }

    /// A failure to reach the store: reported by `/readyz` until the next success.
    fn trouble(&self, what: &str, error: impl std::fmt::Display) -> RatchetError {
        let error = self.unavailable(what, error);
        self.note_trouble(error.to_string());
        error
    }

    fn api_error(&self, what: &str, error: kube::Error) -> RatchetError {
        match &error {
            kube::Error::Api(status) if status.code == 403 => self.trouble(
                what,
                format!(
                    "forbidden ({}); the signer's ServiceAccount needs get, update, list and watch on \
                     this ConfigMap (the operator's Role {} grants exactly that)",
                    status.message, self.name
                ),
            ),
            kube::Error::Api(status) if status.code == 404 => {
                if self.is_bound() {
                    self.lose("was deleted")
                } else {
                    self.trouble(what, "not found; sigil-operator creates it (or `sigil-signer ratchet init`)")
                }
            }
            _ => self.trouble(what, error),
        }
    }

    /// One conditional replace of `snapshot` as it is, at its resourceVersion (and UID):
    /// `Ok(Some)` written, `Ok(None)` somebody else wrote first (409).
    async fn replace(&self, snapshot: &Snapshot) -> Result<Option<Snapshot>, RatchetError> {
        if snapshot.object.metadata.resource_version.is_none() {
            return Err(self.unavailable("write", "no resourceVersion to write against"));
        }
        let params = PostParams::default();
        let write = self.api.replace(&self.name, &params, &snapshot.object);
        let written = match tokio::time::timeout(CALL_TIMEOUT, write).await {
            Err(_) => return Err(self.trouble("write", format!("no answer within {CALL_TIMEOUT:?}"))),
            Ok(written) => written,
        };
        match written {
            Ok(object) => self.accept(object).map(Some),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
            Err(error) => Err(self.api_error("write", error)),
        }
    }

    /// Writes `annotate`'s change to the store's annotations, retrying on conflicts; no write
    /// when it changes nothing.
    async fn annotate(&self, annotate: impl Fn(&mut BTreeMap<String, String>)) -> Result<(), RatchetError> {
        let _writer = self.writer.lock().await;
        for _ in 0..MAX_CONFLICTS {
            let mut wanted = match self.cached() {
                Some(snapshot) => snapshot,
                None => self.read().await?,
            };
            let annotations = wanted.object.metadata.annotations.get_or_insert_with(BTreeMap::new);
            let before = annotations.clone();
            annotate(annotations);
            if *annotations == before {
                return Ok(());
            }
            if self.replace(&wanted).await?.is_some() {
                return Ok(());
            }
            self.read().await?;
        }
        Err(self.unavailable("write", format!("{MAX_CONFLICTS} conflicting writes in a row; try again")))
    }
}

/// The first stream whose mark `new` holds lower than `old` did, or drops, described.
fn lowered(old: &ConfigMap, new: &ConfigMap) -> Option<String> {
    let mark = |object: &ConfigMap, key: &str| {
        let text = object.data.as_ref()?.get(key)?;
        serde_json::from_str::<Record>(text).ok()?.to_state().map(|s| s.mark)
    };
    for key in old.data.iter().flatten().map(|(k, _)| k) {
        let Some(before) = mark(old, key) else { continue };
        match mark(new, key) {
            Some(after) if after >= before => {}
            Some(after) => return Some(format!("had its mark {key} lowered from {before} to {after} by someone else")),
            None => return Some(format!("lost its mark {key} (was {before}) to someone else's write")),
        }
    }
    None
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
        if let Some(reason) = &store.health().lost {
            return Err(store.lost_error(reason));
        }
        let snapshot = match store.cached() {
            Some(snapshot) => snapshot,
            None => store.read().await?,
        };
        let key = data_key(stream);
        let current = snapshot.state(&key).map_err(|e| store.unavailable("read", e))?;
        Ok(Box::new(ConfigMapLock { store, stream: stream.clone(), key, current, guard: Arc::new(guard) }))
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

    fn health(&self) -> Result<(), String> {
        let health = self.store.health();
        if let Some(reason) = &health.lost {
            return Err(self.store.lost_error(reason).to_string());
        }
        if let Some(trouble) = &health.trouble {
            return Err(trouble.clone());
        }
        match health.snapshot {
            Some(_) => Ok(()),
            None => Err(format!("marks store {} not read yet", self.store.describe())),
        }
    }

    async fn publish_keys(&self, keys: &[PublishedKey]) -> Result<(), RatchetError> {
        let published: BTreeMap<&str, &PublishedKey> = keys.iter().map(|k| (k.name.as_str(), k)).collect();
        let text = serde_json::to_string(&published).map_err(|e| self.store.unavailable("write", e))?;
        self.store
            .annotate(|annotations| {
                annotations.insert(PUBLIC_KEYS_ANNOTATION.to_string(), text.clone());
            })
            .await
    }

    fn key_cleared(&self, name: &str, key: Option<&str>) -> Result<(), RatchetError> {
        if self.store.mode != (Mode::Signer { await_key_check: true }) {
            return Ok(());
        }
        let Some(key) = key else {
            return Err(RatchetError::Unavailable(format!("key {name}: its public key is not known yet")));
        };
        let cleared = self.store.cached().is_some_and(|s| cleared_keys(&s.object).contains(&key));
        if cleared {
            return Ok(());
        }
        Err(RatchetError::Unavailable(format!(
            "key {name} ({key}) is not cleared in {} (annotation {CLEARED_KEYS_ANNOTATION}): sigil-operator clears a \
             key once no other RemoteSigner in the namespace uses it; see `kubectl get remotesigner` for why not",
            self.store.describe()
        )))
    }

    async fn seal(&self) -> Result<Option<String>, RatchetError> {
        init(&self.store.api, &self.store.name, &self.store.namespace).await
    }
}

/// Writes the seal (the object's own UID) onto `object`, guarded by its resourceVersion: a copy
/// that changed since it was read is not sealed blindly.
pub async fn seal_object(api: &Api<ConfigMap>, name: &str, object: &ConfigMap) -> Result<ConfigMap, kube::Error> {
    let patch = serde_json::json!({ "metadata": {
        "resourceVersion": object.metadata.resource_version,
        "uid": object.metadata.uid,
        "annotations": { SEAL_ANNOTATION: object.metadata.uid },
    }});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await
}

/// `sigil-signer ratchet init` (and after an import): makes `name` a marks store on purpose,
/// creating it empty when it does not exist. `None` when it already was one; otherwise what was
/// done, for the log.
pub async fn init(api: &Api<ConfigMap>, name: &str, namespace: &str) -> Result<Option<String>, RatchetError> {
    let unavailable =
        |what: &str, e: kube::Error| RatchetError::Unavailable(format!("ConfigMap {namespace}/{name} {what}: {e}"));
    let existing = api.get_opt(name).await.map_err(|e| unavailable("read", e))?;
    let (object, created) = match existing {
        Some(object) => (object, false),
        None => {
            let object: ConfigMap = serde_json::from_value(serde_json::json!({
                "metadata": { "name": name, "labels": { "app.kubernetes.io/part-of": "sigil" } },
            }))
            .map_err(|e| RatchetError::Unavailable(e.to_string()))?;
            (api.create(&PostParams::default(), &object).await.map_err(|e| unavailable("create", e))?, true)
        }
    };
    if is_sealed(&object) {
        return Ok(None);
    }
    let marks = object.data.as_ref().map_or(0, BTreeMap::len);
    seal_object(api, name, &object).await.map_err(|e| unavailable("seal", e))?;
    let uid = object.metadata.uid.unwrap_or_default();
    let done = if created {
        format!(
            "created and sealed ConfigMap {namespace}/{name} (UID {uid}) as an empty marks store: signers on it start \
             from zero, so a validator that signed before must import its marks first (ratchet import)"
        )
    } else {
        format!("sealed ConfigMap {namespace}/{name} (UID {uid}) as a marks store holding {marks} mark(s)")
    };
    Ok(Some(done))
}

struct ConfigMapLock {
    store: Arc<Store>,
    stream: StreamId,
    key: String,
    current: Option<State>,
    guard: Arc<OwnedMutexGuard<()>>,
}

#[async_trait]
impl StreamLock for ConfigMapLock {
    fn current(&self) -> Option<&State> {
        self.current.as_ref()
    }

    async fn commit(&mut self, next: State) -> Result<State, RatchetError> {
        self.write(next, true).await
    }

    async fn overwrite(&mut self, next: State) -> Result<(), RatchetError> {
        self.write(next, false).await.map(drop)
    }
}

impl ConfigMapLock {
    /// Queues the mark for the next write and waits for its outcome. The write runs in a task of
    /// its own, so a request dropped half way (a client gone) never cuts a write short: the mark
    /// may land without its signature being released, which is safe, never the reverse. The
    /// queued mark keeps the stream locked until it is answered, so the next request on the
    /// stream sees it, and the queue holds at most one mark per stream.
    async fn write(&mut self, next: State, enforce: bool) -> Result<State, RatchetError> {
        let (outcome, written) = oneshot::channel();
        let queued = Queued {
            stream: self.stream.clone(),
            key: self.key.clone(),
            next,
            enforce,
            outcome,
            _stream_lock: self.guard.clone(),
        };
        self.store.queued.lock().unwrap_or_else(|e| e.into_inner()).push(queued);
        let store = self.store.clone();
        tokio::spawn(async move { store.write_queued().await });
        let state = written.await.map_err(|_| self.store.unavailable("write", "the write task stopped"))??;
        self.current = Some(state.clone());
        Ok(state)
    }
}

impl Store {
    /// Takes the writer, then writes every mark queued by then in one conditional replace (none
    /// left: an earlier writer took them all).
    async fn write_queued(&self) {
        let _writer = self.writer.lock().await;
        let mut batch = std::mem::take(&mut *self.queued.lock().unwrap_or_else(|e| e.into_inner()));
        for _ in 0..MAX_CONFLICTS {
            if batch.is_empty() {
                return;
            }
            if let Some(reason) = &self.health().lost {
                return answer_all(batch, &Err(self.lost_error(reason)));
            }
            // The freshest copy: the watch brings other replicas' writes.
            let copy = match self.cached() {
                Some(copy) => Ok(copy),
                None => self.read().await,
            };
            let mut wanted = match copy {
                Ok(copy) => copy,
                Err(error) => return answer_all(batch, &Err(error)),
            };
            // Each queued mark holds its stream's lock, so the batch has one mark per stream and
            // every decision is against what the API server returned: refusals and stored
            // signatures may leave at once.
            let mut writing = Vec::new();
            for queued in batch {
                match self.decide(&queued, &wanted) {
                    Err(error) => answer(queued, Err(error)),
                    Ok(Decision::Keep(stored)) => answer(queued, Ok(stored)),
                    Ok(Decision::Write(value)) => {
                        wanted.object.data.get_or_insert_with(BTreeMap::new).insert(queued.key.clone(), value);
                        writing.push(queued);
                    }
                }
            }
            if writing.is_empty() {
                return;
            }
            match self.replace(&wanted).await {
                Ok(Some(_)) => {
                    for queued in writing {
                        let state = queued.next.clone();
                        answer(queued, Ok(state));
                    }
                    return;
                }
                // Another replica wrote first: read what it wrote, then decide every mark again.
                Ok(None) => {
                    if let Err(error) = self.read().await {
                        return answer_all(writing, &Err(error));
                    }
                    batch = writing;
                }
                Err(error) => return answer_all(writing, &Err(error)),
            }
        }
        answer_all(
            batch,
            &Err(self.unavailable("write", format!("{MAX_CONFLICTS} conflicting writes in a row; try again"))),
        );
    }

    /// What one queued mark does against `copy`.
    fn decide(&self, queued: &Queued, copy: &Snapshot) -> Result<Decision, RatchetError> {
        if queued.enforce {
            let current = copy.state(&queued.key).map_err(|e| self.unavailable("read", e))?;
            if let Some(stored) = commit_decision(&queued.stream, current.as_ref(), &queued.next)? {
                return Ok(Decision::Keep(stored));
            }
        }
        serde_json::to_string(&Record::from_state(&queued.next))
            .map(Decision::Write)
            .map_err(|e| self.unavailable("write", e))
    }
}

enum Decision {
    /// Write this record.
    Write(String),
    /// The identical request is stored with its signature: hand that back.
    Keep(State),
}

fn answer(queued: Queued, outcome: Result<State, RatchetError>) {
    // The requester may be gone; its mark was handled all the same.
    let _ = queued.outcome.send(outcome);
}

fn answer_all(batch: Vec<Queued>, outcome: &Result<State, RatchetError>) {
    batch.into_iter().for_each(|queued| answer(queued, outcome.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratchet::Mark;

    fn config_map(uid: &str, version: u64, marks: &[(&str, u64)], sealed: bool) -> ConfigMap {
        let data: BTreeMap<String, String> = marks
            .iter()
            .map(|(key, level)| {
                let state = State {
                    mark: Mark { level: *level, round: 0, step: 0 },
                    payload_digest: [0; 32],
                    signature: None,
                    context: None,
                };
                (key.to_string(), serde_json::to_string(&Record::from_state(&state)).unwrap())
            })
            .collect();
        let mut object: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "m", "uid": uid, "resourceVersion": version.to_string() },
        }))
        .unwrap();
        object.data = Some(data);
        if sealed {
            object.metadata.annotations = Some(BTreeMap::from([(SEAL_ANNOTATION.to_string(), uid.to_string())]));
        }
        object
    }

    #[test]
    fn a_lowered_or_dropped_mark_is_named() {
        let old = config_map("u", 1, &[("k.c.block", 10), ("k.c.attestation", 5)], true);
        assert_eq!(lowered(&old, &config_map("u", 2, &[("k.c.block", 11), ("k.c.attestation", 5)], true)), None);
        let lower = lowered(&old, &config_map("u", 2, &[("k.c.block", 9), ("k.c.attestation", 5)], true)).unwrap();
        assert!(lower.contains("k.c.block lowered from level 10"), "{lower}");
        let dropped = lowered(&old, &config_map("u", 2, &[("k.c.block", 10)], true)).unwrap();
        assert!(dropped.contains("lost its mark k.c.attestation"), "{dropped}");
    }

    #[test]
    fn only_a_config_map_holding_its_own_uid_is_sealed() {
        assert!(is_sealed(&config_map("u", 1, &[], true)));
        assert!(!is_sealed(&config_map("u", 1, &[], false)));
        let mut copied = config_map("u", 1, &[], true);
        copied.metadata.uid = Some("another".into());
        assert!(!is_sealed(&copied), "a copy re-applied from a backup carries the old UID");
    }
}

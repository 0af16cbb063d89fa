//! The sign path, one direction: request → policy → ratchet (durable) → backend → signature.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::audit::{Audit, Outcome, Record};
use crate::backend::{BackendError, KeyBackend};
use crate::keys::{BlsScheme, PublicKey, Signature};
use crate::metrics::{BackendErrorLabels, BackendLabels, KeyLabels, Metrics, RatchetLabels, SignatureLabels};
use crate::policy::{Policy, SignKind};
use crate::protocol::KeyDisplay;
use crate::ratchet::{check, Mark, Ratchet, RatchetError, State, StreamId, Verdict};

/// What a protocol front asks for, already decoded from the wire.
#[derive(Debug, Clone)]
pub struct SignRequest<'a> {
    /// The configured key name.
    pub key: &'a str,
    /// Chain id or network name; part of the ratchet stream.
    pub chain: &'a str,
    pub kind: SignKind,
    /// Consensus position for kinds that can double-sign; `None` for kinds that cannot.
    pub mark: Option<(Mark, &'static str)>,
    /// The bytes handed to the backend (message for Ed25519 and BLS, digest for ECDSA).
    pub payload: &'a [u8],
    /// How a BLS key signs (Tezos's signature version); the default for every other key.
    pub scheme: BlsScheme,
    /// What makes two requests at one mark the same request, when not the whole payload. CometBFT
    /// leaves a vote's timestamp out, so a re-sent vote gets the first signature back.
    pub identity: Option<&'a [u8]>,
    /// Kept with the mark and handed back when a request repeats (CometBFT: the signed timestamp).
    pub context: Option<&'a [u8]>,
    /// How far above the stream's committed level the request's level may be (CometBFT:
    /// `maxHeightJump`), so that a node asking for a far-away height cannot push the mark out of
    /// reach of every honest request. Checked under the stream's lock against the durable mark;
    /// a stream with no mark yet has nothing to compare with and accepts. `None`: no limit.
    pub max_advance: Option<u64>,
    /// The mark the protocol will most likely ask for next on this stream (CometBFT: the next
    /// step), which the store may reserve so that the next request waits for no flush of its own
    /// ([`StreamLock::commit_reserving`](crate::ratchet::StreamLock::commit_reserving)). After a
    /// crash the reserved marks are refused. `None`: reserve nothing.
    pub reserve: Option<Mark>,
    /// Where a request that moves no mark sits in its chain (a vote extension's height), for the
    /// audit trail.
    pub position: Option<Mark>,
    /// Who asked (an HTTP client's address, a CometBFT node's), for the audit trail.
    pub client: Option<&'a str>,
}

impl<'a> SignRequest<'a> {
    /// A request whose identity is its payload and that keeps no context.
    pub fn new(
        key: &'a str,
        chain: &'a str,
        kind: SignKind,
        mark: Option<(Mark, &'static str)>,
        payload: &'a [u8],
    ) -> Self {
        SignRequest {
            key,
            chain,
            kind,
            mark,
            payload,
            scheme: BlsScheme::default(),
            identity: None,
            context: None,
            max_advance: None,
            reserve: None,
            position: None,
            client: None,
        }
    }
}

/// A signature, and the context stored with it (on a repeat, the first request's context).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub signature: Signature,
    pub context: Option<Vec<u8>>,
    /// The stored answer to the same request at this mark, not a new signature.
    pub repeated: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("no key named {0:?} is configured")]
    UnknownKey(String),
    #[error("key {key} may not sign {kind}")]
    NotAllowed { key: String, kind: SignKind },
    #[error(transparent)]
    Ratchet(#[from] RatchetError),
    #[error("key {key} ({backend}): {source}")]
    Backend { key: String, backend: &'static str, source: BackendError },
    #[error("key {key} ({backend}) did not answer within {after:?}")]
    Timeout { key: String, backend: &'static str, after: Duration },
    #[error(
        "keys {key} and {other} are the same key; each name keeps its own marks, so signing with both could \
         sign twice at one height: configure the key once"
    )]
    SameKey { key: String, other: String },
    #[error(
        "refused: {stream} is at level {current}, request is for level {requested}, more than {max} \
         above the mark (the configured maximum advance)"
    )]
    HeightJump { stream: String, current: u64, requested: u64, max: u64 },
}

impl SignError {
    /// A stable label for the refusal metric.
    pub fn reason(&self) -> &'static str {
        match self {
            SignError::UnknownKey(_) => "unknown_key",
            SignError::NotAllowed { .. } => "not_allowed",
            SignError::Ratchet(RatchetError::Refused { .. }) => "ratchet",
            SignError::Ratchet(RatchetError::Unavailable(_)) => "ratchet_unavailable",
            SignError::Backend { .. } => "backend",
            SignError::Timeout { .. } => "timeout",
            SignError::SameKey { .. } => "same_key",
            SignError::HeightJump { .. } => "height_jump",
        }
    }

    /// Whether the caller may succeed by asking again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            SignError::Ratchet(RatchetError::Unavailable(_)) | SignError::Timeout { .. } => true,
            SignError::Backend { source, .. } => source.is_transient(),
            _ => false,
        }
    }
}

pub struct KeyEntry {
    pub name: String,
    pub backend: Arc<dyn KeyBackend>,
    pub policy: Policy,
    public_key: OnceLock<PublicKey>,
    /// How the key's protocol names it, for the audit trail.
    display: Option<KeyDisplay>,
    key_hash: OnceLock<String>,
    /// Set when the backend's last answer was an error; cleared by the next success.
    unreachable: AtomicBool,
}

impl KeyEntry {
    pub fn new(name: impl Into<String>, backend: Arc<dyn KeyBackend>, policy: Policy) -> Self {
        KeyEntry {
            name: name.into(),
            backend,
            policy,
            public_key: OnceLock::new(),
            display: None,
            key_hash: OnceLock::new(),
            unreachable: AtomicBool::new(false),
        }
    }

    /// Names the key in audit records as `display` does (a `tz1…`, a validator address).
    pub fn with_display(self, display: KeyDisplay) -> Self {
        KeyEntry { display: Some(display), ..self }
    }

    /// The key as its chain names it, once the backend has answered.
    pub fn key_hash(&self) -> Option<&str> {
        let (public_key, display) = (self.public_key()?, self.display?);
        Some(self.key_hash.get_or_init(|| display(public_key)))
    }

    /// The public key, once the backend has answered (see [`Signer::probe_keys`]).
    pub fn public_key(&self) -> Option<&PublicKey> {
        self.public_key.get()
    }

    /// Whether the backend has answered and its last answer was not an error.
    pub fn is_ready(&self) -> bool {
        self.public_key.get().is_some() && !self.unreachable.load(Ordering::SeqCst)
    }
}

pub struct Signer {
    keys: HashMap<String, KeyEntry>,
    ratchet: Arc<dyn Ratchet>,
    metrics: Arc<Metrics>,
    backend_timeout: Duration,
    audit: Audit,
    /// Wakes the background probe when a key becomes unreachable.
    trouble: tokio::sync::Notify,
}

impl Signer {
    pub fn new(
        keys: impl IntoIterator<Item = KeyEntry>,
        ratchet: Arc<dyn Ratchet>,
        metrics: Arc<Metrics>,
        backend_timeout: Duration,
    ) -> Self {
        let keys = keys.into_iter().map(|k| (k.name.clone(), k)).collect();
        Signer { keys, ratchet, metrics, backend_timeout, audit: Audit::default(), trouble: tokio::sync::Notify::new() }
    }

    /// Also writes audit records to `audit`'s file.
    pub fn with_audit(self, audit: Audit) -> Self {
        Signer { audit, ..self }
    }

    /// Records a refusal of a protocol front (one the sign path never saw) in the audit trail.
    pub fn audit_refusal(&self, record: &Record<'_>) {
        self.audit.record(record, &self.metrics);
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn key(&self, name: &str) -> Option<&KeyEntry> {
        self.keys.get(name)
    }

    pub fn keys(&self) -> impl Iterator<Item = &KeyEntry> {
        self.keys.values()
    }

    pub fn ratchet(&self) -> &Arc<dyn Ratchet> {
        &self.ratchet
    }

    /// Another configured name for the same key as `entry`, once both public keys are known.
    pub fn same_key(&self, entry: &KeyEntry) -> Option<&KeyEntry> {
        let key = entry.public_key()?;
        self.keys.values().find(|other| other.name != entry.name && other.public_key() == Some(key))
    }

    /// Ready when every configured key's backend has answered, and answered its last call.
    pub fn is_ready(&self) -> bool {
        self.keys.values().all(KeyEntry::is_ready)
    }

    /// Returns when some key has become unreachable since the last call (or at once, if one did
    /// before anybody waited).
    pub async fn trouble(&self) {
        self.trouble.notified().await
    }

    /// Records a backend answer on the sign path. Only a change of reachability touches shared
    /// state (the gauge, the probe), so a healthy key costs one atomic swap per signature.
    fn record_answer(&self, entry: &KeyEntry, answered: bool) {
        if entry.unreachable.swap(!answered, Ordering::SeqCst) == answered {
            self.set_key_ready(entry, answered);
            if !answered {
                self.trouble.notify_one();
            }
        }
    }

    fn set_key_ready(&self, entry: &KeyEntry, ready: bool) {
        let labels = KeyLabels { key: entry.name.clone() };
        self.metrics.key_ready.get_or_create(&labels).set(i64::from(ready && entry.public_key.get().is_some()));
    }

    /// Asks every backend not ready for its public key (or, once known, whether it still answers
    /// with it). Returns the failures, if any.
    pub async fn probe_keys(&self) -> Vec<SignError> {
        let mut failures = Vec::new();
        for entry in self.keys.values().filter(|k| !k.is_ready()) {
            let known = entry.public_key.get().is_some();
            let probe = async {
                if known {
                    entry.backend.check().await
                } else {
                    entry.backend.public_key().await.map(|public_key| drop(entry.public_key.set(public_key)))
                }
            };
            let failure = match tokio::time::timeout(self.backend_timeout, probe).await {
                Ok(Ok(())) => None,
                Ok(Err(source)) => {
                    Some(SignError::Backend { key: entry.name.clone(), backend: entry.backend.kind(), source })
                }
                Err(_) => Some(SignError::Timeout {
                    key: entry.name.clone(),
                    backend: entry.backend.kind(),
                    after: self.backend_timeout,
                }),
            };
            match failure {
                None => {
                    entry.unreachable.store(false, Ordering::SeqCst);
                    self.set_key_ready(entry, true);
                }
                // Still unknown or still unreachable.
                Some(failure) => {
                    self.set_key_ready(entry, false);
                    failures.push(failure);
                }
            }
        }
        failures
    }

    /// Signs, or refuses; either way one audit record.
    pub async fn sign(&self, request: SignRequest<'_>) -> Result<Signed, SignError> {
        let started = Instant::now();
        let result = self.sign_inner(&request).await;
        let entry = self.keys.get(request.key);
        let position = request.mark.map(|(mark, _)| mark).or(request.position);
        let mut record = Record {
            outcome: Outcome::Signed,
            protocol: request.kind.protocol(),
            key: Some(request.key),
            key_hash: entry.and_then(KeyEntry::key_hash),
            chain: Some(request.chain).filter(|c| !c.is_empty()),
            kind: Some(request.kind.name()),
            height: position.map(|p| p.level),
            round: position.map(|p| p.round),
            latency: started.elapsed(),
            backend: entry.map(|e| e.backend.kind()),
            client: request.client,
            reason: None,
            error: None,
            signature: None,
        };
        match &result {
            Ok(signed) => {
                self.metrics
                    .signatures
                    .get_or_create(&SignatureLabels { key: request.key.to_string(), kind: request.kind.name() })
                    .inc();
                record.outcome = if signed.repeated { Outcome::Repeated } else { Outcome::Signed };
                record.signature = Some(signed.signature);
            }
            Err(error) => {
                self.metrics.refuse(request.kind.protocol(), error.reason());
                record.outcome = Outcome::Refused;
                record.reason = Some(error.reason());
                record.error = Some(error.to_string());
            }
        }
        self.audit.record(&record, &self.metrics);
        result
    }

    async fn sign_inner(&self, request: &SignRequest<'_>) -> Result<Signed, SignError> {
        let entry = self.keys.get(request.key).ok_or_else(|| SignError::UnknownKey(request.key.to_string()))?;
        if !entry.policy.allows(request.kind) {
            return Err(SignError::NotAllowed { key: entry.name.clone(), kind: request.kind });
        }
        if let Some(other) = self.same_key(entry) {
            return Err(SignError::SameKey { key: entry.name.clone(), other: other.name.clone() });
        }
        // The store may hold a key back until the operator has checked it is this signer's alone.
        let key_id = entry.public_key().map(PublicKey::id);
        self.ratchet.key_cleared(&entry.name, key_id.as_deref())?;
        let context = request.context.map(<[u8]>::to_vec);
        let Some((mark, stream)) = request.mark else {
            return Ok(Signed { signature: self.backend_sign(entry, request).await?, context, repeated: false });
        };
        // Check, sign and commit under the stream's lock; release the signature only once the
        // commit is durable (see ratchet/mod.rs).
        let stream = StreamId { key: entry.name.clone(), chain: request.chain.to_string(), stream };
        let identity = request.identity.unwrap_or(request.payload);
        let next = State { mark, payload_digest: Sha256::digest(identity).into(), signature: None, context };
        let mut lock = self.ratchet.lock(&stream).await?;
        if let (Some(max), Some(current)) = (request.max_advance, lock.current()) {
            if mark.level.saturating_sub(current.mark.level) > max {
                return Err(SignError::HeightJump {
                    stream: stream.to_string(),
                    current: current.mark.level,
                    requested: mark.level,
                    max,
                });
            }
        }
        if check(&stream, lock.current(), &next)? == Verdict::Repeat {
            if let Some(State { signature: Some(signature), context, .. }) = lock.current() {
                return Ok(Signed { signature: *signature, context: context.clone(), repeated: true });
            }
        }
        let signature = self.backend_sign(entry, request).await?;
        let started = Instant::now();
        let signed = State { signature: Some(signature), ..next };
        let committed = match request.reserve {
            Some(reserved) => lock.commit_reserving(signed, reserved).await,
            None => lock.commit(signed).await,
        };
        self.metrics
            .ratchet_commit_duration
            .get_or_create(&RatchetLabels { store: self.ratchet.kind() })
            .observe(started.elapsed().as_secs_f64());
        // What the store holds: ours, or the first signature of this very request when another
        // replica answered it while we signed.
        let stored = committed?;
        let repeated = stored.signature.is_some_and(|stored| stored != signature);
        Ok(Signed { signature: stored.signature.unwrap_or(signature), context: stored.context, repeated })
    }

    async fn backend_sign(&self, entry: &KeyEntry, request: &SignRequest<'_>) -> Result<Signature, SignError> {
        let backend = entry.backend.kind();
        let labels = BackendLabels { backend, key: entry.name.clone() };
        let started = Instant::now();
        let signing = async {
            match request.scheme {
                BlsScheme::Pop => entry.backend.sign(request.payload).await,
                scheme => entry.backend.sign_bls(scheme, request.payload).await,
            }
        };
        let outcome = tokio::time::timeout(self.backend_timeout, signing).await;
        self.metrics.backend_sign_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
        self.record_answer(entry, matches!(outcome, Ok(Ok(_))));
        let (error, kind) = match outcome {
            Ok(Ok(signature)) => return Ok(signature),
            Ok(Err(source)) => {
                let kind = if source.is_transient() { "transient" } else { "permanent" };
                (SignError::Backend { key: entry.name.clone(), backend, source }, kind)
            }
            Err(_) => (SignError::Timeout { key: entry.name.clone(), backend, after: self.backend_timeout }, "timeout"),
        };
        let labels = BackendErrorLabels { backend, key: labels.key, kind };
        self.metrics.backend_errors.get_or_create(&labels).inc();
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;
    use crate::keys::{Algorithm, SecretKey};
    use crate::ratchet::memory::MemoryRatchet;

    // The core knows no protocol: these stand for a protocol's kinds.
    const VOTE: SignKind = SignKind::new("atto", "atto_vote");
    const BLOCK: SignKind = SignKind::new("atto", "atto_block");

    fn signer() -> Signer {
        let key = SecretKey::from_bytes(Algorithm::Ed25519, &[1; 32]).unwrap();
        let entry = KeyEntry::new("k", Arc::new(LocalBackend::new(key)), Policy::allowing([VOTE]));
        Signer::new([entry], Arc::new(MemoryRatchet::default()), Arc::default(), Duration::from_secs(1))
    }

    fn request(kind: SignKind, mark: Option<u64>, payload: &[u8]) -> SignRequest<'_> {
        SignRequest::new("k", "test", kind, mark.map(|level| (Mark { level, round: 0, step: 0 }, "test")), payload)
    }

    #[tokio::test]
    async fn policy_then_ratchet_then_backend() {
        let signer = signer();
        assert!(!signer.is_ready());
        assert!(signer.probe_keys().await.is_empty());
        assert!(signer.is_ready());

        let signature = signer.sign(request(VOTE, None, b"hello")).await.unwrap().signature;
        signer.key("k").unwrap().public_key().unwrap().verify(b"hello", &signature).unwrap();

        let refused = signer.sign(request(BLOCK, None, b"hello")).await.unwrap_err();
        assert_eq!(refused.reason(), "not_allowed");

        signer.sign(request(VOTE, Some(5), b"a")).await.unwrap();
        signer.sign(request(VOTE, Some(5), b"a")).await.unwrap();
        let double = signer.sign(request(VOTE, Some(5), b"b")).await.unwrap_err();
        assert_eq!(double.reason(), "ratchet");
        assert!(!double.is_retryable());

        let unknown = SignRequest { key: "other", ..request(VOTE, None, b"x") };
        assert_eq!(signer.sign(unknown).await.unwrap_err().reason(), "unknown_key");

        let metrics = signer.metrics().encode();
        assert!(metrics.contains(r#"sigil_signer_signatures_total{key="k",kind="atto_vote"} 3"#), "{metrics}");
        assert!(metrics.contains(r#"sigil_signer_refusals_total{protocol="atto",reason="ratchet"} 1"#), "{metrics}");
        assert!(metrics.contains(r#"sigil_signer_key_ready{key="k"} 1"#), "{metrics}");
    }

    /// Two names for one key would keep two sets of marks, and together sign two payloads at one
    /// height: neither name signs, whether the request is at a mark or not.
    #[tokio::test]
    async fn two_names_for_one_key_are_refused() {
        let secret = || SecretKey::from_bytes(Algorithm::Ed25519, &[1; 32]).unwrap();
        let policy = || Policy::allowing([VOTE]);
        let entries = [
            KeyEntry::new("a", Arc::new(LocalBackend::new(secret())), policy()),
            KeyEntry::new("b", Arc::new(LocalBackend::new(secret())), policy()),
        ];
        let signer = Signer::new(entries, Arc::new(MemoryRatchet::default()), Arc::default(), Duration::from_secs(1));
        assert!(signer.probe_keys().await.is_empty());
        for (key, other) in [("a", "b"), ("b", "a")] {
            for mark in [None, Some(5)] {
                let same = SignRequest { key, ..request(VOTE, mark, key.as_bytes()) };
                let refused = signer.sign(same).await.unwrap_err();
                assert_eq!(refused.reason(), "same_key");
                assert!(!refused.is_retryable());
                let message = refused.to_string();
                assert!(message.contains(&format!("keys {key} and {other} are the same key")), "{message}");
            }
        }
        // Another key beside them signs: the refusal is about the pair, not the signer.
        let different = SecretKey::from_bytes(Algorithm::Ed25519, &[2; 32]).unwrap();
        let entries = [
            KeyEntry::new("a", Arc::new(LocalBackend::new(secret())), policy()),
            KeyEntry::new("c", Arc::new(LocalBackend::new(different)), policy()),
        ];
        let signer = Signer::new(entries, Arc::new(MemoryRatchet::default()), Arc::default(), Duration::from_secs(1));
        assert!(signer.probe_keys().await.is_empty());
        for key in ["a", "c"] {
            signer.sign(SignRequest { key, ..request(VOTE, Some(5), b"x") }).await.unwrap();
        }
    }

    #[tokio::test]
    async fn max_advance_is_checked_against_the_committed_mark() {
        let signer = signer();
        let limited = |level: u64, payload: &'static [u8]| SignRequest {
            max_advance: Some(10),
            ..request(VOTE, Some(level), payload)
        };
        // No mark yet: nothing to compare with.
        signer.sign(limited(1_000, b"a")).await.unwrap();
        signer.sign(limited(1_010, b"b")).await.unwrap();
        let jump = signer.sign(limited(1_021, b"c")).await.unwrap_err();
        assert_eq!(jump.reason(), "height_jump");
        assert!(!jump.is_retryable());
        assert!(matches!(jump, SignError::HeightJump { current: 1_010, requested: 1_021, max: 10, .. }), "{jump}");
        let message = jump.to_string();
        assert!(message.contains("at level 1010") && message.contains("level 1021"), "{message}");
        // Nothing moved: the mark is still 1010, so 1020 is within reach and a repeat still answers.
        signer.sign(limited(1_010, b"b")).await.unwrap();
        signer.sign(limited(1_020, b"d")).await.unwrap();
        // Lower requests are the ratchet's to refuse, not this check's.
        assert_eq!(signer.sign(limited(5, b"e")).await.unwrap_err().reason(), "ratchet");
        // Without a limit the same jump is signed.
        signer.sign(request(VOTE, Some(1_000_000), b"f")).await.unwrap();
        let metrics = signer.metrics().encode();
        assert!(
            metrics.contains(r#"sigil_signer_refusals_total{protocol="atto",reason="height_jump"} 1"#),
            "{metrics}"
        );
    }
}

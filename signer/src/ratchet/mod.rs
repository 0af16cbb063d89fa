//! The ratchet: a high-water mark per (key, chain, stream) that refuses anything that could be a
//! double-sign. The rule is a pure function ([`check`]); stores only persist its verdicts.
//!
//! The sign path holds a stream's lock from the check until the new state is durable: it checks,
//! signs, commits the mark together with the signature, and only then releases the signature. A
//! signature whose commit failed is dropped, so nothing leaves the process above the durable mark;
//! a crash loses at most that one signature, never safety. Keeping the signature lets an identical
//! retry get the very same bytes back, even from a backend whose ECDSA nonces are random. A store
//! may instead let a durable reservation of the step cover it
//! ([`StreamLock::commit_reserving`]): the signature is then released before its own record is
//! durable, and a restart that may have lost that record refuses the whole reservation.

#[cfg(feature = "kubernetes")]
pub mod configmap;
pub mod file;
pub mod memory;

use std::fmt;

use async_trait::async_trait;

use crate::keys::Signature;

/// A position in a chain's consensus: level (height), then round, then step within the round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mark {
    pub level: u64,
    pub round: u64,
    pub step: u8,
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "level {} round {} step {}", self.level, self.round, self.step)
    }
}

/// The last thing signed on one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub mark: Mark,
    /// SHA-256 of the signed payload, so an identical re-request can be answered again.
    pub payload_digest: [u8; 32],
    /// The signature given for it, returned again on an identical re-request.
    pub signature: Option<Signature>,
    /// Protocol data to hand back with that signature (CometBFT: the timestamp it covers).
    pub context: Option<Vec<u8>>,
}

/// Which high-water mark a request moves.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    pub key: String,
    pub chain: String,
    /// Kinds that share a mark share a stream name (e.g. all CometBFT consensus messages).
    pub stream: &'static str,
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key {} chain {} {}", self.key, self.chain, self.stream)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Strictly above the mark: sign, then commit the new state before releasing the signature.
    Advance,
    /// The same mark and the same payload as last time: answer with the stored signature (or sign
    /// the same bytes again when none is stored).
    Repeat,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RatchetError {
    #[error("refused: {stream} is at {current}, request is for {requested}{}", if *.same_mark { " with a different payload" } else { "" })]
    Refused { stream: String, current: Mark, requested: Mark, same_mark: bool },
    #[error("ratchet store unavailable (refusing to sign): {0}")]
    Unavailable(String),
}

/// The double-sign rule.
pub fn check(stream: &StreamId, previous: Option<&State>, next: &State) -> Result<Verdict, RatchetError> {
    let Some(previous) = previous else {
        return Ok(Verdict::Advance);
    };
    if next.mark > previous.mark {
        Ok(Verdict::Advance)
    } else if next.mark == previous.mark && next.payload_digest == previous.payload_digest {
        Ok(Verdict::Repeat)
    } else {
        Err(RatchetError::Refused {
            stream: stream.to_string(),
            current: previous.mark,
            requested: next.mark,
            same_mark: next.mark == previous.mark,
        })
    }
}

#[async_trait]
pub trait Ratchet: Send + Sync {
    /// A short name for metrics and logs: `memory`, `file`, `configMap`.
    fn kind(&self) -> &'static str;

    /// Takes `stream`'s lock: until the returned guard is dropped, no other request on the stream
    /// is checked. Failing to read the store is `Unavailable` (fail closed).
    async fn lock(&self, stream: &StreamId) -> Result<Box<dyn StreamLock>, RatchetError>;

    /// Every stored stream, for `sigil-signer ratchet show`.
    async fn entries(&self) -> Result<Vec<Entry>, RatchetError>;

    /// `Err` with the reason while the store cannot be used: unreachable, lost, or not yet set
    /// up. `/readyz` reports it. Stores in this process are always healthy.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }

    /// Records which public key each configured key has, where the operator can read it (the
    /// ConfigMap store). Other stores keep nothing.
    async fn publish_keys(&self, _keys: &[PublishedKey]) -> Result<(), RatchetError> {
        Ok(())
    }

    /// Whether key `name`, whose public key is `key` (`<algorithm>:<hex>`, `None` while unknown),
    /// may sign: a store can hold it back until the operator has checked that no other
    /// RemoteSigner uses the same key (the ConfigMap store, when configured to wait).
    fn key_cleared(&self, _name: &str, _key: Option<&str>) -> Result<(), RatchetError> {
        Ok(())
    }

    /// Marks the store as set up on purpose (`sigil-signer ratchet init` and `import`): a
    /// ConfigMap store is sealed, which running signers insist on. `Some` says what was done.
    async fn seal(&self) -> Result<Option<String>, RatchetError> {
        Ok(None)
    }
}

/// A configured key as the store records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PublishedKey {
    /// The name under `keys`.
    #[serde(skip)]
    pub name: String,
    /// `<algorithm>:<hex public key>`: what makes two keys the same key.
    pub key: String,
    /// How the protocol names it (tz1…, atto://…, a CometBFT address), for people.
    pub display: String,
}

/// One stored stream, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub chain: String,
    pub stream: String,
    pub state: State,
}

/// What a commit does against the stream's stored state: `Ok(None)` write `next`;
/// `Ok(Some(stored))` keep the identical request's stored signature (see [`StreamLock::commit`]).
pub(crate) fn commit_decision(
    stream: &StreamId,
    stored: Option<&State>,
    next: &State,
) -> Result<Option<State>, RatchetError> {
    match (check(stream, stored, next)?, stored) {
        (Verdict::Repeat, Some(stored)) if stored.signature.is_some() => Ok(Some(stored.clone())),
        _ => Ok(None),
    }
}

/// One stream, locked.
#[async_trait]
pub trait StreamLock: Send {
    /// The stream's last committed state.
    fn current(&self) -> Option<&State>;

    /// Makes `next` the stream's state, returning once it is durable, and returns what the
    /// store now holds. Checks [`check`] again, so no store can be asked to lower a mark. If the
    /// store already holds the same request with its signature (another replica answered it
    /// first), nothing is written and that state is returned: its signature is the one to give,
    /// since a second signature over the same block (ECDSA from a KMS has random nonces) would be
    /// a second block. Failing to write is `Unavailable`.
    async fn commit(&mut self, next: State) -> Result<State, RatchetError>;

    /// [`commit`](Self::commit), also reserving every mark up to `reserved` (the protocol's next
    /// likely request): a later request at a reserved mark may then be released before its own
    /// state is durable, since a restart after a crash refuses everything up to a durable
    /// reservation. Stores that keep no reservations commit as `commit` does.
    async fn commit_reserving(&mut self, next: State, _reserved: Mark) -> Result<State, RatchetError> {
        self.commit(next).await
    }

    /// Writes `next` without the rule: only for an operator's `ratchet set --force`, which says
    /// why lowering a mark is dangerous.
    async fn overwrite(&mut self, next: State) -> Result<(), RatchetError>;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::keys::Algorithm;

    /// What every store must do; each store's tests run it.
    pub(crate) async fn conformance(ratchet: &dyn Ratchet) {
        let a = StreamId { key: "a".into(), chain: "c".into(), stream: "block" };
        let b = StreamId { key: "b".into(), chain: "c".into(), stream: "block" };
        let at = |level: u64| State {
            mark: Mark { level, round: 0, step: 0 },
            payload_digest: [level as u8; 32],
            signature: None,
            context: None,
        };
        let mut lock = ratchet.lock(&a).await.unwrap();
        assert_eq!(lock.current(), None);
        lock.commit(at(5)).await.unwrap();
        assert_eq!(lock.current(), Some(&at(5)));
        assert!(lock.commit(at(4)).await.is_err(), "a store must refuse to lower a mark");
        // While the stream is locked, nobody else checks it.
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), ratchet.lock(&a)).await;
        assert!(waited.is_err(), "a second lock on a locked stream must wait");
        drop(lock);

        let mut other = ratchet.lock(&b).await.unwrap();
        assert_eq!(other.current(), None, "streams are independent");
        other.commit(at(1)).await.unwrap();
        drop(other);

        let mut lock = ratchet.lock(&a).await.unwrap();
        assert_eq!(lock.current(), Some(&at(5)));
        let signed = State { signature: Some(crate::keys::Signature::new(Algorithm::Ed25519, [9; 64])), ..at(5) };
        assert_eq!(lock.commit(signed.clone()).await.unwrap(), signed);
        assert_eq!(lock.current(), Some(&signed));
        // The same request again, with another signature: the stored one stands.
        let other = State { signature: Some(crate::keys::Signature::new(Algorithm::Ed25519, [7; 64])), ..at(5) };
        assert_eq!(lock.commit(other).await.unwrap(), signed, "an identical request keeps its first signature");
        assert_eq!(lock.current(), Some(&signed));
        assert!(lock.commit(State { payload_digest: [0; 32], ..at(5) }).await.is_err());
        lock.commit(at(6)).await.unwrap();
        assert_eq!(lock.current().map(|s| s.mark.level), Some(6));
    }

    fn state(level: u64, round: u64, step: u8, payload: u8) -> State {
        State { mark: Mark { level, round, step }, payload_digest: [payload; 32], signature: None, context: None }
    }

    #[test]
    fn the_rule() {
        let stream = StreamId { key: "k".into(), chain: "c".into(), stream: "block" };
        let prev = state(10, 1, 0, 1);
        assert_eq!(check(&stream, None, &prev), Ok(Verdict::Advance));
        assert_eq!(check(&stream, Some(&prev), &state(11, 0, 0, 2)), Ok(Verdict::Advance));
        assert_eq!(check(&stream, Some(&prev), &state(10, 2, 0, 2)), Ok(Verdict::Advance));
        assert_eq!(check(&stream, Some(&prev), &state(10, 1, 1, 2)), Ok(Verdict::Advance));
        assert_eq!(check(&stream, Some(&prev), &state(10, 1, 0, 1)), Ok(Verdict::Repeat));
        let refused = check(&stream, Some(&prev), &state(10, 1, 0, 2)).unwrap_err();
        assert!(refused.to_string().contains("different payload"), "{refused}");
        assert!(check(&stream, Some(&prev), &state(9, 5, 5, 1)).is_err());
        assert!(check(&stream, Some(&prev), &state(10, 0, 9, 1)).is_err());
    }
}

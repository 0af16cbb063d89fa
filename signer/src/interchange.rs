//! The marks interchange format: every high-water mark of a store as one JSON document, so that a
//! migration between signers (or between sigil stores) never starts from zero. Modelled on
//! Ethereum's slashing-protection interchange (EIP-3076,
//! <https://eips.ethereum.org/EIPS/eip-3076>): importing never lowers a mark, the chain and the
//! key are checked, and a document with anything wrong in it is refused whole, before anything is
//! written. docs/ratchet.md describes it; `schemas/marks-interchange.v1.json` is its JSON Schema.
//!
//! Keys are named by what the chain calls them (a `tz…` hash, a CometBFT validator address), not
//! by the config's names, so a document moves between signers with different configs.

pub mod convert;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::keys::{Algorithm, Signature};
use crate::ratchet::{Entry, Mark, PublishedKey, Ratchet, State, StreamId};

/// The version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Document {
    pub interchange_format_version: u32,
    /// Who wrote it (`sigil-signer 0.1.0`, `converted from tmkms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporter: Option<String>,
    /// When (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exported_at: Option<String>,
    pub chains: Vec<ChainMarks>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tezos,
    Cometbft,
}

impl Protocol {
    /// The streams a key of this protocol has marks on.
    pub fn streams(self) -> &'static [&'static str] {
        match self {
            Protocol::Tezos => &crate::protocol::tezos::operation::STREAMS,
            Protocol::Cometbft => &[crate::protocol::cometbft::validator::STREAM],
        }
    }

    fn of_stream(stream: &str) -> Option<Protocol> {
        [Protocol::Tezos, Protocol::Cometbft].into_iter().find(|p| p.streams().contains(&stream))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChainMarks {
    pub protocol: Protocol,
    /// Tezos: the base58 chain id (`NetXdQprcVkpaWU`); CometBFT: the genesis chain id.
    pub chain_id: String,
    pub keys: Vec<KeyMarks>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyMarks {
    /// `tz1…`/`tz2…`/`tz3…`/`tz4…` (Tezos) or the validator address, 40 hex (CometBFT).
    pub key_hash: String,
    /// Nothing below this level (height) may ever be signed, on any of the key's streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<u64>,
    #[serde(default)]
    pub marks: Vec<StreamMark>,
}

/// The last position signed on one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamMark {
    /// Tezos: `block`, `preattestation`, `attestation`; CometBFT: `consensus`.
    pub stream: String,
    /// Tezos's level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<u64>,
    /// CometBFT's height.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
    #[serde(default)]
    pub round: u64,
    /// CometBFT: 1 proposal, 2 prevote, 3 precommit. Tezos: 0.
    #[serde(default)]
    pub step: u8,
    /// Tezos: SHA-256 of the signed bytes, hex. An identical request at this mark gets the
    /// stored signature again; without it, nothing at this mark is signed again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_digest: Option<String>,
    /// CometBFT: SHA-256 of the sign bytes without the timestamp, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_bytes_digest: Option<String>,
    /// The signature given at this mark, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// CometBFT: the signed vote's timestamp (protobuf `Timestamp`, hex), handed back with a
    /// repeated vote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

impl StreamMark {
    /// A position with nothing else known: Tezos calls it a level, CometBFT a height.
    fn at(protocol: Protocol, stream: &str, mark: Mark) -> Self {
        let tezos = protocol == Protocol::Tezos;
        StreamMark {
            stream: stream.to_string(),
            level: tezos.then_some(mark.level),
            height: (!tezos).then_some(mark.level),
            round: mark.round,
            step: mark.step,
            payload_digest: None,
            sign_bytes_digest: None,
            signature: None,
            timestamp: None,
        }
    }
}

/// Marks grouped by protocol and chain, then by key hash.
pub(crate) type Grouped = BTreeMap<(Protocol, String), BTreeMap<String, Vec<StreamMark>>>;

impl Document {
    pub(crate) fn new(grouped: Grouped, exporter: &str, exported_at: Option<&str>) -> Self {
        Document {
            interchange_format_version: FORMAT_VERSION,
            exporter: Some(exporter.to_string()),
            exported_at: exported_at.map(str::to_string),
            chains: grouped
                .into_iter()
                .map(|((protocol, chain_id), keys)| ChainMarks {
                    protocol,
                    chain_id,
                    keys: keys.into_iter().map(|(key_hash, marks)| KeyMarks { key_hash, fence: None, marks }).collect(),
                })
                .collect(),
        }
    }
}

/// Why a document cannot be imported. Nothing has been written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ImportError(pub String);

/// A configured key a document can name: its config name, what the chain calls it, its curve,
/// and the chains it signs on for each protocol.
#[derive(Debug, Clone)]
pub struct KnownKey {
    pub name: String,
    pub key_hash: String,
    pub algorithm: Algorithm,
    pub protocol: Protocol,
    /// `None`: any chain of the protocol (a Tezos key without `chains`).
    pub chains: Option<Vec<String>>,
}

impl KnownKey {
    /// A key as a signer published it to its store (`<algorithm>:<hex>`, and its name on the
    /// chain, which is its key hash); `None` when the algorithm is not one this signer knows.
    pub fn published(key: &PublishedKey, protocol: Protocol, chains: Option<Vec<String>>) -> Option<KnownKey> {
        let (algorithm, _) = key.key.split_once(':')?;
        Some(KnownKey {
            name: key.name.clone(),
            key_hash: key.display.clone(),
            algorithm: algorithm.parse().ok()?,
            protocol,
            chains,
        })
    }
}

/// A document from its JSON text.
pub fn parse(text: &str) -> Result<Document, ImportError> {
    serde_json::from_str(text).map_err(|e| ImportError(format!("not a marks interchange document: {e}")))
}

/// Every mark of `entries` as a document; `key_hashes` names the config's keys as the chain does
/// (a key the map lacks is exported under its config name, which an import will not match).
pub fn export(entries: &[Entry], key_hashes: &BTreeMap<String, String>, exporter: &str, now: &str) -> Document {
    let mut grouped = Grouped::new();
    for entry in entries {
        let Some(protocol) = Protocol::of_stream(&entry.stream) else { continue };
        let hash = key_hashes.get(&entry.key).cloned().unwrap_or_else(|| entry.key.clone());
        let state = &entry.state;
        let digest = (state.payload_digest != [0; 32]).then(|| hex::encode(state.payload_digest));
        let tezos = protocol == Protocol::Tezos;
        let mark = StreamMark {
            payload_digest: digest.clone().filter(|_| tezos),
            sign_bytes_digest: digest.filter(|_| !tezos),
            signature: state.signature.map(|s| hex::encode(s.as_bytes())),
            timestamp: state.context.as_ref().map(hex::encode),
            ..StreamMark::at(protocol, &entry.stream, state.mark)
        };
        grouped.entry((protocol, entry.chain.clone())).or_default().entry(hash).or_default().push(mark);
    }
    Document::new(grouped, exporter, Some(now))
}

/// What an import does to one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub stream: StreamId,
    pub from: Option<Mark>,
    /// The state written; `None`: the store is already at or above the document.
    pub to: Option<State>,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.from, &self.to) {
            (_, None) => {
                write!(f, "{}: unchanged at {}", self.stream, self.from.map_or("nothing".into(), |m| m.to_string()))
            }
            (None, Some(to)) => write!(f, "{}: set to {} (was empty)", self.stream, to.mark),
            (Some(from), Some(to)) => write!(f, "{}: raised from {from} to {}", self.stream, to.mark),
        }
    }
}

/// The states a document asks for, per stream, checked against the configured keys: the whole
/// document, or an error naming the first thing wrong.
pub fn wanted(document: &Document, keys: &[KnownKey]) -> Result<BTreeMap<StreamId, State>, ImportError> {
    let fail = |message: String| Err(ImportError(message));
    check_version(document)?;
    let mut wanted: BTreeMap<StreamId, State> = BTreeMap::new();
    for chain in &document.chains {
        for key_marks in &chain.keys {
            let at = format!("{} chain {} key {}", protocol_name(chain.protocol), chain.chain_id, key_marks.key_hash);
            let Some(key) = keys.iter().find(|k| k.key_hash == key_marks.key_hash) else {
                let known: Vec<&str> = keys.iter().map(|k| k.key_hash.as_str()).collect();
                return fail(format!(
                    "{at}: no configured key is {} (configured: {})",
                    key_marks.key_hash,
                    known.join(", ")
                ));
            };
            if let Some(refusal) = chain_refusal(chain, key.protocol, key.chains.as_deref()) {
                return fail(format!("{at}: key {} {refusal}", key.name));
            }
            let mut merge = |stream: &'static str, state: State| {
                let id = StreamId { key: key.name.clone(), chain: chain.chain_id.clone(), stream };
                let slot = wanted.entry(id).or_insert_with(|| state.clone());
                if state.mark > slot.mark {
                    *slot = state;
                }
            };
            if let Some(fence) = key_marks.fence.filter(|f| *f > 0) {
                // Everything at a lower level is at or below this position.
                let below = Mark { level: fence - 1, round: u64::MAX, step: u8::MAX };
                for stream in chain.protocol.streams() {
                    merge(stream, State { mark: below, payload_digest: [0; 32], signature: None, context: None });
                }
            }
            for mark in &key_marks.marks {
                let (stream, state) =
                    stream_state(chain.protocol, key.algorithm, mark).map_err(|e| ImportError(format!("{at}: {e}")))?;
                merge(stream, state);
            }
        }
    }
    Ok(wanted)
}

/// Why a key of `protocol` that signs on `chains` (`None`: any) cannot take this chain's marks.
fn chain_refusal(chain: &ChainMarks, protocol: Protocol, chains: Option<&[String]>) -> Option<String> {
    if chain.protocol != protocol {
        return Some(format!("signs {}, not {}", protocol_name(protocol), protocol_name(chain.protocol)));
    }
    if chain.protocol == Protocol::Tezos && crate::keys::tezos::parse_chain_id(&chain.chain_id).is_err() {
        return Some(format!("cannot sign on {:?}: not a Tezos chain id (like NetXdQprcVkpaWU)", chain.chain_id));
    }
    let chains = chains.filter(|c| !c.contains(&chain.chain_id))?;
    Some(format!("signs on {}, not on {}", chains.join(", "), chain.chain_id))
}

/// What can be checked before the keys are known (the Kubernetes operator learns them only when a
/// signer reports them): the version, and that every chain is one a key of `protocol` on
/// `chains` (`None`: any) signs on, for at most `max_keys` keys. [`wanted`] checks the rest.
pub fn check_scope(
    document: &Document,
    protocol: Protocol,
    chains: Option<&[String]>,
    max_keys: usize,
) -> Result<(), ImportError> {
    check_version(document)?;
    let mut key_hashes = std::collections::BTreeSet::new();
    for chain in &document.chains {
        if let Some(refusal) = chain_refusal(chain, protocol, chains) {
            return Err(ImportError(format!(
                "{} chain {}: the key {refusal}",
                protocol_name(chain.protocol),
                chain.chain_id
            )));
        }
        key_hashes.extend(chain.keys.iter().map(|k| k.key_hash.as_str()));
    }
    if key_hashes.len() > max_keys {
        let named: Vec<&str> = key_hashes.into_iter().collect();
        return Err(ImportError(format!(
            "the document names {} keys ({}); this signer has {max_keys}",
            named.len(),
            named.join(", ")
        )));
    }
    Ok(())
}

fn check_version(document: &Document) -> Result<(), ImportError> {
    if document.interchange_format_version == FORMAT_VERSION {
        return Ok(());
    }
    Err(ImportError(format!(
        "interchangeFormatVersion {} is not one this signer reads ({FORMAT_VERSION})",
        document.interchange_format_version
    )))
}

/// A document holding only a fence: none of `key_hashes` signs anything below `level` on
/// `chain_id`.
pub fn fence(protocol: Protocol, chain_id: &str, key_hashes: &[String], level: u64, exporter: &str) -> Document {
    let keys = key_hashes.iter().map(|k| KeyMarks { key_hash: k.clone(), fence: Some(level), marks: Vec::new() });
    Document {
        interchange_format_version: FORMAT_VERSION,
        exporter: Some(exporter.to_string()),
        exported_at: None,
        chains: vec![ChainMarks { protocol, chain_id: chain_id.to_string(), keys: keys.collect() }],
    }
}

/// The streams on which `now` is above `exported`: what the old signer signed after the export.
/// A cutover goes ahead only when this is empty.
pub fn moved_since(exported: &Document, now: &Document) -> Vec<String> {
    /// Protocol, chain, key hash, stream.
    type Stream = (Protocol, String, String, String);
    let highest = |document: &Document| {
        let mut highest: BTreeMap<Stream, (u64, u64, u8)> = BTreeMap::new();
        for chain in &document.chains {
            for key in &chain.keys {
                for mark in &key.marks {
                    let level = mark.level.or(mark.height).unwrap_or(0);
                    let id = (chain.protocol, chain.chain_id.clone(), key.key_hash.clone(), mark.stream.clone());
                    let slot = highest.entry(id).or_default();
                    *slot = (*slot).max((level, mark.round, mark.step));
                }
            }
        }
        highest
    };
    let before = highest(exported);
    highest(now)
        .into_iter()
        .filter(|(id, mark)| before.get(id).is_none_or(|b| mark > b))
        .map(|((protocol, chain, key, stream), (level, round, step))| {
            let was = before.get(&(protocol, chain.clone(), key.clone(), stream.clone()));
            let was = was.map_or("nothing".to_string(), |(l, r, s)| format!("{l}/{r}/{s}"));
            format!("{} {chain} {key} {stream}: now {level}/{round}/{step}, exported {was}", protocol_name(protocol))
        })
        .collect()
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tezos => "tezos",
        Protocol::Cometbft => "cometbft",
    }
}

fn stream_state(protocol: Protocol, algorithm: Algorithm, mark: &StreamMark) -> Result<(&'static str, State), String> {
    let Some(stream) = protocol.streams().iter().copied().find(|s| *s == mark.stream) else {
        return Err(format!("stream {:?} is not one of {}", mark.stream, protocol.streams().join(", ")));
    };
    let (level, digest, field) = match protocol {
        Protocol::Tezos => (mark.level, &mark.payload_digest, "level"),
        Protocol::Cometbft => (mark.height, &mark.sign_bytes_digest, "height"),
    };
    let level = level.ok_or_else(|| format!("{stream}: {field} is missing"))?;
    let payload_digest = match digest {
        Some(text) => hex::decode(text)
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| format!("{stream}: the digest is not 32 bytes of hex"))?,
        None => [0; 32],
    };
    let signature = match &mark.signature {
        Some(text) => Some(
            hex::decode(text)
                .ok()
                .and_then(|bytes| Signature::from_slice(algorithm, &bytes).ok())
                .ok_or_else(|| format!("{stream}: the signature is not a {algorithm} signature in hex"))?,
        ),
        None => None,
    };
    // A signature without the digest it answers could never be handed back: keep neither.
    let signature = signature.filter(|_| payload_digest != [0; 32]);
    let context = match &mark.timestamp {
        Some(text) => Some(hex::decode(text).map_err(|_| format!("{stream}: the timestamp is not hex"))?),
        None => None,
    };
    Ok((stream, State { mark: Mark { level, round: mark.round, step: mark.step }, payload_digest, signature, context }))
}

/// Each wanted state against the store: raised where the document is higher, unchanged where the
/// store is already at or above it. Never lower.
pub async fn plan(
    ratchet: &dyn Ratchet,
    wanted: BTreeMap<StreamId, State>,
) -> Result<Vec<Change>, crate::ratchet::RatchetError> {
    let current: BTreeMap<(String, String, String), Mark> =
        ratchet.entries().await?.into_iter().map(|e| ((e.key, e.chain, e.stream), e.state.mark)).collect();
    Ok(wanted
        .into_iter()
        .map(|(stream, state)| {
            let from = current.get(&(stream.key.clone(), stream.chain.clone(), stream.stream.to_string())).copied();
            let to = from.is_none_or(|from| state.mark > from).then_some(state);
            Change { stream, from, to }
        })
        .collect())
}

/// Writes the raises of `changes`, each under its stream's lock and the ratchet rule (a stream
/// that moved past the document since the plan is left as it is).
pub async fn apply(ratchet: &dyn Ratchet, changes: &[Change]) -> Result<(), crate::ratchet::RatchetError> {
    for change in changes {
        let Some(to) = &change.to else { continue };
        let mut lock = ratchet.lock(&change.stream).await?;
        if lock.current().is_none_or(|current| to.mark > current.mark) {
            lock.commit(to.clone()).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rand_core::RngCore;

    use super::*;
    use crate::ratchet::memory::MemoryRatchet;

    const CHAIN: &str = "NetXdQprcVkpaWU";

    fn baker() -> KnownKey {
        KnownKey {
            name: "baker".into(),
            key_hash: "tz1SodoUsWVe1Yey9eMFbqRUtNpBWfir5NRr".into(),
            algorithm: Algorithm::Ed25519,
            protocol: Protocol::Tezos,
            chains: None,
        }
    }

    fn hashes() -> BTreeMap<String, String> {
        BTreeMap::from([("baker".to_string(), baker().key_hash)])
    }

    async fn fill(ratchet: &MemoryRatchet, marks: &[(&'static str, u64, u64)]) {
        for (stream, level, round) in marks {
            let id = StreamId { key: "baker".into(), chain: CHAIN.into(), stream };
            let mut lock = ratchet.lock(&id).await.unwrap();
            let digest = [*level as u8; 32];
            let state = State {
                mark: Mark { level: *level, round: *round, step: 0 },
                payload_digest: digest,
                signature: Some(Signature::new(Algorithm::Ed25519, [*round as u8; 64])),
                context: None,
            };
            lock.commit(state).await.unwrap();
        }
    }

    async fn marks_of(ratchet: &MemoryRatchet) -> BTreeMap<String, Mark> {
        ratchet.entries().await.unwrap().into_iter().map(|e| (e.stream, e.state.mark)).collect()
    }

    async fn import(into: &MemoryRatchet, document: &Document) -> Vec<Change> {
        let changes = plan(into, wanted(document, &[baker()]).unwrap()).await.unwrap();
        apply(into, &changes).await.unwrap();
        changes
    }

    /// For random stores A and B, importing A's export into B gives the per-stream maximum and
    /// never lowers anything; digests and signatures travel with the marks they belong to.
    #[tokio::test]
    async fn import_is_the_per_stream_maximum() {
        let streams = Protocol::Tezos.streams();
        for _ in 0..200 {
            let random = |n: u64| rand_core::OsRng.next_u64() % n;
            let pick = || -> Vec<(&'static str, u64, u64)> {
                streams.iter().filter(|_| random(3) > 0).map(|s| (*s, 1 + random(5), random(3))).collect()
            };
            let (a, b) = (MemoryRatchet::default(), MemoryRatchet::default());
            fill(&a, &pick()).await;
            fill(&b, &pick()).await;
            let (before_a, before_b) = (marks_of(&a).await, marks_of(&b).await);
            let document = export(&a.entries().await.unwrap(), &hashes(), "test", "now");
            // Through JSON, as it travels.
            let document: Document = serde_json::from_str(&serde_json::to_string(&document).unwrap()).unwrap();
            import(&b, &document).await;
            let after = marks_of(&b).await;
            for stream in streams {
                let expected = before_a.get(*stream).max(before_b.get(*stream));
                assert_eq!(after.get(*stream), expected, "{stream}: A {before_a:?} B {before_b:?}");
            }
            let a_states: BTreeMap<String, State> =
                a.entries().await.unwrap().into_iter().map(|e| (e.stream, e.state)).collect();
            for entry in b.entries().await.unwrap() {
                if before_b.get(&entry.stream) < before_a.get(&entry.stream) {
                    assert_eq!(Some(&entry.state), a_states.get(&entry.stream), "the raised state is A's, whole");
                }
            }
        }
    }

    /// An older document changes nothing; a fence raises every stream to just below it.
    #[tokio::test]
    async fn older_documents_change_nothing_and_fences_hold() {
        let store = MemoryRatchet::default();
        fill(&store, &[("block", 10, 0), ("attestation", 10, 1)]).await;
        let newer = export(&store.entries().await.unwrap(), &hashes(), "test", "now");
        let older = MemoryRatchet::default();
        fill(&older, &[("block", 5, 0), ("attestation", 9, 3)]).await;
        let older = export(&older.entries().await.unwrap(), &hashes(), "test", "now");
        let changes = import(&store, &older).await;
        assert!(changes.iter().all(|c| c.to.is_none()), "{changes:?}");
        assert_eq!(import(&store, &newer).await.iter().filter(|c| c.to.is_some()).count(), 0);

        let mut fenced = older.clone();
        fenced.chains[0].keys[0].fence = Some(100);
        let changes = import(&store, &fenced).await;
        let marks = marks_of(&store).await;
        for stream in Protocol::Tezos.streams() {
            assert_eq!(marks[*stream].level, 99, "{stream}: {changes:?}");
        }
        // Level 100 round 0 is above the fence; level 99 is not, whatever its round.
        let id = StreamId { key: "baker".into(), chain: CHAIN.into(), stream: "block" };
        let at = |level, round| State {
            mark: Mark { level, round, step: 0 },
            payload_digest: [1; 32],
            signature: None,
            context: None,
        };
        let fence = State { mark: marks["block"], ..at(0, 0) };
        assert!(crate::ratchet::check(&id, Some(&fence), &at(99, 7)).is_err());
        assert!(crate::ratchet::check(&id, Some(&fence), &at(100, 0)).is_ok());
    }

    /// One block mark of the baker at level 5 on mainnet.
    fn one_block_mark() -> Document {
        Document {
            interchange_format_version: 1,
            exporter: None,
            exported_at: None,
            chains: vec![ChainMarks {
                protocol: Protocol::Tezos,
                chain_id: CHAIN.into(),
                keys: vec![KeyMarks {
                    key_hash: baker().key_hash,
                    fence: None,
                    marks: vec![StreamMark {
                        stream: "block".into(),
                        level: Some(5),
                        height: None,
                        round: 0,
                        step: 0,
                        payload_digest: None,
                        sign_bytes_digest: None,
                        signature: None,
                        timestamp: None,
                    }],
                }],
            }],
        }
    }

    /// Anything wrong anywhere in a document refuses it whole, naming what.
    #[test]
    fn a_document_with_anything_wrong_is_refused_whole() {
        let good = one_block_mark;
        assert_eq!(wanted(&good(), &[baker()]).unwrap().len(), 1);
        type Edit = Box<dyn Fn(&mut Document)>;
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|d| d.interchange_format_version = 2), "interchangeFormatVersion 2"),
            (Box::new(|d| d.chains[0].keys[0].key_hash = "tz1other".into()), "no configured key is tz1other"),
            (Box::new(|d| d.chains[0].chain_id = "cosmoshub-4".into()), "not a Tezos chain id"),
            (Box::new(|d| d.chains[0].protocol = Protocol::Cometbft), "signs tezos, not cometbft"),
            (Box::new(|d| d.chains[0].keys[0].marks[0].stream = "consensus".into()), "stream \"consensus\""),
            (Box::new(|d| d.chains[0].keys[0].marks[0].level = None), "level is missing"),
            (Box::new(|d| d.chains[0].keys[0].marks[0].payload_digest = Some("abcd".into())), "not 32 bytes"),
            (Box::new(|d| d.chains[0].keys[0].marks[0].signature = Some("zz".into())), "not a ed25519 signature"),
        ];
        for (edit, expected) in cases {
            let mut document = good();
            edit(&mut document);
            let error = wanted(&document, &[baker()]).unwrap_err().to_string();
            assert!(error.contains(expected), "{expected:?} in {error:?}");
        }
        let mut only_mainnet = baker();
        only_mainnet.chains = Some(vec!["NetXnHfVqm9iesp".into()]);
        assert!(wanted(&good(), &[only_mainnet]).unwrap_err().to_string().contains("signs on NetXnHfVqm9iesp"));
    }

    /// Before the keys are known: the version, the protocol, the chains and how many keys.
    #[test]
    fn the_scope_is_checked_before_the_keys_are_known() {
        let mainnet = [CHAIN.to_string()];
        assert!(check_scope(&one_block_mark(), Protocol::Tezos, None, 1).is_ok());
        assert!(check_scope(&one_block_mark(), Protocol::Tezos, Some(&mainnet), 1).is_ok());
        let ghostnet = ["NetXnHfVqm9iesp".to_string()];
        let error = check_scope(&one_block_mark(), Protocol::Tezos, Some(&ghostnet), 1).unwrap_err();
        assert!(error.0.contains("signs on NetXnHfVqm9iesp, not on NetXdQprcVkpaWU"), "{error}");
        let error = check_scope(&one_block_mark(), Protocol::Cometbft, None, 1).unwrap_err();
        assert!(error.0.contains("signs cometbft, not tezos"), "{error}");
        let mut two = one_block_mark();
        let mut other = two.chains[0].keys[0].clone();
        other.key_hash = "tz1other".into();
        two.chains[0].keys.push(other);
        assert!(check_scope(&two, Protocol::Tezos, None, 1).unwrap_err().0.contains("names 2 keys"));
        assert!(check_scope(&two, Protocol::Tezos, None, 2).is_ok());
        let mut newer = one_block_mark();
        newer.interchange_format_version = 2;
        assert!(check_scope(&newer, Protocol::Tezos, None, 1).unwrap_err().0.contains("interchangeFormatVersion 2"));
    }

    /// A key as a signer publishes it can take a fence: every stream just below it.
    #[test]
    fn a_published_key_takes_a_fence() {
        let published = PublishedKey {
            name: "signer".into(),
            key: format!("ed25519:{}", "00".repeat(32)),
            display: baker().key_hash,
        };
        let key = KnownKey::published(&published, Protocol::Tezos, None).unwrap();
        assert_eq!((key.name.as_str(), key.algorithm), ("signer", Algorithm::Ed25519));
        let document = fence(Protocol::Tezos, CHAIN, &[baker().key_hash], 100, "test");
        let wanted = wanted(&document, &[key]).unwrap();
        assert_eq!(wanted.len(), Protocol::Tezos.streams().len());
        assert!(wanted.values().all(|s| s.mark == Mark { level: 99, round: u64::MAX, step: u8::MAX }));
        let unknown = PublishedKey { key: "rsa:00".into(), ..published };
        assert!(KnownKey::published(&unknown, Protocol::Tezos, None).is_none());
    }

    /// A cutover's check: the streams the old signer moved after its export, and only those.
    #[test]
    fn moved_since_names_what_was_signed_after_the_export() {
        let exported = one_block_mark();
        assert!(moved_since(&exported, &exported).is_empty());
        let mut older = one_block_mark();
        older.chains[0].keys[0].marks[0].level = Some(4);
        assert!(moved_since(&exported, &older).is_empty());
        let mut later = one_block_mark();
        later.chains[0].keys[0].marks[0].round = 1;
        let attestation = StreamMark { stream: "attestation".into(), ..later.chains[0].keys[0].marks[0].clone() };
        later.chains[0].keys[0].marks.push(attestation);
        let moved = moved_since(&exported, &later);
        assert_eq!(moved.len(), 2, "{moved:?}");
        assert!(moved[0].contains("attestation: now 5/1/0, exported nothing"), "{moved:?}");
        assert!(moved[1].contains("block: now 5/1/0, exported 5/0/0"), "{moved:?}");
    }
}

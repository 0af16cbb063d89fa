//! What `sigil-signer ratchet show|set|import` does to the configured store: list the marks, set
//! one, or carry marks over from another signer so that a migration never starts from zero.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::config::{RatchetStore, SignerConfig};
use crate::keys::tezos;
use crate::protocol::cometbft::state_file::{self as cometbft_state, StateFormat};
use crate::protocol::{cometbft, tezos as tezos_protocol};
use crate::ratchet::file::FileRatchet;
use crate::ratchet::{Entry, Mark, Ratchet, RatchetError, State, StreamId};

/// The stream names the protocols use (`StreamId::stream` is one of these).
fn streams() -> impl Iterator<Item = &'static str> {
    tezos_protocol::operation::STREAMS.into_iter().chain([cometbft::validator::STREAM])
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Ratchet(#[from] RatchetError),
}

fn invalid(message: impl Into<String>) -> AdminError {
    AdminError::Invalid(message.into())
}

/// The store `config` names. A file store must not be in use by a running signer.
pub async fn open(config: &SignerConfig) -> Result<Arc<dyn Ratchet>, AdminError> {
    let store = config.ratchet.as_ref().map(|r| r.store()).transpose().map_err(|e| invalid(e.to_string()))?;
    match store {
        Some(RatchetStore::File(file)) => Ok(Arc::new(FileRatchet::open(&file.dir)?)),
        #[cfg(feature = "kubernetes")]
        Some(RatchetStore::ConfigMap(cm)) => {
            let mode = crate::ratchet::configmap::Mode::Admin;
            Ok(Arc::new(crate::ratchet::configmap::ConfigMapRatchet::connect(&cm.name, &cm.namespace, mode).await?))
        }
        _ => Err(invalid("the config has no durable ratchet (ratchet.file or ratchet.configMap)")),
    }
}

/// Another marks ConfigMap `name` in the namespace of the configured ConfigMap store, to import
/// from.
#[cfg_attr(not(feature = "kubernetes"), allow(unused_variables))]
pub async fn open_config_map(config: &SignerConfig, name: &str) -> Result<Arc<dyn Ratchet>, AdminError> {
    let store = config.ratchet.as_ref().map(|r| r.store()).transpose().map_err(|e| invalid(e.to_string()))?;
    match store {
        #[cfg(feature = "kubernetes")]
        Some(RatchetStore::ConfigMap(cm)) => {
            let mode = crate::ratchet::configmap::Mode::Admin;
            Ok(Arc::new(crate::ratchet::configmap::ConfigMapRatchet::connect(name, &cm.namespace, mode).await?))
        }
        _ => Err(invalid("--from-sigil-configmap imports into a ConfigMap store (ratchet.configMap)")),
    }
}

/// A stream name as the protocols spell it.
pub fn stream_name(name: &str) -> Result<&'static str, AdminError> {
    streams().find(|s| *s == name).ok_or_else(|| {
        let known: Vec<&str> = streams().collect();
        invalid(format!("unknown stream {name:?}; one of {}", known.join(", ")))
    })
}

pub async fn show(ratchet: &dyn Ratchet) -> Result<Vec<Entry>, AdminError> {
    let mut entries = ratchet.entries().await?;
    entries.sort_by(|a, b| (&a.key, &a.chain, &a.stream).cmp(&(&b.key, &b.chain, &b.stream)));
    Ok(entries)
}

/// What happened to one stream.
#[derive(Debug, PartialEq, Eq)]
pub enum MarkChange {
    Raised { stream: String, from: Option<Mark>, to: Mark },
    Lowered { stream: String, from: Mark, to: Mark },
    Unchanged { stream: String, current: Mark },
}

impl std::fmt::Display for MarkChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MarkChange::Raised { stream, from: Some(from), to } => write!(f, "{stream}: raised from {from} to {to}"),
            MarkChange::Raised { stream, from: None, to } => write!(f, "{stream}: set to {to} (was empty)"),
            MarkChange::Lowered { stream, from, to } => write!(f, "{stream}: LOWERED from {from} to {to} (--force)"),
            MarkChange::Unchanged { stream, current } => {
                write!(f, "{stream}: already at {current}, not below the requested mark; unchanged")
            }
        }
    }
}

/// Moves one stream to `mark`. Raising is always allowed. Lowering needs `force`: a lower mark
/// lets the signer sign again positions it may already have signed, which is exactly a double
/// sign if it did. The position set has no payload, so nothing is signed again at it exactly.
pub async fn set(ratchet: &dyn Ratchet, stream: &StreamId, mark: Mark, force: bool) -> Result<MarkChange, AdminError> {
    let mut lock = ratchet.lock(stream).await?;
    let current = lock.current().map(|s| s.mark);
    let next = State { mark, payload_digest: [0; 32], signature: None, context: None };
    let name = stream.to_string();
    match current {
        Some(current) if current >= mark && !force => Ok(MarkChange::Unchanged { stream: name, current }),
        Some(current) if current > mark => {
            lock.overwrite(next).await?;
            Ok(MarkChange::Lowered { stream: name, from: current, to: mark })
        }
        Some(current) if current == mark => Ok(MarkChange::Unchanged { stream: name, current }),
        from => {
            lock.commit(next).await?;
            Ok(MarkChange::Raised { stream: name, from, to: mark })
        }
    }
}

/// Checks that `chain` is a chain `key` signs for in `config`, so that imported marks land on a
/// stream the signer uses: a typo in `--chain` would otherwise write marks that protect nothing.
/// A CometBFT key's chain must be one of its `cometbft[].chainId`; a Tezos key's chain must be a
/// `Net…` chain id and, when the key's policy lists `chains`, one of them.
pub fn check_chain(config: &SignerConfig, key: &str, chain: &str) -> Result<(), AdminError> {
    if !config.keys.contains_key(key) {
        let known: Vec<&str> = config.keys.keys().map(String::as_str).collect();
        return Err(invalid(format!("no key named {key:?} in the config (configured: {})", known.join(", "))));
    }
    let cometbft: Vec<&str> = config.cometbft.iter().filter(|v| v.key == key).map(|v| v.chain_id.as_str()).collect();
    if !cometbft.is_empty() {
        if cometbft.contains(&chain) {
            return Ok(());
        }
        return Err(invalid(format!(
            "key {key} signs CometBFT for chain {}, not {chain:?}: marks for {chain:?} would protect nothing; \
             pass --chain {}",
            cometbft.join(", "),
            cometbft.join(" or --chain ")
        )));
    }
    if let Some(policy) = config.tezos.as_ref().and_then(|t| t.keys.get(key)) {
        let parsed = tezos::parse_chain_id(chain).map_err(|e| {
            invalid(format!(
                "--chain {chain:?} is not a Tezos chain id ({e}); key {key} signs for Tezos, whose chain ids \
                 look like NetXdQprcVkpaWU (mainnet){}",
                listed(&policy.chains)
            ))
        })?;
        let allowed: Vec<[u8; 4]> = policy.chains.iter().filter_map(|c| tezos::parse_chain_id(c).ok()).collect();
        if allowed.is_empty() || allowed.contains(&parsed) {
            return Ok(());
        }
        return Err(invalid(format!(
            "key {key} may sign on tezos.keys.{key}.chains only, and {chain} is not one of them: marks there \
             would protect nothing{}",
            listed(&policy.chains)
        )));
    }
    Err(invalid(format!(
        "key {key} signs neither CometBFT (cometbft[].key) nor Tezos (tezos.keys) in this config, so it has \
         no marks to import"
    )))
}

/// "; valid: a, b" for a non-empty list.
fn listed(chains: &[String]) -> String {
    if chains.is_empty() {
        String::new()
    } else {
        format!("; valid: {}", chains.join(", "))
    }
}

/// Where marks are imported from.
pub enum Source<'a> {
    /// CometBFT's priv_validator_state.json or tmkms's state file: one consensus mark.
    CometBft(&'a str, StateFormat),
    /// Signatory's `watermark_v2/<chain>.json`, for the key whose hash is `pkh`.
    Signatory { text: &'a str, pkh: &'a str },
    /// Another sigil ratchet (say a file store, when moving to a ConfigMap).
    Sigil(Vec<Entry>),
}

/// The marks a source holds for `key` on `chain`, by stream.
pub fn marks(source: Source<'_>, key: &str, chain: &str) -> Result<BTreeMap<&'static str, Mark>, AdminError> {
    let mut marks = BTreeMap::new();
    match source {
        Source::CometBft(text, format) => {
            marks.insert("consensus", cometbft_state::parse(text, format).map_err(|e| invalid(e.to_string()))?);
        }
        Source::Signatory { text, pkh } => {
            let json: serde_json::Value = serde_json::from_str(text).map_err(|e| invalid(format!("not JSON: {e}")))?;
            let kinds =
                json.get(pkh).and_then(|v| v.as_object()).ok_or_else(|| invalid(format!("no marks for {pkh}")))?;
            for (kind, value) in kinds {
                // attestation_with_dal shares the attestation mark in sigil, as in octez-signer.
                let stream = match kind.as_str() {
                    "block" => "block",
                    "preattestation" | "preendorsement" => "preattestation",
                    "attestation" | "attestation_with_dal" | "endorsement" => "attestation",
                    other => return Err(invalid(format!("unknown Signatory kind {other:?}"))),
                };
                let number =
                    |field: &str| value[field].as_u64().ok_or_else(|| invalid(format!("{kind}.{field} missing")));
                let mark = Mark { level: number("level")?, round: number("round")?, step: 0 };
                let entry = marks.entry(stream).or_insert(mark);
                *entry = (*entry).max(mark);
            }
        }
        Source::Sigil(entries) => {
            for entry in entries.into_iter().filter(|e| e.key == key && e.chain == chain) {
                marks.insert(stream_name(&entry.stream)?, entry.state.mark);
            }
        }
    }
    if marks.is_empty() {
        return Err(invalid(format!("the source has no marks for key {key} on chain {chain}")));
    }
    Ok(marks)
}

/// Raises each stream to the imported mark; never lowers.
pub async fn import(
    ratchet: &dyn Ratchet,
    key: &str,
    chain: &str,
    marks: BTreeMap<&'static str, Mark>,
) -> Result<Vec<MarkChange>, AdminError> {
    let mut outcomes = Vec::new();
    for (stream, mark) in marks {
        let id = StreamId { key: key.into(), chain: chain.into(), stream };
        outcomes.push(set(ratchet, &id, mark, false).await?);
    }
    Ok(outcomes)
}

/// Reads a file for an import, bounded like every input.
pub fn read(path: &Path) -> Result<String, AdminError> {
    let text = crate::files::read_bounded(path, 1024 * 1024)
        .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratchet::memory::MemoryRatchet;

    fn stream(name: &'static str) -> StreamId {
        StreamId { key: "baker".into(), chain: "NetXdQprcVkpaWU".into(), stream: name }
    }

    #[tokio::test]
    async fn set_raises_and_lowers_only_with_force() {
        let ratchet = MemoryRatchet::default();
        let at = |level| Mark { level, round: 0, step: 0 };
        assert!(matches!(
            set(&ratchet, &stream("block"), at(10), false).await.unwrap(),
            MarkChange::Raised { from: None, .. }
        ));
        assert!(matches!(set(&ratchet, &stream("block"), at(5), false).await.unwrap(), MarkChange::Unchanged { .. }));
        let lowered = set(&ratchet, &stream("block"), at(5), true).await.unwrap();
        assert!(lowered.to_string().contains("LOWERED from level 10"), "{lowered}");
        assert_eq!(show(&ratchet).await.unwrap()[0].state.mark, at(5));
    }

    #[tokio::test]
    async fn signatory_marks_import_by_kind() {
        let text = r#"{"tz1SodoUsWVe1Yey9eMFbqRUtNpBWfir5NRr": {
            "block": {"level": 100, "round": 1, "hash": "vh"},
            "attestation": {"level": 99, "round": 0},
            "attestation_with_dal": {"level": 100, "round": 0},
            "preattestation": {"level": 100, "round": 0}}}"#;
        let source = Source::Signatory { text, pkh: "tz1SodoUsWVe1Yey9eMFbqRUtNpBWfir5NRr" };
        let marks = marks(source, "baker", "NetXdQprcVkpaWU").unwrap();
        assert_eq!(marks["block"], Mark { level: 100, round: 1, step: 0 });
        assert_eq!(marks["attestation"], Mark { level: 100, round: 0, step: 0 }, "the DAL mark is the higher one");
        let ratchet = MemoryRatchet::default();
        let outcomes = import(&ratchet, "baker", "NetXdQprcVkpaWU", marks).await.unwrap();
        assert_eq!(outcomes.len(), 3);
        let other = Source::Signatory { text, pkh: "tz1other" };
        assert!(super::marks(other, "baker", "c").unwrap_err().to_string().contains("no marks for tz1other"));
    }

    #[test]
    fn import_chains_must_be_chains_the_key_signs_for() {
        let config = SignerConfig::from_yaml(
            "keys: {v: {local: {secretKey: x}}, b: {local: {secretKey: x}}, t: {local: {secretKey: x}}, \
             a: {local: {secretKey: x}}}\n\
             ratchet: {memory: {}}\n\
             cometbft: [{connect: 'tcp://127.0.0.1:1', chainId: c1, key: v}, {connect: 'tcp://127.0.0.1:2', chainId: c2, key: v}]\n\
             tezos: {keys: {b: {allow: [block], chains: [NetXdQprcVkpaWU]}, t: {allow: [block]}}}\n\
             atto: {key: a, capabilities: [VOTE], tokenEnv: T}\n",
        )
        .unwrap();
        let error = |key: &str, chain: &str| check_chain(&config, key, chain).unwrap_err().to_string();
        check_chain(&config, "v", "c1").unwrap();
        check_chain(&config, "v", "c2").unwrap();
        let typo = error("v", "c3");
        assert!(
            typo.contains("CometBFT for chain c1, c2, not \"c3\"") && typo.contains("--chain c1 or --chain c2"),
            "{typo}"
        );
        check_chain(&config, "b", "NetXdQprcVkpaWU").unwrap();
        let other = error("b", "NetXnHfVqm9iesp");
        assert!(other.contains("tezos.keys.b.chains") && other.contains("valid: NetXdQprcVkpaWU"), "{other}");
        let garbage = error("b", "mainnet");
        assert!(garbage.contains("\"mainnet\" is not a Tezos chain id"), "{garbage}");
        check_chain(&config, "t", "NetXnHfVqm9iesp").unwrap();
        assert!(error("t", "NetXdQprcVkpaWV").contains("not a Tezos chain id"));
        assert!(error("a", "LIVE").contains("signs neither CometBFT"));
        assert!(error("nope", "c1").contains("no key named \"nope\" in the config (configured: a, b, t, v)"));
    }
}

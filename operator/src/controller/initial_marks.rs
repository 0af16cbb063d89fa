//! `spec.ratchet.initialMarks`: a key that signed before, under another signer, starts from that
//! signer's marks. The operator never holds the key, so it learns which key the document must
//! name only when a signer reports it; the document is checked as far as it can be before that
//! (readable, this protocol, these chains, no more keys than the RemoteSigner has) and the
//! RemoteSigner is not Ready until it is, so labelled pods are refused at admission. When the
//! signer reports its key, the marks are imported (raised, never lowered, with the store's own
//! conditional writes) before the key is cleared: the signer signs nothing before they are in.
//!
//! The store records what was imported ([`INITIAL_MARKS_ANNOTATION`]: a digest of the document
//! and the keys), so a reconcile imports again only when either changes, and an import of the
//! same or an older document changes nothing anyway.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client};
use sha2::{Digest, Sha256};
use sigil_signer::interchange::{self, Document, KnownKey};
use sigil_signer::ratchet::configmap::{ConfigMapRatchet, Mode};
use sigil_signer::ratchet::PublishedKey;

use super::desired;
use super::reconcile::Error;
use super::status::{failed, ok, Outcome};
use crate::api::{InitialMarksSpec, Protocol, RemoteSigner};

/// On the marks store: the digest of the initial marks last imported, with the keys they were
/// imported for.
pub const INITIAL_MARKS_ANNOTATION: &str = "sigil.dev/initial-marks";
/// The largest document read (a ConfigMap holds at most 1 MiB).
const MAX_DOCUMENT: usize = 1 << 20;

/// The initial marks as named by the spec, checked as far as they can be without the key.
pub struct InitialMarks {
    /// What they are, for people: `ConfigMap old-marks key marks.json`, `a fence at level 5`.
    pub source: String,
    document: Option<Document>,
    fence: Option<(u64, String)>,
    digest: Sha256,
}

/// What the spec names: `None` when it names nothing, else the marks or why they cannot be used.
pub async fn read(
    rs: &RemoteSigner,
    client: &Client,
    namespace: &str,
) -> Result<Option<Result<InitialMarks, Outcome>>, kube::Error> {
    let Some(spec) = rs.spec.ratchet.as_ref().and_then(|r| r.initial_marks.as_ref()) else { return Ok(None) };
    Ok(Some(read_spec(rs, spec, client, namespace).await?))
}

async fn read_spec(
    rs: &RemoteSigner,
    spec: &InitialMarksSpec,
    client: &Client,
    namespace: &str,
) -> Result<Result<InitialMarks, Outcome>, kube::Error> {
    let protocol = protocol(rs);
    let chains = chains(rs);
    if let Some(fence) = &spec.fence {
        let chain = fence.chain_id.clone().or_else(|| chains.as_ref().filter(|c| c.len() == 1).map(|c| c[0].clone()));
        let Some(chain) = chain else {
            return Ok(Err(failed("InitialMarksInvalid", "spec.ratchet.initialMarks.fence: set chainId")));
        };
        let level = u64::try_from(fence.level).unwrap_or(0).max(1);
        let source = format!("a fence at level {level} on chain {chain}");
        // A document for no key yet: checks the chain against the protocol and spec.
        if let Err(error) = interchange::check_scope(
            &interchange::fence(protocol, &chain, &[], level, ""),
            protocol,
            chains.as_deref(),
            0,
        ) {
            return Ok(Err(failed("InitialMarksInvalid", format!("{source}: {error}"))));
        }
        let digest = Sha256::new().chain_update(format!("fence {chain} {level}"));
        return Ok(Ok(InitialMarks { source, document: None, fence: Some((level, chain)), digest }));
    }
    let (source, text) = if let Some(reference) = &spec.config_map_key_ref {
        let source = format!("ConfigMap {} key {}", reference.name, reference.key);
        let object = Api::<ConfigMap>::namespaced(client.clone(), namespace).get_opt(&reference.name).await?;
        let text = object.as_ref().and_then(|o| o.data.as_ref()?.get(&reference.key).cloned());
        (source, object.map(|_| text))
    } else if let Some(reference) = &spec.secret_key_ref {
        let source = format!("Secret {} key {}", reference.name, reference.key);
        let object = Api::<Secret>::namespaced(client.clone(), namespace).get_opt(&reference.name).await?;
        let text = object
            .as_ref()
            .and_then(|o| o.data.as_ref()?.get(&reference.key).map(|b| String::from_utf8_lossy(&b.0).into_owned()));
        (source, object.map(|_| text))
    } else {
        return Ok(Err(failed(
            "InitialMarksInvalid",
            "spec.ratchet.initialMarks: set exactly one of configMapKeyRef, secretKeyRef, fence",
        )));
    };
    let text = match text {
        None => {
            return Ok(Err(failed(
                "InitialMarksNotFound",
                format!(
                "{source} (spec.ratchet.initialMarks) does not exist in namespace {namespace}: put the old signer's \
                     marks there (`sigil-signer ratchet convert` or `ratchet export`, docs/guides/migrating-marks.md)"
            ),
            )))
        }
        Some(None) => {
            return Ok(Err(failed(
                "InitialMarksNotFound",
                format!("{source} (spec.ratchet.initialMarks): no such key"),
            )))
        }
        Some(Some(text)) => text,
    };
    if text.len() > MAX_DOCUMENT {
        return Ok(Err(failed("InitialMarksInvalid", format!("{source}: larger than {MAX_DOCUMENT} bytes"))));
    }
    let max_keys = 1 + usize::from(desired::companion_key_secret(rs).is_some());
    let checked = interchange::parse(&text)
        .and_then(|d| interchange::check_scope(&d, protocol, chains.as_deref(), max_keys).map(|()| d));
    match checked {
        Err(error) => Ok(Err(failed("InitialMarksInvalid", format!("{source}: {error}; nothing imported")))),
        Ok(document) => {
            let digest = Sha256::new().chain_update(text.as_bytes());
            Ok(Ok(InitialMarks { source, document: Some(document), fence: None, digest }))
        }
    }
}

fn protocol(rs: &RemoteSigner) -> interchange::Protocol {
    match rs.spec.protocol {
        Protocol::CometBft => interchange::Protocol::Cometbft,
        _ => interchange::Protocol::Tezos,
    }
}

/// The chains the RemoteSigner's keys sign on; `None`: any (Tezos without spec.tezos.chains).
fn chains(rs: &RemoteSigner) -> Option<Vec<String>> {
    match rs.spec.protocol {
        Protocol::CometBft => Some(rs.spec.cometbft.iter().map(|c| c.chain_id.clone()).collect()),
        _ => rs.spec.tezos.as_ref().map(|t| t.chains.clone()).filter(|c| !c.is_empty()),
    }
}

impl InitialMarks {
    /// What the store records once these marks are imported for `keys`.
    pub fn digest(&self, keys: &[&PublishedKey]) -> String {
        let mut digest = self.digest.clone();
        for key in keys {
            digest.update(format!("\n{}={}", key.name, key.key));
        }
        format!("sha256:{}", hex::encode(digest.finalize()))
    }

    /// Raises the store's marks to these for the signer's `keys`: `Ok(what changed)`, or
    /// `Err(why not)` with nothing written when the document does not fit the keys.
    pub async fn import(
        &self,
        rs: &RemoteSigner,
        client: &Client,
        namespace: &str,
        store: &str,
        keys: &[&PublishedKey],
    ) -> Result<Result<Vec<String>, String>, Error> {
        let protocol = protocol(rs);
        let known: Option<Vec<KnownKey>> = keys.iter().map(|k| KnownKey::published(k, protocol, chains(rs))).collect();
        let Some(known) = known else { return Ok(Err("the signer reported a key of an unknown algorithm".into())) };
        let fenced;
        let document = match (&self.document, &self.fence) {
            (Some(document), _) => document,
            (None, Some((level, chain))) => {
                let hashes: Vec<String> = known.iter().map(|k| k.key_hash.clone()).collect();
                fenced = interchange::fence(protocol, chain, &hashes, *level, "sigil-operator");
                &fenced
            }
            (None, None) => return Ok(Ok(Vec::new())),
        };
        let wanted = match interchange::wanted(document, &known) {
            Ok(wanted) => wanted,
            Err(error) => return Ok(Err(format!("{}: {error}", self.source))),
        };
        let ratchet = ConfigMapRatchet::with_client(client.clone(), store, namespace, Mode::Admin);
        let unavailable = |e| Error::Invalid(format!("marks store {namespace}/{store}: {e}"));
        let changes = interchange::plan(&ratchet, wanted).await.map_err(unavailable)?;
        interchange::apply(&ratchet, &changes).await.map_err(unavailable)?;
        Ok(Ok(changes.iter().filter(|c| c.to.is_some()).map(|c| c.to_string()).collect()))
    }
}

/// The InitialMarks condition when the marks are in the store.
pub fn imported(marks: &InitialMarks, store: &str, changes: Option<&[String]>) -> Outcome {
    match changes {
        Some([]) => ok("Imported", format!("{}: ConfigMap {store} was already at or above every mark", marks.source)),
        Some(changes) => {
            ok("Imported", format!("{} imported into ConfigMap {store}: {}", marks.source, changes.join("; ")))
        }
        None => ok("Imported", format!("{} is in ConfigMap {store}", marks.source)),
    }
}

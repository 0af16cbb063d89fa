//! Converters from the marks other signers keep into the interchange format, so that a migration
//! to sigil starts from the old signer's marks. Each reads the old signer's own layout (cited at
//! each function) and keeps only what is safe to carry: the positions. Digests and signatures of
//! other signers hash other bytes (BLAKE2b of the request, base58 signatures), so none is carried:
//! nothing at exactly an imported position is signed again, the next position is.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Document, Grouped, Protocol, StreamMark};
use crate::protocol::cometbft::state_file::{self, StateFormat};
use crate::ratchet::Mark;

/// Why a file cannot be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConvertError(pub String);

fn fail<T>(message: impl Into<String>) -> Result<T, ConvertError> {
    Err(ConvertError(message.into()))
}

/// Marks gathered from a source: the highest per protocol, chain, key and stream.
#[derive(Default)]
pub struct Marks(BTreeMap<(Protocol, String, String, &'static str), Mark>);

impl Marks {
    fn raise(&mut self, protocol: Protocol, chain: &str, key_hash: &str, stream: &'static str, mark: Mark) {
        let slot = self.0.entry((protocol, chain.to_string(), key_hash.to_string(), stream)).or_insert(mark);
        *slot = (*slot).max(mark);
    }

    /// The marks as a document written by `exporter`.
    pub fn document(self, exporter: &str) -> Result<Document, ConvertError> {
        if self.0.is_empty() {
            return fail("the source holds no marks");
        }
        let mut grouped = Grouped::new();
        for ((protocol, chain, key_hash, stream), mark) in self.0 {
            let mark = StreamMark::at(protocol, stream, mark);
            grouped.entry((protocol, chain)).or_default().entry(key_hash).or_default().push(mark);
        }
        Ok(Document::new(grouped, exporter, None))
    }
}

/// A Tezos signer's name for a kind of mark, as sigil's stream. `attestation_with_dal` shares the
/// attestation mark (as in octez-signer); the pre-Tenderbake names are the same positions.
fn tezos_stream(kind: &str) -> Result<&'static str, ConvertError> {
    match kind.to_ascii_lowercase().as_str() {
        "block" | "baking" => Ok("block"),
        "preattestation" | "preendorsement" => Ok("preattestation"),
        "attestation" | "attestation_with_dal" | "endorsement" => Ok("attestation"),
        other => fail(format!("unknown kind {other:?}")),
    }
}

/// A non-negative integer, written as a JSON number or a string (both appear).
fn number(value: &Value, what: &str) -> Result<u64, ConvertError> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .map_or_else(|| fail(format!("{what}: {value} is not a non-negative integer")), Ok)
}

fn json(text: &str) -> Result<Value, ConvertError> {
    serde_json::from_str(text).map_err(|e| ConvertError(format!("not JSON: {e}")))
}

fn tezos_mark(value: &Value, what: &str) -> Result<Mark, ConvertError> {
    Ok(Mark {
        level: number(&value["level"], &format!("{what}.level"))?,
        round: if value["round"].is_null() { 0 } else { number(&value["round"], &format!("{what}.round"))? },
        step: 0,
    })
}

/// octez-signer's high-watermark files (`--check-high-watermark`): `<kind>_high_watermarks` in its
/// base directory, each `{ "<chain>": { "<pkh>": {"level", "round", "hash", "signature"} } }`
/// (<https://gitlab.com/tezos/tezos/-/blob/master/src/bin_signer/handler.ml>, `High_watermark`).
/// `files` are (file name, contents).
pub fn octez(files: &[(String, String)], marks: &mut Marks) -> Result<(), ConvertError> {
    for (name, text) in files {
        let kind = name
            .strip_suffix("_high_watermarks")
            .ok_or_else(|| ConvertError(format!("{name}: octez-signer's files are <kind>_high_watermarks")))?;
        let stream = tezos_stream(kind).map_err(|e| ConvertError(format!("{name}: {e}")))?;
        let Value::Object(chains) = json(text).map_err(|e| ConvertError(format!("{name}: {e}")))? else {
            return fail(format!("{name}: expected an object of chains"));
        };
        for (chain, keys) in chains {
            let Value::Object(keys) = keys else { return fail(format!("{name}: {chain}: expected an object of keys")) };
            for (pkh, value) in keys {
                let mark = tezos_mark(&value, &format!("{name}: {chain}.{pkh}"))?;
                marks.raise(Protocol::Tezos, &chain, &pkh, stream, mark);
            }
        }
    }
    Ok(())
}

/// Signatory's file watermarks, `<base_dir>/watermark_v2/<chain>.json`:
/// `{ "<pkh>": { "<kind>": {"level", "round", "hash"} } }`
/// (<https://github.com/ecadlabs/signatory/blob/main/pkg/signatory/watermark/file.go>).
pub fn signatory_file(chain: &str, text: &str, marks: &mut Marks) -> Result<(), ConvertError> {
    let Value::Object(keys) = json(text)? else { return fail("expected an object of keys") };
    for (pkh, kinds) in keys {
        let Value::Object(kinds) = kinds else { return fail(format!("{pkh}: expected an object of kinds")) };
        for (kind, value) in kinds {
            let mark = tezos_mark(&value, &format!("{pkh}.{kind}"))?;
            marks.raise(Protocol::Tezos, chain, &pkh, tezos_stream(&kind)?, mark);
        }
    }
    Ok(())
}

/// A CometBFT validator's state file: CometBFT's `priv_validator_state.json`, Horcrux's sign state
/// (the same fields) or tmkms's consensus state, for `key_hash` (the validator address) on `chain`.
pub fn cometbft_state(
    text: &str,
    format: StateFormat,
    chain: &str,
    key_hash: &str,
    marks: &mut Marks,
) -> Result<(), ConvertError> {
    let mark = state_file::parse(text, format).map_err(|e| ConvertError(e.to_string()))?;
    marks.raise(Protocol::Cometbft, chain, &key_hash.to_ascii_uppercase(), "consensus", mark);
    Ok(())
}

/// The items of an `aws dynamodb scan --output json`: `{"Items": [{"attr": {"S"|"N": "…"}}]}`.
fn dynamodb_items(text: &str) -> Result<Vec<serde_json::Map<String, Value>>, ConvertError> {
    let items = json(text)?.get_mut("Items").map(Value::take);
    let Some(Value::Array(items)) = items else {
        return fail("expected the JSON of `aws dynamodb scan` ({\"Items\": […]})");
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::Object(item) => Ok(item),
            other => fail(format!("an item is not an object: {other}")),
        })
        .collect()
}

/// An attribute's value, whatever its DynamoDB type tag.
fn attribute<'a>(item: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    item.get(name)?.as_object()?.values().next()
}

/// tacoinfra's remote-signer, DynamoDB chain ratchet: one item per kind, chain and key, hash key
/// `sig_type` = `{Baking|Preendorsement|Endorsement}_<chain>_<pkh>` (`type` in older versions),
/// with `lastblock` and `lastround`
/// (<https://github.com/tacoinfra/remote-signer/blob/master/tezos_signer/ddbchainratchet.py>).
pub fn tacoinfra(text: &str, marks: &mut Marks) -> Result<(), ConvertError> {
    for item in dynamodb_items(text)? {
        let Some(Value::String(id)) = attribute(&item, "sig_type").or_else(|| attribute(&item, "type")) else {
            return fail(format!("an item has no sig_type: {}", Value::Object(item)));
        };
        let mut parts = id.splitn(3, '_');
        let (Some(kind), Some(chain), Some(pkh)) = (parts.next(), parts.next(), parts.next()) else {
            return fail(format!("sig_type {id:?} is not <kind>_<chain>_<pkh>"));
        };
        let level = number(attribute(&item, "lastblock").unwrap_or(&Value::Null), &format!("{id}.lastblock"))?;
        let round = attribute(&item, "lastround").map_or(Ok(0), |r| number(r, &format!("{id}.lastround")))?;
        marks.raise(Protocol::Tezos, chain, pkh, tezos_stream(kind)?, Mark { level, round, step: 0 });
    }
    Ok(())
}

/// Signatory's DynamoDB watermarks: hash key `idx` = `<chain>/<pkh>`, range key `request` = the
/// kind, `lvl` and `round`
/// (<https://github.com/ecadlabs/signatory/blob/main/pkg/signatory/watermark/aws.go>).
pub fn signatory_dynamodb(text: &str, marks: &mut Marks) -> Result<(), ConvertError> {
    for item in dynamodb_items(text)? {
        let (Some(Value::String(idx)), Some(Value::String(kind))) =
            (attribute(&item, "idx"), attribute(&item, "request"))
        else {
            return fail(format!("an item has no idx or request: {}", Value::Object(item)));
        };
        let Some((chain, pkh)) = idx.split_once('/') else { return fail(format!("idx {idx:?} is not <chain>/<pkh>")) };
        let level = number(attribute(&item, "lvl").unwrap_or(&Value::Null), &format!("{idx}.lvl"))?;
        let round = attribute(&item, "round").map_or(Ok(0), |r| number(r, &format!("{idx}.round")))?;
        marks.raise(Protocol::Tezos, chain, pkh, tezos_stream(kind)?, Mark { level, round, step: 0 });
    }
    Ok(())
}

/// Signatory's Firestore watermarks, documents `<collection>/<chain>/<kind>/<pkh>` with `lvl` and
/// `round` (<https://github.com/ecadlabs/signatory/blob/main/pkg/signatory/watermark/gcp.go>),
/// given as a JSON array of `{"path": "watermark/<chain>/<kind>/<pkh>", "lvl": …, "round": …}`.
pub fn signatory_firestore(text: &str, marks: &mut Marks) -> Result<(), ConvertError> {
    let Value::Array(documents) = json(text)? else { return fail("expected a JSON array of documents") };
    for document in documents {
        let Some(path) = document["path"].as_str() else { return fail(format!("a document has no path: {document}")) };
        let parts: Vec<&str> = path.rsplitn(4, '/').collect();
        let [pkh, kind, chain, _collection] = parts.as_slice() else {
            return fail(format!("path {path:?} is not <collection>/<chain>/<kind>/<pkh>"));
        };
        let level = number(&document["lvl"], &format!("{path}.lvl"))?;
        let round = if document["round"].is_null() { 0 } else { number(&document["round"], &format!("{path}.round"))? };
        marks.raise(Protocol::Tezos, chain, pkh, tezos_stream(kind)?, Mark { level, round, step: 0 });
    }
    Ok(())
}

/// The Tezio signer's `high_water_marks` (its `config.yaml`): `level` and `round` maps keyed by
/// magic byte (`0x11` block, `0x12` preattestation, `0x13` attestation), for every key and chain
/// at once (<https://github.com/prof-groff/tezio/blob/main/signer/config.yaml>), so the chain and
/// the key are given.
pub fn tezio(text: &str, chain: &str, pkh: &str, marks: &mut Marks) -> Result<(), ConvertError> {
    let config: yaml_serde::Value = yaml_serde::from_str(text).map_err(|e| ConvertError(format!("not YAML: {e}")))?;
    let section = &config["high_water_marks"];
    let magic = |key: &yaml_serde::Value| -> Option<u64> {
        match key {
            yaml_serde::Value::Number(n) => n.as_u64(),
            yaml_serde::Value::String(s) => u64::from_str_radix(s.trim_start_matches("0x"), 16).ok(),
            _ => None,
        }
    };
    let by_magic = |field: &str| -> BTreeMap<u64, u64> {
        let Some(map) = section[field].as_mapping() else { return BTreeMap::new() };
        map.iter().filter_map(|(k, v)| Some((magic(k)?, v.as_u64()?))).collect()
    };
    let (levels, rounds) = (by_magic("level"), by_magic("round"));
    if levels.is_empty() {
        return fail("no high_water_marks.level in the Tezio config");
    }
    for (byte, level) in levels {
        let stream = match byte {
            0x11 => "block",
            0x12 => "preattestation",
            0x13 => "attestation",
            other => return fail(format!("high_water_marks.level: magic byte {other:#04x} is not 0x11, 0x12 or 0x13")),
        };
        let round = rounds.get(&byte).copied().unwrap_or(0);
        marks.raise(Protocol::Tezos, chain, pkh, stream, Mark { level, round, step: 0 });
    }
    Ok(())
}

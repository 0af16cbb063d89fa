//! CometBFT's key forms: `priv_validator_key.json` (CometBFT's `FilePVKey`,
//! <https://github.com/cometbft/cometbft/blob/v0.38.25/privval/file.go>) and tmkms softsign key
//! files (<https://github.com/iqlusioninc/tmkms/blob/v0.15.0/README.md>) in, the validator
//! address and the bech32 consensus forms out.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::keys::{Algorithm, KeyError, PublicKey, SecretKey};

/// Whether `text` is a CometBFT or tmkms key file (JSON, or base64 of a 32-byte seed).
pub fn is_key_text(text: &str) -> bool {
    let text = text.trim();
    text.starts_with('{') || (text.len() == 44 && text.ends_with('='))
}

#[derive(Deserialize)]
struct KeyFile {
    pub_key: TypedValue,
    priv_key: TypedValue,
}

#[derive(Deserialize)]
struct TypedValue {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

/// Why a CometBFT or tmkms key file is not a key sigil can use.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("not base64")]
    NotBase64,
    #[error("not a priv_validator_key.json: {0}")]
    NotKeyFile(serde_json::Error),
    #[error("key type {0:?} is not supported; sigil signs with Ed25519 and BLS12-381 validator keys")]
    Unsupported(String),
    #[error("{0} is not base64")]
    FieldNotBase64(&'static str),
    #[error("priv_key.value has {0} bytes, expected {1}")]
    Length(usize, &'static str),
    #[error("the public key in the file does not match its private key")]
    Mismatch,
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// A `priv_validator_key.json` (seed ‖ public key, base64) or a tmkms softsign key (base64 seed).
pub fn parse_secret_key(text: &str) -> Result<SecretKey, KeyFileError> {
    let text = text.trim();
    if !text.starts_with('{') {
        let seed = Zeroizing::new(BASE64.decode(text).map_err(|_| KeyFileError::NotBase64)?);
        return Ok(SecretKey::from_bytes(Algorithm::Ed25519, &seed)?);
    }
    let file: KeyFile = serde_json::from_str(text).map_err(KeyFileError::NotKeyFile)?;
    let bytes = Zeroizing::new(
        BASE64.decode(&file.priv_key.value).map_err(|_| KeyFileError::FieldNotBase64("priv_key.value"))?,
    );
    let public = BASE64.decode(&file.pub_key.value).map_err(|_| KeyFileError::FieldNotBase64("pub_key.value"))?;
    let key = match file.priv_key.kind.as_str() {
        // The seed, then the public key.
        "tendermint/PrivKeyEd25519" => {
            if bytes.len() != 64 {
                return Err(KeyFileError::Length(bytes.len(), "64 (seed and public key)"));
            }
            let key = SecretKey::from_bytes(Algorithm::Ed25519, &bytes[..32])?;
            if key.public_key().as_bytes() != &bytes[32..] {
                return Err(KeyFileError::Mismatch);
            }
            key
        }
        // blst's serialization: the scalar, big-endian (sigil's BLS keys are little-endian, as
        // Tezos writes them).
        "cometbft/PrivKeyBls12_381" => {
            let mut scalar: Zeroizing<[u8; 32]> = Zeroizing::new(
                bytes.as_slice().try_into().map_err(|_| KeyFileError::Length(bytes.len(), "32 (a scalar)"))?,
            );
            scalar.reverse();
            SecretKey::from_bytes(Algorithm::Bls12_381, &*scalar)?
        }
        other => return Err(KeyFileError::Unsupported(other.to_string())),
    };
    if public_key_bytes(&key.public_key()) != public {
        return Err(KeyFileError::Mismatch);
    }
    Ok(key)
}

/// A public key as CometBFT encodes it (`PubKey.Bytes()`): Ed25519's 32 bytes, BLS12-381's
/// uncompressed 96; empty for the curves CometBFT has no validator keys of here.
pub fn public_key_bytes(public_key: &PublicKey) -> Vec<u8> {
    match public_key.algorithm() {
        Algorithm::Ed25519 => public_key.as_bytes().to_vec(),
        Algorithm::Bls12_381 => public_key
            .as_bytes()
            .try_into()
            .ok()
            .and_then(crate::keys::bls::uncompressed)
            .map_or_else(Vec::new, |bytes| bytes.to_vec()),
        Algorithm::Secp256k1 | Algorithm::P256 => Vec::new(),
    }
}

/// The validator address: the first 20 bytes of SHA-256 of the key's CometBFT bytes (Ed25519,
/// BLS12-381).
pub fn address(public_key: &PublicKey) -> Option<[u8; 20]> {
    let bytes = public_key_bytes(public_key);
    (!bytes.is_empty()).then(|| {
        let digest = Sha256::digest(&bytes);
        let mut address = [0u8; 20];
        address.copy_from_slice(&digest[..20]);
        address
    })
}

/// Why a key has no bech32 forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Bech32Error {
    #[error("only Ed25519 consensus keys have bech32 forms here")]
    NotEd25519,
    #[error("not a bech32 prefix: {0}")]
    Prefix(String),
    #[error("{0}")]
    Encode(String),
}

/// `<prefix>valcons1…` and `<prefix>valconspub1…` (Amino-prefixed key), as Cosmos SDK prints them.
pub fn bech32_forms(public_key: &PublicKey, prefix: &str) -> Result<(String, String), Bech32Error> {
    if public_key.algorithm() != Algorithm::Ed25519 {
        return Err(Bech32Error::NotEd25519);
    }
    let address = address(public_key).ok_or(Bech32Error::NotEd25519)?;
    let hrp =
        |suffix: &str| bech32::Hrp::parse(&format!("{prefix}{suffix}")).map_err(|e| Bech32Error::Prefix(e.to_string()));
    let encode =
        |hrp, data: &[u8]| bech32::encode::<bech32::Bech32>(hrp, data).map_err(|e| Bech32Error::Encode(e.to_string()));
    let mut amino = vec![0x16, 0x24, 0xde, 0x64, 0x20];
    amino.extend_from_slice(public_key.as_bytes());
    Ok((encode(hrp("valcons")?, &address)?, encode(hrp("valconspub")?, &amino)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `priv_validator_key.json` in the layout `cometbft init` writes, for the seed [1; 32].
    const PRIV_VALIDATOR_KEY: &str = r#"{
  "address": "",
  "pub_key": {"type": "tendermint/PubKeyEd25519", "value": "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w="},
  "priv_key": {"type": "tendermint/PrivKeyEd25519", "value": "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQGKiOPddAnxlf1S2y08ul1yymcJvx2UEhvzdIgBtA9vXA=="}
}"#;

    /// What `cometbft init --key-type bls12_381` wrote (v1.0.1 built with the bls12381 tag).
    const BLS_PRIV_VALIDATOR_KEY: &str = r#"{
  "address": "DBDC39937D33ED0D90D83E5F77E822608B7388E8",
  "pub_key": {
    "type": "cometbft/PubKeyBls12_381",
    "value": "BJO2kjRAYMAvzE7oN6JLD0hUy8c5Dp1uJr4lAkQEj/mk46a0p+hRgDBrKwr0NpJaCH3BhgpZEjQK0SU3HTDG/NPjrNyh3fnko6lrcWR454iiAs42/GhMWmWNLHQr2kne"
  },
  "priv_key": {"type": "cometbft/PrivKeyBls12_381", "value": "SN3J8yImJ2vwktXkX0e6ORvsMG1HKJDVLyh9ucXVq20="}
}"#;

    #[test]
    fn reads_cometbft_bls_key_files() {
        let key = parse_secret_key(BLS_PRIV_VALIDATOR_KEY).unwrap();
        assert_eq!(key.algorithm(), Algorithm::Bls12_381);
        let public = key.public_key();
        assert_eq!(hex::encode_upper(address(&public).unwrap()), "DBDC39937D33ED0D90D83E5F77E822608B7388E8");
        assert_eq!(public_key_bytes(&public).len(), 96);
        assert!(bech32_forms(&public, "cosmos").is_err(), "no amino form for BLS here");
        let other_public = BLS_PRIV_VALIDATOR_KEY.replace("BJO2", "BJO3");
        assert!(matches!(
            parse_secret_key(&other_public),
            Err(KeyFileError::Mismatch | KeyFileError::FieldNotBase64(_))
        ));
        let short = BLS_PRIV_VALIDATOR_KEY.replace("SN3J8yImJ2vwktXkX0e6ORvsMG1HKJDVLyh9ucXVq20=", "SN3J");
        assert!(matches!(parse_secret_key(&short), Err(KeyFileError::Length(3, _))));
    }

    #[test]
    fn reads_cometbft_and_tmkms_files() {
        let key = parse_secret_key(PRIV_VALIDATOR_KEY).unwrap();
        assert_eq!(*key.to_bytes(), [1u8; 32]);
        let tmkms = parse_secret_key(&BASE64.encode([1u8; 32])).unwrap();
        assert_eq!(tmkms.public_key(), key.public_key());
        assert!(is_key_text(PRIV_VALIDATOR_KEY) && is_key_text(&BASE64.encode([1u8; 32])));
        assert!(!is_key_text(&hex::encode([1u8; 32])));
        let tampered = PRIV_VALIDATOR_KEY.replace("iojj3XQJ", "jojj3XQJ");
        assert!(parse_secret_key(&tampered).unwrap_err().to_string().contains("does not match"));
        let secp = PRIV_VALIDATOR_KEY.replace("PrivKeyEd25519", "PrivKeySecp256k1");
        assert!(parse_secret_key(&secp).unwrap_err().to_string().contains("not supported"));
    }

    #[test]
    fn address_and_bech32() {
        // The zero seed's public key and its CometBFT address (SHA-256, first 20 bytes).
        let key = SecretKey::from_bytes(Algorithm::Ed25519, &[0; 32]).unwrap().public_key();
        let expected = &Sha256::digest(key.as_bytes())[..20];
        assert_eq!(address(&key).unwrap().as_slice(), expected);
        let (valcons, valconspub) = bech32_forms(&key, "cosmos").unwrap();
        assert!(valcons.starts_with("cosmosvalcons1"), "{valcons}");
        assert!(valconspub.starts_with("cosmosvalconspub1zcjduepq"), "{valconspub}");
        let (hrp, data) = bech32::decode(&valconspub).unwrap();
        assert_eq!(hrp.as_str(), "cosmosvalconspub");
        assert_eq!(&data[5..], key.as_bytes());
    }
}

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
    #[error("key type {0:?} is not supported; sigil signs with Ed25519 keys")]
    Unsupported(String),
    #[error("{0} is not base64")]
    FieldNotBase64(&'static str),
    #[error("priv_key.value has {0} bytes, expected 64 (seed and public key)")]
    Length(usize),
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
    if file.priv_key.kind != "tendermint/PrivKeyEd25519" {
        return Err(KeyFileError::Unsupported(file.priv_key.kind));
    }
    let bytes = Zeroizing::new(
        BASE64.decode(&file.priv_key.value).map_err(|_| KeyFileError::FieldNotBase64("priv_key.value"))?,
    );
    if bytes.len() != 64 {
        return Err(KeyFileError::Length(bytes.len()));
    }
    let key = SecretKey::from_bytes(Algorithm::Ed25519, &bytes[..32])?;
    let public = BASE64.decode(&file.pub_key.value).map_err(|_| KeyFileError::FieldNotBase64("pub_key.value"))?;
    if key.public_key().as_bytes() != &bytes[32..] || key.public_key().as_bytes() != public.as_slice() {
        return Err(KeyFileError::Mismatch);
    }
    Ok(key)
}

/// The validator address: the first 20 bytes of SHA-256 of an Ed25519 public key.
pub fn address(public_key: &PublicKey) -> Option<[u8; 20]> {
    (public_key.algorithm() == Algorithm::Ed25519).then(|| {
        let digest = Sha256::digest(public_key.as_bytes());
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

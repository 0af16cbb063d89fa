//! Key types: the four curves sigil signs with, and the raw signature forms the chains use.
//!
//! Ed25519 signs the message itself (RFC 8032, no prehash). ECDSA keys (secp256k1, P-256) sign a
//! 32-byte digest that the protocol front computed, because every chain picks its own hash
//! (Tezos BLAKE2b-256, CometBFT SHA-256). ECDSA signatures are raw `r ‖ s` with low S.
//! BLS12-381 (Tezos tz4, only from a local key: no HSM or cloud KMS signs it) signs the message
//! itself under one of the schemes in [`bls`].
//!
//! Local Ed25519 and P-256 keys sign with AWS-LC (`aws-lc-rs`, constant-time, its curve code
//! formally verified): 2.1× and 9.7× faster than the pure-Rust crates on this project's benchmark
//! machine (`cargo bench -p sigil-signer --bench curves`); secp256k1 stays with k256 (libsecp256k1
//! is 1.8× faster, under the 2× that would justify a second C library) and BLS with blst.
//! Verification (of what HSMs and key services return, and in tests) stays with the pure-Rust
//! crates, a second implementation.
//!
//! The chains' text forms of keys live here too, so that a key store reads a key file without
//! knowing any protocol: [`tezos`] (`edsk…`, `tz1…`) and [`cometbft`] (`priv_validator_key.json`).

pub mod bls;
pub mod cometbft;
pub mod tezos;

use std::fmt;
use std::str::FromStr;

pub use bls::BlsScheme;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Ed25519,
    Secp256k1,
    P256,
    #[serde(rename = "bls12-381")]
    Bls12_381,
}

impl Algorithm {
    pub const ALL: [Algorithm; 4] = [Algorithm::Ed25519, Algorithm::Secp256k1, Algorithm::P256, Algorithm::Bls12_381];

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Ed25519 => "ed25519",
            Algorithm::Secp256k1 => "secp256k1",
            Algorithm::P256 => "p256",
            Algorithm::Bls12_381 => "bls12-381",
        }
    }

    /// ECDSA keys sign a 32-byte digest; Ed25519 and BLS sign the message itself.
    pub fn signs_digest(self) -> bool {
        matches!(self, Algorithm::Secp256k1 | Algorithm::P256)
    }

    /// The length of a raw signature: 64 bytes, 96 for BLS (a compressed G2 point).
    pub fn signature_len(self) -> usize {
        match self {
            Algorithm::Bls12_381 => 96,
            _ => 64,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        match s.to_ascii_lowercase().as_str() {
            "ed25519" => Ok(Algorithm::Ed25519),
            "secp256k1" => Ok(Algorithm::Secp256k1),
            "p256" | "p-256" | "secp256r1" | "prime256v1" => Ok(Algorithm::P256),
            "bls12-381" | "bls12_381" | "bls" => Ok(Algorithm::Bls12_381),
            _ => Err(KeyError::UnknownAlgorithm(s.to_string())),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("unknown algorithm {0:?}: expected ed25519, secp256k1, p256 or bls12-381")]
    UnknownAlgorithm(String),
    #[error("invalid {algorithm} secret key: {reason}")]
    InvalidSecretKey { algorithm: Algorithm, reason: String },
    #[error("invalid {algorithm} public key: {reason}")]
    InvalidPublicKey { algorithm: Algorithm, reason: String },
    #[error("{algorithm} signs a 32-byte digest, got {len} bytes")]
    PayloadNotDigest { algorithm: Algorithm, len: usize },
    #[error("signature does not verify")]
    BadSignature,
    #[error("{algorithm} keys do not sign with {scheme:?}")]
    UnsupportedScheme { algorithm: Algorithm, scheme: BlsScheme },
}

/// A public key in its canonical byte form: 32 bytes for Ed25519, 33-byte compressed SEC1 for
/// ECDSA, 48-byte compressed G1 for BLS.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PublicKey {
    algorithm: Algorithm,
    bytes: Vec<u8>,
}

impl PublicKey {
    pub fn from_bytes(algorithm: Algorithm, bytes: &[u8]) -> Result<Self, KeyError> {
        let invalid = |reason: &str| KeyError::InvalidPublicKey { algorithm, reason: reason.into() };
        let bytes = match algorithm {
            Algorithm::Ed25519 => {
                let arr: [u8; 32] = bytes.try_into().map_err(|_| invalid("expected 32 bytes"))?;
                ed25519_dalek::VerifyingKey::from_bytes(&arr).map_err(|_| invalid("not a curve point"))?;
                arr.to_vec()
            }
            Algorithm::Secp256k1 => k256::ecdsa::VerifyingKey::from_sec1_bytes(bytes)
                .map_err(|_| invalid("not a SEC1 point"))?
                .to_encoded_point(true)
                .as_bytes()
                .to_vec(),
            Algorithm::P256 => p256::ecdsa::VerifyingKey::from_sec1_bytes(bytes)
                .map_err(|_| invalid("not a SEC1 point"))?
                .to_encoded_point(true)
                .as_bytes()
                .to_vec(),
            Algorithm::Bls12_381 => bls::validate_public_key(bytes).map_err(invalid)?.to_vec(),
        };
        Ok(PublicKey { algorithm, bytes })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// `<algorithm>:<hex>`: equal exactly when the keys are the same key, whatever names them.
    pub fn id(&self) -> String {
        format!("{}:{}", self.algorithm.name(), hex::encode(&self.bytes))
    }

    /// Verifies a raw signature over `payload` (the message for Ed25519 and BLS, the digest for
    /// ECDSA); BLS under the default scheme.
    pub fn verify(&self, payload: &[u8], signature: &Signature) -> Result<(), KeyError> {
        self.verify_scheme(BlsScheme::Pop, payload, signature)
    }

    pub fn verify_scheme(&self, scheme: BlsScheme, payload: &[u8], signature: &Signature) -> Result<(), KeyError> {
        use ecdsa_verify::verify_prehash;
        if signature.algorithm != self.algorithm {
            return Err(KeyError::BadSignature);
        }
        match self.algorithm {
            Algorithm::Ed25519 => {
                let arr: [u8; 32] = self.bytes.as_slice().try_into().map_err(|_| KeyError::BadSignature)?;
                let key = ed25519_dalek::VerifyingKey::from_bytes(&arr).map_err(|_| KeyError::BadSignature)?;
                let sig =
                    ed25519_dalek::Signature::from_slice(signature.as_bytes()).map_err(|_| KeyError::BadSignature)?;
                key.verify_strict(payload, &sig).map_err(|_| KeyError::BadSignature)
            }
            Algorithm::Secp256k1 => {
                let key =
                    k256::ecdsa::VerifyingKey::from_sec1_bytes(&self.bytes).map_err(|_| KeyError::BadSignature)?;
                let sig =
                    k256::ecdsa::Signature::from_slice(signature.as_bytes()).map_err(|_| KeyError::BadSignature)?;
                verify_prehash(&key, self.algorithm, payload, &sig)
            }
            Algorithm::P256 => {
                let key =
                    p256::ecdsa::VerifyingKey::from_sec1_bytes(&self.bytes).map_err(|_| KeyError::BadSignature)?;
                let sig =
                    p256::ecdsa::Signature::from_slice(signature.as_bytes()).map_err(|_| KeyError::BadSignature)?;
                verify_prehash(&key, self.algorithm, payload, &sig)
            }
            Algorithm::Bls12_381 => {
                let key: &[u8; 48] = self.bytes.as_slice().try_into().map_err(|_| KeyError::BadSignature)?;
                bls::verify(key, scheme, payload, signature.as_bytes()).then_some(()).ok_or(KeyError::BadSignature)
            }
        }
    }
}

mod ecdsa_verify {
    use super::{Algorithm, KeyError};
    use k256::ecdsa::signature::hazmat::PrehashVerifier;

    pub fn verify_prehash<K: PrehashVerifier<S>, S>(
        key: &K,
        algorithm: Algorithm,
        digest: &[u8],
        sig: &S,
    ) -> Result<(), KeyError> {
        if digest.len() != 32 {
            return Err(KeyError::PayloadNotDigest { algorithm, len: digest.len() });
        }
        key.verify_prehash(digest, sig).map_err(|_| KeyError::BadSignature)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({}:{})", self.algorithm, hex::encode(&self.bytes))
    }
}

/// A raw signature: Ed25519 `R ‖ S`, ECDSA `r ‖ s` with S normalised low (64 bytes each), or a
/// compressed BLS G2 point (96 bytes). Fixed storage, so that it stays `Copy`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    algorithm: Algorithm,
    bytes: [u8; 96],
}

impl Signature {
    /// A 64-byte signature (every curve but BLS).
    pub fn new(algorithm: Algorithm, bytes: [u8; 64]) -> Self {
        Self::from_slice(algorithm, &bytes).expect("64-byte algorithms")
    }

    /// A signature of `algorithm`'s length.
    pub fn from_slice(algorithm: Algorithm, bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() != algorithm.signature_len() {
            return Err(KeyError::BadSignature);
        }
        let mut stored = [0u8; 96];
        stored[..bytes.len()].copy_from_slice(bytes);
        Ok(Signature { algorithm, bytes: stored })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.algorithm.signature_len()]
    }

    /// The same ECDSA signature with S in the lower half of the order (Ed25519: unchanged).
    /// Keys this process holds always sign low S; HSMs and KMSs may not.
    pub fn to_low_s(self) -> Result<Signature, KeyError> {
        let bytes: [u8; 64] = match self.algorithm {
            Algorithm::Ed25519 | Algorithm::Bls12_381 => return Ok(self),
            Algorithm::Secp256k1 => {
                let sig = k256::ecdsa::Signature::from_slice(self.as_bytes()).map_err(|_| KeyError::BadSignature)?;
                sig.normalize_s().unwrap_or(sig).to_bytes().into()
            }
            Algorithm::P256 => {
                let sig = p256::ecdsa::Signature::from_slice(self.as_bytes()).map_err(|_| KeyError::BadSignature)?;
                sig.normalize_s().unwrap_or(sig).to_bytes().into()
            }
        };
        Ok(Signature::new(self.algorithm, bytes))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}:{})", self.algorithm, hex::encode(self.as_bytes()))
    }
}

/// Stands in for a secret (a key, a seed, a PIN, a token) in `Debug` output, which prints
/// `<redacted>` instead: configs and errors get logged and put in panic messages.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A secret key held in process memory (the local backend). Debug never prints key material.
pub enum SecretKey {
    Ed25519(aws_lc_rs::signature::Ed25519KeyPair),
    Secp256k1(k256::ecdsa::SigningKey),
    P256(aws_lc_rs::signature::EcdsaKeyPair),
    Bls12_381(bls::BlsSecretKey),
}

/// AWS-LC's P-256 signer: fixed-size `r ‖ s` over a digest given as is.
const P256_SIGNING: &aws_lc_rs::signature::EcdsaSigningAlgorithm =
    &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING;

impl SecretKey {
    pub fn generate(algorithm: Algorithm) -> Self {
        let mut rng = rand_core::OsRng;
        match algorithm {
            Algorithm::Ed25519 => {
                let seed = Zeroizing::new(ed25519_dalek::SigningKey::generate(&mut rng).to_bytes());
                Self::from_bytes(algorithm, &*seed).expect("any 32 bytes are an Ed25519 seed")
            }
            Algorithm::Secp256k1 => SecretKey::Secp256k1(k256::ecdsa::SigningKey::random(&mut rng)),
            Algorithm::P256 => {
                let scalar = Zeroizing::new(p256::ecdsa::SigningKey::random(&mut rng).to_bytes());
                Self::from_bytes(algorithm, &scalar).expect("a P-256 scalar in range")
            }
            Algorithm::Bls12_381 => SecretKey::Bls12_381(bls::BlsSecretKey::generate()),
        }
    }

    /// From the 32-byte secret: the Ed25519 seed (RFC 8032), the ECDSA scalar (big-endian), or the
    /// BLS scalar (little-endian, as Tezos's `BLsk…` holds it).
    pub fn from_bytes(algorithm: Algorithm, bytes: &[u8]) -> Result<Self, KeyError> {
        let invalid = |reason: &str| KeyError::InvalidSecretKey { algorithm, reason: reason.into() };
        let arr: &[u8; 32] =
            bytes.try_into().map_err(|_| invalid(&format!("expected 32 bytes, got {}", bytes.len())))?;
        Ok(match algorithm {
            Algorithm::Ed25519 => SecretKey::Ed25519(
                aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(arr).map_err(|_| invalid("not a seed"))?,
            ),
            Algorithm::Secp256k1 => SecretKey::Secp256k1(
                k256::ecdsa::SigningKey::from_slice(arr).map_err(|_| invalid("scalar out of range"))?,
            ),
            Algorithm::P256 => {
                // The range check and the public key from the pure-Rust crate, the signer from AWS-LC.
                let key = p256::ecdsa::SigningKey::from_slice(arr).map_err(|_| invalid("scalar out of range"))?;
                let public = key.verifying_key().to_encoded_point(false);
                SecretKey::P256(
                    aws_lc_rs::signature::EcdsaKeyPair::from_private_key_and_public_key(
                        P256_SIGNING,
                        arr,
                        public.as_bytes(),
                    )
                    .map_err(|e| invalid(&format!("refused by AWS-LC: {e}")))?,
                )
            }
            Algorithm::Bls12_381 => SecretKey::Bls12_381(bls::BlsSecretKey::from_le_bytes(arr).map_err(invalid)?),
        })
    }

    /// From 64 hex characters (either case, surrounding whitespace ignored).
    pub fn from_hex(algorithm: Algorithm, text: &str) -> Result<Self, KeyError> {
        let bytes = Zeroizing::new(
            hex::decode(text.trim())
                .map_err(|_| KeyError::InvalidSecretKey { algorithm, reason: "expected 64 hex characters".into() })?,
        );
        Self::from_bytes(algorithm, &bytes)
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            SecretKey::Ed25519(_) => Algorithm::Ed25519,
            SecretKey::Secp256k1(_) => Algorithm::Secp256k1,
            SecretKey::P256(_) => Algorithm::P256,
            SecretKey::Bls12_381(_) => Algorithm::Bls12_381,
        }
    }

    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        use aws_lc_rs::encoding::AsBigEndian;
        let exported = |bytes: &[u8]| -> [u8; 32] { bytes.try_into().expect("a 32-byte secret") };
        Zeroizing::new(match self {
            SecretKey::Ed25519(k) => {
                let seed = k.seed().and_then(|seed| seed.as_be_bytes()).expect("AWS-LC exports the seed");
                exported(seed.as_ref())
            }
            SecretKey::Secp256k1(k) => k.to_bytes().into(),
            SecretKey::P256(k) => {
                let scalar = k.private_key().as_be_bytes().expect("AWS-LC exports the scalar");
                exported(scalar.as_ref())
            }
            SecretKey::Bls12_381(k) => *k.to_le_bytes(),
        })
    }

    pub fn public_key(&self) -> PublicKey {
        let (algorithm, bytes) = match self {
            SecretKey::Ed25519(k) => {
                (Algorithm::Ed25519, aws_lc_rs::signature::KeyPair::public_key(k).as_ref().to_vec())
            }
            SecretKey::Secp256k1(k) => {
                (Algorithm::Secp256k1, k.verifying_key().to_encoded_point(true).as_bytes().to_vec())
            }
            SecretKey::P256(k) => {
                let uncompressed = aws_lc_rs::signature::KeyPair::public_key(k).as_ref();
                let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(uncompressed).expect("AWS-LC's own public key");
                (Algorithm::P256, key.to_encoded_point(true).as_bytes().to_vec())
            }
            SecretKey::Bls12_381(k) => (Algorithm::Bls12_381, k.public_key().to_vec()),
        };
        PublicKey { algorithm, bytes }
    }

    /// Signs `payload`: the message for Ed25519 and BLS (proof-of-possession scheme), a 32-byte
    /// digest for ECDSA (low S; secp256k1 with RFC 6979 nonces, P-256 with AWS-LC's, which mix
    /// fresh randomness in).
    pub fn sign(&self, payload: &[u8]) -> Result<Signature, KeyError> {
        self.sign_scheme(BlsScheme::Pop, payload)
    }

    /// Signs under `scheme`, which only BLS keys have a choice of.
    pub fn sign_scheme(&self, scheme: BlsScheme, payload: &[u8]) -> Result<Signature, KeyError> {
        use k256::ecdsa::signature::hazmat::PrehashSigner;
        let algorithm = self.algorithm();
        if let SecretKey::Bls12_381(k) = self {
            return Signature::from_slice(algorithm, &k.sign(scheme, payload));
        }
        if scheme != BlsScheme::Pop {
            return Err(KeyError::UnsupportedScheme { algorithm, scheme });
        }
        if algorithm.signs_digest() && payload.len() != 32 {
            return Err(KeyError::PayloadNotDigest { algorithm, len: payload.len() });
        }
        let bytes: [u8; 64] = match self {
            SecretKey::Ed25519(k) => {
                let signature = k.try_sign(payload).map_err(|_| KeyError::BadSignature)?;
                signature.as_ref().try_into().map_err(|_| KeyError::BadSignature)?
            }
            SecretKey::Secp256k1(k) => {
                let sig: k256::ecdsa::Signature = k
                    .sign_prehash(payload)
                    .map_err(|_| KeyError::PayloadNotDigest { algorithm, len: payload.len() })?;
                sig.normalize_s().unwrap_or(sig).to_bytes().into()
            }
            SecretKey::P256(k) => {
                // The digest goes in as is: AWS-LC hashes nothing more for `sign_digest`.
                let digest = aws_lc_rs::digest::Digest::import_less_safe(payload, &aws_lc_rs::digest::SHA256)
                    .map_err(|_| KeyError::PayloadNotDigest { algorithm, len: payload.len() })?;
                let signature = k.sign_digest(&digest).map_err(|_| KeyError::BadSignature)?;
                let sig = p256::ecdsa::Signature::from_slice(signature.as_ref()).map_err(|_| KeyError::BadSignature)?;
                sig.normalize_s().unwrap_or(sig).to_bytes().into()
            }
            SecretKey::Bls12_381(_) => unreachable!("signed above"),
        };
        Ok(Signature::new(algorithm, bytes))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({}, public {:?})", self.algorithm(), self.public_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZERO_SEED: [u8; 32] = [0; 32];

    #[test]
    fn ed25519_zero_key_matches_atto_vector() {
        let key = SecretKey::from_bytes(Algorithm::Ed25519, &ZERO_SEED).unwrap();
        assert_eq!(
            hex::encode_upper(key.public_key().as_bytes()),
            "3B6A27BCCEB6A42D62A3A8D02A6F0D73653215771DE243A63AC048A18B59DA29"
        );
        let sig = key.sign(&[0u8; 32]).unwrap();
        assert_eq!(
            hex::encode_upper(sig.as_bytes()),
            "3DA1EBDFA96EDD181DBE3659D1C051C431F056A5AD6A97A60D5CCA10460438783546461E31285FC59F91C7072642745061E2451D5FF33BCCD8C3C74DABCAF60A"
        );
        key.public_key().verify(&[0u8; 32], &sig).unwrap();
    }

    #[test]
    fn ecdsa_signatures_are_low_s_and_verify() {
        // Half the curve order: S above it is "high" and must never leave the signer.
        let k256_half = hex::decode("7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0").unwrap();
        let p256_half = hex::decode("7FFFFFFF800000007FFFFFFFFFFFFFFFDE737D56D38BCF4279DCE5617E3192A8").unwrap();
        for (algorithm, half) in [(Algorithm::Secp256k1, k256_half), (Algorithm::P256, p256_half)] {
            let key = SecretKey::generate(algorithm);
            for i in 0u8..64 {
                let digest = [i; 32];
                let sig = key.sign(&digest).unwrap();
                assert!(sig.as_bytes()[32..] <= half[..], "{algorithm}: high S");
                key.public_key().verify(&digest, &sig).unwrap();
            }
            assert_eq!(key.sign(b"not a digest").unwrap_err(), KeyError::PayloadNotDigest { algorithm, len: 12 });
        }
    }

    #[test]
    fn secret_round_trips_and_rejects_bad_input() {
        for algorithm in Algorithm::ALL {
            let key = SecretKey::generate(algorithm);
            let again = SecretKey::from_hex(algorithm, &hex::encode(*key.to_bytes())).unwrap();
            assert_eq!(key.public_key(), again.public_key());
            let reparsed = PublicKey::from_bytes(algorithm, key.public_key().as_bytes()).unwrap();
            assert_eq!(reparsed, key.public_key());
            assert!(SecretKey::from_hex(algorithm, "abcd").is_err());
            assert!(SecretKey::from_hex(algorithm, "zz").is_err());
        }
        // Zero is not a valid ECDSA or BLS scalar, nor is the BLS group order r (little-endian).
        assert!(SecretKey::from_bytes(Algorithm::Secp256k1, &ZERO_SEED).is_err());
        assert!(SecretKey::from_bytes(Algorithm::P256, &ZERO_SEED).is_err());
        assert!(SecretKey::from_bytes(Algorithm::Bls12_381, &ZERO_SEED).is_err());
        let mut order = hex::decode("73eda753299d7d483339d80809a1d80553bda402fffe5bfeffffffff00000001").unwrap();
        order.reverse();
        assert!(SecretKey::from_bytes(Algorithm::Bls12_381, &order).is_err());
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let key = SecretKey::from_bytes(Algorithm::Ed25519, &[7; 32]).unwrap();
        assert!(!format!("{key:?}").contains(&hex::encode([7u8; 32])));
    }

    #[test]
    fn algorithm_names_parse() {
        assert_eq!("ED25519".parse::<Algorithm>().unwrap(), Algorithm::Ed25519);
        assert_eq!("secp256r1".parse::<Algorithm>().unwrap(), Algorithm::P256);
        assert!("rsa".parse::<Algorithm>().is_err());
    }
}

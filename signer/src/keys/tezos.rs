//! Tezos's text and binary forms of keys, hashes and signatures: base58check with a type prefix
//! (octez's `base58.ml`, <https://github.com/tezos/tezos-mirror/blob/master/src/lib_crypto/base58.ml>),
//! and BLAKE2b hashes.

use blake2::digest::consts::{U20, U32};
use blake2::{Blake2b, Digest};
use zeroize::Zeroizing;

use crate::keys::{Algorithm, KeyError, PublicKey, SecretKey, Signature};

/// Every base58check prefix sigil reads or writes: (name, prefix bytes, payload length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Tz1,
    Tz2,
    Tz3,
    Tz4,
    Kt1,
    Edpk,
    Sppk,
    P2pk,
    Blpk,
    EdskSeed,
    EdskFull,
    Spsk,
    P2sk,
    Blsk,
    Edsig,
    Spsig,
    P2sig,
    Blsig,
    GenericSig,
    ChainId,
    BlockHash,
}

impl Prefix {
    const fn spec(self) -> (&'static str, &'static [u8], usize) {
        match self {
            Prefix::Tz1 => ("tz1", &[0x06, 0xa1, 0x9f], 20),
            Prefix::Tz2 => ("tz2", &[0x06, 0xa1, 0xa1], 20),
            Prefix::Tz3 => ("tz3", &[0x06, 0xa1, 0xa4], 20),
            Prefix::Tz4 => ("tz4", &[0x06, 0xa1, 0xa6], 20),
            Prefix::Kt1 => ("KT1", &[0x02, 0x5a, 0x79], 20),
            Prefix::Edpk => ("edpk", &[0x0d, 0x0f, 0x25, 0xd9], 32),
            Prefix::Sppk => ("sppk", &[0x03, 0xfe, 0xe2, 0x56], 33),
            Prefix::P2pk => ("p2pk", &[0x03, 0xb2, 0x8b, 0x7f], 33),
            Prefix::Blpk => ("BLpk", &[0x06, 0x95, 0x87, 0xcc], 48),
            Prefix::EdskSeed => ("edsk", &[0x0d, 0x0f, 0x3a, 0x07], 32),
            Prefix::EdskFull => ("edsk", &[0x2b, 0xf6, 0x4e, 0x07], 64),
            Prefix::Spsk => ("spsk", &[0x11, 0xa2, 0xe0, 0xc9], 32),
            Prefix::P2sk => ("p2sk", &[0x10, 0x51, 0xee, 0xbd], 32),
            Prefix::Blsk => ("BLsk", &[0x03, 0x96, 0xc0, 0x28], 32),
            Prefix::Edsig => ("edsig", &[0x09, 0xf5, 0xcd, 0x86, 0x12], 64),
            Prefix::Spsig => ("spsig1", &[0x0d, 0x73, 0x65, 0x13, 0x3f], 64),
            Prefix::P2sig => ("p2sig", &[0x36, 0xf0, 0x2c, 0x34], 64),
            Prefix::Blsig => ("BLsig", &[0x28, 0xab, 0x40, 0xcf], 96),
            Prefix::GenericSig => ("sig", &[0x04, 0x82, 0x2b], 64),
            Prefix::ChainId => ("Net", &[0x57, 0x52, 0x00], 4),
            Prefix::BlockHash => ("B", &[0x01, 0x34], 32),
        }
    }

    pub fn name(self) -> &'static str {
        self.spec().0
    }

    fn pkh(algorithm: Algorithm) -> Prefix {
        match algorithm {
            Algorithm::Ed25519 => Prefix::Tz1,
            Algorithm::Secp256k1 => Prefix::Tz2,
            Algorithm::P256 => Prefix::Tz3,
            Algorithm::Bls12_381 => Prefix::Tz4,
        }
    }

    fn public_key(algorithm: Algorithm) -> Prefix {
        match algorithm {
            Algorithm::Ed25519 => Prefix::Edpk,
            Algorithm::Secp256k1 => Prefix::Sppk,
            Algorithm::P256 => Prefix::P2pk,
            Algorithm::Bls12_381 => Prefix::Blpk,
        }
    }

    fn signature(algorithm: Algorithm) -> Prefix {
        match algorithm {
            Algorithm::Ed25519 => Prefix::Edsig,
            Algorithm::Secp256k1 => Prefix::Spsig,
            Algorithm::P256 => Prefix::P2sig,
            Algorithm::Bls12_381 => Prefix::Blsig,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodingError {
    #[error("not valid base58check (bad character or checksum)")]
    Base58,
    #[error("expected {expected}, got something else")]
    WrongPrefix { expected: String },
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// base58check(prefix ‖ payload).
pub fn encode(prefix: Prefix, payload: &[u8]) -> String {
    let (_, bytes, _) = prefix.spec();
    let mut data = Vec::with_capacity(bytes.len() + payload.len());
    data.extend_from_slice(bytes);
    data.extend_from_slice(payload);
    bs58::encode(data).with_check().into_string()
}

/// The payload of `text`, if it is base58check with one of `prefixes` and the right length.
pub fn decode(text: &str, prefixes: &[Prefix]) -> Result<(Prefix, Zeroizing<Vec<u8>>), EncodingError> {
    // The longest form (edsk 64-byte) is 98 characters; refuse anything far longer before decoding.
    if text.len() > 160 {
        return Err(EncodingError::Base58);
    }
    let data =
        Zeroizing::new(bs58::decode(text.trim()).with_check(None).into_vec().map_err(|_| EncodingError::Base58)?);
    for &prefix in prefixes {
        let (_, bytes, len) = prefix.spec();
        if data.len() == bytes.len() + len && data.starts_with(bytes) {
            return Ok((prefix, Zeroizing::new(data[bytes.len()..].to_vec())));
        }
    }
    let names: Vec<&str> = prefixes.iter().map(|p| p.name()).collect();
    Err(EncodingError::WrongPrefix { expected: names.join(" or ") })
}

/// What a key signs for Tezos bytes `data` (`src/lib_crypto/{ed25519,secp256k1,p256,bls}.ml`):
/// their BLAKE2b-256 digest, except BLS, which signs the bytes themselves.
pub fn signed_payload(algorithm: Algorithm, data: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    match algorithm {
        Algorithm::Bls12_381 => std::borrow::Cow::Borrowed(data),
        _ => std::borrow::Cow::Owned(blake2b_256(data).to_vec()),
    }
}

/// Checks a Tezos signature over `data` (octez's `Signature.check`).
pub fn verify(key: &PublicKey, data: &[u8], signature: &Signature) -> Result<(), KeyError> {
    key.verify(&signed_payload(key.algorithm(), data), signature)
}

pub fn blake2b_256(data: &[u8]) -> [u8; 32] {
    Blake2b::<U32>::digest(data).into()
}

fn blake2b_160(data: &[u8]) -> [u8; 20] {
    Blake2b::<U20>::digest(data).into()
}

/// The curve tag Tezos uses in binary public keys and key hashes.
fn curve_tag(algorithm: Algorithm) -> u8 {
    match algorithm {
        Algorithm::Ed25519 => 0,
        Algorithm::Secp256k1 => 1,
        Algorithm::P256 => 2,
        Algorithm::Bls12_381 => 3,
    }
}

/// The binary public key hash: curve tag ‖ BLAKE2b-160(public key).
pub fn pkh_bytes(public_key: &PublicKey) -> [u8; 21] {
    let mut out = [0u8; 21];
    out[0] = curve_tag(public_key.algorithm());
    out[1..].copy_from_slice(&blake2b_160(public_key.as_bytes()));
    out
}

/// `tz1…`, `tz2…`, `tz3…` or `tz4…`.
pub fn pkh(public_key: &PublicKey) -> String {
    encode(Prefix::pkh(public_key.algorithm()), &pkh_bytes(public_key)[1..])
}

/// A contract id as octez encodes it in operations (22 bytes: `0x00` ‖ curve tag ‖ 20-byte hash
/// for an implicit account, `0x01` ‖ 20-byte hash ‖ `0x00` for an originated one) as
/// `tz1…`/`tz2…`/`tz3…`/`tz4…` or `KT1…`; anything else as hex.
pub fn contract_b58(contract: &[u8; 22]) -> String {
    let implicit = [Prefix::Tz1, Prefix::Tz2, Prefix::Tz3, Prefix::Tz4];
    match contract {
        [0x00, curve, hash @ ..] if usize::from(*curve) < implicit.len() => encode(implicit[usize::from(*curve)], hash),
        [0x01, hash @ .., 0x00] => encode(Prefix::Kt1, hash),
        _ => format!("contract 0x{}", hex::encode(contract)),
    }
}

/// `edpk…`, `sppk…`, `p2pk…` or `BLpk…`.
pub fn public_key_b58(public_key: &PublicKey) -> String {
    encode(Prefix::public_key(public_key.algorithm()), public_key.as_bytes())
}

pub fn parse_public_key(text: &str) -> Result<PublicKey, EncodingError> {
    let (prefix, bytes) = decode(text, &[Prefix::Edpk, Prefix::Sppk, Prefix::P2pk, Prefix::Blpk])?;
    let algorithm = match prefix {
        Prefix::Edpk => Algorithm::Ed25519,
        Prefix::Sppk => Algorithm::Secp256k1,
        Prefix::Blpk => Algorithm::Bls12_381,
        _ => Algorithm::P256,
    };
    Ok(PublicKey::from_bytes(algorithm, &bytes)?)
}

/// `edsig…`, `spsig1…`, `p2sig…` or `BLsig…`: the typed form octez-signer returns.
pub fn signature_b58(signature: &Signature) -> String {
    encode(Prefix::signature(signature.algorithm()), signature.as_bytes())
}

/// A typed signature of `algorithm`'s kind, or the generic `sig…` form (64-byte kinds only).
pub fn parse_signature(text: &str, algorithm: Algorithm) -> Result<Signature, EncodingError> {
    let (_, bytes) = decode(text, &[Prefix::signature(algorithm), Prefix::GenericSig])?;
    Signature::from_slice(algorithm, &bytes).map_err(|_| EncodingError::Base58)
}

/// `edsk…` (32-byte seed or 64-byte seed ‖ public key), `spsk…`, `p2sk…` or `BLsk…`, unencrypted.
pub fn parse_secret_key(text: &str) -> Result<SecretKey, EncodingError> {
    let text = text.trim();
    let text = text.strip_prefix("unencrypted:").unwrap_or(text);
    if ENCRYPTED.iter().any(|p| text.starts_with(p)) {
        return Err(EncodingError::WrongPrefix {
            expected: "an unencrypted key (this one is encrypted: decrypt it with octez-client first)".into(),
        });
    }
    let (prefix, bytes) =
        decode(text, &[Prefix::EdskSeed, Prefix::EdskFull, Prefix::Spsk, Prefix::P2sk, Prefix::Blsk])?;
    let (algorithm, secret) = match prefix {
        Prefix::EdskSeed => (Algorithm::Ed25519, &bytes[..]),
        Prefix::EdskFull => (Algorithm::Ed25519, &bytes[..32]),
        Prefix::Spsk => (Algorithm::Secp256k1, &bytes[..]),
        Prefix::Blsk => (Algorithm::Bls12_381, &bytes[..]),
        _ => (Algorithm::P256, &bytes[..]),
    };
    let key = SecretKey::from_bytes(algorithm, secret)?;
    if prefix == Prefix::EdskFull && key.public_key().as_bytes() != &bytes[32..] {
        return Err(
            KeyError::InvalidSecretKey { algorithm, reason: "the public half does not match the seed".into() }.into()
        );
    }
    Ok(key)
}

/// The secret in the form octez-client imports (`edsk…` 54-character seed form, `spsk…`, `p2sk…`,
/// `BLsk…`).
pub fn secret_key_b58(key: &SecretKey) -> Zeroizing<String> {
    let prefix = match key.algorithm() {
        Algorithm::Ed25519 => Prefix::EdskSeed,
        Algorithm::Secp256k1 => Prefix::Spsk,
        Algorithm::P256 => Prefix::P2sk,
        Algorithm::Bls12_381 => Prefix::Blsk,
    };
    Zeroizing::new(encode(prefix, &*key.to_bytes()))
}

pub fn chain_id_b58(chain_id: [u8; 4]) -> String {
    encode(Prefix::ChainId, &chain_id)
}

pub fn parse_chain_id(text: &str) -> Result<[u8; 4], EncodingError> {
    let (_, bytes) = decode(text, &[Prefix::ChainId])?;
    bytes.as_slice().try_into().map_err(|_| EncodingError::Base58)
}

/// Whether `text` looks like a Tezos secret key (so config loading knows which parser to use).
pub fn is_secret_key_text(text: &str) -> bool {
    let text = text.trim();
    let text = text.strip_prefix("unencrypted:").unwrap_or(text);
    ["edsk", "spsk", "p2sk", "BLsk"].iter().chain(ENCRYPTED).any(|p| text.starts_with(p))
}

/// Encrypted secret keys, which octez-client decrypts and sigil does not.
const ENCRYPTED: &[&str] = &["edesk", "spesk", "p2esk", "BLesk"];

#[cfg(test)]
mod tests {
    use super::*;

    /// The first entry of each list in octez's key_encoding_vectors.ml
    /// (<https://github.com/tezos/tezos-mirror/blob/master/src/lib_crypto/test/key_encoding_vectors.ml>),
    /// and Signatory's test key
    /// (<https://github.com/ecadlabs/signatory/blob/v1.4.0/pkg/signatory/signatory_test.go>).
    const KEY_VECTORS: [(&str, &str, &str); 6] = [
        (
            "edsk3qAQSJaDBSYN2PCMdv7BuJoBKeRyDFq5uPAwDfFRAhQdwHxPMN",
            "edpkufnz668CdgnVC4X5KRvJoXCMgicr29Tjmr5vxGzvMdipwkTZmM",
            "tz1SodoUsWVe1Yey9eMFbqRUtNpBWfir5NRr",
        ),
        (
            "spsk2oCGdj7yZFmAWr1wqopU512kDtCfWfs7N4FoRH6bkHhgXk5Tu5",
            "sppk7aFpmJLm3ZxMd3F4osvGBq77R1NeSpiJVnof3Wiv4mt84EBE9aX",
            "tz2SSuN7FRcAurZPSAQS1swNWE8xxf71MTjt",
        ),
        (
            "p2sk2g5Btw8MK7fnhQg9d7DaE8QYX8A89BLWaqWTQcHuATYY3ABjD9",
            "p2pk66Y3178eHvgWFA4CDsgGPhbkWtwrYCVUKJnsAi41eGP7MbHKv24",
            "tz3ZxowXGSjiVq227GQcwKdz87rKhq62rY4t",
        ),
        (
            "BLsk1eGhiPQXKtvvkBeXzmtVVJs6KPhEF45drF7MLjoCDcSnTGuyjL",
            "BLpk1ur5XXicWYMMzCVZZWyLZhybtyX8Zot2uCzDCZW8KcC5BdZiLVXRZvZzi4GuZYL9SarUvKpE",
            "tz4TFJdv9Jd44FtBMAxi3KQT7AtazhVyaPa6",
        ),
        (
            "edsk4FTF78Qf1m2rykGpHqostAiq5gYW4YZEoGUSWBTJr2njsDHSnd",
            "edpkv45regue1bWtuHnCgLU8xWKLwa9qRqv4gimgJKro4LSc3C5VjV",
            "tz1LggX2HUdvJ1tF4Fvv8fjsrzLeW4Jr9t2Q",
        ),
        // The vector quoted in sigil's tz4 issue.
        (
            "BLsk1XMDG3iepYGj15mBWc7dYjrkpVVM4VH3y5DyBCN9iAGrELwRbY",
            "BLpk1nRV5SBB2QCxsiem5Neoywcizr3mkdp167HL1iKFgFvzPhKo4RSy7J8JBh2BgGgVYjNsRGwU",
            "tz4XXtsYav3fZz2FSDa7hcx4F8sh8SaDWNME",
        ),
    ];

    #[test]
    fn contract_ids() {
        let contract = |text: &str| -> [u8; 22] { hex::decode(text).unwrap().try_into().unwrap() };
        // A KT1 as Taquito's Micheline encoder forges it, and the tz1 of Signatory's fixture.
        assert_eq!(
            contract_b58(&contract("019af3138763ec09dde90926f5a6b60783a21607d500")),
            "KT1Ni4pYV3UGWcDp7MgR5prgcD4NCK1MpXiR"
        );
        assert_eq!(
            contract_b58(&contract("0000712c4c4270d9e7f512115310d8ec6acfcd878bef")),
            "tz1VxS7ff4YnZRs8b4mMP4WaMVpoQjuo1rjf"
        );
        assert!(contract_b58(&contract("0003712c4c4270d9e7f512115310d8ec6acfcd878bef")).starts_with("tz4"));
        assert!(contract_b58(&contract("0009712c4c4270d9e7f512115310d8ec6acfcd878bef")).starts_with("contract 0x"));
    }

    #[test]
    fn key_derivation_vectors() {
        for (sk, pk, hash) in KEY_VECTORS {
            let key = parse_secret_key(sk).unwrap();
            assert_eq!(public_key_b58(&key.public_key()), pk);
            assert_eq!(pkh(&key.public_key()), hash);
            assert_eq!(*secret_key_b58(&key), sk);
            assert_eq!(parse_public_key(pk).unwrap(), key.public_key());
        }
    }

    /// Signing `031234`, from Tezex's "sign/3" tests
    /// (<https://github.com/objkt-com/tezex/blob/main/test/crypto_test.exs>): tz1 and tz2 are
    /// deterministic (Ed25519, RFC 6979), so the bytes must match; tz3 is verify-only.
    #[test]
    fn signature_vectors() {
        let digest = blake2b_256(&hex::decode("031234").unwrap());
        let ed = parse_secret_key(
            "edskS3DtVSbWbPD1yviMGebjYwWJtruMjDcfAZsH9uba22EzKeYhmQkkraFosFETmEMfFNVcDYQ5QbFerj9ozDKroXZ6mb5oxV",
        )
        .unwrap();
        assert_eq!(pkh(&ed.public_key()), "tz1RvhdZ5pcjD19vCCK9PgZpnmErTba3dsBs");
        assert_eq!(
            signature_b58(&ed.sign(&digest).unwrap()),
            "edsigtpUAv6xDLHkMwApubdzxh1BVvmBaktukdUUeQ2UWDFYCowSKwbsRtS1stM2EX1fHpYouLsSDUhJdfkf2zpp7WpHNGqphui"
        );
        let sp = parse_secret_key("spsk2rBDDeUqakQ42nBHDGQTtP3GErb6AahHPwF9bhca3Q5KA5HESE").unwrap();
        assert_eq!(public_key_b58(&sp.public_key()), "sppk7aqSksZan1AGXuKtCz9UBLZZ77e3ZWGpFxR7ig1Z17GneEhSSbH");
        assert_eq!(
            signature_b58(&sp.sign(&digest).unwrap()),
            "spsig194cg549ti3fNuGqvQs4dZEn4aJHCbXHde4kc4dDaCs5y4nCwp5uMUp4DbyGuTjisaTU2UV1v7vy7CybSGJJS4ur88uBWT"
        );
        let p2 = parse_secret_key("p2sk2obfVMEuPUnadAConLWk7Tf4Dt3n4svSgJwrgpamRqJXvaYcg1").unwrap();
        let published = parse_signature(
            "p2sigQo2SWectj3FPa9Av6PkRYjdAXf5c2WqkBJLxXXHpFjeY4AzEAfbuW1xS8NH7K1Ef6uBchf2gsDdMcCW77h8uDv6tdZ2ZS",
            Algorithm::P256,
        )
        .unwrap();
        p2.public_key().verify(&digest, &published).unwrap();
        p2.public_key().verify(&digest, &p2.sign(&digest).unwrap()).unwrap();
    }

    /// tz4, message `031234`: the three BLS schemes, computed with py_ecc (an independent
    /// implementation; BLS signatures are deterministic, so the bytes must match), and Tezex's
    /// published tz4 signature, which is a version-1 (augmented) one.
    #[test]
    fn bls_vectors() {
        use crate::keys::BlsScheme;
        let message = hex::decode("031234").unwrap();
        let key = parse_secret_key("BLsk1eGhiPQXKtvvkBeXzmtVVJs6KPhEF45drF7MLjoCDcSnTGuyjL").unwrap();
        let cases = [
            (BlsScheme::Pop, "BLsigBdeJ3hgK28m8qvWsgTZYLLVMUhkcreZrYoRsUEcAdwiQrxHJsbYZetoGeUS4F4YvMQyrta3TfTmUGXK87jD9ANSTi5uFpTvD63qPknQgUU1GMhHLjj7fkozFPFm5Ed5TF5BZdRxuc"),
            (BlsScheme::Augmented, "BLsigARpJmwQCQvqQGovJrkm9HQS8qzAtwUAn1XyMxcfE18uoeZ1DXvWV6KMobNwU3LR85PYmhBmkd6M89BAXWuREASzs477R2JSDZNyBFX5TWstrLADkTiTpJ9oRDJKDvKkQMcaVHCtYd"),
        ];
        for (scheme, expected) in cases {
            let signature = key.sign_scheme(scheme, &message).unwrap();
            assert_eq!(signature_b58(&signature), expected, "{scheme:?}");
            key.public_key().verify_scheme(scheme, &message, &signature).unwrap();
        }
        let proof = key.sign_scheme(BlsScheme::ProvePossession, key.public_key().as_bytes()).unwrap();
        assert_eq!(
            signature_b58(&proof),
            "BLsigBGHyrcpAvoHAxhTji1ydHRDvPyaF9m7zpRrfYDxRmuacpRa4DPE2tdkbmjocAYJsqXsgo2A2WAoYiHufRUXCd9JTGGq8SC1C8WG653BbARCSA5Sb7oPfmxDmgP1AxNPyeZ4NR9muU"
        );
        // Tezex's "check_signature/4" tz4 row (<https://github.com/objkt-com/tezex/blob/main/test/crypto_test.exs>).
        let published =
            parse_public_key("BLpk1nuQ6M54P2zN2gX2maUUzRa3QVX2eSnXZa184g2sfu2qB2XCGYJdZezkgb7ozbbfYUny1gcP").unwrap();
        assert_eq!(pkh(&published), "tz4NWRt3aFyFU2Ydah917Eehxv6uf97j8tpZ");
        let text = hex::decode("0554657a6f73205369676e6564204d6573736167653a2074657a6f732d746573742d642e61707020323032312d30382d31365430383a35343a34362e3638395a206c6f6c").unwrap();
        let signature = parse_signature(
            "BLsigBCNyUiH3Z5rtuWLyeRutnjeDSiZTcC1owGxXBEJUnfcAaCTciHLjH3asupDYbeu5NvmuUdKyV9r6DHhXQF2w1qiYo4tPVX11v9HnrracZ9DeZdeo8bKyHDDYDVVh4neP36Rs5iM26",
            Algorithm::Bls12_381,
        )
        .unwrap();
        published.verify_scheme(BlsScheme::Augmented, &text, &signature).unwrap();
        assert!(published.verify_scheme(BlsScheme::Pop, &text, &signature).is_err());
        // A tz4 signature has no generic `sig…` form (that one is 64 bytes).
        assert!(parse_signature(&encode(Prefix::GenericSig, &[1; 64]), Algorithm::Bls12_381).is_err());
    }

    #[test]
    fn bls_public_keys_outside_the_subgroup_are_refused() {
        // The compressed point at infinity, and the first small-x curve point (outside the
        // subgroup: G1's cofactor is large), each in a well-formed BLpk.
        let mut infinity = [0u8; 48];
        infinity[0] = 0xc0;
        let outside = (1u8..=255)
            .map(|x| {
                let mut bytes = [0u8; 48];
                (bytes[0], bytes[47]) = (0x80, x);
                bytes
            })
            .find(|b| blst::min_pk::PublicKey::uncompress(b).is_ok())
            .unwrap();
        for point in [infinity, outside] {
            let text = encode(Prefix::Blpk, &point);
            assert!(matches!(parse_public_key(&text), Err(EncodingError::Key(KeyError::InvalidPublicKey { .. }))));
        }
    }

    #[test]
    fn verify_only_vectors() {
        let cases = [
            (
                "edpktsPhZ8weLEXqf4Fo5FS9Qx8ZuX4QpEBEwe63L747G8iDjTAF6w",
                "tz1LKpeN8ZSSFNyTWiBNaE4u4sjaq7J1Vz2z",
                "0554657a6f73205369676e6564204d6573736167653a2074657a6f732d746573742d642e61707020323032312d30382d31365430383a35343a34362e3638395a206c6f6c",
                "edsigtqqVg7CM2ynDXRHUfVEdL4LxKAJ1xrM1poMPXZdwVQ3SQ6YBkqPcAuaGYbeqUTrg374dDNFvJKCVfMA7T1Vrotg91Hsuam",
            ),
            (
                "sppk7aBerAEA6tv4wzg6FnK7i5YrGtEGFVvNjWhc2QX8bhzpouBVFSW",
                "tz2BC83pvEAag6r2ZV7kPghNAbjFoiqhCvZx",
                "05010000007154657a6f73205369676e6564204d6573736167653a207369676e206d6520696e20617320747a32424338337076454161673672325a56376b5067684e41626a466f69716843765a78206f6e206f626a6b742e636f6d20617420323032312d31302d30345431383a35393a31332e3939305a",
                "spsig1ZNQaUKNERZSiEiNviqa5EAPkcNASXhfkXtxRatZTDZAnUB4Ra2Jus8b1oEpFnPx8Z6g28pd8vK3R8nPK29JDU5FiSLH5T",
            ),
            (
                "p2pk65yRxCX65k6qRPrbqGWvfW5JnLB1p3dn1oM5o9cyqLKPPhJaBMa",
                "tz3bPFa6mGv8m4Ppn7w5KSDyAbEPwbJNpC9p",
                "0554657a6f73205369676e6564204d6573736167653a2074657a6f732d746573742d642e61707020323032312d31302d30345431333a30303a34332e3830305a206c6f6c",
                "p2sigNdsHrSzfc7oQMFjrbXFiZe3SM4329j1VY6GYY7kRG6Q4L4Ljw1gT4wKRrRqDECxQwTfs967gpe4EDQJo6cSgB79TmFCfg",
            ),
        ];
        for (pk, hash, message, signature) in cases {
            let key = parse_public_key(pk).unwrap();
            assert_eq!(pkh(&key), hash);
            let signature = parse_signature(signature, key.algorithm()).unwrap();
            key.verify(&blake2b_256(&hex::decode(message).unwrap()), &signature).unwrap();
        }
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        assert_eq!(decode("tz1SodoUsWVe1Yey9eMFbqRUtNpBWfir5NRs", &[Prefix::Tz1]), Err(EncodingError::Base58));
        assert!(matches!(
            parse_public_key("tz1SodoUsWVe1Yey9eMFbqRUtNpBWfir5NRr"),
            Err(EncodingError::WrongPrefix { .. })
        ));
        assert!(parse_secret_key("0OIl").is_err());
        assert_eq!(parse_chain_id("NetXdQprcVkpaWU").map(chain_id_b58).unwrap(), "NetXdQprcVkpaWU");
        assert!(is_secret_key_text("unencrypted:edsk3qAQSJaDBSYN2PCMdv7BuJoBKeRyDFq5uPAwDfFRAhQdwHxPMN"));
        assert!(!is_secret_key_text("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"));
    }
}

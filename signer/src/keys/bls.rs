//! BLS12-381 "min-pk" keys (48-byte public keys in G1, 96-byte signatures in G2), as Tezos tz4
//! accounts use them, on `blst` (<https://github.com/supranational/blst>): constant-time scalar
//! arithmetic, and every public key we accept is checked to lie in the prime-order subgroup.
//!
//! The three ciphersuites octez uses (`src/lib_crypto/bls.ml`, on
//! `dannywillems/ocaml-bls12-381-signature`), all hashing to G2 with the IETF suite strings:
//! proof-of-possession signing (the default from signature version 2), message augmentation
//! (version 1: the public key is prepended to the message) and the proof of possession itself;
//! and CometBFT v1's, the basic scheme (`NUL` suite string) over the message as it is
//! (<https://github.com/cometbft/cometbft/blob/v1.0.1/crypto/bls12381/key_bls12381.go>).

use zeroize::Zeroizing;

/// Which BLS ciphersuite a signature uses. Keys of other curves have only one way to sign, and
/// [`BlsScheme::Pop`] stands for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlsScheme {
    /// `MinPk.Pop.sign`: octez's signatures from version 2 on (and with no version).
    #[default]
    Pop,
    /// `MinPk.Aug.sign`: octez's signature version 1.
    Augmented,
    /// `MinPk.Pop.pop_prove`: a proof of possession, over the key's own public key or another
    /// 48-byte message; a separate suite string, so it can never pass for a signature.
    ProvePossession,
    /// The basic scheme, CometBFT v1's BLS12-381 validator keys.
    Basic,
}

impl BlsScheme {
    fn dst(self) -> &'static [u8] {
        match self {
            BlsScheme::Pop => b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_",
            BlsScheme::Augmented => b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_AUG_",
            BlsScheme::ProvePossession => b"BLS_POP_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_",
            BlsScheme::Basic => b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_NUL_",
        }
    }

    /// What the hash covers in front of the message: the public key for augmentation.
    fn augmentation(self, public_key: &[u8; 48]) -> &[u8] {
        match self {
            BlsScheme::Augmented => public_key,
            _ => &[],
        }
    }
}

/// A public key from its 48-byte compressed form: on the curve, in the subgroup, not infinity.
pub fn validate_public_key(bytes: &[u8]) -> Result<[u8; 48], &'static str> {
    let bytes: [u8; 48] = bytes.try_into().map_err(|_| "expected 48 bytes (a compressed G1 point)")?;
    blst::min_pk::PublicKey::uncompress(&bytes).map_err(|_| "not a compressed G1 point")?.validate().map_err(|e| {
        match e {
            blst::BLST_ERROR::BLST_PK_IS_INFINITY => "the point at infinity is not a key",
            _ => "not in the prime-order subgroup",
        }
    })?;
    Ok(bytes)
}

/// The 96-byte uncompressed form of a valid compressed key (CometBFT's `PubKey.Bytes()`).
pub fn uncompressed(public_key: &[u8; 48]) -> Option<[u8; 96]> {
    blst::min_pk::PublicKey::uncompress(public_key).ok().map(|key| key.serialize())
}

/// A secret scalar.
pub struct BlsSecretKey(blst::min_pk::SecretKey);

impl BlsSecretKey {
    pub fn generate() -> Self {
        let mut ikm = Zeroizing::new([0u8; 32]);
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut *ikm);
        BlsSecretKey(blst::min_pk::SecretKey::key_gen(&*ikm, &[]).expect("32 bytes of key material"))
    }

    /// From the 32-byte scalar, **little-endian** as Tezos writes it (`BLsk…`), in range and not 0.
    pub fn from_le_bytes(bytes: &[u8; 32]) -> Result<Self, &'static str> {
        let mut big_endian = Zeroizing::new(*bytes);
        big_endian.reverse();
        blst::min_pk::SecretKey::from_bytes(&*big_endian).map(BlsSecretKey).map_err(|_| "scalar out of range")
    }

    pub fn to_le_bytes(&self) -> Zeroizing<[u8; 32]> {
        let mut bytes = Zeroizing::new(self.0.to_bytes());
        bytes.reverse();
        bytes
    }

    pub fn public_key(&self) -> [u8; 48] {
        self.0.sk_to_pk().compress()
    }

    pub fn sign(&self, scheme: BlsScheme, message: &[u8]) -> [u8; 96] {
        let public_key = self.public_key();
        self.0.sign(message, scheme.dst(), scheme.augmentation(&public_key)).compress()
    }
}

/// Verifies a compressed signature (and checks it lies in G2's subgroup).
pub fn verify(public_key: &[u8; 48], scheme: BlsScheme, message: &[u8], signature: &[u8]) -> bool {
    let (Ok(key), Ok(sig)) =
        (blst::min_pk::PublicKey::uncompress(public_key), blst::min_pk::Signature::uncompress(signature))
    else {
        return false;
    };
    let result = sig.verify(true, message, scheme.dst(), scheme.augmentation(public_key), &key, true);
    result == blst::BLST_ERROR::BLST_SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_under_their_own_scheme() {
        let key = BlsSecretKey::generate();
        let public = key.public_key();
        let schemes = [BlsScheme::Pop, BlsScheme::Augmented, BlsScheme::ProvePossession, BlsScheme::Basic];
        for scheme in schemes {
            let signature = key.sign(scheme, b"\x13message");
            for other in schemes {
                assert_eq!(verify(&public, other, b"\x13message", &signature), scheme == other, "{scheme:?}/{other:?}");
            }
            assert!(!verify(&public, scheme, b"\x13other", &signature));
        }
    }

    #[test]
    fn public_keys_outside_the_subgroup_are_refused() {
        // The compressed point at infinity, and a curve point outside the subgroup (the first
        // small x on the curve: G1's cofactor is large, so such a point is not in the subgroup).
        let mut infinity = [0u8; 48];
        infinity[0] = 0xc0;
        assert_eq!(validate_public_key(&infinity).unwrap_err(), "the point at infinity is not a key");
        let outside = (1u8..=255)
            .map(|x| {
                let mut bytes = [0u8; 48];
                bytes[0] = 0x80;
                bytes[47] = x;
                bytes
            })
            .find(|b| blst::min_pk::PublicKey::uncompress(b).is_ok())
            .expect("some small x is on the curve");
        assert_eq!(validate_public_key(&outside).unwrap_err(), "not in the prime-order subgroup");
        assert!(validate_public_key(&[0u8; 47]).is_err());
        validate_public_key(&BlsSecretKey::generate().public_key()).unwrap();
    }
}

//! Stand-ins for cloud key services with no emulator we can install from a package registry: GCP
//! Cloud KMS (Google ships none) and Azure Key Vault (lowkey-vault,
//! <https://github.com/nagyesta/lowkey-vault>, needs Docker or a newer Java than Debian's 17).
//! Each follows the service's public REST surface closely enough that the vendor's own Rust
//! client talks to it, signs with real keys (so signatures verify anywhere), and can be told to
//! misbehave.

pub mod azure;
pub mod gcp;

use sigil_signer::keys::Algorithm;

/// What a fake does wrong on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// 503 on every call.
    Unavailable,
    /// 401: bad or missing credentials.
    Unauthenticated,
    /// 403: the identity may not use the key.
    PermissionDenied,
    /// (GCP) Says it did not receive the checksum the client sent, as if the request was
    /// corrupted in transit, this many more times.
    CorruptRequest(u32),
    /// Returns a signature that does not verify (well formed, with a matching checksum).
    WrongSignature,
    /// Answers after this long.
    Slow(std::time::Duration),
}

/// What the fake signs: the payload, or under [`Fault::WrongSignature`] other bytes.
fn signed_by_fault(fault: Fault, algorithm: Algorithm, payload: Vec<u8>) -> Vec<u8> {
    match (fault == Fault::WrongSignature, algorithm.signs_digest()) {
        (false, _) => payload,
        (true, true) => vec![0x5a; 32],
        (true, false) => [&payload[..], b"!"].concat(),
    }
}

/// A raw low-S ECDSA signature as a cloud service may return it: with high S every other time.
fn ecdsa_as_a_service(algorithm: Algorithm, raw: [u8; 64], count: u64) -> [u8; 64] {
    if count.is_multiple_of(2) {
        return raw;
    }
    match algorithm {
        Algorithm::Secp256k1 => {
            let (r, s) = k256::ecdsa::Signature::from_slice(&raw).unwrap().split_scalars();
            k256::ecdsa::Signature::from_scalars(r, -*s).unwrap().to_bytes().into()
        }
        Algorithm::P256 => {
            let (r, s) = p256::ecdsa::Signature::from_slice(&raw).unwrap().split_scalars();
            p256::ecdsa::Signature::from_scalars(r, -*s).unwrap().to_bytes().into()
        }
        Algorithm::Ed25519 | Algorithm::Bls12_381 => raw,
    }
}

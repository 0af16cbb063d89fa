//! Tezos base58check decoders for keys, signatures and chain ids (config files, query parameters
//! such as `bls_pk`, URL paths), tz4 (BLS: `BLpk…` points checked for the subgroup, `BLsk…`,
//! `BLsig…`) included. Never panic; whatever decodes must re-encode to the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_signer::keys::Algorithm;
use sigil_signer::keys::tezos::{
    chain_id_b58, parse_chain_id, parse_public_key, parse_secret_key, parse_signature, public_key_b58, signature_b58,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(key) = parse_public_key(text) {
        assert_eq!(public_key_b58(&key), text.trim());
    }
    if let Ok(chain) = parse_chain_id(text) {
        assert_eq!(chain_id_b58(chain), text.trim());
    }
    let _ = parse_secret_key(text);
    for algorithm in Algorithm::ALL {
        // A typed form re-encodes to itself (the generic `sig…` form re-encodes typed).
        if let Ok(signature) = parse_signature(text, algorithm) {
            if !text.trim().starts_with("sig") {
                assert_eq!(signature_b58(&signature), text.trim());
            }
        }
    }
});

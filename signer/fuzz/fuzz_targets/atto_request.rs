//! Atto request bodies: the JSON decoding, hex fields and digests the API runs on untrusted input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_signer::protocol::atto::model::decode_and_digest;

fuzz_target!(|data: &[u8]| {
    if let Some((endpoint, body)) = data.split_first() {
        if let Some(digest) = decode_and_digest(*endpoint, body, &[7; 32]) {
            assert!(digest.len() == 32 || digest.len() == 64);
        }
    }
});

//! Marks from elsewhere: any bytes, read as an interchange document or as any old signer's marks,
//! either become marks that are never lower than what they say, or an error. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_signer::interchange::convert::{self, Marks};
use sigil_signer::interchange::{self, KnownKey, Protocol};
use sigil_signer::keys::Algorithm;
use sigil_signer::protocol::cometbft::state_file::StateFormat;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(document) = interchange::parse(text) {
        let keys = [KnownKey {
            name: "baker".into(),
            key_hash: "tz1SodoUsWVe1Yey9eMFbqRUtNpBWfir5NRr".into(),
            algorithm: Algorithm::Ed25519,
            protocol: Protocol::Tezos,
            chains: None,
        }];
        if let Ok(wanted) = interchange::wanted(&document, &keys) {
            assert!(wanted.keys().all(|stream| stream.key == "baker"));
        }
        // What the operator checks before the key is known, and the cutover's comparison: a
        // document is never above itself.
        let _ = interchange::check_scope(&document, Protocol::Tezos, Some(&["NetXdQprcVkpaWU".into()]), 1);
        assert!(interchange::moved_since(&document, &document).is_empty());
    }
    let mut marks = Marks::default();
    let _ = convert::octez(&[("block_high_watermarks".into(), text.into())], &mut marks);
    let _ = convert::signatory_file("NetXdQprcVkpaWU", text, &mut marks);
    let _ = convert::signatory_dynamodb(text, &mut marks);
    let _ = convert::signatory_firestore(text, &mut marks);
    let _ = convert::tacoinfra(text, &mut marks);
    let _ = convert::tezio(text, "NetXdQprcVkpaWU", "tz1SodoUsWVe1Yey9eMFbqRUtNpBWfir5NRr", &mut marks);
    let _ = convert::cometbft_state(text, StateFormat::Tmkms, "c", "AB", &mut marks);
    let _ = marks.document("fuzz");
});

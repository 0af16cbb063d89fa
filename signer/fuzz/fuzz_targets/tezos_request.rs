//! Tezos sign requests: the magic-byte, block-header, consensus (tz1–tz3 layouts with a slot,
//! tz4's BLS-mode tags 40/41 without) and generic-operation (ballot votes included) parser that
//! runs on every POSTed body. It must never panic, and what it accepts must be self-consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_signer::protocol::tezos::operation::{parse, RequestKind};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = parse(data) {
        assert_eq!(request.watermark.is_some(), request.kind.stream().is_some());
        assert_eq!(request.kind == RequestKind::Generic, !request.operations.is_empty());
        // Retired Emmy watermarks never parse.
        assert!(data[0] != 0x01 && data[0] != 0x02);
    }
});

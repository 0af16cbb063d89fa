//! Interop with the real Atto library: @attocash/commons-core (the Kotlin/JS build of the code the
//! node runs) builds blocks, votes and challenges, sends them to sigil-signer in its drop-in
//! environment mode exactly as the node's client does, and checks every signature.

mod common;

use common::*;

#[test]
fn the_atto_library_accepts_every_signature() {
    let signer = SignerProcess::spawn(
        &[],
        &[
            ("ATTO_SIGNER_BACKEND", "LOCAL"),
            ("ATTO_SIGNER_KEY", SEED_HEX),
            ("ATTO_SIGNER_TOKEN", TOKEN),
            ("ATTO_SIGNER_CAPABILITIES", "CHALLENGE,BLOCK,VOTE"),
            ("ATTO_SIGNER_PORT", "0"),
            ("ATTO_SIGNER_MANAGEMENT_PORT", "0"),
        ],
    );
    atto_library_checks(signer.atto());
}

//! Interop with the real Atto library: @attocash/commons-core (the Kotlin/JS build of the code the
//! node runs) builds blocks, votes and challenges, sends them to sigil-signer in its drop-in
//! environment mode exactly as the node's client does, and checks every signature.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

/// The package directory, installed into the cache on first use (e2e/lib/atto-commons pins it).
fn atto_commons() -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../e2e/lib/atto-commons");
    let output = Command::new(&script).output().expect("run e2e/lib/atto-commons");
    assert!(
        output.status.success(),
        "installing @attocash/commons-core failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

#[test]
fn the_atto_library_accepts_every_signature() {
    let package = atto_commons();
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
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/atto/interop.mjs");
    let output = Command::new("node")
        .arg(&script)
        .env("SIGNER_URL", format!("http://{}/", signer.atto()))
        .env("SIGNER_TOKEN", TOKEN)
        .env("SIGNER_SECRET", SEED_HEX)
        .env("ATTO_COMMONS", &package)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "interop failed:\n{stdout}\n{stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON summary line");
    assert_eq!(summary["failures"], serde_json::json!([]));
    assert_eq!(
        (summary["blocks"].as_u64(), summary["votes"].as_u64(), summary["challenges"].as_u64()),
        (Some(40), Some(40), Some(20))
    );
}

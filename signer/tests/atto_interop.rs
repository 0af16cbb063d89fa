//! Interop with the real Atto library: @attocash/commons-core (the Kotlin/JS build of the code the
//! node runs) builds blocks, votes and challenges, sends them to sigil-signer in its drop-in
//! environment mode exactly as the node's client does, and checks every signature.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

const COMMONS_VERSION: &str = "8.0.0";

/// The package directory, installed into the cache on first use (pinned version).
fn atto_commons() -> PathBuf {
    let prefix = cache_dir().join("npm");
    let package = prefix.join("node_modules/@attocash/commons-core");
    let installed = std::fs::read_to_string(package.join("package.json"))
        .map(|json| json.contains(&format!("\"version\": \"{COMMONS_VERSION}\"")))
        .unwrap_or(false);
    if !installed {
        std::fs::create_dir_all(&prefix).unwrap();
        let status = Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--no-save",
                "--prefix",
            ])
            .arg(&prefix)
            .arg(format!("@attocash/commons-core@{COMMONS_VERSION}"))
            .status()
            .expect("npm is needed for the Atto interop test (Node.js 20+)");
        assert!(
            status.success(),
            "npm install @attocash/commons-core@{COMMONS_VERSION} failed"
        );
    }
    package
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
        .env("SIGNER_URL", format!("http://{}/", signer.atto))
        .env("SIGNER_TOKEN", TOKEN)
        .env("SIGNER_SECRET", SEED_HEX)
        .env("ATTO_COMMONS", &package)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "interop failed:\n{stdout}\n{stderr}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(stdout.trim()).expect("one JSON summary line");
    assert_eq!(summary["failures"], serde_json::json!([]));
    assert_eq!(
        (
            summary["blocks"].as_u64(),
            summary["votes"].as_u64(),
            summary["challenges"].as_u64()
        ),
        (Some(40), Some(40), Some(20))
    );
}

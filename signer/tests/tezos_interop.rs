//! Interop with an independent Tezos implementation: pytezos (PyPI, pinned by e2e/lib/pytezos)
//! forges blocks, preattestations, attestations and transaction batches, sends them over HTTP the
//! way octez-client does (authorized_keys first, then an authenticated POST), and verifies every
//! signature for tz1, tz2 and tz3 keys.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

/// The Python interpreter with pytezos, installed into the cache on first use.
fn pytezos() -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../e2e/lib/pytezos");
    let output = Command::new(&script).output().expect("run e2e/lib/pytezos");
    assert!(output.status.success(), "installing pytezos failed: {}", String::from_utf8_lossy(&output.stderr));
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

const KEYS: [&str; 3] = [
    "edsk3qAQSJaDBSYN2PCMdv7BuJoBKeRyDFq5uPAwDfFRAhQdwHxPMN",
    "spsk2oCGdj7yZFmAWr1wqopU512kDtCfWfs7N4FoRH6bkHhgXk5Tu5",
    "p2sk2g5Btw8MK7fnhQg9d7DaE8QYX8A89BLWaqWTQcHuATYY3ABjD9",
];
const CLIENT_SECRET: &str = "edsk4FTF78Qf1m2rykGpHqostAiq5gYW4YZEoGUSWBTJr2njsDHSnd";
const CLIENT_PUBLIC: &str = "edpkv45regue1bWtuHnCgLU8xWKLwa9qRqv4gimgJKro4LSc3C5VjV";

#[test]
fn pytezos_verifies_every_signature() {
    let python = pytezos();
    let dir = tempfile::tempdir().unwrap();
    let allow = "[block, preattestation, attestation, 'generic:transaction']";
    let config = format!(
        r#"
keys:
  tz1: {{local: {{secretKey: {}}}}}
  tz2: {{local: {{secretKey: {}}}}}
  tz3: {{local: {{secretKey: {}}}}}
ratchet: {{file: {{dir: {}}}}}
tezos:
  listen: 127.0.0.1:0
  keys:
    tz1: {{allow: {allow}, chains: [NetXdQprcVkpaWU], authorizedKeys: [{CLIENT_PUBLIC}]}}
    tz2: {{allow: {allow}}}
    tz3: {{allow: {allow}}}
management: {{listen: 127.0.0.1:0}}
"#,
        KEYS[0],
        KEYS[1],
        KEYS[2],
        dir.path().join("ratchet").display()
    );
    let path = dir.path().join("signer.yaml");
    std::fs::write(&path, config).unwrap();
    let signer = SignerProcess::spawn(&["--config", path.to_str().unwrap()], &[]);

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tezos/interop.py");
    let output = Command::new(&python)
        .arg(&script)
        .env("SIGNER_URL", format!("http://{}", signer.tezos()))
        .env("KEYS", serde_json::to_string(&KEYS).unwrap())
        .env("CLIENT_SECRET", CLIENT_SECRET)
        .env("CHAIN_ID", "NetXdQprcVkpaWU")
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "interop failed:\n{stdout}\n{stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON summary line");
    assert_eq!(summary["failures"], serde_json::json!([]));
    // Per key: 20 blocks + 2 repeats, 20 preattestations, 20 attestations, 1 with DAL, 5 batches.
    let signed = &summary["signed"];
    assert_eq!(signed["block"], 3 * 22, "{summary}");
    assert_eq!(signed["preattestation"], 3 * 20, "{summary}");
    assert_eq!(signed["attestation"], 3 * 20, "{summary}");
    assert_eq!(signed["attestation_with_dal"], 3, "{summary}");
    assert_eq!(signed["transaction"], 3 * 5, "{summary}");
}

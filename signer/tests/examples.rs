//! Every config in examples/ parses and validates; the runnable one serves and signs.

mod common;

use std::path::PathBuf;

use common::*;
use sigil_signer::config::SignerConfig;

fn examples() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(is_signer_config).collect();
    files.sort();
    files
}

/// Signer configs have a top-level `keys:`; other YAML (Kubernetes manifests) is someone else's.
fn is_signer_config(path: &PathBuf) -> bool {
    path.extension().is_some_and(|e| e == "yaml")
        && std::fs::read_to_string(path).is_ok_and(|text| text.lines().any(|l| l.starts_with("keys:")))
}

#[test]
fn every_example_config_is_valid() {
    let files = examples();
    assert!(files.len() >= 2, "examples/ has signer configs: {files:?}");
    for file in files {
        SignerConfig::from_file(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}

#[test]
fn the_local_example_serves_and_signs() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/atto-local.yaml");
    let mut config = SignerConfig::from_file(&path).unwrap();
    // Same file, free ports.
    config.atto.as_mut().unwrap().listen.set_port(0);
    config.management.as_mut().unwrap().listen.set_port(0);
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("signer.yaml");
    std::fs::write(&copy, config.to_yaml()).unwrap();

    let signer = SignerProcess::spawn(
        &["--config", copy.to_str().unwrap()],
        &[("ATTO_SIGNER_KEY", SEED_HEX), ("ATTO_SIGNER_TOKEN", TOKEN)],
    );
    let public_key =
        http(signer.atto(), "GET", "/public-keys", Some(TOKEN), None).json()["publicKey"].as_str().unwrap().to_string();
    let response =
        http(signer.atto(), "POST", "/votes", Some(TOKEN), Some(&vote_body(&public_key, &"CD".repeat(32), 5)));
    assert_eq!(response.status, 200, "{response:?}");
}

#[test]
fn the_tezos_example_serves_and_signs() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/tezos-baker.yaml");
    let mut config = SignerConfig::from_file(&path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Same file, with the key and the ratchet in a temporary directory and free ports.
    let key = dir.path().join("baker.key");
    std::fs::write(&key, "edsk3qAQSJaDBSYN2PCMdv7BuJoBKeRyDFq5uPAwDfFRAhQdwHxPMN\n").unwrap();
    config.keys.get_mut("baker").unwrap().local.as_mut().unwrap().secret_key_file = Some(key);
    config.ratchet.as_mut().unwrap().file.as_mut().unwrap().dir = dir.path().join("ratchet");
    config.tezos.as_mut().unwrap().listen.set_port(0);
    config.management.as_mut().unwrap().listen.set_port(0);
    let copy = dir.path().join("signer.yaml");
    std::fs::write(&copy, config.to_yaml()).unwrap();

    let signer = SignerProcess::spawn(&["--config", copy.to_str().unwrap()], &[]);
    // A mainnet attestation (Signatory's fixture, chain NetXdQprcVkpaWU substituted).
    let attestation = "137a06a770fc81eee810737b04018acef4db74d056b79edc43e6be46cae7e4c217c22a82f01500120000518d0000000003e7ea1f67dbb0bb6cfa372cb092cd9cf786b4f1b5e5139da95b915fb95e698d";
    let response = http(
        signer.tezos(),
        "POST",
        "/keys/tz1SodoUsWVe1Yey9eMFbqRUtNpBWfir5NRr",
        None,
        Some(&format!("\"{attestation}\"")),
    );
    assert_eq!(response.status, 200, "{response:?}");
    assert!(dir.path().join("ratchet/marks.journal").is_file());
}

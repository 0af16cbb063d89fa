//! Interop with an independent Tezos implementation: pytezos (PyPI, pinned by e2e/lib/pytezos)
//! forges blocks, preattestations, attestations and transaction batches, sends them over HTTP the
//! way octez-client does (authorized_keys first, then an authenticated POST), and verifies every
//! signature for tz1, tz2 and tz3 keys.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// The Python interpreter with pytezos, installed into the cache on first use.
fn pytezos() -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../e2e/lib/pytezos");
    let output = Command::new(&script).output().expect("run e2e/lib/pytezos");
    assert!(output.status.success(), "installing pytezos failed: {}", String::from_utf8_lossy(&output.stderr));
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

/// Runs `tests/tezos/<script>` against `signer` on chain NetXdQprcVkpaWU with `env`: its one
/// JSON summary line, once it has succeeded with no failures.
fn run_script(python: &Path, script: &str, signer: &SignerProcess, env: &[(&str, &str)]) -> serde_json::Value {
    let output = Command::new(python)
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tezos").join(script))
        .env("SIGNER_URL", format!("http://{}", signer.tezos()))
        .env("CHAIN_ID", "NetXdQprcVkpaWU")
        .envs(env.iter().copied())
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON summary line");
    assert_eq!(summary["failures"], serde_json::json!([]));
    summary
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

    let keys = serde_json::to_string(&KEYS).unwrap();
    let summary = run_script(&python, "interop.py", &signer, &[("KEYS", &keys), ("CLIENT_SECRET", CLIENT_SECRET)]);
    // Per key: 20 blocks + 2 repeats, 20 preattestations, 20 attestations, 1 with DAL, 5 batches.
    let signed = &summary["signed"];
    assert_eq!(signed["block"], 3 * 22, "{summary}");
    assert_eq!(signed["preattestation"], 3 * 20, "{summary}");
    assert_eq!(signed["attestation"], 3 * 20, "{summary}");
    assert_eq!(signed["attestation_with_dal"], 3, "{summary}");
    assert_eq!(signed["transaction"], 3 * 5, "{summary}");
}

const CONSENSUS_TZ4: &str = "BLsk1eGhiPQXKtvvkBeXzmtVVJs6KPhEF45drF7MLjoCDcSnTGuyjL";
const COMPANION_TZ4: &str = "BLsk1XMDG3iepYGj15mBWc7dYjrkpVVM4VH3y5DyBCN9iAGrELwRbY";

fn tz4(secret: &str) -> String {
    let key = sigil_signer::keys::tezos::parse_secret_key(secret).unwrap();
    sigil_signer::keys::tezos::pkh(&key.public_key())
}

/// A BLS-mode attestation (tag 41: no slot) at `level`, round 0, with payload hash `payload`.
fn tz4_attestation(level: u32, payload: u8) -> String {
    let chain = sigil_signer::keys::tezos::parse_chain_id("NetXdQprcVkpaWU").unwrap();
    let mut data = vec![0x13];
    data.extend(chain);
    data.extend([0xb1; 32]);
    data.push(41);
    data.extend(level.to_be_bytes());
    data.extend(0u32.to_be_bytes());
    data.extend([payload; 32]);
    format!("\"{}\"", hex::encode(data))
}

fn tz4_config(dir: &Path) -> PathBuf {
    let config = format!(
        r#"
keys:
  consensus: {{local: {{secretKey: {CONSENSUS_TZ4}}}}}
  companion: {{local: {{secretKey: {COMPANION_TZ4}}}}}
ratchet: {{file: {{dir: {}}}}}
tezos:
  listen: 127.0.0.1:0
  keys:
    consensus: {{allow: [block, preattestation, attestation], allowProofOfPossession: false}}
    companion: {{allow: [attestation], allowProofOfPossession: false}}
management: {{listen: 127.0.0.1:0}}
"#,
        dir.join("ratchet").display()
    );
    let path = dir.join("signer.yaml");
    std::fs::write(&path, config).unwrap();
    path
}

/// tz4 as a baker with a tz4 consensus key and a companion key uses it, checked by py_ecc: every
/// signature in every version, the companion signing the same attestations, watermarks per key,
/// proofs of possession switched on without a restart.
#[test]
fn py_ecc_verifies_every_tz4_signature_and_proof() {
    let python = pytezos();
    let dir = tempfile::tempdir().unwrap();
    let config = tz4_config(dir.path());
    let signer = SignerProcess::spawn(&["--config", config.to_str().unwrap()], &[]);
    let (consensus, companion) = (tz4(CONSENSUS_TZ4), tz4(COMPANION_TZ4));
    let env = [
        ("CONSENSUS_KEY", consensus.as_str()),
        ("COMPANION_KEY", companion.as_str()),
        ("OTHER_PUBLIC_KEY", "BLpk1nuQ6M54P2zN2gX2maUUzRa3QVX2eSnXZa184g2sfu2qB2XCGYJdZezkgb7ozbbfYUny1gcP"),
        ("CONFIG_PATH", config.to_str().unwrap()),
    ];
    let summary = run_script(&python, "interop_tz4.py", &signer, &env);
    // 8 levels × 2 rounds of each, in the four versions, plus the identical repeat twice.
    let signed = &summary["signed"];
    assert_eq!(signed["block"], 16, "{summary}");
    assert_eq!(signed["preattestation"], 16, "{summary}");
    assert_eq!(signed["attestation"], 18, "{summary}");
    assert_eq!(signed["companion attestation"], 16, "{summary}");
    assert_eq!(signed["proof of possession"], 2, "{summary}");
    assert_eq!(signed["proof of possession over bls_pk"], 1, "{summary}");
}

/// kill -9 while a tz4 key signs attestation after attestation: after the restart, no level whose
/// signature left the signer can be signed again with another payload.
#[test]
fn a_tz4_signer_killed_mid_stream_never_signs_a_released_level_twice() {
    let dir = tempfile::tempdir().unwrap();
    let config = tz4_config(dir.path());
    let pkh = tz4(CONSENSUS_TZ4);
    let signer = SignerProcess::spawn(&["--config", config.to_str().unwrap()], &[]);
    let tezos = signer.tezos();
    let path = format!("/keys/{pkh}?version=3");
    let released = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let stream = {
        let (path, released) = (path.clone(), released.clone());
        std::thread::spawn(move || {
            for level in 1.. {
                let body = tz4_attestation(level, 1);
                // The kill makes the request fail (the helper panics on a dropped connection).
                let Ok(response) = std::panic::catch_unwind(|| http(tezos, "POST", &path, None, Some(&body))) else {
                    break;
                };
                if response.status != 200 {
                    break;
                }
                let signature = response.json()["signature"].as_str().unwrap().to_string();
                released.lock().unwrap().push((level, signature));
            }
        })
    };
    wait_until("20 attestations signed", std::time::Duration::from_secs(60), || released.lock().unwrap().len() >= 20);
    signer.kill();
    stream.join().unwrap();
    let released = released.lock().unwrap().clone();

    let signer = SignerProcess::spawn(&["--config", config.to_str().unwrap()], &[]);
    for (level, signature) in &released {
        let other = http(signer.tezos(), "POST", &path, None, Some(&tz4_attestation(*level, 2)));
        assert_eq!(other.status, 409, "level {level}: {}", other.body);
        let same = http(signer.tezos(), "POST", &path, None, Some(&tz4_attestation(*level, 1)));
        // Below the mark it is refused too; at the mark it is the signature already given.
        if same.status == 200 {
            assert_eq!(same.json()["signature"], signature.as_str(), "level {level}");
        } else {
            assert_eq!(same.status, 409, "level {level}: {}", same.body);
        }
    }
}

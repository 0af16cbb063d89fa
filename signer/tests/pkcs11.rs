//! The PKCS#11 backend against SoftHSM2 (Debian's, a real PKCS#11 module): a token initialised by
//! the test, Ed25519, secp256k1 and P-256 keys generated inside it, signatures for Tezos requests
//! verified independently by pytezos (which rejects high-S tz2 signatures, so SoftHSM's raw
//! signatures must have been normalised). A wrong PIN or token is "not ready", never a signature.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use sigil_signer::backend::pkcs11::{Pkcs11Backend, Pkcs11KeyConfig};
use sigil_signer::backend::KeyBackend;
use sigil_signer::keys::tezos as encoding;
use sigil_signer::keys::{Algorithm, PublicKey, SecretKey};
use sigil_tests::softhsm::{generate, import_ed25519, token};
use sigil_tests::tezos::{consensus, MAINNET};

fn config(dir: &Path, module: &str, pin_file: &Path, token_label: &str) -> PathBuf {
    let key = |label: &str| {
        format!(
            "{{pkcs11: {{module: {module}, tokenLabel: {token_label}, keyLabel: {label}, pinFile: {}}}}}",
            pin_file.display()
        )
    };
    let allow = "{allow: [block, attestation]}";
    let text = format!(
        "keys: {{ed: {}, k1: {}, p256: {}}}\nratchet: {{memory: {{}}}}\n\
         tezos: {{listen: 127.0.0.1:0, keys: {{ed: {allow}, k1: {allow}, p256: {allow}}}}}\nmanagement: {{listen: 127.0.0.1:0}}\n",
        key("ed"),
        key("k1"),
        key("p256")
    );
    let path = dir.join(format!("signer-{token_label}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn softhsm_keys_sign_for_tezos_and_pytezos_agrees() {
    let module = script("softhsm");
    let python = script("pytezos");
    let dir = tempfile::tempdir().unwrap();
    let conf = token(dir.path());
    let keys = generate(&module, &conf);
    let pin = dir.path().join("pin");
    std::fs::write(&pin, "1234\n").unwrap();

    let config = config(dir.path(), &module, &pin, "sigil");
    let conf_text = conf.to_str().unwrap();
    let signer = SignerProcess::spawn(&["--config", config.to_str().unwrap()], &[("SOFTHSM2_CONF", conf_text)]);
    wait_until("keys ready", Duration::from_secs(20), || {
        http(signer.management, "GET", "/readyz", None, None).status == 200
    });

    // Forty attestations per key: SoftHSM returns high S for about half of ECDSA signatures.
    let mut checks = Vec::new();
    for (label, public_key) in &keys {
        let pkh = encoding::pkh(public_key);
        let answer = http(signer.tezos(), "GET", &format!("/keys/{pkh}"), None, None).json();
        assert_eq!(answer["public_key"], encoding::public_key_b58(public_key), "{label}");
        for level in 1..=40 {
            let data = consensus(0x13, MAINNET, level, 0, 1);
            let body = format!("\"{}\"", hex::encode(&data));
            let response = http(signer.tezos(), "POST", &format!("/keys/{pkh}"), None, Some(&body));
            assert_eq!(response.status, 200, "{label}: {response:?}");
            let signature = response.json()["signature"].as_str().unwrap().to_string();
            checks.push(serde_json::json!([encoding::public_key_b58(public_key), signature, hex::encode(&data)]));
        }
    }
    assert_eq!(pytezos_rejects(&python, &checks), 0);
    assert_eq!(checks.len(), 120);
    let metrics = http(signer.management, "GET", "/metrics", None, None).body;
    assert!(
        metrics.contains(r#"sigil_signer_backend_sign_duration_seconds_count{backend="pkcs11",key="k1"} 40"#),
        "{metrics}"
    );
    drop(signer);

    // A wrong PIN: the signer starts, is not ready, and signs nothing.
    std::fs::write(&pin, "9999\n").unwrap();
    let signer = SignerProcess::spawn(&["--config", config.to_str().unwrap()], &[("SOFTHSM2_CONF", conf_text)]);
    let ready = http(signer.management, "GET", "/readyz", None, None);
    assert_eq!(ready.status, 503, "{ready:?}");
    assert!(ready.body.contains("waiting for keys"), "{ready:?}");
    // The backend is retried in the background, and says why each time.
    let mut logs = String::new();
    wait_until("the PIN refusal in the log", Duration::from_secs(15), || {
        logs.push_str(&signer.drain_logs().join("\n"));
        logs.contains("login (check the PIN)")
    });
    assert!(!logs.contains("9999"), "the PIN must not be logged");
    let pkh = encoding::pkh(&keys[0].1);
    let body = format!("\"{}\"", hex::encode(consensus(0x13, MAINNET, 99, 0, 1)));
    assert_eq!(
        http(signer.tezos(), "POST", &format!("/keys/{pkh}"), None, Some(&body)).status,
        404,
        "an unready key is unknown"
    );
}

/// The Atto library checks an HSM key's signatures: 100 blocks, votes and challenges, each equal to
/// the library's own for the same seed (imported into the token for the comparison).
#[test]
fn the_atto_library_accepts_signatures_from_the_hsm() {
    let module = script("softhsm");
    let dir = tempfile::tempdir().unwrap();
    let conf = token(dir.path());
    let seed: [u8; 32] = hex::decode(SEED_HEX).unwrap().try_into().unwrap();
    import_ed25519(&module, &conf, "voter", &seed);
    let pin = dir.path().join("pin");
    std::fs::write(&pin, "1234\n").unwrap();
    let config = dir.path().join("atto.yaml");
    std::fs::write(
        &config,
        format!(
            "keys: {{voter: {{pkcs11: {{module: {module}, tokenLabel: sigil, keyLabel: voter, pinFile: {}}}}}}}\n\
             atto: {{listen: 127.0.0.1:0, key: voter, capabilities: [CHALLENGE, BLOCK, VOTE], tokenEnv: ATTO_TOKEN}}\n\
             management: {{listen: 127.0.0.1:0}}\n",
            pin.display()
        ),
    )
    .unwrap();
    let signer = SignerProcess::start(&config, &[("SOFTHSM2_CONF", conf.to_str().unwrap()), ("ATTO_TOKEN", TOKEN)]);
    wait_until("the key ready", Duration::from_secs(20), || {
        http(signer.management, "GET", "/readyz", None, None).status == 200
    });
    atto_library_checks(signer.atto());
}

fn hsm_config(dir: &Path, module: &str, pin_file: &Path) -> PathBuf {
    let text = format!(
        "keys: {{ed: {{pkcs11: {{module: {module}, tokenLabel: sigil, keyLabel: ed, pinFile: {}}}}}}}\n\
         ratchet: {{memory: {{}}}}\ntezos: {{listen: 127.0.0.1:0, keys: {{ed: {{allow: [attestation]}}}}}}\n\
         management: {{listen: 127.0.0.1:0}}\n",
        pin_file.display()
    );
    let path = dir.join("hsm.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Signs an attestation at `level` and checks the signature against `public_key` when it is given.
fn attest(signer: &SignerProcess, public_key: &PublicKey, level: u32) -> Response {
    let data = consensus(0x13, MAINNET, level, 0, 1);
    let body = format!("\"{}\"", hex::encode(&data));
    let response = http(signer.tezos(), "POST", &format!("/keys/{}", encoding::pkh(public_key)), None, Some(&body));
    if response.status == 200 {
        let text = response.json()["signature"].as_str().unwrap().to_string();
        let signature = encoding::parse_signature(&text, Algorithm::Ed25519).unwrap();
        public_key.verify(&encoding::blake2b_256(&data), &signature).unwrap();
    }
    response
}

/// An HSM that goes away under a running signer and comes back with its keys (SoftHSM: the token
/// directory taken away, then put back; SoftHSM then finds no objects on the open sessions, and
/// sees the token again only once the module is re-initialised): signing is refused as retryable and the key is not ready while the token is gone; once
/// it is back, the signer re-initialises the module, reopens the token and signs again, without
/// a restart.
#[test]
fn the_signer_recovers_when_the_hsm_restarts() {
    let module = script("softhsm");
    let dir = tempfile::tempdir().unwrap();
    let conf = token(dir.path());
    let seed: [u8; 32] = hex::decode(SEED_HEX).unwrap().try_into().unwrap();
    import_ed25519(&module, &conf, "ed", &seed);
    let public_key = SecretKey::from_bytes(Algorithm::Ed25519, &seed).unwrap().public_key();
    let pin = dir.path().join("pin");
    std::fs::write(&pin, "1234\n").unwrap();
    let config = hsm_config(dir.path(), &module, &pin);
    let signer =
        SignerProcess::spawn(&["--config", config.to_str().unwrap()], &[("SOFTHSM2_CONF", conf.to_str().unwrap())]);
    let ready = || http(signer.management, "GET", "/readyz", None, None).status;
    wait_until("the key ready", Duration::from_secs(20), || ready() == 200);
    assert_eq!(attest(&signer, &public_key, 1).status, 200);

    // The HSM goes away.
    let tokens = dir.path().join("tokens");
    let away = dir.path().join("tokens-away");
    std::fs::rename(&tokens, &away).unwrap();
    std::fs::create_dir(&tokens).unwrap();
    let refused = attest(&signer, &public_key, 2);
    assert_eq!(refused.status, 503, "refused as retryable: {refused:?}");
    wait_until("the key not ready", Duration::from_secs(15), || ready() == 503);
    // Each request tries the token again, and is refused while it is away.
    assert_eq!(attest(&signer, &public_key, 3).status, 503);

    // It comes back with its key: the signer finds it again on its own.
    std::fs::remove_dir(&tokens).unwrap();
    std::fs::rename(&away, &tokens).unwrap();
    wait_until("the key ready again", Duration::from_secs(60), || ready() == 200);
    assert_eq!(attest(&signer, &public_key, 4).status, 200);
    let logs = signer.drain_logs().join("\n");
    assert!(logs.contains("PKCS#11 session failed; discarding"), "{logs}");
    assert!(logs.contains("PKCS#11 token reopened"), "{logs}");
    assert!(!logs.contains("1234"), "the PIN must not be logged");
}

/// The module finalised under the backend (another library in the process calling C_Finalize,
/// as a restarted HSM client would leave it): the sign is refused as transient, the readiness
/// check reopens the module from scratch, and the key signs again.
#[test]
fn a_finalised_module_is_reopened_by_the_readiness_check() {
    let module = script("softhsm");
    let dir = tempfile::tempdir().unwrap();
    let conf = token(dir.path());
    let seed: [u8; 32] = hex::decode(SEED_HEX).unwrap().try_into().unwrap();
    import_ed25519(&module, &conf, "ed", &seed);
    let pin = dir.path().join("pin");
    std::fs::write(&pin, "1234\n").unwrap();
    let backend = Pkcs11Backend::new(Pkcs11KeyConfig {
        module: module.clone().into(),
        token_label: "sigil".into(),
        key_label: "ed".into(),
        pin_file: Some(pin),
        pin_env: None,
    });
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let public_key = backend.public_key().await.unwrap();
        backend.public_key().await.unwrap().verify(b"one", &backend.sign(b"one").await.unwrap()).unwrap();
        backend.check().await.unwrap();

        // SoftHSM's state is per process: finalising it from here kills the backend's sessions.
        cryptoki::context::Pkcs11::new(&module).unwrap().finalize().unwrap();
        let error = backend.sign(b"two").await.unwrap_err();
        assert!(error.is_transient(), "{error}");
        assert!(error.to_string().contains("the token will be reopened"), "{error}");

        backend.check().await.unwrap();
        public_key.verify(b"three", &backend.sign(b"three").await.unwrap()).unwrap();
    });
}

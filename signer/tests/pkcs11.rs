//! The PKCS#11 backend against SoftHSM2 (Debian's, a real PKCS#11 module): a token initialised by
//! the test, Ed25519, secp256k1 and P-256 keys generated inside it, signatures for Tezos requests
//! verified independently by pytezos (which rejects high-S tz2 signatures, so SoftHSM's raw
//! signatures must have been normalised). A wrong PIN or token is "not ready", never a signature.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use sigil_signer::keys::{Algorithm, PublicKey};
use sigil_signer::protocol::tezos::encoding;
use sigil_tests::tezos::{consensus, MAINNET};

/// A fresh SoftHSM2 token labelled `sigil` (user PIN 1234) in `dir`; returns SOFTHSM2_CONF.
fn token(dir: &Path) -> PathBuf {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display()),
    )
    .unwrap();
    let status = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "sigil", "--pin", "1234", "--so-pin", "5678"])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    conf
}

/// Generates the three key pairs in the token; returns their public keys.
fn generate(module: &str, conf: &Path) -> Vec<(&'static str, PublicKey)> {
    // SoftHSM reads its config from the environment when the module initialises.
    std::env::set_var("SOFTHSM2_CONF", conf);
    let pkcs11 = Pkcs11::new(module).unwrap();
    pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)).unwrap();
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).unwrap().label() == "sigil")
        .unwrap();
    let session = pkcs11.open_rw_session(slot).unwrap();
    session.login(UserType::User, Some(&AuthPin::new("1234".into()))).unwrap();
    let keys = [
        ("ed", Mechanism::EccEdwardsKeyPairGen, vec![0x06, 0x03, 0x2b, 0x65, 0x70], Algorithm::Ed25519),
        ("k1", Mechanism::EccKeyPairGen, vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a], Algorithm::Secp256k1),
        (
            "p256",
            Mechanism::EccKeyPairGen,
            vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            Algorithm::P256,
        ),
    ];
    let mut public_keys = Vec::new();
    for (label, mechanism, params, algorithm) in keys {
        let label_attr = Attribute::Label(label.as_bytes().to_vec());
        let public = [Attribute::Token(true), Attribute::Verify(true), Attribute::EcParams(params), label_attr.clone()];
        let private = [Attribute::Token(true), Attribute::Sign(true), Attribute::Sensitive(true), label_attr];
        let (public, _) = session.generate_key_pair(&mechanism, &public, &private).unwrap();
        let Attribute::EcPoint(point) = session.get_attributes(public, &[AttributeType::EcPoint]).unwrap().remove(0)
        else {
            panic!("no EC point")
        };
        public_keys.push((label, PublicKey::from_bytes(algorithm, &point[2..]).unwrap()));
    }
    public_keys
}

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

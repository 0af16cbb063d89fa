//! The AWS KMS backend against MiniStack (PyPI, an AWS emulator on loopback) through the real
//! `aws-sdk-kms` client: keys created by the test on all three curves, Tezos signatures verified by
//! pytezos (tz2 must be low S; KMS's DER signatures are not normalised). A missing key or a dead
//! service means "not ready" or a retryable refusal, never a signature.

mod common;

use aws_sdk_kms::types::KeySpec;
use common::*;
use sigil_signer::backend::aws::AwsKmsBackend;
use sigil_signer::backend::{AwsKmsKeyConfig, KeyBackend};
use sigil_signer::keys::tezos as encoding;
use sigil_tests::ministack::{Ministack, ENV};
use sigil_tests::tezos::{consensus, MAINNET};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_keys_sign_for_tezos_and_pytezos_agrees() {
    let python = script("pytezos");
    let emulator = Ministack::start();
    let mut keys = Vec::new();
    for (label, spec) in
        [("ed", KeySpec::EccNistEdwards25519), ("k1", KeySpec::EccSecgP256K1), ("p256", KeySpec::EccNistP256)]
    {
        let key_id = emulator.create_key(spec).await;
        let backend = AwsKmsBackend::new(AwsKmsKeyConfig {
            key_id: key_id.clone(),
            region: Some("us-east-1".into()),
            endpoint: Some(emulator.endpoint.clone()),
        });
        keys.push((label, key_id, backend.public_key().await.unwrap()));
    }

    let dir = tempfile::tempdir().unwrap();
    let key = |id: &str| emulator.key_config(id);
    let allow = "{allow: [attestation]}";
    let config = dir.path().join("signer.yaml");
    std::fs::write(
        &config,
        format!(
            "keys: {{ed: {}, k1: {}, p256: {}, missing: {}}}\nratchet: {{memory: {{}}}}\n\
             tezos: {{listen: 127.0.0.1:0, keys: {{ed: {allow}, k1: {allow}, p256: {allow}, missing: {allow}}}}}\n\
             management: {{listen: 127.0.0.1:0}}\n",
            key(&keys[0].1),
            key(&keys[1].1),
            key(&keys[2].1),
            key("00000000-0000-0000-0000-000000000000")
        ),
    )
    .unwrap();
    let signer =
        tokio::task::spawn_blocking(move || SignerProcess::spawn(&["--config", config.to_str().unwrap()], &ENV))
            .await
            .unwrap();
    let management = signer.management;
    let tezos = signer.tezos();

    let checks = tokio::task::spawn_blocking(move || {
        // The missing key keeps the signer not ready; the others serve.
        let ready = http(management, "GET", "/readyz", None, None);
        assert_eq!(ready.status, 503, "{ready:?}");
        assert!(ready.body.contains("missing"), "{ready:?}");
        let mut checks = Vec::new();
        for (label, _, public_key) in &keys {
            let pkh = encoding::pkh(public_key);
            for level in 1..=20 {
                let data = consensus(0x13, MAINNET, level, 0, 1);
                let body = format!("\"{}\"", hex::encode(&data));
                let response = http(tezos, "POST", &format!("/keys/{pkh}"), None, Some(&body));
                assert_eq!(response.status, 200, "{label}: {response:?}");
                let signature = response.json()["signature"].as_str().unwrap().to_string();
                checks.push(serde_json::json!([encoding::public_key_b58(public_key), signature, hex::encode(&data)]));
            }
        }
        checks
    })
    .await
    .unwrap();
    assert_eq!(checks.len(), 60);
    assert_eq!(pytezos_rejects(&python, &checks), 0);
    let logs = signer.drain_logs().join("\n");
    assert!(!logs.contains("AWS_SECRET") && !logs.contains("\"test\""), "no credentials in logs");

    // The service gone: a retryable refusal, nothing signed.
    drop(emulator);
    let pkh = encoding::pkh(&checks_key(&checks));
    let refused = tokio::task::spawn_blocking(move || {
        let body = format!("\"{}\"", hex::encode(consensus(0x13, MAINNET, 50, 0, 1)));
        http(tezos, "POST", &format!("/keys/{pkh}"), None, Some(&body))
    })
    .await
    .unwrap();
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(refused.body.contains("AWS KMS"), "{refused:?}");
    let metrics =
        tokio::task::spawn_blocking(move || http(management, "GET", "/metrics", None, None).body).await.unwrap();
    assert!(
        metrics.contains(r#"sigil_signer_backend_errors_total{backend="awsKms",key="ed",kind="transient"} 1"#),
        "{metrics}"
    );
}

/// The first key's public key, back from its base58 form.
fn checks_key(checks: &[serde_json::Value]) -> sigil_signer::keys::PublicKey {
    encoding::parse_public_key(checks[0][0].as_str().unwrap()).unwrap()
}

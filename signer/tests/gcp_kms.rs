//! The GCP Cloud KMS backend through Google's own client (`google-cloud-kms-v1`) against the fake
//! in sigil_tests::fake_kms::gcp (no emulator exists; it follows the public REST surface with real
//! keys and CRC32C). Atto's voter deployment runs exactly this: the drop-in environment mode with
//! `ATTO_SIGNER_BACKEND=GCP`, checked by the Atto library. Tezos keys on all three curves are
//! checked by pytezos. A failing service (corrupt exchanges, wrong signatures, outages, refusals,
//! slowness) gets a refusal, turns the signer not ready, signs nothing, and is recovered from.

mod common;

use std::time::Duration;

use common::*;
use sigil_signer::keys::tezos as encoding;
use sigil_signer::keys::{Algorithm, SecretKey};
use sigil_tests::fake_kms::gcp::{key_version, FakeGcpKms, Fault};
use sigil_tests::tezos::{consensus, MAINNET};

/// Runs blocking test code (HTTP with std sockets, child processes) off the fake's runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_atto_voter_runs_on_gcp_kms_in_drop_in_mode() {
    let seed = SecretKey::from_hex(Algorithm::Ed25519, SEED_HEX).unwrap();
    let kms = FakeGcpKms::start(vec![("voter", seed)], &[]).await;
    let version = key_version("voter");
    let endpoint = kms.endpoint.clone();
    blocking(move || {
        // The upstream signer container's environment, plus where the fake is.
        let signer = SignerProcess::spawn(
            &[],
            &[
                ("ATTO_SIGNER_BACKEND", "GCP"),
                ("ATTO_SIGNER_KEY", &version),
                ("ATTO_SIGNER_TOKEN", TOKEN),
                ("ATTO_SIGNER_CAPABILITIES", "CHALLENGE,BLOCK,VOTE"),
                ("ATTO_SIGNER_PORT", "0"),
                ("ATTO_SIGNER_MANAGEMENT_PORT", "0"),
                ("SIGIL_GCP_KMS_ENDPOINT", &endpoint),
            ],
        );
        wait_until("the key ready", Duration::from_secs(20), || {
            http(signer.management, "GET", "/readyz", None, None).status == 200
        });
        atto_library_checks(signer.atto());
    })
    .await;
    assert_eq!(kms.signs(), 100, "one KMS call per signature");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_the_signer_cannot_use_keep_it_not_ready_and_say_why() {
    let kms = FakeGcpKms::start(vec![], &[("rsa", "RSA_SIGN_PSS_2048_SHA256")]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("signer.yaml");
    let key = |name: &str| format!("{{gcpKms: {{keyVersion: '{}', endpoint: '{}'}}}}", key_version(name), kms.endpoint);
    std::fs::write(
        &config,
        format!(
            "keys: {{rsa: {}, missing: {}}}\nratchet: {{memory: {{}}}}\n\
             tezos: {{listen: 127.0.0.1:0, keys: {{rsa: {{allow: [block]}}, missing: {{allow: [block]}}}}}}\nmanagement: {{listen: 127.0.0.1:0}}\n",
            key("rsa"),
            key("missing")
        ),
    )
    .unwrap();
    blocking(move || {
        let signer = SignerProcess::start(&config, &[]);
        let ready = http(signer.management, "GET", "/readyz", None, None);
        assert_eq!(ready.status, 503, "{ready:?}");
        assert!(ready.body.contains("waiting for keys: missing, rsa"), "{ready:?}");
        let mut logs = String::new();
        wait_until("both reasons in the log", Duration::from_secs(20), || {
            logs.push_str(&signer.drain_logs().join("\n"));
            logs.contains("NOT_FOUND") && logs.contains("algorithm RSA_SIGN_PSS_2048_SHA256; sigil signs with")
        });
    })
    .await;
    assert_eq!(kms.signs(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcp_kms_keys_sign_for_tezos_and_a_failing_service_signs_nothing() {
    let python = script("pytezos");
    let keys = [("ed", Algorithm::Ed25519), ("k1", Algorithm::Secp256k1), ("p256", Algorithm::P256)];
    let kms = FakeGcpKms::start(keys.iter().map(|(name, a)| (*name, SecretKey::generate(*a))).collect(), &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("signer.yaml");
    let key = |name: &str| format!("{{gcpKms: {{keyVersion: '{}', endpoint: '{}'}}}}", key_version(name), kms.endpoint);
    let allow = "{allow: [attestation]}";
    std::fs::write(
        &config,
        format!(
            "keys: {{ed: {}, k1: {}, p256: {}}}\nratchet: {{memory: {{}}}}\n\
             tezos: {{listen: 127.0.0.1:0, keys: {{ed: {allow}, k1: {allow}, p256: {allow}}}}}\n\
             management: {{listen: 127.0.0.1:0}}\n",
            key("ed"),
            key("k1"),
            key("p256")
        ),
    )
    .unwrap();
    let public_keys: Vec<_> = keys.iter().map(|(name, _)| (*name, kms.public_key(name))).collect();
    let signer = blocking(move || SignerProcess::start(&config, &[])).await;
    let (tezos, management) = (signer.tezos(), signer.management);
    blocking(move || {
        wait_until("keys ready", Duration::from_secs(20), || {
            http(management, "GET", "/readyz", None, None).status == 200
        })
    })
    .await;

    // Twenty attestations per key; the fake answers DER, with high S every other time.
    let mut checks = Vec::new();
    let sign = move |pkh: String, level: u32| {
        blocking(move || {
            let data = consensus(0x13, MAINNET, level, 0, 1);
            let body = format!("\"{}\"", hex::encode(&data));
            (http(tezos, "POST", &format!("/keys/{pkh}"), None, Some(&body)), data)
        })
    };
    for (name, public_key) in &public_keys {
        let pkh = encoding::pkh(public_key);
        let answer = blocking({
            let pkh = pkh.clone();
            move || http(tezos, "GET", &format!("/keys/{pkh}"), None, None).json()
        })
        .await;
        assert_eq!(answer["public_key"], encoding::public_key_b58(public_key), "{name}");
        for level in 1..=20 {
            let (response, data) = sign(pkh.clone(), level).await;
            assert_eq!(response.status, 200, "{name}: {response:?}");
            let signature = response.json()["signature"].as_str().unwrap().to_string();
            checks.push(serde_json::json!([encoding::public_key_b58(public_key), signature, hex::encode(&data)]));
        }
    }
    let k1 = encoding::pkh(&public_keys[1].1);
    let mut accept = |response: &Response, data: &[u8]| {
        assert_eq!(response.status, 200, "{response:?}");
        let signature = response.json()["signature"].as_str().unwrap().to_string();
        checks.push(serde_json::json!([encoding::public_key_b58(&public_keys[1].1), signature, hex::encode(data)]));
    };

    // One corrupted exchange is asked again and signs.
    kms.set_fault(Fault::CorruptRequest(1));
    let before = kms.signs();
    let (response, data) = sign(k1.clone(), 21).await;
    accept(&response, &data);
    assert_eq!(kms.signs() - before, 2);

    // A service that keeps failing: a refusal that says why, then recovery at the same level
    // (nothing was released, so the mark did not move). Where the whole service fails, not only
    // its signatures, the signer is not ready meanwhile (the probe asks for the public key).
    let failures: [(Fault, u16, &str, bool); 5] = [
        (Fault::CorruptRequest(100), 503, "checksums did not match 3 times", false),
        (Fault::WrongSignature, 500, "the signature does not verify against the key; refused", false),
        (Fault::Unavailable, 503, "UNAVAILABLE", true),
        (Fault::PermissionDenied, 500, "PERMISSION_DENIED", true),
        (Fault::Slow(Duration::from_secs(3)), 503, "key k1 (gcpKms)", true),
    ];
    for (i, (fault, status, reason, whole_service)) in failures.into_iter().enumerate() {
        let level = 22 + i as u32;
        kms.set_fault(fault);
        let (response, _) = sign(k1.clone(), level).await;
        assert_eq!(response.status, status, "{fault:?}: {response:?}");
        assert!(response.body.contains(reason), "{fault:?}: {response:?}");
        if whole_service {
            let ready = blocking(move || http(management, "GET", "/readyz", None, None)).await;
            assert_eq!((ready.status, ready.body.as_str()), (503, "keys unreachable: k1\n"), "{fault:?}");
        }
        kms.set_fault(Fault::None);
        blocking(move || {
            wait_until("ready again", Duration::from_secs(20), || {
                http(management, "GET", "/readyz", None, None).status == 200
            })
        })
        .await;
        let (response, data) = sign(k1.clone(), level).await;
        accept(&response, &data);
    }

    assert_eq!(checks.len(), 66);
    let python_checks = checks.clone();
    assert_eq!(blocking(move || pytezos_rejects(&python, &python_checks)).await, 0);
    let metrics = blocking(move || http(management, "GET", "/metrics", None, None).body).await;
    for (kind, count) in [("transient", 3), ("permanent", 2)] {
        let line = format!(r#"sigil_signer_backend_errors_total{{backend="gcpKms",key="k1",kind="{kind}"}} {count}"#);
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
}

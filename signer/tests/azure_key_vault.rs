//! The Azure Key Vault backend through Microsoft's own client (`azure_security_keyvault_keys`,
//! `azure_identity`) against the HTTPS fake in sigil_tests::fake_kms::azure, which plays the vault
//! and Entra's token endpoint, so the whole Workload Identity exchange runs: the federated token
//! file the AKS webhook mounts, the vault's 401 challenge, the token grant, the bearer calls.
//! tz2 and tz3 signatures are checked by pytezos. Bad credentials, a missing key, a vault that
//! does not prove its domain, and a failing service get refusals and signing nothing.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use sigil_signer::keys::tezos as encoding;
use sigil_signer::keys::{Algorithm, SecretKey};
use sigil_tests::fake_kms::azure::FakeKeyVault;
use sigil_tests::fake_kms::Fault;
use sigil_tests::tezos::{consensus, MAINNET};

/// Runs blocking test code (HTTP with std sockets, child processes) off the fake's runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// A signer config with these Key Vault keys (`name` → the vault's key name, and whether to
/// verify the challenge's domain) for Tezos attestations.
fn config(dir: &Path, vault: &FakeKeyVault, keys: &[(&str, &str, bool)]) -> std::path::PathBuf {
    let key = |(_, vault_name, verify): &(&str, &str, bool)| {
        let verify = if *verify { String::new() } else { ", verifyChallengeResource: false".into() };
        format!("{{azureKeyVault: {{vaultUrl: '{}', keyName: {vault_name}{verify}}}}}", vault.url)
    };
    let entries = |value: &dyn Fn(&(&str, &str, bool)) -> String| {
        keys.iter().map(|k| format!("{}: {}", k.0, value(k))).collect::<Vec<_>>().join(", ")
    };
    let path = dir.join("signer.yaml");
    std::fs::write(
        &path,
        format!(
            "keys: {{{}}}\nratchet: {{memory: {{}}}}\ntezos: {{listen: 127.0.0.1:0, keys: {{{}}}}}\n\
             management: {{listen: 127.0.0.1:0}}\n",
            entries(&key),
            entries(&|_| "{allow: [attestation]}".to_string())
        ),
    )
    .unwrap();
    path
}

/// The signer with the pod environment Workload Identity gives it.
fn start(config: &Path, pod_env: &[(String, String)]) -> SignerProcess {
    let env: Vec<(&str, &str)> = pod_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    SignerProcess::start(config, &env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_vault_keys_sign_for_tezos_and_a_failing_vault_signs_nothing() {
    let python = script("pytezos");
    let dir = tempfile::tempdir().unwrap();
    let keys = vec![("k1", SecretKey::generate(Algorithm::Secp256k1)), ("p256", SecretKey::generate(Algorithm::P256))];
    let vault = FakeKeyVault::start(keys, dir.path()).await;
    let config = config(dir.path(), &vault, &[("k1", "k1", false), ("p256", "p256", false)]);
    let public_keys = [("k1", vault.public_key("k1")), ("p256", vault.public_key("p256"))];
    let pod_env = vault.pod_env();
    let signer = blocking(move || start(&config, &pod_env)).await;
    let (tezos, management) = (signer.tezos(), signer.management);
    blocking(move || {
        wait_until("keys ready", Duration::from_secs(20), || {
            http(management, "GET", "/readyz", None, None).status == 200
        })
    })
    .await;
    let sign = move |pkh: String, level: u32| {
        blocking(move || {
            let data = consensus(0x13, MAINNET, level, 0, 1);
            let body = format!("\"{}\"", hex::encode(&data));
            (http(tezos, "POST", &format!("/keys/{pkh}"), None, Some(&body)), data)
        })
    };

    // Twenty attestations per key; the fake returns high S every other time.
    let mut checks = Vec::new();
    let mut accept = |public_key: &sigil_signer::keys::PublicKey, response: &Response, data: &[u8]| {
        assert_eq!(response.status, 200, "{response:?}");
        let signature = response.json()["signature"].as_str().unwrap().to_string();
        checks.push(serde_json::json!([encoding::public_key_b58(public_key), signature, hex::encode(data)]));
    };
    for (_, public_key) in &public_keys {
        for level in 1..=20 {
            let (response, data) = sign(encoding::pkh(public_key), level).await;
            accept(public_key, &response, &data);
        }
    }
    assert_eq!(vault.signs(), 40);

    // A failing vault: a refusal that says why, then recovery at the same level (nothing was
    // released). Where the whole vault fails, the signer is not ready meanwhile.
    let k1 = &public_keys[0].1;
    let failures: [(Fault, u16, &str, bool); 4] = [
        (Fault::WrongSignature, 500, "the signature does not verify against the key; refused", false),
        (Fault::Unavailable, 503, "The service is unavailable", true),
        (Fault::PermissionDenied, 500, "does not have keys sign permission", true),
        (Fault::Slow(Duration::from_secs(6)), 503, "did not answer within", true),
    ];
    for (i, (fault, status, reason, whole_vault)) in failures.into_iter().enumerate() {
        let level = 21 + i as u32;
        vault.set_fault(fault);
        let (response, _) = sign(encoding::pkh(k1), level).await;
        assert_eq!(response.status, status, "{fault:?}: {response:?}");
        assert!(response.body.contains(reason), "{fault:?}: {response:?}");
        if whole_vault {
            let ready = blocking(move || http(management, "GET", "/readyz", None, None)).await;
            assert_eq!((ready.status, ready.body.as_str()), (503, "keys unreachable: k1\n"), "{fault:?}");
        }
        vault.set_fault(Fault::None);
        blocking(move || {
            wait_until("ready again", Duration::from_secs(30), || {
                http(management, "GET", "/readyz", None, None).status == 200
            })
        })
        .await;
        let (response, data) = sign(encoding::pkh(k1), level).await;
        accept(k1, &response, &data);
    }
    assert_eq!(checks.len(), 44);
    assert_eq!(blocking(move || pytezos_rejects(&python, &checks)).await, 0);

    let logs = blocking(move || signer.drain_logs().join("\n")).await;
    let federated = std::fs::read_to_string(&vault.pod_env()[3].1).unwrap();
    assert!(!logs.contains(&federated), "the federated token must not be logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_a_missing_key_and_an_unproven_vault_keep_keys_unready() {
    let dir = tempfile::tempdir().unwrap();
    let vault = FakeKeyVault::start(vec![("k1", SecretKey::generate(Algorithm::Secp256k1))], dir.path()).await;
    // The identity is not federated (yet): Entra refuses the pod's token.
    vault.set_fault(Fault::Unauthenticated);
    let config =
        config(dir.path(), &vault, &[("k1", "k1", false), ("missing", "missing", false), ("strict", "k1", true)]);
    let pod_env = vault.pod_env();
    let federated = std::fs::read_to_string(&pod_env[3].1).unwrap();
    let wait_for_log = |signer: SignerProcess, mut logs: String, what: &'static [&'static str]| {
        blocking(move || {
            wait_until(&format!("{what:?} in the log"), Duration::from_secs(20), || {
                logs.push_str(&signer.drain_logs().join("\n"));
                what.iter().all(|w| logs.contains(w))
            });
            (signer, logs)
        })
    };
    let readyz = |management| blocking(move || http(management, "GET", "/readyz", None, None));
    let signer = blocking(move || start(&config, &pod_env)).await;
    let management = signer.management;
    let (signer, logs) =
        wait_for_log(signer, String::new(), &["AADSTS700213", "doesn't match the requested domain"]).await;
    let ready = readyz(management).await;
    assert_eq!((ready.status, ready.body.as_str()), (503, "waiting for keys: k1, missing, strict\n"));

    // Federated now: k1 comes up; the missing key and the unproven vault stay down.
    vault.set_fault(Fault::None);
    let (_signer, logs) = wait_for_log(signer, logs, &["missing was not found in this key vault"]).await;
    let ready = readyz(management).await;
    assert_eq!((ready.status, ready.body.as_str()), (503, "waiting for keys: missing, strict\n"));
    assert!(!logs.contains(&federated), "the federated token must not be logged");
    assert_eq!(vault.signs(), 0);
}

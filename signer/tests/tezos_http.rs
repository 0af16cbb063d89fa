//! The Tezos API against the real binary: high-water marks per kind, answers to bad input, and a
//! kill -9 in the middle of a stream that never loses a mark a released signature depended on.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use sigil_tests::tezos::{consensus, MAINNET};

const BAKER: &str = "edsk3qAQSJaDBSYN2PCMdv7BuJoBKeRyDFq5uPAwDfFRAhQdwHxPMN";
const BAKER_PKH: &str = "tz1SodoUsWVe1Yey9eMFbqRUtNpBWfir5NRr";

fn config(dir: &Path, policy: &str) -> String {
    let text = format!(
        "keys: {{baker: {{local: {{secretKey: {BAKER}}}}}}}\n\
         ratchet: {{file: {{dir: {}}}}}\n\
         tezos: {{listen: 127.0.0.1:0, keys: {{baker: {policy}}}}}\n\
         management: {{listen: 127.0.0.1:0}}\n",
        dir.join("ratchet").display()
    );
    let path = dir.join("signer.yaml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn start(dir: &Path, policy: &str) -> SignerProcess {
    SignerProcess::spawn(&["--config", &config(dir, policy)], &[])
}

const BAKING: &str = "{allow: [block, preattestation, attestation]}";

fn block(level: u32, round: u32, payload: u8) -> Vec<u8> {
    sigil_tests::tezos::block(MAINNET, level, round, payload)
}

fn post(signer: &SignerProcess, pkh: &str, data: &[u8]) -> Response {
    http(signer.tezos(), "POST", &format!("/keys/{pkh}?version=2"), None, Some(&format!("\"{}\"", hex::encode(data))))
}

fn signature(response: &Response) -> String {
    assert_eq!(response.status, 200, "{response:?}");
    response.json()["signature"].as_str().unwrap().to_string()
}

fn message(response: &Response) -> String {
    response.json()[0]["msg"].as_str().unwrap_or_default().to_string()
}

#[test]
fn marks_rise_per_kind_and_identical_requests_get_the_same_signature() {
    let dir = tempfile::tempdir().unwrap();
    let signer = start(dir.path(), BAKING);
    let first = signature(&post(&signer, BAKER_PKH, &consensus(0x13, MAINNET, 10, 1, 1)));
    assert!(first.starts_with("edsig"), "{first}");
    // The same bytes again: the same signature.
    assert_eq!(signature(&post(&signer, BAKER_PKH, &consensus(0x13, MAINNET, 10, 1, 1))), first);
    // Same level and round, other payload: a double attestation.
    let double = post(&signer, BAKER_PKH, &consensus(0x13, MAINNET, 10, 1, 2));
    assert_eq!(double.status, 409, "{double:?}");
    assert!(message(&double).contains("with a different payload"), "{double:?}");
    // Lower round, lower level: refused.
    assert_eq!(post(&signer, BAKER_PKH, &consensus(0x13, MAINNET, 10, 0, 1)).status, 409);
    assert_eq!(post(&signer, BAKER_PKH, &consensus(0x13, MAINNET, 9, 5, 1)).status, 409);
    // Other kinds and other chains keep their own marks.
    signature(&post(&signer, BAKER_PKH, &consensus(0x12, MAINNET, 10, 1, 2)));
    signature(&post(&signer, BAKER_PKH, &block(10, 1, 3)));
    signature(&post(&signer, BAKER_PKH, &consensus(0x13, [1, 2, 3, 4], 3, 0, 1)));
    // Higher round, then higher level: signed.
    signature(&post(&signer, BAKER_PKH, &consensus(0x13, MAINNET, 10, 2, 2)));
    signature(&post(&signer, BAKER_PKH, &consensus(0x13, MAINNET, 11, 0, 2)));
    assert_eq!(post(&signer, BAKER_PKH, &block(10, 0, 3)).status, 409);

    let metrics = http(signer.management, "GET", "/metrics", None, None).body;
    assert!(metrics.contains(r#"sigil_signer_refusals_total{protocol="tezos",reason="ratchet"} 4"#), "{metrics}");
    assert!(metrics.contains(r#"sigil_signer_ratchet_commit_duration_seconds_count{store="file"}"#), "{metrics}");
}

#[test]
fn bad_input_gets_a_clear_refusal_and_nothing_is_signed() {
    let dir = tempfile::tempdir().unwrap();
    let client = "edpkv45regue1bWtuHnCgLU8xWKLwa9qRqv4gimgJKro4LSc3C5VjV";
    let signer =
        start(dir.path(), &format!("{{allow: [attestation], chains: [NetXdQprcVkpaWU], authorizedKeys: [{client}]}}"));
    let addr = signer.tezos();
    let authorized = http(addr, "GET", "/authorized_keys", None, None);
    assert_eq!(authorized.json(), serde_json::json!({"authorized_keys": ["tz1LggX2HUdvJ1tF4Fvv8fjsrzLeW4Jr9t2Q"]}));
    let public_key = http(addr, "GET", &format!("/keys/{BAKER_PKH}"), None, None);
    assert_eq!(public_key.json()["public_key"], "edpkufnz668CdgnVC4X5KRvJoXCMgicr29Tjmr5vxGzvMdipwkTZmM");
    assert_eq!(http(addr, "GET", "/keys/tz1LggX2HUdvJ1tF4Fvv8fjsrzLeW4Jr9t2Q", None, None).status, 404);
    assert_eq!(http(addr, "GET", "/known_keys", None, None).status, 403);

    let attestation = consensus(0x13, MAINNET, 5, 0, 1);
    let unauthenticated = post(&signer, BAKER_PKH, &attestation);
    assert_eq!(unauthenticated.status, 401, "{unauthenticated:?}");
    assert!(message(&unauthenticated).contains("authorizedKeys is set"), "{unauthenticated:?}");
    let forged = http(
        addr,
        "POST",
        &format!("/keys/{BAKER_PKH}?authentication=edsigttaa8Lq6sQEDSGbgWXpV2umGv4rQSqSVN2j1CuJNKTaDBRaPqZREFRSdGqH5zxVYhULjuxxnMfEE8cWCokrCfnMjFWNXfo"),
        None,
        Some(&format!("\"{}\"", hex::encode(&attestation))),
    );
    assert_eq!(forged.status, 401, "{forged:?}");
    assert!(message(&forged).contains("does not verify"), "{forged:?}");

    for (body, text) in [("\"zz\"", "not hex"), ("1234", "JSON string")] {
        let response = http(addr, "POST", &format!("/keys/{BAKER_PKH}"), None, Some(body));
        assert_eq!(response.status, 400, "{body}: {response:?}");
        assert!(message(&response).contains(text), "{body}: {response:?}");
    }
    let huge = format!("\"{}\"", "00".repeat(100_000));
    assert_eq!(http(addr, "POST", &format!("/keys/{BAKER_PKH}"), None, Some(&huge)).status, 413);
    assert_eq!(http(addr, "POST", "/keys/tz1LggX2HUdvJ1tF4Fvv8fjsrzLeW4Jr9t2Q", None, Some("\"13\"")).status, 404);

    let metrics = http(signer.management, "GET", "/metrics", None, None).body;
    assert!(!metrics.contains("sigil_signer_signatures_total{"), "nothing may be signed: {metrics}");
    assert!(metrics.contains(r#"reason="unauthenticated"} 2"#), "{metrics}");
}

#[test]
fn policy_refusals_name_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let signer = start(dir.path(), "{allow: [attestation, 'generic:reveal'], chains: [NetXdQprcVkpaWU]}");
    let block = post(&signer, BAKER_PKH, &block(1, 0, 1));
    assert_eq!(block.status, 403);
    assert_eq!(message(&block), "block request is not allowed by tezos.keys.baker.allow");
    let testnet = post(&signer, BAKER_PKH, &consensus(0x13, [1, 2, 3, 4], 1, 0, 1));
    assert_eq!(testnet.status, 403);
    assert!(message(&testnet).contains("is not in tezos.keys.baker.chains"), "{testnet:?}");
    // A transaction (Signatory's auth_test fixture) when only reveal is allowed.
    let transaction = hex::decode("03a11f5f176e553a11cf184bb2b15f09f55dfc5dcb2d26d79bf5dd099d074d5f5d6c0079cae4c9a1885f17d3995619bf28636c4394458b820af19172c35000904e0000712c4c4270d9e7f512115310d8ec6acfcd878bef00").unwrap();
    let refused = post(&signer, BAKER_PKH, &transaction);
    assert_eq!(refused.status, 403);
    assert_eq!(message(&refused), "generic:transaction operation is not allowed by tezos.keys.baker.allow");
    for (body, text) in [("\"0401\"", "unknown magic byte 0x04"), ("\"\"", "empty request")] {
        let response = http(signer.tezos(), "POST", &format!("/keys/{BAKER_PKH}"), None, Some(body));
        assert_eq!(response.status, 400, "{body}: {response:?}");
        assert!(message(&response).contains(text), "{body}: {response:?}");
    }
    let mut unknown = transaction.clone();
    unknown[33] = 240;
    let unknown = post(&signer, BAKER_PKH, &unknown);
    assert_eq!(unknown.status, 400);
    assert!(message(&unknown).contains("unknown operation tag 240"), "{unknown:?}");
    // The stake entrypoint of a contract: not a staking operation, refused before any policy.
    let mut stake = transaction[..transaction.len() - 23].to_vec();
    stake.extend(hex::decode("019af3138763ec09dde90926f5a6b60783a21607d500ff0600000002030b").unwrap());
    let stake = post(&signer, BAKER_PKH, &stake);
    assert_eq!(stake.status, 400, "{stake:?}");
    assert!(
        message(&stake).contains(
            "transaction to the reserved entrypoint stake of another account (KT1Ni4pYV3UGWcDp7MgR5prgcD4NCK1MpXiR)"
        ),
        "{stake:?}"
    );
    drop(signer);

    let elsewhere = tempfile::tempdir().unwrap();
    let signer = start(elsewhere.path(), "{allow: [attestation], allowedIps: [10.0.0.0/8]}");
    let from_loopback = post(&signer, BAKER_PKH, &consensus(0x13, MAINNET, 1, 0, 1));
    assert_eq!(from_loopback.status, 403);
    assert_eq!(message(&from_loopback), "client 127.0.0.1 is not in tezos.keys.baker.allowedIps");
}

/// A client signs attestations at rising levels while the signer is killed with SIGKILL. After a
/// restart on the same directory, the highest level it was given a signature for is still the mark:
/// a different payload there is refused, the identical one gets the same signature back.
#[test]
fn kill_9_never_loses_a_released_mark() {
    let dir = tempfile::tempdir().unwrap();
    let signer = start(dir.path(), BAKING);
    let addr = signer.tezos();
    let highest = Arc::new(AtomicU64::new(0));
    let signatures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let client = {
        let (highest, signatures) = (highest.clone(), signatures.clone());
        std::thread::spawn(move || {
            for level in 1u32.. {
                let data = consensus(0x13, MAINNET, level, 0, 1);
                let body = format!("\"{}\"", hex::encode(&data));
                let Ok(response) =
                    std::panic::catch_unwind(|| http(addr, "POST", &format!("/keys/{BAKER_PKH}"), None, Some(&body)))
                else {
                    return; // the signer is gone
                };
                if response.status != 200 {
                    return;
                }
                signatures.lock().unwrap().push(response.json()["signature"].as_str().unwrap().to_string());
                highest.store(u64::from(level), Ordering::SeqCst);
            }
        })
    };
    wait_until("50 signatures", Duration::from_secs(30), || highest.load(Ordering::SeqCst) >= 50);
    signer.kill();
    let _ = client.join();
    let level = highest.load(Ordering::SeqCst) as u32;
    let last_signature = signatures.lock().unwrap().last().cloned().unwrap();

    let signer = start(dir.path(), BAKING);
    let double = post(&signer, BAKER_PKH, &consensus(0x13, MAINNET, level, 0, 2));
    assert_eq!(double.status, 409, "level {level} with another payload after the restart: {double:?}");
    // The identical request gets the same signature back, unless the next level's mark was made
    // durable just before the kill (its answer lost): then the mark is above it.
    let again = post(&signer, BAKER_PKH, &consensus(0x13, MAINNET, level, 0, 1));
    match again.status {
        200 => assert_eq!(signature(&again), last_signature),
        409 => assert!(message(&again).contains(&format!("is at level {} round 0", level + 1)), "{again:?}"),
        _ => panic!("{again:?}"),
    }
    assert_eq!(post(&signer, BAKER_PKH, &consensus(0x13, MAINNET, level - 1, 0, 1)).status, 409);
    signature(&post(&signer, BAKER_PKH, &consensus(0x13, MAINNET, level + 2, 0, 1)));
}

#[test]
fn a_second_signer_on_the_same_ratchet_directory_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let _first = start(dir.path(), BAKING);
    let (code, _, err) = run_to_end(&["--config", &config(dir.path(), BAKING)], &[], None);
    assert_eq!(code, 1);
    assert!(err.contains("is in use by another process"), "{err}");
}

/// A memory ratchet forgets its marks on restart: a Tezos or CometBFT signer on one says so, loudly,
/// when it starts (and still signs: tests and demos use it). An Atto signer keeps no marks and is
/// not warned.
#[test]
fn a_memory_ratchet_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let config = |name: &str, protocol: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "keys: {{baker: {{local: {{secretKey: {BAKER}}}}}}}\nratchet: {{memory: {{}}}}\n{protocol}\
                 management: {{listen: 127.0.0.1:0}}\n"
            ),
        )
        .unwrap();
        path
    };
    let warning = |signer: &SignerProcess| {
        signer.startup_logs().iter().find(|line| line.contains("ratchet.memory")).cloned().unwrap_or_default()
    };
    let tezos = SignerProcess::start(
        &config("tezos.yaml", "tezos: {listen: 127.0.0.1:0, keys: {baker: {allow: [attestation]}}}\n"),
        &[],
    );
    let said = warning(&tezos);
    assert!(said.contains("\"WARN\"") && said.contains("FORGOTTEN on restart"), "{:?}", tezos.startup_logs());
    assert!(said.contains("a double sign"), "{said}");
    signature(&post(&tezos, BAKER_PKH, &consensus(0x13, MAINNET, 1, 0, 1)));
    // A CometBFT signer (its node not up yet) says the same.
    let cometbft = SignerProcess::start(
        &config("cometbft.yaml", "cometbft: [{connect: 'tcp://127.0.0.1:9', chainId: c, key: baker}]\n"),
        &[],
    );
    assert!(warning(&cometbft).contains("FORGOTTEN on restart"), "{:?}", cometbft.startup_logs());

    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let atto =
        format!("atto: {{listen: 127.0.0.1:0, key: voter, capabilities: [VOTE], tokenFile: {}}}\n", token.display());
    std::fs::write(
        dir.path().join("atto.yaml"),
        format!("keys: {{voter: {{local: {{secretKey: '{SEED_HEX}'}}}}}}\nratchet: {{memory: {{}}}}\n{atto}management: {{listen: 127.0.0.1:0}}\n"),
    )
    .unwrap();
    let atto = SignerProcess::start(&dir.path().join("atto.yaml"), &[]);
    assert_eq!(warning(&atto), "", "Atto keeps no marks");
}

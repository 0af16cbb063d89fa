//! The Atto API over real HTTP against the real binary: the happy path, every error path, token
//! rotation through files, the management listener. The process must keep serving throughout.

mod common;

use std::time::Duration;

use common::*;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};

const OTHER_KEY: &str = "3B6A27BCCEB6A42D62A3A8D02A6F0D73653215771DE243A63AC048A18B59DA29";

fn verifying_key(hex_upper: &str) -> VerifyingKey {
    VerifyingKey::from_bytes(&hex::decode(hex_upper).unwrap().try_into().unwrap()).unwrap()
}

fn vote_hash(public_key: &str, block_hash: &str, timestamp: i64) -> [u8; 32] {
    let mut bytes = vec![0, 0, 0];
    bytes.extend(hex::decode(public_key).unwrap());
    bytes.push(0);
    bytes.extend(hex::decode(block_hash).unwrap());
    bytes.extend(timestamp.to_le_bytes());
    sigil_signer::protocol::atto::model::blake2b(&[&bytes])
}

fn config_mode(dir: &std::path::Path, capabilities: &str) -> SignerProcess {
    std::fs::write(dir.join("key"), SEED_HEX).unwrap();
    std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
    let config = format!(
        "keys:\n  voter: {{local: {{secretKeyFile: {key}}}}}\n\
         atto: {{listen: \"127.0.0.1:0\", key: voter, capabilities: [{capabilities}], tokenFile: {token}}}\n\
         management: {{listen: \"127.0.0.1:0\"}}\n",
        key = dir.join("key").display(),
        token = dir.join("token").display(),
    );
    std::fs::write(dir.join("signer.yaml"), config).unwrap();
    SignerProcess::spawn(&["--config", dir.join("signer.yaml").to_str().unwrap()], &[])
}

#[test]
fn every_error_path_then_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let signer = config_mode(dir.path(), "VOTE, CHALLENGE");
    let api = signer.atto();

    // Public key: authenticated GET, uppercase hex, JSON.
    let response = http(api, "GET", "/public-keys", Some(TOKEN), None);
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("content-type"), Some("application/json"));
    let public_key = response.json()["publicKey"].as_str().unwrap().to_string();
    assert_eq!(public_key, public_key.to_uppercase());
    assert_eq!(public_key.len(), 64);

    // A vote signs and verifies; lowercase hex in is fine.
    let block_hash = "AB".repeat(32);
    let body = vote_body(&public_key.to_lowercase(), &block_hash.to_lowercase(), 1_704_616_010_000);
    let response = http(api, "POST", "/votes", Some(TOKEN), Some(&body));
    assert_eq!(response.status, 200, "{response:?}");
    let signature = hex::decode(response.json()["signature"].as_str().unwrap()).unwrap();
    verifying_key(&public_key)
        .verify(&vote_hash(&public_key, &block_hash, 1_704_616_010_000), &Signature::from_slice(&signature).unwrap())
        .unwrap();
    // "Bearer <token>" works too.
    assert_eq!(http(api, "POST", "/votes", Some(&format!("Bearer {TOKEN}")), Some(&body)).status, 200);

    // 401: no token, wrong token, also on GET; empty body.
    for (method, path, token) in [
        ("GET", "/public-keys", None),
        ("GET", "/public-keys", Some("wrong")),
        ("POST", "/votes", None),
        ("POST", "/votes", Some("Bearer wrong")),
        ("POST", "/votes", Some(&TOKEN[..TOKEN.len() - 1])),
    ] {
        let response = http(api, method, path, token, Some(&body));
        assert_eq!(response.status, 401, "{method} {path} {token:?}");
        assert!(response.body.is_empty());
    }

    // 400: missing capability, with upstream's message.
    let block = format!(
        r#"{{"target":{{"type":"CHANGE","network":"LIVE","version":0,"algorithm":"V1","publicKey":"{public_key}","height":4,"balance":1,"timestamp":1,"previous":"{block_hash}","representativeAlgorithm":"V1","representativePublicKey":"{block_hash}"}}}}"#
    );
    let response = http(api, "POST", "/blocks", Some(TOKEN), Some(&block));
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["message"], "Signing a block is not allowed. Capability BLOCK is missing.");

    // 400: a vote for another key.
    let response = http(api, "POST", "/votes", Some(TOKEN), Some(&vote_body(OTHER_KEY, &block_hash, 1)));
    assert_eq!(response.status, 400);
    assert!(response.json()["message"].as_str().unwrap().starts_with(&format!("Different public key {OTHER_KEY}")));

    // 400: malformed JSON, wrong shapes, bad hex, short challenge.
    for bad in [
        "{",
        "[]",
        r#"{"target":{}}"#,
        &body.replace("\"V1\"", "\"V9\""),
        &body.replace(&block_hash.to_lowercase(), "zz"),
        &format!(r#"{{"target":"{}","timestamp":1}}"#, "ab".repeat(10)),
    ] {
        let path =
            if bad.contains("\"timestamp\":1}") && !bad.contains("blockHash") { "/challenges" } else { "/votes" };
        let response = http(api, "POST", path, Some(TOKEN), Some(bad));
        assert_eq!(response.status, 400, "{bad}: {response:?}");
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert!(response.json()["message"].as_str().unwrap().contains("invalid request body"), "{response:?}");
    }

    // 413: oversize body.
    let huge = format!(r#"{{"target":"{}","timestamp":1}}"#, "ab".repeat(64 * 1024));
    let response = http(api, "POST", "/challenges", Some(TOKEN), Some(&huge));
    assert_eq!(response.status, 413, "{response:?}");

    // 404 and 405.
    assert_eq!(http(api, "GET", "/nothing", Some(TOKEN), None).status, 404);
    assert_eq!(http(api, "GET", "/votes", Some(TOKEN), None).status, 405);

    // Still serving: the same vote signs again, identically (Ed25519 is deterministic).
    let again = http(api, "POST", "/votes", Some(TOKEN), Some(&body));
    assert_eq!(again.status, 200);
    assert_eq!(hex::decode(again.json()["signature"].as_str().unwrap()).unwrap(), signature);

    // Management: health (ours and upstream's paths), readiness, metrics that tell the story.
    let management = signer.management;
    assert_eq!(http(management, "GET", "/healthz", None, None).status, 200);
    assert_eq!(http(management, "GET", "/health", None, None).json()["status"], "UP");
    assert_eq!(http(management, "GET", "/readyz", None, None).status, 200);
    let metrics = http(management, "GET", "/metrics", None, None);
    assert_eq!(metrics.status, 200);
    for expected in [
        r#"sigil_signer_signatures_total{key="voter",kind="atto_vote"} 3"#,
        r#"sigil_signer_refusals_total{protocol="atto",reason="unauthorized"} 5"#,
        r#"sigil_signer_refusals_total{protocol="atto",reason="not_allowed"} 1"#,
        r#"sigil_signer_refusals_total{protocol="atto",reason="foreign_key"} 1"#,
        r#"sigil_signer_refusals_total{protocol="atto",reason="too_large"} 1"#,
        r#"sigil_signer_requests_total{protocol="atto",endpoint="votes",code="401"} 3"#,
        r#"sigil_signer_key_ready{key="voter"} 1"#,
        "sigil_signer_request_duration_seconds_bucket",
        "sigil_signer_backend_sign_duration_seconds_bucket",
    ] {
        assert!(metrics.body.contains(expected), "missing {expected}:\n{}", metrics.body);
    }
    assert_eq!(http(management, "GET", "/prometheus", None, None).body.lines().count(), metrics.body.lines().count());
    assert!(!metrics.body.contains(TOKEN) && !metrics.body.contains(SEED_HEX), "secret in metrics:\n{}", metrics.body);

    // No token and no key material in the logs.
    let logs = signer.drain_logs().join("\n");
    assert!(!logs.contains(TOKEN) && !logs.contains(SEED_HEX), "secret in logs:\n{logs}");
}

#[test]
fn token_files_rotate_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let signer = config_mode(dir.path(), "VOTE");
    let api = signer.atto();
    assert_eq!(http(api, "GET", "/public-keys", Some(TOKEN), None).status, 200);

    // Rotate as the operator does: new token, the old one kept as token.previous.
    let new_token = "rotated-token-fedcba9876543210fedcba9876543210";
    std::fs::write(dir.path().join("token.previous"), TOKEN).unwrap();
    std::fs::write(dir.path().join("token"), new_token).unwrap();
    wait_until("the new token to be accepted", Duration::from_secs(10), || {
        http(api, "GET", "/public-keys", Some(new_token), None).status == 200
    });
    assert_eq!(http(api, "GET", "/public-keys", Some(TOKEN), None).status, 200, "old token refused during grace");

    // Grace over: token.previous emptied, the old token stops working.
    std::fs::write(dir.path().join("token.previous"), "").unwrap();
    wait_until("the old token to be refused", Duration::from_secs(10), || {
        http(api, "GET", "/public-keys", Some(TOKEN), None).status == 401
    });
    assert_eq!(http(api, "GET", "/public-keys", Some(new_token), None).status, 200);
}

#[test]
fn drop_in_environment_mode() {
    let public_key = hex::encode_upper(
        ed25519_dalek::SigningKey::from_bytes(&hex::decode(SEED_HEX).unwrap().try_into().unwrap())
            .verifying_key()
            .to_bytes(),
    );
    let signer = SignerProcess::spawn(
        &[],
        &[
            ("ATTO_SIGNER_BACKEND", "LOCAL"),
            ("ATTO_SIGNER_KEY", SEED_HEX),
            ("ATTO_SIGNER_TOKEN", TOKEN),
            ("ATTO_SIGNER_CAPABILITIES", "challenge,vote"),
            ("ATTO_SIGNER_PORT", "0"),
            ("ATTO_SIGNER_MANAGEMENT_PORT", "0"),
        ],
    );
    let response = http(signer.atto(), "GET", "/public-keys", Some(TOKEN), None);
    assert_eq!(response.json()["publicKey"], public_key.as_str());
    let response =
        http(signer.atto(), "POST", "/votes", Some(TOKEN), Some(&vote_body(&public_key, &"01".repeat(32), i64::MAX)));
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(http(signer.management, "GET", "/readyz", None, None).status, 200);
}

#[test]
fn startup_errors_are_clear_and_nothing_serves() {
    // No variables: every missing one named, no default key.
    let (code, _, err) = run_to_end(&[], &[], None);
    assert_eq!(code, 1);
    assert!(err.contains("ATTO_SIGNER_BACKEND, ATTO_SIGNER_KEY, ATTO_SIGNER_TOKEN, ATTO_SIGNER_CAPABILITIES"), "{err}");

    // A bad key: says which variable, never echoes it.
    let env = [
        ("ATTO_SIGNER_BACKEND", "LOCAL"),
        ("ATTO_SIGNER_KEY", "not-a-key-0123"),
        ("ATTO_SIGNER_TOKEN", TOKEN),
        ("ATTO_SIGNER_CAPABILITIES", "VOTE"),
        ("ATTO_SIGNER_PORT", "0"),
        ("ATTO_SIGNER_MANAGEMENT_PORT", "0"),
    ];
    let (code, _, err) = run_to_end(&[], &env, None);
    assert_eq!(code, 1);
    assert!(err.contains("ATTO_SIGNER_KEY") && err.contains("64 hex"), "{err}");
    assert!(!err.contains("not-a-key-0123"), "{err}");

    // A config with a typo: names the field.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signer.yaml");
    std::fs::write(&path, "keys: {a: {local: {secretKey: x}}}\natto: {key: a, capabilities: [VOTE], tokenFiles: /t}\n")
        .unwrap();
    let (code, _, err) = run_to_end(&["--config", path.to_str().unwrap()], &[], None);
    assert_eq!(code, 1);
    assert!(err.contains("atto: unknown field `tokenFiles`"), "{err}");

    // A port in use: says which listener.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let mut env = env.to_vec();
    env[1] = ("ATTO_SIGNER_KEY", SEED_HEX);
    env[4] = ("ATTO_SIGNER_PORT", &port);
    let (code, _, err) = run_to_end(&[], &env, None);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("cannot listen on 0.0.0.0:{port} (atto API)")), "{err}");
}

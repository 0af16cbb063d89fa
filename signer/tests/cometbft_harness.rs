//! A scripted CometBFT node (the `cometbft-p2p` SecretConnection, the listener side) drives the
//! real binary through the cases a real node rarely produces on demand: conflicting votes at one
//! height/round/step, regressions, a vote re-sent with a new timestamp, another chain id, a raw
//! bytes request, a 1 MB vote extension. Each refusal is a RemoteSignerError and the same
//! connection keeps serving.

mod common;

use std::time::Duration;

use cometbft_p2p::{AsyncReadMsg, AsyncSecretConnection, AsyncWriteMsg, IdentitySecret};
use common::*;
use sigil_signer::keys::{Algorithm, SecretKey, Signature};
use sigil_signer::protocol::cometbft::proto::{self, BlockId, Message, PartSetHeader, Sum, Timestamp, Vote};
use tokio::net::TcpListener;

const CHAIN: &str = "harness-chain";

struct FakeNode {
    connection: AsyncSecretConnection<tokio::net::TcpStream>,
}

impl FakeNode {
    async fn ask(&mut self, request: Sum) -> Sum {
        self.connection.write_msg(Message { sum: Some(request) }).await.unwrap();
        let answer: Message =
            tokio::time::timeout(Duration::from_secs(10), self.connection.read_msg()).await.unwrap().unwrap();
        answer.sum.unwrap()
    }

    async fn vote(&mut self, vote: Vote, chain: &str) -> proto::SignedVoteResponse {
        let request =
            proto::SignVoteRequest { vote: Some(vote), chain_id: chain.into(), skip_extension_signing: false };
        match self.ask(Sum::SignVoteRequest(request)).await {
            Sum::SignedVoteResponse(response) => response,
            other => panic!("{other:?}"),
        }
    }
}

fn block(hash: u8) -> Option<BlockId> {
    Some(BlockId { hash: vec![hash; 32], part_set_header: Some(PartSetHeader { total: 1, hash: vec![hash; 32] }) })
}

fn vote(r#type: i32, height: i64, block_id: Option<BlockId>, seconds: i64) -> Vote {
    Vote { r#type, height, round: 0, block_id, timestamp: Some(Timestamp { seconds, nanos: 0 }), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_keep_the_connection_and_follow_filepv() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let seed = [7u8; 32];
    let config = format!(
        "keys: {{v: {{local: {{secretKey: {}}}}}}}\nratchet: {{file: {{dir: {}}}}}\n\
         cometbft: [{{connect: 'tcp://127.0.0.1:{port}', chainId: {CHAIN}, key: v}}]\nmanagement: {{listen: 127.0.0.1:0}}\n\
         audit: {{file: {}}}\n",
        hex::encode(seed),
        dir.path().join("ratchet").display(),
        dir.path().join("audit.jsonl").display()
    );
    std::fs::write(dir.path().join("sigil.yaml"), config).unwrap();
    let path = dir.path().join("sigil.yaml");
    let signer = tokio::task::spawn_blocking(move || SignerProcess::spawn(&["--config", path.to_str().unwrap()], &[]));
    let (stream, _) = tokio::time::timeout(Duration::from_secs(20), listener.accept()).await.unwrap().unwrap();
    let identity = IdentitySecret::generate(&mut rand_core::OsRng);
    let connection = AsyncSecretConnection::new(stream, &identity).await.unwrap();
    let mut node = FakeNode { connection };
    let signer = signer.await.unwrap();
    let key = SecretKey::from_bytes(Algorithm::Ed25519, &seed).unwrap().public_key();
    let verify = |bytes: &[u8], signature: &[u8]| {
        key.verify(bytes, &Signature::new(Algorithm::Ed25519, signature.try_into().unwrap())).unwrap();
    };

    let Sum::PubKeyResponse(public) =
        node.ask(Sum::PubKeyRequest(proto::PubKeyRequest { chain_id: CHAIN.into() })).await
    else {
        panic!()
    };
    assert_eq!(public.pub_key.unwrap().sum, Some(proto::PublicKeySum::Ed25519(key.as_bytes().to_vec())));

    let prevote = vote(proto::PREVOTE, 5, block(1), 100);
    let first = node.vote(prevote.clone(), CHAIN).await.vote.unwrap();
    verify(&proto::vote_sign_bytes(&prevote, CHAIN), &first.signature);

    // Conflicting vote at the same height/round/step: refused, and the connection still answers.
    let conflict = node.vote(vote(proto::PREVOTE, 5, block(2), 100), CHAIN).await;
    assert_eq!(conflict.error.as_ref().map(|e| e.code), Some(2), "{conflict:?}");
    assert!(conflict.error.unwrap().description.contains("different payload"));
    assert_eq!(node.ask(Sum::PingRequest(proto::PingRequest {})).await, Sum::PingResponse(proto::PingResponse {}));

    // Same vote, new timestamp (a node re-sending after a restart): the first signature and time.
    let resent = node.vote(vote(proto::PREVOTE, 5, block(1), 160), CHAIN).await.vote.unwrap();
    assert_eq!((resent.signature, resent.timestamp), (first.signature.clone(), first.timestamp));

    // Regression, another chain, raw bytes: refused, connection alive.
    assert_eq!(node.vote(vote(proto::PREVOTE, 4, block(1), 100), CHAIN).await.error.unwrap().code, 2);
    let other_chain = node.vote(vote(proto::PREVOTE, 6, block(1), 100), "other-chain").await.error.unwrap();
    assert!(other_chain.description.contains("not this signer's chain"), "{other_chain:?}");
    let raw = node.ask(Sum::SignBytesRequest(proto::SignBytesRequest { value: b"looks like a vote".to_vec() })).await;
    assert!(matches!(raw, Sum::SignBytesResponse(proto::SignBytesResponse { error: Some(_), .. })), "{raw:?}");

    // A precommit with a 1 MB extension: signed, extension signature over the canonical bytes,
    // and the answer stays small (the node reads at most 10 KiB). Over SecretConnection a whole
    // message is capped at 1 MiB by cometbft-p2p (as in tmkms), so this is near the largest.
    let extension = vec![0xab; 1_000_000];
    let precommit = Vote { extension: extension.clone(), ..vote(proto::PRECOMMIT, 5, block(1), 101) };
    let signed = node.vote(precommit.clone(), CHAIN).await.vote.unwrap();
    verify(&proto::vote_extension_sign_bytes(&precommit, CHAIN), &signed.extension_signature);
    assert!(prost::Message::encoded_len(&signed) < 10 * 1024);

    let metrics = http(signer.management, "GET", "/metrics", None, None).body;
    assert!(metrics.contains(r#"sigil_signer_cometbft_connected{chain="harness-chain"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"sigil_signer_refusals_total{protocol="cometbft",reason="ratchet"} 2"#), "{metrics}");

    // The audit trail holds every signature this node received and no other, and every refusal
    // with its rule; the log carries the same records.
    let received = [&first.signature, &signed.signature, &signed.extension_signature].map(hex::encode);
    // The file is written by its own thread, just after each answer.
    let audit = dir.path().join("audit.jsonl");
    let lines = || std::fs::read_to_string(&audit).unwrap_or_default().lines().count();
    tokio::task::block_in_place(|| wait_until("8 audit records", Duration::from_secs(10), || lines() >= 8));
    let file = std::fs::read_to_string(&audit).unwrap();
    let records: Vec<serde_json::Value> = file.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let address = hex::encode_upper(sigil_signer::keys::cometbft::address(&key).unwrap());
    let summary: Vec<(String, String, Option<u64>, String)> = records
        .iter()
        .map(|r| {
            assert_eq!((r["protocol"].as_str(), r["key"].as_str()), (Some("cometbft"), Some("v")), "{r}");
            assert_eq!(r["keyHash"], address.as_str(), "{r}");
            assert_eq!(r["client"], format!("tcp://127.0.0.1:{port}"), "{r}");
            let what = if r["outcome"] == "refused" { &r["reason"] } else { &r["kind"] };
            let what = what.as_str().unwrap_or_default().to_string();
            let signature = r["signature"].as_str().unwrap_or_default().to_string();
            (r["outcome"].as_str().unwrap().to_string(), what, r["height"].as_u64(), signature)
        })
        .collect();
    let [first_hex, precommit_hex, extension_hex] = received.clone();
    let expected: Vec<(String, String, Option<u64>, String)> = [
        ("signed", "cometbft_prevote", Some(5), first_hex.as_str()),
        ("refused", "ratchet", Some(5), ""),
        ("repeated", "cometbft_prevote", Some(5), first_hex.as_str()),
        ("refused", "ratchet", Some(4), ""),
        ("refused", "bad_request", None, ""),
        ("refused", "not_supported", None, ""),
        ("signed", "cometbft_vote_extension", Some(5), extension_hex.as_str()),
        ("signed", "cometbft_precommit", Some(5), precommit_hex.as_str()),
    ]
    .map(|(outcome, what, level, signature)| (outcome.into(), what.into(), level, signature.into()))
    .to_vec();
    assert_eq!(summary, expected);
    let logged: Vec<serde_json::Value> = signer
        .drain_logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["target"] == "sigil_signer::audit")
        .collect();
    assert_eq!(logged.len(), records.len(), "{logged:?}");
    for (log, record) in logged.iter().zip(&records) {
        assert_eq!(log["outcome"], record["outcome"]);
        assert_eq!(log["signature"], record["signature"]);
        assert_eq!(log["level"], if record["outcome"] == "refused" { "WARN" } else { "INFO" });
    }
}

/// `nodeId` pins the node: a listener on the node's address that holds another SecretConnection
/// identity (a man in the middle, another process on the port) completes the handshake and is
/// dropped before it can ask anything; the node holding the pinned identity is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_pinned_node_is_served() {
    let node = IdentitySecret::generate(&mut rand_core::OsRng);
    let impostor = IdentitySecret::generate(&mut rand_core::OsRng);
    let node_id = hex::encode(cometbft_p2p::PublicKey::Ed25519(node.verifying_key()).peer_id().as_bytes());
    for (identity, pinned) in [(&impostor, false), (&node, true)] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("sigil.yaml");
        std::fs::write(
            &config,
            format!(
                "keys: {{v: {{local: {{secretKey: {}}}}}}}\nratchet: {{file: {{dir: {}}}}}\n\
                 cometbft: [{{connect: 'tcp://127.0.0.1:{port}', chainId: {CHAIN}, key: v, nodeId: {node_id}}}]\n\
                 management: {{listen: 127.0.0.1:0}}\n",
                hex::encode([9u8; 32]),
                dir.path().join("ratchet").display()
            ),
        )
        .unwrap();
        let signer = tokio::task::spawn_blocking(move || SignerProcess::start(&config, &[]));
        let (stream, _) = tokio::time::timeout(Duration::from_secs(20), listener.accept()).await.unwrap().unwrap();
        let answer = match AsyncSecretConnection::new(stream, identity).await {
            Ok(connection) => {
                let mut connection = connection;
                let ping = Message { sum: Some(Sum::PingRequest(proto::PingRequest {})) };
                match connection.write_msg(ping).await {
                    Ok(()) => {
                        let read = tokio::time::timeout(Duration::from_secs(10), connection.read_msg::<Message>());
                        read.await.expect("the signer answers or hangs up, within the deadline").ok()
                    }
                    Err(_) => None,
                }
            }
            Err(_) => None,
        };
        let signer = signer.await.unwrap();
        if pinned {
            let answer = answer.and_then(|m| m.sum);
            assert_eq!(answer, Some(Sum::PingResponse(proto::PingResponse {})), "the pinned node is served");
        } else {
            assert!(answer.is_none(), "another identity must get no answer: {answer:?}");
            let (mut logs, node_id) = (String::new(), node_id.clone());
            tokio::task::spawn_blocking(move || {
                wait_until("the refusal in the log", Duration::from_secs(20), || {
                    logs.push_str(&signer.drain_logs().join("\n"));
                    logs.contains(&format!("not the pinned nodeId {node_id}"))
                })
            })
            .await
            .unwrap();
        }
    }
}

//! The node side of sigil's real-pod tests: runs in a container beside the injected signer and
//! talks to it the way the node would, over the pod's loopback. Prints one JSON line per answer, so
//! a test following the container's log sees every one (a 401 in the last second before an
//! eviction included).
//!
//!   pod-client atto  --count 0 --interval-ms 100     # votes with ATTO_SIGNER_REMOTE_TOKEN, forever
//!   pod-client tezos --pkh tz1… --count 30           # attestations at rising levels (tz4: BLS mode)
//!   pod-client prove --pkh tz4… --attempts 300       # asks for a proof of possession until one comes
//!   pod-client reach --addr 10.244.0.7:6732          # can this pod open that address? (for isolation)

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use sigil_tests::tezos::{bls_consensus, consensus, MAINNET};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Atto votes, signed with the token the webhook put in the environment.
    Atto {
        #[arg(long, default_value = "127.0.0.1:9090")]
        addr: SocketAddr,
        /// Requests in all; 0 for no end.
        #[arg(long, default_value_t = 0)]
        count: u64,
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
    },
    /// Tezos attestations at rising levels, from `--start-level`.
    Tezos {
        #[arg(long, default_value = "127.0.0.1:6732")]
        addr: SocketAddr,
        #[arg(long)]
        pkh: String,
        #[arg(long, default_value_t = 10)]
        count: u64,
        #[arg(long, default_value_t = 1)]
        start_level: u32,
        #[arg(long, default_value_t = 0)]
        interval_ms: u64,
    },
    /// `GET /bls_prove_possession/<pkh>` every `interval_ms` until it answers 200, at most
    /// `attempts` times.
    Prove {
        #[arg(long, default_value = "127.0.0.1:6732")]
        addr: SocketAddr,
        #[arg(long)]
        pkh: String,
        #[arg(long, default_value_t = 300)]
        attempts: u64,
        #[arg(long, default_value_t = 500)]
        interval_ms: u64,
    },
    /// Tries to open a TCP connection to `addr` and prints whether it could.
    Reach {
        #[arg(long)]
        addr: SocketAddr,
    },
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        match args.command {
            Command::Atto { addr, count, interval_ms } => atto(addr, count, interval_ms).await,
            Command::Tezos { addr, pkh, count, start_level, interval_ms } => {
                let consensus = if pkh.starts_with("tz4") { bls_consensus } else { consensus };
                for i in 0..count {
                    let level = start_level + u32::try_from(i)?;
                    let body = format!("\"{}\"", hex::encode(consensus(0x13, MAINNET, level, 0, 1)));
                    let (status, answer) = request(addr, "POST", &format!("/keys/{pkh}"), None, body).await;
                    let signature = answer.as_ref().ok().and_then(|a| a["signature"].as_str().map(String::from));
                    println!("{}", serde_json::json!({ "level": level, "status": status, "signature": signature }));
                    tokio::time::sleep(Duration::from_millis(interval_ms)).await;
                }
                Ok(())
            }
            Command::Prove { addr, pkh, attempts, interval_ms } => {
                for attempt in 0..attempts {
                    let path = format!("/bls_prove_possession/{pkh}");
                    let (status, answer) = request(addr, "GET", &path, None, String::new()).await;
                    let proof = answer.as_ref().ok().and_then(|a| a["bls_prove_possession"].as_str().map(String::from));
                    println!("{}", serde_json::json!({ "attempt": attempt, "status": status, "proof": proof }));
                    if status == 200 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(interval_ms)).await;
                }
                Ok(())
            }
            Command::Reach { addr } => {
                let connected =
                    tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr)).await;
                let reachable = matches!(connected, Ok(Ok(_)));
                println!("{}", serde_json::json!({ "addr": addr.to_string(), "reachable": reachable }));
                Ok(())
            }
        }
    })
}

async fn atto(addr: SocketAddr, count: u64, interval_ms: u64) -> Result<()> {
    let token = std::env::var("ATTO_SIGNER_REMOTE_TOKEN").context("ATTO_SIGNER_REMOTE_TOKEN (the webhook sets it)")?;
    let public_key = loop {
        match request(addr, "GET", "/public-keys", Some(&token), String::new()).await {
            (200, Ok(answer)) => break answer["publicKey"].as_str().context("publicKey")?.to_string(),
            (status, _) => println!("{}", serde_json::json!({ "status": status, "what": "public-keys" })),
        }
        // Between attempts while the signer is not answering yet; the test reads the lines.
        tokio::time::sleep(Duration::from_millis(interval_ms.max(100))).await;
    };
    let mut sent = 0u64;
    while count == 0 || sent < count {
        let body = format!(
            r#"{{"target":{{"version":0,"algorithm":"V1","publicKey":"{public_key}","blockAlgorithm":"V1","blockHash":"{:064X}","timestamp":{}}}}}"#,
            sent,
            1_704_616_010_000u64 + sent
        );
        let (status, answer) = request(addr, "POST", "/votes", Some(&token), body).await;
        let error = answer.err().map(|e| e.to_string());
        println!("{}", serde_json::json!({ "status": status, "what": "vote", "n": sent, "error": error }));
        sent += 1;
        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
    }
    Ok(())
}

/// One request on its own connection: (status, JSON body). Status 0 when nothing answered.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: String,
) -> (u16, Result<serde_json::Value>) {
    let answer = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string())
            .header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", token);
        }
        let response = sender.send_request(request.body(Full::new(Bytes::from(body)))?).await?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, serde_json::from_slice(&bytes).unwrap_or_default()))
    };
    match tokio::time::timeout(Duration::from_secs(10), answer).await {
        Ok(Ok((status, json))) => (status, Ok(json)),
        Ok(Err(error)) => (0, Err(error)),
        Err(_) => (0, Err(anyhow::anyhow!("no answer within 10 s"))),
    }
}

//! Load for the Atto API over loopback: keep-alive connections sending POST /votes as the node
//! does, then the raw Ed25519 sign rate measured in this same process (the physical limit), so
//! the report carries its own baseline. Bounded by time and count; prints one JSON line.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use ed25519_dalek::Signer;
use http_body_util::Full;
use sigil_tests::load;

#[derive(Parser)]
struct Args {
    /// The signer's API address, e.g. 127.0.0.1:9090 (loopback only).
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long, env = "SIGNER_TOKEN")]
    token: String,
    /// Connections sending at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Stop after this many requests in all, whichever comes first.
    #[arg(long, default_value_t = 2_000_000)]
    max_requests: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !args.addr.ip().is_loopback() {
        bail!("load is only ever sent to loopback addresses");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (latencies, elapsed) = runtime.block_on(load(&args))?;
    let (raw_rate, raw_us) = raw_sign_rate(Duration::from_secs(3));
    let mut report = load::report(latencies, elapsed);
    let p50 = report["p50_us"].as_f64().unwrap_or_default();
    report["concurrency"] = args.concurrency.into();
    report["raw_ed25519_signs_per_second_one_core"] = raw_rate.into();
    report["raw_ed25519_sign_us"] = raw_us.into();
    report["http_overhead_p50_us"] = (p50 - raw_us).into();
    println!("{report}");
    Ok(())
}

async fn load(args: &Args) -> Result<(Vec<u64>, Duration)> {
    let public_key = fetch_public_key(args).await?;
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let per_worker = args.max_requests / args.concurrency.max(1);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..args.concurrency {
        let (addr, token, public_key) = (args.addr, args.token.clone(), public_key.clone());
        workers.spawn(async move {
            let mut sender = load::connect(addr).await?;
            let mut latencies = Vec::with_capacity(per_worker.min(1 << 20));
            for i in 0..per_worker {
                if Instant::now() >= deadline {
                    break;
                }
                // A fresh vote each time: a different timestamp, as the node's reaffirm votes.
                let body = format!(
                    r#"{{"target":{{"version":0,"algorithm":"V1","publicKey":"{public_key}","blockAlgorithm":"V1","blockHash":"{:064X}","timestamp":{}}}}}"#,
                    worker,
                    1_704_616_010_000u64 + i as u64
                );
                let request = http::Request::post("/votes")
                    .header("host", addr.to_string())
                    .header("content-type", "application/json")
                    .header("accept", "application/json")
                    .header("authorization", &token)
                    .body(Full::new(Bytes::from(body)))?;
                let sent = Instant::now();
                let (status, _) = load::send(&mut sender, request).await?;
                latencies.push(sent.elapsed().as_nanos() as u64);
                if status != 200 {
                    bail!("POST /votes answered {status}");
                }
            }
            anyhow::Ok(latencies)
        });
    }
    let mut all = Vec::new();
    while let Some(result) = workers.join_next().await {
        all.extend(result??);
    }
    Ok((all, started.elapsed()))
}

async fn fetch_public_key(args: &Args) -> Result<String> {
    let mut sender = load::connect(args.addr).await?;
    let request = http::Request::get("/public-keys")
        .header("host", args.addr.to_string())
        .header("authorization", &args.token)
        .body(Full::new(Bytes::new()))?;
    let (status, body) = load::send(&mut sender, request).await?;
    if status != 200 {
        bail!("GET /public-keys answered {status}");
    }
    let json: serde_json::Value = serde_json::from_slice(&body)?;
    Ok(json["publicKey"].as_str().context("publicKey in the reply")?.to_string())
}

/// Signs 32-byte digests on one core for `duration`: signatures per second and µs per signature.
fn raw_sign_rate(duration: Duration) -> (f64, f64) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let started = Instant::now();
    let mut count = 0u64;
    let mut digest = [0u8; 32];
    while started.elapsed() < duration {
        digest[..8].copy_from_slice(&count.to_le_bytes());
        std::hint::black_box(key.sign(&digest));
        count += 1;
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    (rate, 1e6 / rate)
}

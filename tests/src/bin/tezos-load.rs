//! Load for a Tezos remote signer (sigil-signer or Signatory) over loopback, the way a baker signs:
//! per level a preattestation, an attestation and a block, at rising levels. Each connection bakes
//! on its own chain id, so connections never contend for one high-water mark and the same stream
//! can be replayed against any signer. Bounded by time and count; prints one JSON line. A tz4 key
//! gets its (pre)attestations in BLS mode (tags 40/41), as octez sends them for tz4.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use sigil_tests::load;
use sigil_tests::tezos::{block, bls_consensus, consensus};

#[derive(Parser)]
struct Args {
    /// The signer's address, e.g. 127.0.0.1:6732 (loopback only).
    #[arg(long)]
    addr: SocketAddr,
    /// The key to sign with (`tz1…`).
    #[arg(long)]
    pkh: String,
    /// Connections (bakers) sending at once, each on its own chain.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Stop after this many requests in all, whichever comes first.
    #[arg(long, default_value_t = 1_000_000)]
    max_requests: usize,
    /// A label for the report (`sigil`, `signatory`).
    #[arg(long, default_value = "signer")]
    label: String,
    /// Only attestations (one per level), not the baker's mix of three kinds.
    #[arg(long)]
    attestations_only: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (latencies, elapsed) = runtime.block_on(run(&args))?;
    let mut report = load::report(latencies, elapsed);
    report["signer"] = args.label.clone().into();
    report["concurrency"] = args.concurrency.into();
    println!("{report}");
    Ok(())
}

async fn run(args: &Args) -> Result<(Vec<u64>, Duration)> {
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let per_worker = args.max_requests / args.concurrency.max(1);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..args.concurrency {
        let (addr, path) = (args.addr, format!("/keys/{}", args.pkh));
        // A chain id per run and worker: a rerun never starts below an old mark.
        let chain = chain_id(worker, started);
        let consensus = if args.pkh.starts_with("tz4") { bls_consensus } else { consensus };
        let attestations_only = args.attestations_only;
        workers.spawn(async move {
            let mut sender = load::connect(addr).await?;
            let mut latencies = Vec::with_capacity(per_worker.min(1 << 20));
            'levels: for level in 1u32.. {
                let mix = [
                    consensus(0x12, chain, level, 0, 0x77),
                    consensus(0x13, chain, level, 0, 0x77),
                    block(chain, level, 0, 0x77),
                ];
                for data in mix.into_iter().filter(|data| !attestations_only || data[0] == 0x13) {
                    if latencies.len() >= per_worker || Instant::now() >= deadline {
                        break 'levels;
                    }
                    let request = http::Request::post(path.as_str())
                        .header("host", addr.to_string())
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(format!("\"{}\"", hex::encode(&data)))))?;
                    let sent = Instant::now();
                    let (status, body) = load::send(&mut sender, request).await?;
                    latencies.push(sent.elapsed().as_nanos() as u64);
                    if status != 200 {
                        bail!("POST {path} level {level} answered {status}: {}", String::from_utf8_lossy(&body));
                    }
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

fn chain_id(worker: usize, started: Instant) -> [u8; 4] {
    let salt = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u32;
    let salt = salt ^ started.elapsed().subsec_nanos();
    (salt.rotate_left(8) ^ worker as u32).to_be_bytes()
}

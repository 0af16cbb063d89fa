//! Plays a CometBFT validator node for a privval signer (sigil-signer or tmkms): listens where the
//! node's `priv_validator_laddr` would be, takes the signer's SecretConnection, then per height
//! asks for a proposal, a prevote and a precommit, heights rising, one request at a time as the
//! node does. Every answer must carry a signature and no error. Prints one JSON line.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use cometbft_p2p::{AsyncReadMsg, AsyncSecretConnection, AsyncWriteMsg, IdentitySecret};
use sha2::Digest as _;
use sigil_signer::protocol::cometbft::proto::{
    self, BlockId, Message, PartSetHeader, Proposal, SignProposalRequest, SignVoteRequest, Sum, Timestamp, Vote,
};
use sigil_tests::load;

#[derive(Parser)]
struct Args {
    /// Where to listen for the signer (loopback only).
    #[arg(long)]
    listen: SocketAddr,
    #[arg(long)]
    chain_id: String,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Heights to start from (above anything the signer's state has seen).
    #[arg(long, default_value_t = 1)]
    start_height: i64,
    #[arg(long, default_value = "signer")]
    label: String,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        bail!("listens on loopback only");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (latencies, elapsed) = runtime.block_on(run(&args))?;
    let mut report = load::report(latencies, elapsed);
    report["signer"] = args.label.clone().into();
    println!("{report}");
    Ok(())
}

async fn run(args: &Args) -> Result<(Vec<u64>, Duration)> {
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let (stream, _) =
        tokio::time::timeout(Duration::from_secs(60), listener.accept()).await.context("no signer connected")??;
    stream.set_nodelay(true)?;
    let identity = IdentitySecret::generate(&mut rand_core::OsRng);
    let mut connection = AsyncSecretConnection::new(stream, &identity).await?;
    let mut ask = async |request: Sum| -> Result<Sum> {
        connection.write_msg(Message { sum: Some(request) }).await?;
        let answer: Message = tokio::time::timeout(Duration::from_secs(10), connection.read_msg()).await??;
        answer.sum.context("empty answer")
    };
    let answer = ask(Sum::PubKeyRequest(proto::PubKeyRequest { chain_id: args.chain_id.clone() })).await?;
    // Votes carry the validator's address (tmkms insists on it): SHA-256 of the key, 20 bytes.
    let public_key = match answer {
        Sum::PubKeyResponse(proto::PubKeyResponse { pub_key: Some(key), .. }) => match key.sum {
            Some(proto::PublicKeySum::Ed25519(bytes)) => bytes,
            other => bail!("not an Ed25519 key: {other:?}"),
        },
        other => bail!("unexpected answer to PubKeyRequest: {other:?}"),
    };
    let validator_address = sha2::Sha256::digest(&public_key)[..20].to_vec();

    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut latencies = Vec::new();
    let block = |height: i64| {
        let hash = height.to_be_bytes().repeat(4);
        Some(BlockId { hash: hash.clone(), part_set_header: Some(PartSetHeader { total: 1, hash }) })
    };
    let now = || {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Some(Timestamp { seconds: t.as_secs() as i64, nanos: t.subsec_nanos() as i32 })
    };
    let mut height = args.start_height;
    while Instant::now() < deadline {
        let proposal = Proposal {
            r#type: proto::PROPOSAL,
            height,
            round: 0,
            pol_round: -1,
            block_id: block(height),
            timestamp: now(),
            signature: vec![],
        };
        let vote = |r#type| Vote {
            r#type,
            height,
            round: 0,
            block_id: block(height),
            timestamp: now(),
            validator_address: validator_address.clone(),
            ..Default::default()
        };
        let requests = [
            Sum::SignProposalRequest(SignProposalRequest { proposal: Some(proposal), chain_id: args.chain_id.clone() }),
            Sum::SignVoteRequest(SignVoteRequest {
                vote: Some(vote(proto::PREVOTE)),
                chain_id: args.chain_id.clone(),
                skip_extension_signing: false,
            }),
            Sum::SignVoteRequest(SignVoteRequest {
                vote: Some(vote(proto::PRECOMMIT)),
                chain_id: args.chain_id.clone(),
                skip_extension_signing: false,
            }),
        ];
        for request in requests {
            let sent = Instant::now();
            let answer = ask(request).await?;
            latencies.push(sent.elapsed().as_nanos() as u64);
            let (signature, error) = match answer {
                Sum::SignedProposalResponse(r) => (r.proposal.map(|p| p.signature), r.error),
                Sum::SignedVoteResponse(r) => (r.vote.map(|v| v.signature), r.error),
                other => bail!("unexpected answer {other:?}"),
            };
            if let Some(error) = error {
                bail!("height {height}: refused: {}", error.description);
            }
            if signature.is_none_or(|s| s.len() != 64) {
                bail!("height {height}: no signature");
            }
        }
        height += 1;
    }
    Ok((latencies, started.elapsed()))
}

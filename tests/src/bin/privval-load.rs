//! Plays a CometBFT validator node for a privval signer (sigil-signer or tmkms): listens where the
//! node's `priv_validator_laddr` would be, takes the signer's SecretConnection, then per height
//! asks for a proposal, a prevote and a precommit, heights rising, one request at a time as the
//! node does. Every answer must carry a signature and no error. Several signers are served in
//! turns, a height each. Prints one JSON line per signer.

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
    /// `LABEL=ADDRESS`: a signer to serve, listening for it at ADDRESS (loopback only). Several
    /// signers are served in turns, a height each, so that all of them meet the same moments of
    /// the machine; one JSON line is printed per signer.
    #[arg(long = "signer", required = true)]
    signers: Vec<String>,
    #[arg(long)]
    chain_id: String,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Heights to start from (above anything the signers' states have seen).
    #[arg(long, default_value_t = 1)]
    start_height: i64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut signers = Vec::new();
    for signer in &args.signers {
        let (label, address) = signer.split_once('=').context("--signer LABEL=ADDRESS")?;
        let address: SocketAddr = address.parse().with_context(|| format!("--signer {signer}: not an address"))?;
        if !address.ip().is_loopback() {
            bail!("listens on loopback only");
        }
        signers.push((label.to_string(), address));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    for (label, (latencies, busy)) in runtime.block_on(run(&args, &signers))? {
        let mut report = load::report(latencies, busy);
        report["signer"] = label.into();
        println!("{report}");
    }
    Ok(())
}

/// One signer's SecretConnection, and the validator address its votes carry.
struct Signer {
    label: String,
    connection: AsyncSecretConnection<tokio::net::TcpStream>,
    validator_address: Vec<u8>,
    latencies: Vec<u64>,
    /// Time spent waiting for this signer's answers: its throughput is requests over this.
    busy: Duration,
}

impl Signer {
    async fn connect(label: &str, listener: tokio::net::TcpListener, chain_id: &str) -> Result<Signer> {
        let (stream, _) = tokio::time::timeout(Duration::from_secs(60), listener.accept())
            .await
            .with_context(|| format!("{label}: no signer connected"))??;
        stream.set_nodelay(true)?;
        let identity = IdentitySecret::generate(&mut rand_core::OsRng);
        let connection = AsyncSecretConnection::new(stream, &identity).await?;
        let mut signer = Signer {
            label: label.to_string(),
            connection,
            validator_address: Vec::new(),
            latencies: Vec::new(),
            busy: Duration::ZERO,
        };
        let answer = signer.ask(Sum::PubKeyRequest(proto::PubKeyRequest { chain_id: chain_id.to_string() })).await?;
        // Votes carry the validator's address (tmkms insists on it): SHA-256 of the key, 20 bytes.
        let public_key = match answer {
            Sum::PubKeyResponse(proto::PubKeyResponse { pub_key: Some(key), .. }) => match key.sum {
                Some(proto::PublicKeySum::Ed25519(bytes)) => bytes,
                other => bail!("{label}: not an Ed25519 key: {other:?}"),
            },
            other => bail!("{label}: unexpected answer to PubKeyRequest: {other:?}"),
        };
        signer.validator_address = sha2::Sha256::digest(&public_key)[..20].to_vec();
        Ok(signer)
    }

    async fn ask(&mut self, request: Sum) -> Result<Sum> {
        self.connection.write_msg(Message { sum: Some(request) }).await?;
        let answer: Message = tokio::time::timeout(Duration::from_secs(10), self.connection.read_msg()).await??;
        answer.sum.context("empty answer")
    }

    /// A proposal, a prevote and a precommit at `height`, each answered with a signature.
    async fn height(&mut self, chain_id: &str, height: i64) -> Result<()> {
        let block = || {
            let hash = height.to_be_bytes().repeat(4);
            Some(BlockId { hash: hash.clone(), part_set_header: Some(PartSetHeader { total: 1, hash }) })
        };
        let now = || {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            Some(Timestamp { seconds: t.as_secs() as i64, nanos: t.subsec_nanos() as i32 })
        };
        let proposal = Proposal {
            r#type: proto::PROPOSAL,
            height,
            round: 0,
            pol_round: -1,
            block_id: block(),
            timestamp: now(),
            signature: vec![],
        };
        let vote = |r#type| Vote {
            r#type,
            height,
            round: 0,
            block_id: block(),
            timestamp: now(),
            validator_address: self.validator_address.clone(),
            ..Default::default()
        };
        let chain_id = chain_id.to_string();
        let requests = [
            Sum::SignProposalRequest(SignProposalRequest { proposal: Some(proposal), chain_id: chain_id.clone() }),
            Sum::SignVoteRequest(SignVoteRequest {
                vote: Some(vote(proto::PREVOTE)),
                chain_id: chain_id.clone(),
                skip_extension_signing: false,
            }),
            Sum::SignVoteRequest(SignVoteRequest {
                vote: Some(vote(proto::PRECOMMIT)),
                chain_id,
                skip_extension_signing: false,
            }),
        ];
        for request in requests {
            let sent = Instant::now();
            let answer = self.ask(request).await?;
            let took = sent.elapsed();
            self.latencies.push(took.as_nanos() as u64);
            self.busy += took;
            let (signature, error) = match answer {
                Sum::SignedProposalResponse(r) => (r.proposal.map(|p| p.signature), r.error),
                Sum::SignedVoteResponse(r) => (r.vote.map(|v| v.signature), r.error),
                other => bail!("{}: unexpected answer {other:?}", self.label),
            };
            if let Some(error) = error {
                bail!("{}: height {height}: refused: {}", self.label, error.description);
            }
            if signature.is_none_or(|s| s.len() != 64) {
                bail!("{}: height {height}: no signature", self.label);
            }
        }
        Ok(())
    }
}

async fn run(args: &Args, addresses: &[(String, SocketAddr)]) -> Result<Vec<(String, (Vec<u64>, Duration))>> {
    // Every listener first, so that the signers can all dial while the first connects.
    let mut listeners = Vec::new();
    for (label, address) in addresses {
        listeners.push((label, tokio::net::TcpListener::bind(address).await?));
    }
    let mut signers = Vec::new();
    for (label, listener) in listeners {
        signers.push(Signer::connect(label, listener, &args.chain_id).await?);
    }
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut height = args.start_height;
    while Instant::now() < deadline {
        // Each height in turn, the first signer changing from height to height.
        let count = signers.len();
        for i in 0..count {
            let index = (i + height as usize) % count;
            signers[index].height(&args.chain_id, height).await?;
        }
        height += 1;
    }
    Ok(signers.into_iter().map(|s| (s.label, (s.latencies, s.busy))).collect())
}

//! One validator's requests, answered: public key, votes, proposals, pings. The rules are
//! CometBFT's FilePV rules (`CheckHRS` and `signVote` in
//! <https://github.com/cometbft/cometbft/blob/v0.38.25/privval/file.go>), through the sign path's
//! ratchet (docs/cometbft.md, "Double-sign protection"):
//!
//! - one high-water mark per key and chain: (height, round, step) with step proposal 1,
//!   prevote 2, precommit 3; strictly newer → sign;
//! - the same height/round/step again: identical sign bytes get the stored signature; a **vote**
//!   that differs only in its timestamp gets the stored signature *and the stored timestamp* (the
//!   node adopts it); a proposal that differs in anything is refused (the node copies back only a
//!   proposal's signature, never its timestamp: `defaultDecideProposal` in
//!   <https://github.com/cometbft/cometbft/blob/v0.38.25/consensus/state.go>);
//! - every refusal is a `RemoteSignerError` on a connection that stays open.
//!
//! Vote extensions are signed on every non-nil precommit unless the node says
//! `skip_extension_signing` (v1.0); they carry no mark (FilePV re-signs them too). The extension
//! is signed **before** the vote: an extension the backend cannot sign (a KMS message-size limit,
//! say) fails the request with the vote's mark unmoved, so the node can still vote at that height.
//!
//! A vote or proposal more than `maxHeightJump` above the last signed height is refused, so a
//! node that is not ours (or is broken) cannot push the mark beyond every honest height.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use prost::Message as _;
use serde::{Deserialize, Serialize};

use super::proto::{self, BlockId, PubKeyResponse, PublicKey, PublicKeySum, RemoteSignerError, Sum, Timestamp, Vote};
use crate::audit::Record;
use crate::keys::{cometbft, Algorithm, BlsScheme};
use crate::metrics::SignBytesLabels;
use crate::policy::SignKind;
use crate::ratchet::{Mark, RatchetError};
use crate::sign::{SignError, SignRequest, Signer};

pub const PROTOCOL: &str = "cometbft";
/// The one ratchet stream per key and chain: proposals and votes share the height/round/step order.
pub const STREAM: &str = "consensus";

/// What a CometBFT validator key signs.
pub const PROPOSAL: SignKind = SignKind::new(PROTOCOL, "cometbft_proposal");
pub const PREVOTE: SignKind = SignKind::new(PROTOCOL, "cometbft_prevote");
pub const PRECOMMIT: SignKind = SignKind::new(PROTOCOL, "cometbft_precommit");
pub const VOTE_EXTENSION: SignKind = SignKind::new(PROTOCOL, "cometbft_vote_extension");
pub const SIGN_KINDS: [SignKind; 4] = [PROPOSAL, PREVOTE, PRECOMMIT, VOTE_EXTENSION];
/// v1's `SignBytesRequest`, allowed only by `cometbft[].signBytes`.
pub const SIGN_BYTES: SignKind = SignKind::new(PROTOCOL, "cometbft_sign_bytes");
/// `cometbft[].maxHeightJump` when the config leaves it out: far more than any honest jump between
/// two signatures (weeks of blocks), far less than what would make the key useless.
pub const DEFAULT_MAX_HEIGHT_JUMP: u64 = 1_000_000;

/// Which privval protocol the node speaks. Unset in the config, sigil answers every version: the
/// public key in both layouts (each version skips the other's fields), extensions signed unless the
/// node says to skip them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Version {
    /// CometBFT v0.34: no vote extensions.
    #[serde(rename = "v0.34")]
    V0_34,
    /// CometBFT v0.37: no vote extensions.
    #[serde(rename = "v0.37")]
    V0_37,
    /// CometBFT v0.38 (and v0.39/v0.40, which keep its privval layout): vote extensions.
    #[serde(rename = "v0.38")]
    V0_38,
    /// CometBFT v1: public keys as bytes and type, `skip_extension_signing`, `SignBytesRequest`.
    #[serde(rename = "v1", alias = "v1.0")]
    V1,
}

impl Version {
    pub fn has_vote_extensions(self) -> bool {
        matches!(self, Version::V0_38 | Version::V1)
    }

    pub fn name(self) -> &'static str {
        match self {
            Version::V0_34 => "v0.34",
            Version::V0_37 => "v0.37",
            Version::V0_38 => "v0.38",
            Version::V1 => "v1",
        }
    }
}

/// v1's `SignBytesRequest` as `cometbft[].signBytes` allows it: only values in the configured
/// domain and naming this chain, that cannot be consensus sign bytes, at a bounded rate.
pub struct SignBytesPolicy {
    /// The prefix with the chain id in place: every value must start with it.
    prefix: Vec<u8>,
    per_minute: u32,
    /// Tokens left and when they were counted: a bucket of `per_minute`, refilled continuously.
    bucket: Mutex<(f64, Instant)>,
}

impl SignBytesPolicy {
    pub fn new(prefix_template: &str, chain_id: &str, per_minute: u32) -> Self {
        let prefix = prefix_template.replace(CHAIN_ID_PLACEHOLDER, chain_id).into_bytes();
        SignBytesPolicy { prefix, per_minute, bucket: Mutex::new((f64::from(per_minute), Instant::now())) }
    }

    fn check(&self, value: &[u8]) -> Result<(), Refusal> {
        if !value.starts_with(&self.prefix) {
            let prefix = String::from_utf8_lossy(&self.prefix);
            return Err(Refusal::SignBytes {
                description: format!("raw bytes outside this signer's domain: they must start with {prefix:?}"),
                reason: "sign_bytes_domain",
            });
        }
        if proto::could_be_consensus_sign_bytes(value) {
            return Err(Refusal::SignBytes {
                description: "raw bytes that could be a vote, proposal or vote extension are never signed".into(),
                reason: "sign_bytes_consensus",
            });
        }
        let mut bucket = self.bucket.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(bucket.1).as_secs_f64() * f64::from(self.per_minute) / 60.0;
        *bucket = ((bucket.0 + refill).min(f64::from(self.per_minute)), now);
        if bucket.0 < 1.0 {
            let limit = format!("more than {} raw-bytes signatures a minute; try later", self.per_minute);
            return Err(Refusal::SignBytesRate(limit));
        }
        bucket.0 -= 1.0;
        Ok(())
    }
}

/// Where `cometbft[].signBytes.prefix` puts the chain id.
pub const CHAIN_ID_PLACEHOLDER: &str = "{chainId}";
/// `cometbft[].signBytes.maxPerMinute` when unset.
pub const DEFAULT_SIGN_BYTES_PER_MINUTE: u32 = 60;

/// `RemoteSignerError` codes sigil answers with.
pub mod code {
    /// The request is malformed or for another chain.
    pub const INVALID: i32 = 1;
    /// The high-water mark refused: signing would be a double sign (tmkms's code).
    pub const DOUBLE_SIGN: i32 = 2;
    /// The key or ratchet store did not answer; the node may try again.
    pub const UNAVAILABLE: i32 = 3;
    /// sigil does not do this (raw bytes).
    pub const NOT_SUPPORTED: i32 = 4;
}

/// Why a request was refused: what the node reads in `RemoteSignerError` ([`Refusal::code`] and
/// the description) and the reason metrics count ([`Refusal::reason`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Malformed, for another chain, or a key CometBFT cannot use.
    #[error("{0}")]
    BadRequest(String),
    /// The high-water mark refused: signing would be a double sign.
    #[error("{0}")]
    DoubleSign(String),
    /// The height is further above the mark than `maxHeightJump` allows.
    #[error("{0}")]
    HeightJump(String),
    /// The key or ratchet store did not answer; the node may try again.
    #[error("{0}")]
    Unavailable(String),
    /// The key has not answered since startup.
    #[error("{0}")]
    KeyNotReady(String),
    /// sigil does not do this (raw bytes, unless `signBytes` allows them).
    #[error("{0}")]
    NotSupported(String),
    /// Raw bytes refused by `signBytes`: outside the domain, or shaped like consensus.
    #[error("{description}")]
    SignBytes { description: String, reason: &'static str },
    /// More raw bytes than `signBytes.maxPerMinute`; the node may try later.
    #[error("{0}")]
    SignBytesRate(String),
    /// Another refusal of the sign path, with its reason.
    #[error("{description}")]
    Refused { description: String, reason: &'static str },
}

impl Refusal {
    /// The `RemoteSignerError` code.
    pub fn code(&self) -> i32 {
        match self {
            Refusal::BadRequest(_) | Refusal::HeightJump(_) | Refusal::Refused { .. } => code::INVALID,
            Refusal::SignBytes { .. } => code::INVALID,
            Refusal::SignBytesRate(_) => code::UNAVAILABLE,
            Refusal::DoubleSign(_) => code::DOUBLE_SIGN,
            Refusal::Unavailable(_) | Refusal::KeyNotReady(_) => code::UNAVAILABLE,
            Refusal::NotSupported(_) => code::NOT_SUPPORTED,
        }
    }

    /// The reason label of metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::BadRequest(_) => "bad_request",
            Refusal::DoubleSign(_) => "ratchet",
            Refusal::HeightJump(_) => "height_jump",
            Refusal::Unavailable(_) => "unavailable",
            Refusal::KeyNotReady(_) => "key_not_ready",
            Refusal::NotSupported(_) => "not_supported",
            Refusal::Refused { reason, .. } | Refusal::SignBytes { reason, .. } => reason,
            Refusal::SignBytesRate(_) => "sign_bytes_rate",
        }
    }

    /// HTTP-like status, so that one dashboard reads every protocol.
    fn status(&self) -> u16 {
        match self {
            Refusal::DoubleSign(_) | Refusal::HeightJump(_) => 409,
            Refusal::Unavailable(_) | Refusal::KeyNotReady(_) => 503,
            Refusal::NotSupported(_) => 501,
            Refusal::SignBytesRate(_) => 429,
            Refusal::BadRequest(_) | Refusal::Refused { .. } | Refusal::SignBytes { .. } => 400,
        }
    }

    /// Counted here rather than by the sign path, which never saw the request.
    fn is_the_fronts_own(&self) -> bool {
        matches!(
            self,
            Refusal::BadRequest(_)
                | Refusal::NotSupported(_)
                | Refusal::KeyNotReady(_)
                | Refusal::SignBytes { .. }
                | Refusal::SignBytesRate(_)
        )
    }

    fn error(&self) -> Option<RemoteSignerError> {
        Some(RemoteSignerError { code: self.code(), description: self.to_string() })
    }
}

/// A request answered: the response, and the refusal when it was one.
pub struct Answer {
    pub response: Sum,
    pub refusal: Option<Refusal>,
}

pub struct Validator {
    pub chain_id: String,
    pub key: String,
    /// The node's privval version; `None`: answer every version.
    pub version: Option<Version>,
    /// `cometbft[].maxHeightJump`: how far above the mark a height may be.
    pub max_height_jump: u64,
    /// `cometbft[].signBytes`; `None`: raw bytes are refused.
    pub sign_bytes: Option<SignBytesPolicy>,
    /// The node's address, as audit records name the client.
    pub node: String,
    pub signer: Arc<Signer>,
}

impl Validator {
    /// Answers one request. Never fails: refusals are answers.
    pub async fn handle(&self, request: Sum) -> Answer {
        let started = Instant::now();
        let name = request.name();
        let (response, refusal) = match request {
            Sum::PingRequest(_) => (Sum::PingResponse(proto::PingResponse {}), None),
            Sum::PubKeyRequest(request) => self.public_key(&request.chain_id),
            Sum::SignVoteRequest(request) => self.sign_vote(request).await,
            Sum::SignProposalRequest(request) => self.sign_proposal(request).await,
            Sum::SignBytesRequest(request) => self.sign_bytes(&request.value).await,
            other => {
                // A response where a request belongs: answer with an error, keep the connection.
                let refusal = Refusal::BadRequest(format!("unexpected message {} from the node", other.name()));
                let response = proto::SignBytesResponse { signature: Vec::new(), error: refusal.error() };
                (Sum::SignBytesResponse(response), Some(refusal))
            }
        };
        let status = refusal.as_ref().map_or(200, Refusal::status);
        self.signer.metrics().observe_request(PROTOCOL, name, status, started.elapsed());
        if let Some(refusal) = refusal.as_ref().filter(|r| r.is_the_fronts_own()) {
            self.signer.metrics().refuse(PROTOCOL, refusal.reason());
            let record = Record {
                key: Some(&self.key),
                key_hash: self.signer.key(&self.key).and_then(|k| k.key_hash()),
                chain: Some(&self.chain_id),
                latency: started.elapsed(),
                client: Some(&self.node),
                ..Record::refused(PROTOCOL, refusal.reason(), refusal.to_string())
            };
            self.signer.audit_refusal(&record);
        }
        Answer { response, refusal }
    }

    /// v1's raw bytes: refused unless `signBytes` allows them, then only within its rules.
    async fn sign_bytes(&self, value: &[u8]) -> (Sum, Option<Refusal>) {
        let result = match &self.sign_bytes {
            None => Err(Refusal::NotSupported(
                "sigil signs raw bytes (SignBytesRequest) only when cometbft[].signBytes allows them".into(),
            )),
            Some(policy) => match policy.check(value).and_then(|()| self.scheme()) {
                Ok(scheme) => {
                    let request = SignRequest {
                        client: Some(&self.node),
                        scheme,
                        ..SignRequest::new(&self.key, &self.chain_id, SIGN_BYTES, None, value)
                    };
                    self.signer.sign(request).await.map_err(|e| self.refusal(e))
                }
                Err(refusal) => Err(refusal),
            },
        };
        let outcome = result.as_ref().err().map_or("signed", Refusal::reason);
        let labels = SignBytesLabels { chain: self.chain_id.clone(), outcome };
        self.signer.metrics().cometbft_sign_bytes.get_or_create(&labels).inc();
        let (signature, refusal) = match result {
            Ok(signed) => (signed.signature.as_bytes().to_vec(), None),
            Err(refusal) => (Vec::new(), Some(refusal)),
        };
        let error = refusal.as_ref().and_then(Refusal::error);
        (Sum::SignBytesResponse(proto::SignBytesResponse { signature, error }), refusal)
    }

    fn check_chain(&self, chain_id: &str) -> Result<(), Refusal> {
        if chain_id == self.chain_id {
            return Ok(());
        }
        // The node chose that text: only its start goes into the answer and the audit trail.
        let shown: String = chain_id.chars().take(64).collect();
        Err(Refusal::BadRequest(format!("chain {shown:?} is not this signer's chain {:?}", self.chain_id)))
    }

    fn public_key(&self, chain_id: &str) -> (Sum, Option<Refusal>) {
        let refuse = |refusal: Refusal| {
            let response = PubKeyResponse { error: refusal.error(), ..Default::default() };
            (Sum::PubKeyResponse(response), Some(refusal))
        };
        if let Err(refusal) = self.check_chain(chain_id) {
            return refuse(refusal);
        }
        let Some(public_key) = self.signer.key(&self.key).and_then(|k| k.public_key()) else {
            let refusal = Refusal::KeyNotReady(format!("key {} is not ready", self.key));
            let response = PubKeyResponse { error: refusal.error(), ..Default::default() };
            return (Sum::PubKeyResponse(response), Some(refusal));
        };
        let bytes = public_key.as_bytes().to_vec();
        let (sum, kind, bytes) = match public_key.algorithm() {
            Algorithm::Ed25519 => (Some(PublicKeySum::Ed25519(bytes.clone())), "ed25519", bytes),
            Algorithm::Secp256k1 => (Some(PublicKeySum::Secp256k1(bytes.clone())), "secp256k1", bytes),
            Algorithm::P256 => return refuse(Refusal::BadRequest("CometBFT has no P-256 consensus keys".into())),
            // v1 only (built with the bls12381 tag): the old layout has no field for it.
            Algorithm::Bls12_381 => match self.version {
                Some(version) if version != Version::V1 => {
                    return refuse(Refusal::BadRequest(format!(
                        "BLS12-381 validator keys need CometBFT v1 built with the bls12381 tag; this node is {}",
                        version.name()
                    )))
                }
                _ => (None, "bls12_381", cometbft::public_key_bytes(public_key)),
            },
        };
        // v0.34–v0.38 read field 1, v1 reads fields 3 and 4; each skips the other's.
        let (old, new) = match self.version {
            None => (true, true),
            Some(Version::V1) => (false, true),
            Some(_) => (true, false),
        };
        let response = PubKeyResponse {
            pub_key: sum.filter(|_| old).map(|sum| PublicKey { sum: Some(sum) }),
            pub_key_bytes: if new { bytes } else { Vec::new() },
            pub_key_type: if new { kind.into() } else { String::new() },
            ..Default::default()
        };
        (Sum::PubKeyResponse(response), None)
    }

    async fn sign_vote(&self, request: proto::SignVoteRequest) -> (Sum, Option<Refusal>) {
        match self.vote(request).await {
            Ok(vote) => (Sum::SignedVoteResponse(proto::SignedVoteResponse { vote: Some(vote), error: None }), None),
            Err(refusal) => {
                let response = proto::SignedVoteResponse { vote: Some(Vote::default()), error: refusal.error() };
                (Sum::SignedVoteResponse(response), Some(refusal))
            }
        }
    }

    /// Signs a vote; the answer carries only what the node copies: signature, extension signature,
    /// timestamp (which keeps it under the node's 10 KiB read limit whatever the extension).
    async fn vote(&self, request: proto::SignVoteRequest) -> Result<Vote, Refusal> {
        let invalid = Refusal::BadRequest;
        self.check_chain(&request.chain_id)?;
        let skip_extension = request.skip_extension_signing;
        let vote = request.vote.ok_or_else(|| invalid("the request carries no vote".into()))?;
        let (kind, step) = match vote.r#type {
            proto::PREVOTE => (PREVOTE, 2),
            proto::PRECOMMIT => (PRECOMMIT, 3),
            other => return Err(invalid(format!("vote type {other} is neither prevote (1) nor precommit (2)"))),
        };
        let mark = position(vote.height, vote.round, step)?;
        let nil = BlockId::is_nil(vote.block_id.as_ref());
        let extensions = self.version.is_none_or(Version::has_vote_extensions);
        let extends = extensions && vote.r#type == proto::PRECOMMIT && !nil;
        if !extensions && !vote.extension.is_empty() {
            let version = self.version.map_or("", Version::name);
            return Err(invalid(format!("unexpected vote extension: CometBFT {version} has no vote extensions")));
        }
        if !extends && !vote.extension.is_empty() {
            return Err(invalid("unexpected vote extension: extensions belong to non-nil precommits only".into()));
        }
        let sign_bytes = proto::vote_sign_bytes(&vote, &self.chain_id);
        // The same vote with another timestamp is the same vote: FilePV answers it with the first
        // signature and that signature's timestamp.
        let identity = proto::vote_sign_bytes(&Vote { timestamp: None, ..vote.clone() }, &self.chain_id);
        let timestamp = vote.timestamp.unwrap_or_default();
        let context = timestamp.encode_to_vec();
        // The extension first: it moves no mark, so if it cannot be signed nothing has changed and
        // the node may ask again at this height. The vote's mark moves only with both in hand.
        let mut extension_signature = Vec::new();
        if extends && !skip_extension {
            let bytes = proto::vote_extension_sign_bytes(&vote, &self.chain_id);
            let to_sign = SignRequest {
                position: Some(mark),
                client: Some(&self.node),
                scheme: self.scheme()?,
                ..SignRequest::new(&self.key, &self.chain_id, VOTE_EXTENSION, None, &bytes)
            };
            let signed = self.signer.sign(to_sign).await.map_err(|e| self.refusal(e))?;
            extension_signature = signed.signature.as_bytes().to_vec();
        }
        let to_sign = SignRequest {
            identity: Some(&identity),
            context: Some(&context),
            max_advance: Some(self.max_height_jump),
            reserve: Some(next_step(mark)),
            client: Some(&self.node),
            scheme: self.scheme()?,
            ..SignRequest::new(&self.key, &self.chain_id, kind, Some((mark, STREAM)), &sign_bytes)
        };
        let signed = self.signer.sign(to_sign).await.map_err(|e| self.refusal(e))?;
        let timestamp = signed.context.as_deref().and_then(|c| Timestamp::decode(c).ok()).unwrap_or(timestamp);
        Ok(Vote {
            timestamp: Some(timestamp),
            signature: signed.signature.as_bytes().to_vec(),
            extension_signature,
            ..Default::default()
        })
    }

    async fn sign_proposal(&self, request: proto::SignProposalRequest) -> (Sum, Option<Refusal>) {
        match self.proposal(request).await {
            Ok(proposal) => {
                let response = proto::SignedProposalResponse { proposal: Some(proposal), error: None };
                (Sum::SignedProposalResponse(response), None)
            }
            Err(refusal) => {
                let response = proto::SignedProposalResponse {
                    proposal: Some(proto::Proposal::default()),
                    error: refusal.error(),
                };
                (Sum::SignedProposalResponse(response), Some(refusal))
            }
        }
    }

    async fn proposal(&self, request: proto::SignProposalRequest) -> Result<proto::Proposal, Refusal> {
        let invalid = Refusal::BadRequest;
        self.check_chain(&request.chain_id)?;
        let proposal = request.proposal.ok_or_else(|| invalid("the request carries no proposal".into()))?;
        if proposal.r#type != proto::PROPOSAL {
            return Err(invalid(format!("proposal type {} is not 32", proposal.r#type)));
        }
        let mark = position(proposal.height, proposal.round, 1)?;
        let sign_bytes = proto::proposal_sign_bytes(&proposal, &self.chain_id);
        let to_sign = SignRequest {
            max_advance: Some(self.max_height_jump),
            reserve: Some(next_step(mark)),
            client: Some(&self.node),
            scheme: self.scheme()?,
            ..SignRequest::new(&self.key, &self.chain_id, PROPOSAL, Some((mark, STREAM)), &sign_bytes)
        };
        let signed = self.signer.sign(to_sign).await.map_err(|e| self.refusal(e))?;
        Ok(proto::Proposal { signature: signed.signature.as_bytes().to_vec(), ..Default::default() })
    }
}

/// What a node asks for after `mark` when consensus goes its usual way: the prevote after the
/// proposal, the precommit after the prevote, the next height's prevote after the precommit
/// (which also covers that height's proposal, and any later round of this height). The ratchet
/// reserves up to it, so a crash costs the validator at most these steps.
fn next_step(mark: Mark) -> Mark {
    match mark.step {
        1 | 2 => Mark { step: mark.step + 1, ..mark },
        _ => Mark { level: mark.level.saturating_add(1), round: 0, step: 2 },
    }
}

/// The ratchet position of a height and round; negative numbers are not positions.
fn position(height: i64, round: i32, step: u8) -> Result<Mark, Refusal> {
    match (u64::try_from(height), u64::try_from(round)) {
        (Ok(level), Ok(round)) if level > 0 => Ok(Mark { level, round, step }),
        _ => Err(Refusal::BadRequest(format!("height {height} round {round} is not a valid position"))),
    }
}

impl Validator {
    /// How the key signs: CometBFT's BLS keys with the basic scheme, other keys in their one way.
    /// Not known before the key has answered: nothing is signed until it is.
    fn scheme(&self) -> Result<BlsScheme, Refusal> {
        match self.signer.key(&self.key).and_then(|k| k.public_key()).map(|k| k.algorithm()) {
            Some(Algorithm::Bls12_381) => Ok(BlsScheme::Basic),
            Some(_) => Ok(BlsScheme::default()),
            None => Err(Refusal::KeyNotReady(format!("key {} is not ready", self.key))),
        }
    }

    /// A sign-path refusal as the node reads it.
    fn refusal(&self, error: SignError) -> Refusal {
        match &error {
            SignError::Ratchet(RatchetError::Refused { .. }) => Refusal::DoubleSign(error.to_string()),
            SignError::HeightJump { current, requested, max, .. } => Refusal::HeightJump(format!(
                "height {requested} is more than cometbft[].maxHeightJump ({max}) above the last signed \
                 height {current} on chain {}; refused. If the chain really is that far ahead, raise the \
                 mark with `sigil-signer ratchet set` or raise maxHeightJump",
                self.chain_id
            )),
            _ if error.is_retryable() => Refusal::Unavailable(error.to_string()),
            _ => Refusal::Refused { description: error.to_string(), reason: error.reason() },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::backend::local::LocalBackend;
    use crate::backend::{BackendError, KeyBackend};
    use crate::keys::{PublicKey, SecretKey, Signature};
    use crate::policy::Policy;
    use crate::ratchet::memory::MemoryRatchet;
    use crate::sign::KeyEntry;

    /// The step reserved after each: the one that follows in a round that goes its usual way,
    /// and after a precommit the next height's prevote, which covers its proposal.
    #[test]
    fn the_next_step_follows_consensus() {
        let at = |level, round, step| Mark { level, round, step };
        assert_eq!(next_step(at(7, 2, 1)), at(7, 2, 2));
        assert_eq!(next_step(at(7, 2, 2)), at(7, 2, 3));
        assert_eq!(next_step(at(7, 2, 3)), at(8, 0, 2));
        assert!(next_step(at(7, 2, 3)) > at(8, 0, 1), "covers the next height's proposal");
        assert!(next_step(at(7, 2, 3)) > at(7, 3, 2), "and a later round of this height");
        assert_eq!(next_step(at(u64::MAX, 0, 3)), at(u64::MAX, 0, 2), "never wraps");
    }

    async fn validator(version: Option<Version>) -> (Validator, PublicKey) {
        validator_with(version, DEFAULT_MAX_HEIGHT_JUMP, None).await
    }

    /// A validator whose key signs messages of at most `max_message` bytes when set, like AWS KMS
    /// (RAW messages up to 4096 bytes).
    async fn validator_with(
        version: Option<Version>,
        max_height_jump: u64,
        max_message: Option<usize>,
    ) -> (Validator, PublicKey) {
        let key = SecretKey::from_bytes(Algorithm::Ed25519, &[3; 32]).unwrap();
        let public_key = key.public_key();
        let local = LocalBackend::new(key);
        let backend: Arc<dyn KeyBackend> = match max_message {
            Some(max) => Arc::new(SizeLimited { inner: local, max }),
            None => Arc::new(local),
        };
        let entry = KeyEntry::new("v", backend, Policy::allowing(SIGN_KINDS.into_iter().chain([SIGN_BYTES])));
        let signer =
            Arc::new(Signer::new([entry], Arc::new(MemoryRatchet::default()), Arc::default(), Duration::from_secs(1)));
        assert!(signer.probe_keys().await.is_empty());
        let validator = Validator {
            chain_id: "test-chain".into(),
            key: "v".into(),
            version,
            max_height_jump,
            sign_bytes: None,
            node: "tcp://127.0.0.1:26659".into(),
            signer,
        };
        (validator, public_key)
    }

    /// A local key behind a service that refuses long messages.
    struct SizeLimited {
        inner: LocalBackend,
        max: usize,
    }

    #[async_trait::async_trait]
    impl KeyBackend for SizeLimited {
        fn kind(&self) -> &'static str {
            "sizeLimited"
        }

        async fn public_key(&self) -> Result<PublicKey, BackendError> {
            self.inner.public_key().await
        }

        async fn sign(&self, payload: &[u8]) -> Result<Signature, BackendError> {
            if payload.len() > self.max {
                return Err(BackendError::Permanent(format!(
                    "message of {} bytes is longer than the {} bytes this key signs",
                    payload.len(),
                    self.max
                )));
            }
            self.inner.sign(payload).await
        }
    }

    fn block(hash: u8) -> Option<BlockId> {
        Some(BlockId {
            hash: vec![hash; 32],
            part_set_header: Some(proto::PartSetHeader { total: 1, hash: vec![hash; 32] }),
        })
    }

    fn vote(r#type: i32, height: i64, round: i32, block_id: Option<BlockId>, seconds: i64) -> Vote {
        Vote { r#type, height, round, block_id, timestamp: Some(Timestamp { seconds, nanos: 5 }), ..Default::default() }
    }

    async fn sign_vote(v: &Validator, vote: Vote, skip: bool) -> proto::SignedVoteResponse {
        let request =
            proto::SignVoteRequest { vote: Some(vote), chain_id: "test-chain".into(), skip_extension_signing: skip };
        match v.handle(Sum::SignVoteRequest(request)).await.response {
            Sum::SignedVoteResponse(response) => response,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn signature(bytes: &[u8]) -> Signature {
        Signature::new(Algorithm::Ed25519, bytes.try_into().unwrap())
    }

    #[tokio::test]
    async fn public_key_in_each_layout_and_chain_checked() {
        let versions = [Version::V0_34, Version::V0_37, Version::V0_38, Version::V1];
        for version in versions.into_iter().map(Some).chain([None]) {
            let (v, public_key) = validator(version).await;
            let request = Sum::PubKeyRequest(proto::PubKeyRequest { chain_id: "test-chain".into() });
            let Sum::PubKeyResponse(response) = v.handle(request).await.response else { panic!() };
            // Unset: both layouts, each version reads its own.
            let (old, new) = (version != Some(Version::V1), version.is_none_or(|v| v == Version::V1));
            let ed25519 = Some(PublicKeySum::Ed25519(public_key.as_bytes().to_vec()));
            assert_eq!(response.pub_key.map(|k| k.sum), old.then_some(ed25519), "{version:?}");
            assert_eq!(response.pub_key_bytes, if new { public_key.as_bytes() } else { &[] }, "{version:?}");
            assert_eq!(response.pub_key_type, if new { "ed25519" } else { "" }, "{version:?}");
            let wrong = Sum::PubKeyRequest(proto::PubKeyRequest { chain_id: "other".into() });
            let Sum::PubKeyResponse(refused) = v.handle(wrong).await.response else { panic!() };
            assert!(refused.error.unwrap().description.contains("not this signer's chain"));
        }
    }

    #[tokio::test]
    async fn votes_follow_filepv() {
        let (v, key) = validator(Some(Version::V0_38)).await;
        let prevote = vote(proto::PREVOTE, 10, 0, block(1), 100);
        let first = sign_vote(&v, prevote.clone(), false).await.vote.unwrap();
        key.verify(&proto::vote_sign_bytes(&prevote, "test-chain"), &signature(&first.signature)).unwrap();
        assert!(first.extension_signature.is_empty(), "no extension on prevotes");
        // Identical: the same signature.
        assert_eq!(sign_vote(&v, prevote.clone(), false).await.vote.unwrap(), first);
        // Only the timestamp differs: the first signature and the first timestamp.
        let later = sign_vote(&v, vote(proto::PREVOTE, 10, 0, block(1), 105), false).await.vote.unwrap();
        assert_eq!(later.signature, first.signature);
        assert_eq!(later.timestamp, Some(Timestamp { seconds: 100, nanos: 5 }));
        // Another block at the same height/round/step: refused, code 2.
        let double = sign_vote(&v, vote(proto::PREVOTE, 10, 0, block(2), 100), false).await;
        assert_eq!(double.error.as_ref().unwrap().code, code::DOUBLE_SIGN, "{double:?}");
        // A precommit for another block in the same round is a different step: FilePV allows it.
        let precommit = vote(proto::PRECOMMIT, 10, 0, block(2), 101);
        let signed = sign_vote(&v, Vote { extension: b"ext".to_vec(), ..precommit.clone() }, false).await.vote.unwrap();
        let extension =
            proto::vote_extension_sign_bytes(&Vote { extension: b"ext".to_vec(), ..precommit.clone() }, "test-chain");
        key.verify(&extension, &signature(&signed.extension_signature)).unwrap();
        // Regressions: refused.
        assert_eq!(sign_vote(&v, prevote.clone(), false).await.error.unwrap().code, code::DOUBLE_SIGN);
        assert_eq!(
            sign_vote(&v, vote(proto::PRECOMMIT, 9, 3, block(1), 1), false).await.error.unwrap().code,
            code::DOUBLE_SIGN
        );
        // v1.0's skip flag, nil precommits and stray extensions.
        let skipped = sign_vote(&v, vote(proto::PRECOMMIT, 11, 0, block(1), 1), true).await.vote.unwrap();
        assert!(skipped.extension_signature.is_empty());
        let nil = sign_vote(&v, vote(proto::PRECOMMIT, 12, 0, None, 1), false).await.vote.unwrap();
        assert!(nil.extension_signature.is_empty());
        let stray = Vote { extension: b"x".to_vec(), ..vote(proto::PREVOTE, 13, 0, block(1), 1) };
        assert!(sign_vote(&v, stray, false).await.error.unwrap().description.contains("unexpected vote extension"));
        assert_eq!(sign_vote(&v, vote(7, 14, 0, None, 1), false).await.error.unwrap().code, code::INVALID);
        assert_eq!(sign_vote(&v, vote(proto::PREVOTE, -1, 0, None, 1), false).await.error.unwrap().code, code::INVALID);
    }

    #[tokio::test]
    async fn proposals_differing_in_timestamp_are_refused() {
        let (v, key) = validator(Some(Version::V1)).await;
        let proposal = proto::Proposal {
            r#type: proto::PROPOSAL,
            height: 5,
            round: 0,
            pol_round: -1,
            block_id: block(1),
            timestamp: Some(Timestamp { seconds: 50, nanos: 0 }),
            signature: vec![],
        };
        let ask = |proposal: proto::Proposal| {
            let v = &v;
            async move {
                let request = proto::SignProposalRequest { proposal: Some(proposal), chain_id: "test-chain".into() };
                let Sum::SignedProposalResponse(response) = v.handle(Sum::SignProposalRequest(request)).await.response
                else {
                    panic!()
                };
                response
            }
        };
        let first = ask(proposal.clone()).await.proposal.unwrap();
        key.verify(&proto::proposal_sign_bytes(&proposal, "test-chain"), &signature(&first.signature)).unwrap();
        assert_eq!(ask(proposal.clone()).await.proposal.unwrap().signature, first.signature);
        let moved = proto::Proposal { timestamp: Some(Timestamp { seconds: 51, nanos: 0 }), ..proposal.clone() };
        assert_eq!(ask(moved).await.error.unwrap().code, code::DOUBLE_SIGN);
        let raw = v.handle(Sum::SignBytesRequest(proto::SignBytesRequest { value: vec![1] })).await;
        assert_eq!(raw.refusal.map(|r| r.reason()), Some("not_supported"));
        let metrics = v.signer.metrics().encode();
        assert!(
            metrics.contains(r#"sigil_signer_refusals_total{protocol="cometbft",reason="ratchet"} 1"#),
            "{metrics}"
        );
    }

    async fn sign_proposal(v: &Validator, height: i64, hash: u8) -> proto::SignedProposalResponse {
        let proposal = proto::Proposal {
            r#type: proto::PROPOSAL,
            height,
            round: 0,
            pol_round: -1,
            block_id: block(hash),
            timestamp: Some(Timestamp { seconds: 50, nanos: 0 }),
            signature: vec![],
        };
        let request = proto::SignProposalRequest { proposal: Some(proposal), chain_id: "test-chain".into() };
        match v.handle(Sum::SignProposalRequest(request)).await.response {
            Sum::SignedProposalResponse(response) => response,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn heights_too_far_above_the_mark_are_refused() {
        let (v, _) = validator_with(Some(Version::V0_38), 100, None).await;
        // No mark yet: any height.
        assert!(sign_vote(&v, vote(proto::PREVOTE, 1_000, 0, block(1), 1), false).await.error.is_none());
        let far = sign_vote(&v, vote(proto::PREVOTE, 1_101, 0, block(1), 1), false).await;
        let error = far.error.unwrap();
        assert_eq!(error.code, code::INVALID);
        for expected in ["height 1101", "cometbft[].maxHeightJump (100)", "last signed height 1000", "ratchet set"] {
            assert!(error.description.contains(expected), "{expected:?} in {}", error.description);
        }
        let proposal = sign_proposal(&v, 1_101, 1).await.error.unwrap();
        assert_eq!(proposal.code, code::INVALID);
        assert!(proposal.description.contains("maxHeightJump"), "{}", proposal.description);
        // The mark did not move: exactly the limit is fine, and the jump is measured from there on.
        assert!(sign_proposal(&v, 1_100, 1).await.error.is_none());
        assert!(sign_vote(&v, vote(proto::PRECOMMIT, 1_200, 0, block(1), 1), false).await.error.is_none());
        let answer = v
            .handle(Sum::SignVoteRequest(proto::SignVoteRequest {
                vote: Some(vote(proto::PREVOTE, 1_301, 0, block(1), 1)),
                chain_id: "test-chain".into(),
                skip_extension_signing: false,
            }))
            .await;
        assert_eq!(answer.refusal.as_ref().map(Refusal::reason), Some("height_jump"));
        let metrics = v.signer.metrics().encode();
        assert!(
            metrics.contains(r#"sigil_signer_refusals_total{protocol="cometbft",reason="height_jump"} 3"#),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn an_extension_that_cannot_be_signed_leaves_the_mark_alone() {
        let (v, key) = validator_with(Some(Version::V1), DEFAULT_MAX_HEIGHT_JUMP, Some(512)).await;
        let precommit = vote(proto::PRECOMMIT, 20, 0, block(1), 100);
        let long = Vote { extension: vec![7; 1_000], ..precommit.clone() };
        let refused = sign_vote(&v, long, false).await;
        let error = refused.error.unwrap();
        assert!(error.description.contains("longer than the 512 bytes"), "{}", error.description);
        assert!(refused.vote.unwrap().signature.is_empty(), "no vote signature leaves with the error");
        // Nothing was committed at height 20: even a precommit for another block there is signable,
        // which the mark would refuse as a double sign had the first vote been committed.
        let other = Vote { extension: b"short".to_vec(), ..vote(proto::PRECOMMIT, 20, 0, block(2), 101) };
        let signed = sign_vote(&v, other.clone(), false).await.vote.unwrap();
        key.verify(&proto::vote_sign_bytes(&other, "test-chain"), &signature(&signed.signature)).unwrap();
        key.verify(&proto::vote_extension_sign_bytes(&other, "test-chain"), &signature(&signed.extension_signature))
            .unwrap();
        // And now the mark holds: the first block at that height is a double sign.
        let double = Vote { extension: b"short".to_vec(), ..precommit };
        assert_eq!(sign_vote(&v, double, false).await.error.unwrap().code, code::DOUBLE_SIGN);
    }

    /// A BLS12-381 key: only in v1's layout (the older one has no field for it), refused to a node
    /// said to be older; votes signed with CometBFT v1's basic scheme.
    #[tokio::test]
    async fn bls_keys_are_served_to_v1_nodes_only() {
        let key = SecretKey::from_bytes(Algorithm::Bls12_381, &[5; 32]).unwrap();
        let public_key = key.public_key();
        for version in [None, Some(Version::V1), Some(Version::V0_38)] {
            let (mut v, _) = validator(version).await;
            let entry = KeyEntry::new(
                "v",
                Arc::new(LocalBackend::new(SecretKey::from_bytes(Algorithm::Bls12_381, &[5; 32]).unwrap())),
                Policy::allowing(SIGN_KINDS),
            );
            let signer =
                Signer::new([entry], Arc::new(MemoryRatchet::default()), Arc::default(), Duration::from_secs(1));
            assert!(signer.probe_keys().await.is_empty());
            v.signer = Arc::new(signer);
            let request = Sum::PubKeyRequest(proto::PubKeyRequest { chain_id: "test-chain".into() });
            let Sum::PubKeyResponse(response) = v.handle(request).await.response else { panic!() };
            if version == Some(Version::V0_38) {
                assert!(response.error.unwrap().description.contains("need CometBFT v1"), "{version:?}");
                continue;
            }
            assert_eq!((response.pub_key, response.pub_key_type.as_str()), (None, "bls12_381"));
            assert_eq!(response.pub_key_bytes, cometbft::public_key_bytes(&public_key));
            let precommit = vote(proto::PRECOMMIT, 3, 0, block(1), 10);
            let signed = sign_vote(&v, precommit.clone(), false).await.vote.unwrap();
            let bytes: [u8; 48] = public_key.as_bytes().try_into().unwrap();
            let sign_bytes = proto::vote_sign_bytes(&precommit, "test-chain");
            assert!(crate::keys::bls::verify(&bytes, BlsScheme::Basic, &sign_bytes, &signed.signature));
            assert!(!crate::keys::bls::verify(&bytes, BlsScheme::Pop, &sign_bytes, &signed.signature));
        }
    }

    /// v0.34 and v0.37 have no vote extensions: none is signed, one sent is refused.
    #[tokio::test]
    async fn versions_without_extensions_sign_none() {
        for version in [Version::V0_34, Version::V0_37] {
            let (v, key) = validator(Some(version)).await;
            let precommit = vote(proto::PRECOMMIT, 3, 0, block(1), 10);
            let signed = sign_vote(&v, precommit.clone(), false).await.vote.unwrap();
            key.verify(&proto::vote_sign_bytes(&precommit, "test-chain"), &signature(&signed.signature)).unwrap();
            assert!(signed.extension_signature.is_empty(), "{version:?}");
            let extended = Vote { extension: b"x".to_vec(), ..vote(proto::PRECOMMIT, 4, 0, block(1), 10) };
            let error = sign_vote(&v, extended, false).await.error.unwrap();
            assert!(error.description.contains(&format!("CometBFT {} has no vote extensions", version.name())));
        }
    }

    async fn ask(v: &Validator, value: &[u8]) -> (proto::SignBytesResponse, Option<&'static str>) {
        let answer = v.handle(Sum::SignBytesRequest(proto::SignBytesRequest { value: value.to_vec() })).await;
        let Sum::SignBytesResponse(response) = answer.response else { panic!() };
        (response, answer.refusal.map(|r| r.reason()))
    }

    /// Raw bytes: only in the domain, naming this chain, never shaped like consensus, within the rate.
    #[tokio::test]
    async fn raw_bytes_only_within_the_sign_bytes_policy() {
        let (mut v, key) = validator(Some(Version::V1)).await;
        // Off by default.
        assert_eq!(ask(&v, b"myapp/p2p/test-chain/hello").await.1, Some("not_supported"));

        v.sign_bytes = Some(SignBytesPolicy::new("myapp/p2p/{chainId}/", "test-chain", 3));
        let (signed, refusal) = ask(&v, b"myapp/p2p/test-chain/hello").await;
        assert_eq!(refusal, None);
        key.verify(b"myapp/p2p/test-chain/hello", &signature(&signed.signature)).unwrap();
        for (value, reason) in [
            (b"myapp/p2p/other-chain/hello".to_vec(), "sign_bytes_domain"),
            (b"otherapp/test-chain/hello".to_vec(), "sign_bytes_domain"),
            (proto::vote_sign_bytes(&vote(proto::PRECOMMIT, 9, 0, block(1), 1), "test-chain"), "sign_bytes_domain"),
        ] {
            let (refused, got) = ask(&v, &value).await;
            assert_eq!(got, Some(reason), "{}", String::from_utf8_lossy(&value));
            assert!(refused.signature.is_empty() && refused.error.unwrap().code == code::INVALID);
        }
        // A prefix that a canonical vote could start with is still no way to a vote signature.
        v.sign_bytes = Some(SignBytesPolicy::new("", "test-chain", 3));
        let precommit = proto::vote_sign_bytes(&vote(proto::PRECOMMIT, 9, 0, block(1), 1), "test-chain");
        assert_eq!(ask(&v, &precommit).await.1, Some("sign_bytes_consensus"));

        // The bucket: 3 a minute, the first already spent above on another policy's bucket.
        v.sign_bytes = Some(SignBytesPolicy::new("myapp/p2p/{chainId}/", "test-chain", 3));
        for _ in 0..3 {
            assert_eq!(ask(&v, b"myapp/p2p/test-chain/x").await.1, None);
        }
        let (limited, reason) = ask(&v, b"myapp/p2p/test-chain/x").await;
        assert_eq!(reason, Some("sign_bytes_rate"));
        assert_eq!(limited.error.unwrap().code, code::UNAVAILABLE);
        let metrics = v.signer.metrics().encode();
        for series in [
            r#"sigil_signer_cometbft_sign_bytes_total{chain="test-chain",outcome="signed"} 4"#,
            r#"sigil_signer_cometbft_sign_bytes_total{chain="test-chain",outcome="sign_bytes_rate"} 1"#,
            r#"sigil_signer_cometbft_sign_bytes_total{chain="test-chain",outcome="sign_bytes_domain"} 3"#,
        ] {
            assert!(metrics.contains(series), "{series} in {metrics}");
        }
    }
}

//! The privval messages, field for field
//! (<https://github.com/cometbft/cometbft/blob/v0.38.25/proto/tendermint/privval/types.proto>,
//! <https://github.com/cometbft/cometbft/blob/v1.0.1/proto/cometbft/privval/v1/types.proto>). One
//! set of structs serves CometBFT v0.34–v0.38 and v1.0: their field numbers do not collide, and
//! only numbers are on the wire. Canonical sign bytes are here too, since they are the same
//! protobuf rules
//! (<https://github.com/cometbft/cometbft/blob/v0.38.25/proto/tendermint/types/canonical.proto>).

use prost::Message as _;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Message {
    #[prost(oneof = "Sum", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10")]
    pub sum: Option<Sum>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Sum {
    #[prost(message, tag = "1")]
    PubKeyRequest(PubKeyRequest),
    #[prost(message, tag = "2")]
    PubKeyResponse(PubKeyResponse),
    #[prost(message, tag = "3")]
    SignVoteRequest(SignVoteRequest),
    #[prost(message, tag = "4")]
    SignedVoteResponse(SignedVoteResponse),
    #[prost(message, tag = "5")]
    SignProposalRequest(SignProposalRequest),
    #[prost(message, tag = "6")]
    SignedProposalResponse(SignedProposalResponse),
    #[prost(message, tag = "7")]
    PingRequest(PingRequest),
    #[prost(message, tag = "8")]
    PingResponse(PingResponse),
    /// v1.0: arbitrary bytes, no chain id. sigil refuses it (see validator.rs).
    #[prost(message, tag = "9")]
    SignBytesRequest(SignBytesRequest),
    #[prost(message, tag = "10")]
    SignBytesResponse(SignBytesResponse),
}

impl Sum {
    /// The message's name in metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Sum::PubKeyRequest(_) => "pub_key",
            Sum::PubKeyResponse(_) => "pub_key_response",
            Sum::SignVoteRequest(_) => "sign_vote",
            Sum::SignedVoteResponse(_) => "signed_vote",
            Sum::SignProposalRequest(_) => "sign_proposal",
            Sum::SignedProposalResponse(_) => "signed_proposal",
            Sum::PingRequest(_) => "ping",
            Sum::PingResponse(_) => "ping_response",
            Sum::SignBytesRequest(_) => "sign_bytes",
            Sum::SignBytesResponse(_) => "sign_bytes_response",
        }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RemoteSignerError {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub description: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PubKeyRequest {
    #[prost(string, tag = "1")]
    pub chain_id: String,
}

/// Field 1 is the ≤v0.38 layout; fields 3 and 4 are v1.0's.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PubKeyResponse {
    #[prost(message, optional, tag = "1")]
    pub pub_key: Option<PublicKey>,
    #[prost(message, optional, tag = "2")]
    pub error: Option<RemoteSignerError>,
    #[prost(bytes = "vec", tag = "3")]
    pub pub_key_bytes: Vec<u8>,
    #[prost(string, tag = "4")]
    pub pub_key_type: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PublicKey {
    #[prost(oneof = "PublicKeySum", tags = "1, 2")]
    pub sum: Option<PublicKeySum>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum PublicKeySum {
    #[prost(bytes, tag = "1")]
    Ed25519(Vec<u8>),
    #[prost(bytes, tag = "2")]
    Secp256k1(Vec<u8>),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SignVoteRequest {
    #[prost(message, optional, tag = "1")]
    pub vote: Option<Vote>,
    #[prost(string, tag = "2")]
    pub chain_id: String,
    /// v1.0: the node says extensions are off at this height.
    #[prost(bool, tag = "3")]
    pub skip_extension_signing: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SignedVoteResponse {
    #[prost(message, optional, tag = "1")]
    pub vote: Option<Vote>,
    #[prost(message, optional, tag = "2")]
    pub error: Option<RemoteSignerError>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SignProposalRequest {
    #[prost(message, optional, tag = "1")]
    pub proposal: Option<Proposal>,
    #[prost(string, tag = "2")]
    pub chain_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SignedProposalResponse {
    #[prost(message, optional, tag = "1")]
    pub proposal: Option<Proposal>,
    #[prost(message, optional, tag = "2")]
    pub error: Option<RemoteSignerError>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PingRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PingResponse {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SignBytesRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SignBytesResponse {
    #[prost(bytes = "vec", tag = "1")]
    pub signature: Vec<u8>,
    #[prost(message, optional, tag = "2")]
    pub error: Option<RemoteSignerError>,
}

/// `SignedMsgType`.
pub const PREVOTE: i32 = 1;
pub const PRECOMMIT: i32 = 2;
pub const PROPOSAL: i32 = 32;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Vote {
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(int64, tag = "2")]
    pub height: i64,
    #[prost(int32, tag = "3")]
    pub round: i32,
    #[prost(message, optional, tag = "4")]
    pub block_id: Option<BlockId>,
    #[prost(message, optional, tag = "5")]
    pub timestamp: Option<Timestamp>,
    #[prost(bytes = "vec", tag = "6")]
    pub validator_address: Vec<u8>,
    #[prost(int32, tag = "7")]
    pub validator_index: i32,
    #[prost(bytes = "vec", tag = "8")]
    pub signature: Vec<u8>,
    #[prost(bytes = "vec", tag = "9")]
    pub extension: Vec<u8>,
    #[prost(bytes = "vec", tag = "10")]
    pub extension_signature: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Proposal {
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(int64, tag = "2")]
    pub height: i64,
    #[prost(int32, tag = "3")]
    pub round: i32,
    #[prost(int32, tag = "4")]
    pub pol_round: i32,
    #[prost(message, optional, tag = "5")]
    pub block_id: Option<BlockId>,
    #[prost(message, optional, tag = "6")]
    pub timestamp: Option<Timestamp>,
    #[prost(bytes = "vec", tag = "7")]
    pub signature: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BlockId {
    #[prost(bytes = "vec", tag = "1")]
    pub hash: Vec<u8>,
    #[prost(message, optional, tag = "2")]
    pub part_set_header: Option<PartSetHeader>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PartSetHeader {
    #[prost(uint32, tag = "1")]
    pub total: u32,
    #[prost(bytes = "vec", tag = "2")]
    pub hash: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

// Canonical forms: what is signed (canonical.proto). Heights and rounds are sfixed64; nil block
// ids are absent.

#[derive(Clone, PartialEq, prost::Message)]
struct CanonicalVote {
    #[prost(int32, tag = "1")]
    r#type: i32,
    #[prost(sfixed64, tag = "2")]
    height: i64,
    #[prost(sfixed64, tag = "3")]
    round: i64,
    #[prost(message, optional, tag = "4")]
    block_id: Option<CanonicalBlockId>,
    #[prost(message, optional, tag = "5")]
    timestamp: Option<Timestamp>,
    #[prost(string, tag = "6")]
    chain_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CanonicalProposal {
    #[prost(int32, tag = "1")]
    r#type: i32,
    #[prost(sfixed64, tag = "2")]
    height: i64,
    #[prost(sfixed64, tag = "3")]
    round: i64,
    #[prost(int64, tag = "4")]
    pol_round: i64,
    #[prost(message, optional, tag = "5")]
    block_id: Option<CanonicalBlockId>,
    #[prost(message, optional, tag = "6")]
    timestamp: Option<Timestamp>,
    #[prost(string, tag = "7")]
    chain_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CanonicalBlockId {
    #[prost(bytes = "vec", tag = "1")]
    hash: Vec<u8>,
    #[prost(message, optional, tag = "2")]
    part_set_header: Option<PartSetHeader>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CanonicalVoteExtension {
    #[prost(bytes = "vec", tag = "1")]
    extension: Vec<u8>,
    #[prost(sfixed64, tag = "2")]
    height: i64,
    #[prost(sfixed64, tag = "3")]
    round: i64,
    #[prost(string, tag = "4")]
    chain_id: String,
}

impl BlockId {
    /// A nil vote or proposal carries an empty block id (Go always sends one).
    pub fn is_nil(id: Option<&BlockId>) -> bool {
        id.is_none_or(|id| {
            id.hash.is_empty() && id.part_set_header.as_ref().is_none_or(|p| p.total == 0 && p.hash.is_empty())
        })
    }
}

fn canonical_block_id(id: Option<&BlockId>) -> Option<CanonicalBlockId> {
    if BlockId::is_nil(id) {
        return None;
    }
    id.map(|id| CanonicalBlockId {
        hash: id.hash.clone(),
        part_set_header: Some(id.part_set_header.clone().unwrap_or_default()),
    })
}

/// The bytes a vote's signature covers: uvarint length ‖ CanonicalVote.
pub fn vote_sign_bytes(vote: &Vote, chain_id: &str) -> Vec<u8> {
    CanonicalVote {
        r#type: vote.r#type,
        height: vote.height,
        round: i64::from(vote.round),
        block_id: canonical_block_id(vote.block_id.as_ref()),
        timestamp: Some(vote.timestamp.unwrap_or_default()),
        chain_id: chain_id.to_string(),
    }
    .encode_length_delimited_to_vec()
}

/// The bytes a proposal's signature covers.
pub fn proposal_sign_bytes(proposal: &Proposal, chain_id: &str) -> Vec<u8> {
    CanonicalProposal {
        r#type: PROPOSAL,
        height: proposal.height,
        round: i64::from(proposal.round),
        pol_round: i64::from(proposal.pol_round),
        block_id: canonical_block_id(proposal.block_id.as_ref()),
        timestamp: Some(proposal.timestamp.unwrap_or_default()),
        chain_id: chain_id.to_string(),
    }
    .encode_length_delimited_to_vec()
}

/// The bytes a vote extension's signature covers (non-nil precommits only).
pub fn vote_extension_sign_bytes(vote: &Vote, chain_id: &str) -> Vec<u8> {
    CanonicalVoteExtension {
        extension: vote.extension.clone(),
        height: vote.height,
        round: i64::from(vote.round),
        chain_id: chain_id.to_string(),
    }
    .encode_length_delimited_to_vec()
}

/// Whether `value` has the shape of the bytes a vote, proposal or vote extension signature covers
/// (a uvarint length that is exactly the rest, which decodes as the canonical message), for any
/// chain. Raw bytes that pass this can never be taken for a consensus signature.
pub fn could_be_consensus_sign_bytes(value: &[u8]) -> bool {
    let mut rest = value;
    match prost::encoding::decode_varint(&mut rest) {
        Ok(length) if usize::try_from(length).is_ok_and(|length| length == rest.len()) => {
            CanonicalVote::decode(rest).is_ok()
                || CanonicalProposal::decode(rest).is_ok()
                || CanonicalVoteExtension::decode(rest).is_ok()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consensus_sign_bytes_are_recognised_and_domain_prefixed_bytes_are_not() {
        let vote = Vote { r#type: PRECOMMIT, height: 5, ..Default::default() };
        let proposal = Proposal { r#type: PROPOSAL, height: 5, ..Default::default() };
        for bytes in
            [vote_sign_bytes(&vote, "c"), proposal_sign_bytes(&proposal, "c"), vote_extension_sign_bytes(&vote, "c")]
        {
            assert!(could_be_consensus_sign_bytes(&bytes), "{}", hex::encode(&bytes));
        }
        assert!(!could_be_consensus_sign_bytes(b"myapp/p2p/c/hello"));
        assert!(!could_be_consensus_sign_bytes(b""));
    }

    /// Go's zero `time.Time`, what a vote without a timestamp canonicalises to.
    const GO_ZERO_TIME: Timestamp = Timestamp { seconds: -62_135_596_800, nanos: 0 };

    fn vote(r#type: i32, height: i64, round: i32) -> Vote {
        Vote { r#type, height, round, timestamp: Some(GO_ZERO_TIME), ..Default::default() }
    }

    /// TestVoteSignBytesTestVectors in CometBFT's types/vote_test.go
    /// (<https://github.com/cometbft/cometbft/blob/v0.38.25/types/vote_test.go>).
    #[test]
    fn cometbft_vote_vectors() {
        let zero_time = "2a0b088092b8c398feffffff01";
        let precommit = vote_sign_bytes(&vote(PRECOMMIT, 1, 1), "");
        assert_eq!(hex::encode(precommit), format!("210802110100000000000000190100000000000000{zero_time}"));
        let with_chain = vote_sign_bytes(&vote(0, 1, 1), "test_chain_id");
        assert_eq!(
            hex::encode(with_chain),
            format!("2e110100000000000000190100000000000000{zero_time}320d746573745f636861696e5f6964")
        );
        // The extension is not part of the vote's sign bytes.
        let extended = Vote { extension: b"extension".to_vec(), ..vote(0, 1, 1) };
        assert_eq!(vote_sign_bytes(&extended, "test_chain_id"), vote_sign_bytes(&vote(0, 1, 1), "test_chain_id"));
    }

    /// tmkms 0.15.0 src/privval.rs serialize_canonical_proposal: height 12345, round 1, pol_round -1
    /// (a 10-byte varint), no block id, 2023-10-04T10:00:00Z, "test_chain_id".
    #[test]
    fn tmkms_proposal_vector() {
        let proposal = Proposal {
            r#type: PROPOSAL,
            height: 12345,
            round: 1,
            pol_round: -1,
            timestamp: Some(Timestamp { seconds: 1_696_413_600, nanos: 0 }),
            ..Default::default()
        };
        let bytes = proposal_sign_bytes(&proposal, "test_chain_id");
        assert_eq!(hex::encode(bytes), "36082011393000000000000019010000000000000020ffffffffffffffffff01320608a0eff4a8063a0d746573745f636861696e5f6964");
    }

    /// tmkms 0.15.0 serialize_canonical_vote: prevote, height 500001, round 2, a block id with
    /// 1 000 000 parts.
    #[test]
    fn tmkms_vote_vector() {
        let vote = Vote {
            r#type: PREVOTE,
            height: 500_001,
            round: 2,
            block_id: Some(BlockId {
                hash: b"some hash00000000000000000000000".to_vec(),
                part_set_header: Some(PartSetHeader {
                    total: 1_000_000,
                    hash: b"parts_hash0000000000000000000000".to_vec(),
                }),
            }),
            timestamp: Some(Timestamp { seconds: 1_696_413_600, nanos: 0 }),
            ..Default::default()
        };
        assert_eq!(hex::encode(vote_sign_bytes(&vote, "test_chain_id")), "7708011121a1070000000000190200000000000000224a0a20736f6d6520686173683030303030303030303030303030303030303030303030122608c0843d122070617274735f68617368303030303030303030303030303030303030303030302a0608a0eff4a806320d746573745f636861696e5f6964");
    }

    #[test]
    fn nil_block_ids_are_left_out() {
        let empty = BlockId { hash: vec![], part_set_header: Some(PartSetHeader::default()) };
        assert!(BlockId::is_nil(Some(&empty)));
        assert!(BlockId::is_nil(None));
        let nil = Vote { block_id: Some(empty), ..vote(PREVOTE, 3, 0) };
        assert_eq!(vote_sign_bytes(&nil, "c"), vote_sign_bytes(&vote(PREVOTE, 3, 0), "c"));
    }

    #[test]
    fn messages_round_trip_and_ping_is_three_bytes() {
        let ping = Message { sum: Some(Sum::PingRequest(PingRequest {})) };
        assert_eq!(ping.encode_length_delimited_to_vec(), vec![0x02, 0x3a, 0x00]);
        let request = hex::decode("0e0a0c0a0a746573742d636861696e").unwrap();
        let decoded = Message::decode_length_delimited(request.as_slice()).unwrap();
        assert_eq!(decoded.sum, Some(Sum::PubKeyRequest(PubKeyRequest { chain_id: "test-chain".into() })));
    }
}

//! privval messages as they arrive from a node: the length prefix, the protobuf decoding, and the
//! canonical sign bytes computed from whatever decoded. Never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use sigil_signer::protocol::cometbft::proto::{self, Message, Sum};

fuzz_target!(|data: &[u8]| {
    let Ok(message) = Message::decode_length_delimited(data) else { return };
    match message.sum {
        Some(Sum::SignVoteRequest(request)) => {
            if let Some(vote) = request.vote {
                let _ = proto::vote_sign_bytes(&vote, &request.chain_id);
                let _ = proto::vote_extension_sign_bytes(&vote, &request.chain_id);
                let _ = proto::BlockId::is_nil(vote.block_id.as_ref());
            }
        }
        Some(Sum::SignProposalRequest(request)) => {
            if let Some(proposal) = request.proposal {
                let _ = proto::proposal_sign_bytes(&proposal, &request.chain_id);
            }
        }
        Some(other) => {
            let _ = other.name();
        }
        None => {}
    }
});

//! What a key may sign. The protocol front names the kind of every request; a key signs only the
//! kinds its policy lists.

use std::fmt;

use crate::protocol::tezos::operation::RequestKind;

/// Every kind of thing sigil signs, across protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SignKind {
    AttoBlock,
    AttoVote,
    AttoChallenge,
    /// A Tezos request, by magic byte; the Tezos front checks the finer policy (operations, chains).
    Tezos(RequestKind),
    CometBftProposal,
    CometBftPrevote,
    CometBftPrecommit,
    CometBftVoteExtension,
}

impl SignKind {
    /// Everything a CometBFT validator key signs.
    pub const COMETBFT: [SignKind; 4] = [
        SignKind::CometBftProposal,
        SignKind::CometBftPrevote,
        SignKind::CometBftPrecommit,
        SignKind::CometBftVoteExtension,
    ];
}

impl SignKind {
    /// The label used in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            SignKind::AttoBlock => "atto_block",
            SignKind::AttoVote => "atto_vote",
            SignKind::AttoChallenge => "atto_challenge",
            SignKind::Tezos(kind) => match kind {
                RequestKind::Block => "tezos_block",
                RequestKind::Preattestation => "tezos_preattestation",
                RequestKind::Attestation => "tezos_attestation",
                RequestKind::Generic => "tezos_generic",
                RequestKind::Michelson => "tezos_michelson",
                RequestKind::LegacyBlock => "tezos_legacy_block",
                RequestKind::LegacyEndorsement => "tezos_legacy_endorsement",
            },
            SignKind::CometBftProposal => "cometbft_proposal",
            SignKind::CometBftPrevote => "cometbft_prevote",
            SignKind::CometBftPrecommit => "cometbft_precommit",
            SignKind::CometBftVoteExtension => "cometbft_vote_extension",
        }
    }

    pub fn protocol(self) -> &'static str {
        match self {
            SignKind::AttoBlock | SignKind::AttoVote | SignKind::AttoChallenge => "atto",
            SignKind::Tezos(_) => "tezos",
            SignKind::CometBftProposal
            | SignKind::CometBftPrevote
            | SignKind::CometBftPrecommit
            | SignKind::CometBftVoteExtension => "cometbft",
        }
    }
}

impl fmt::Display for SignKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    allowed: Vec<SignKind>,
}

impl Policy {
    pub fn allowing(kinds: impl IntoIterator<Item = SignKind>) -> Self {
        let mut allowed: Vec<SignKind> = kinds.into_iter().collect();
        allowed.sort();
        allowed.dedup();
        Policy { allowed }
    }

    pub fn allows(&self, kind: SignKind) -> bool {
        self.allowed.contains(&kind)
    }

    pub fn allowed(&self) -> &[SignKind] {
        &self.allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_only_listed_kinds() {
        let policy = Policy::allowing([SignKind::AttoVote, SignKind::AttoChallenge, SignKind::AttoVote]);
        assert!(policy.allows(SignKind::AttoVote));
        assert!(!policy.allows(SignKind::AttoBlock));
        assert_eq!(policy.allowed().len(), 2);
        assert!(!Policy::default().allows(SignKind::AttoVote));
    }
}

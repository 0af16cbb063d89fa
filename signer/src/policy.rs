//! What a key may sign. The protocol front names the kind of every request; a key signs only the
//! kinds its policy lists.

use std::fmt;

/// A kind of thing a key signs: its protocol and its name (`atto_vote`, `tezos_block`), the labels
/// of metrics and logs. Each protocol defines its kinds as constants; the core knows none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SignKind {
    protocol: &'static str,
    name: &'static str,
}

impl SignKind {
    pub const fn new(protocol: &'static str, name: &'static str) -> Self {
        SignKind { protocol, name }
    }

    /// The label used in metrics and logs.
    pub fn name(self) -> &'static str {
        self.name
    }

    pub fn protocol(self) -> &'static str {
        self.protocol
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

    const VOTE: SignKind = SignKind::new("test", "vote");
    const BLOCK: SignKind = SignKind::new("test", "block");
    const CHALLENGE: SignKind = SignKind::new("test", "challenge");

    #[test]
    fn allows_only_listed_kinds() {
        let policy = Policy::allowing([VOTE, CHALLENGE, VOTE]);
        assert!(policy.allows(VOTE));
        assert!(!policy.allows(BLOCK));
        assert_eq!(policy.allowed().len(), 2);
        assert!(!Policy::default().allows(VOTE));
    }
}

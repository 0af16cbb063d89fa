//! The ratchet: a high-water mark per (key, chain, stream) that refuses anything that could be a
//! double-sign. The rule is a pure function ([`check`]); stores only persist its verdicts.
//!
//! A store's `advance` returns only once the new mark is durable, and the sign path signs only
//! after it returns: a crash in between loses one signature, never safety.

pub mod memory;

use std::fmt;

use async_trait::async_trait;

/// A position in a chain's consensus: level (height), then round, then step within the round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mark {
    pub level: u64,
    pub round: u64,
    pub step: u8,
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "level {} round {} step {}", self.level, self.round, self.step)
    }
}

/// The last thing signed on one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub mark: Mark,
    /// SHA-256 of the signed payload, so an identical re-request can be answered again.
    pub payload_digest: [u8; 32],
}

/// Which high-water mark a request moves.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    pub key: String,
    pub chain: String,
    /// Kinds that share a mark share a stream name (e.g. all CometBFT consensus messages).
    pub stream: &'static str,
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key {} chain {} {}", self.key, self.chain, self.stream)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Strictly above the mark: record the new state, then sign.
    Advance,
    /// The same mark and the same payload as last time: signing again is safe; nothing to write.
    Repeat,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RatchetError {
    #[error("refused: {stream} is at {current}, request is for {requested}{}", if *.same_mark { " with a different payload" } else { "" })]
    Refused { stream: String, current: Mark, requested: Mark, same_mark: bool },
    #[error("ratchet store unavailable (refusing to sign): {0}")]
    Unavailable(String),
}

/// The double-sign rule.
pub fn check(stream: &StreamId, previous: Option<&State>, next: &State) -> Result<Verdict, RatchetError> {
    let Some(previous) = previous else {
        return Ok(Verdict::Advance);
    };
    if next.mark > previous.mark {
        Ok(Verdict::Advance)
    } else if next.mark == previous.mark && next.payload_digest == previous.payload_digest {
        Ok(Verdict::Repeat)
    } else {
        Err(RatchetError::Refused {
            stream: stream.to_string(),
            current: previous.mark,
            requested: next.mark,
            same_mark: next.mark == previous.mark,
        })
    }
}

#[async_trait]
pub trait Ratchet: Send + Sync {
    /// A short name for metrics and logs: `memory`, `file`, `configMap`.
    fn kind(&self) -> &'static str;

    /// Applies [`check`] against the stored state and, on `Advance`, makes `next` durable before
    /// returning. Any failure to read or write the store is `Unavailable` (fail closed).
    async fn advance(&self, stream: &StreamId, next: State) -> Result<Verdict, RatchetError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(level: u64, round: u64, step: u8, payload: u8) -> State {
        State { mark: Mark { level, round, step }, payload_digest: [payload; 32] }
    }

    #[test]
    fn the_rule() {
        let stream = StreamId { key: "k".into(), chain: "c".into(), stream: "block" };
        let prev = state(10, 1, 0, 1);
        assert_eq!(check(&stream, None, &prev), Ok(Verdict::Advance));
        assert_eq!(check(&stream, Some(&prev), &state(11, 0, 0, 2)), Ok(Verdict::Advance));
        assert_eq!(check(&stream, Some(&prev), &state(10, 2, 0, 2)), Ok(Verdict::Advance));
        assert_eq!(check(&stream, Some(&prev), &state(10, 1, 1, 2)), Ok(Verdict::Advance));
        assert_eq!(check(&stream, Some(&prev), &state(10, 1, 0, 1)), Ok(Verdict::Repeat));
        let refused = check(&stream, Some(&prev), &state(10, 1, 0, 2)).unwrap_err();
        assert!(refused.to_string().contains("different payload"), "{refused}");
        assert!(check(&stream, Some(&prev), &state(9, 5, 5, 1)).is_err());
        assert!(check(&stream, Some(&prev), &state(10, 0, 9, 1)).is_err());
    }
}

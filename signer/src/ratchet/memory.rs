//! A ratchet kept in process memory. It protects against double-signing while the process lives,
//! and forgets everything on restart: for tests and for protocols without consensus marks.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{check, Ratchet, RatchetError, State, StreamId, Verdict};

#[derive(Default)]
pub struct MemoryRatchet {
    states: Mutex<HashMap<StreamId, State>>,
}

#[async_trait]
impl Ratchet for MemoryRatchet {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn advance(&self, stream: &StreamId, next: State) -> Result<Verdict, RatchetError> {
        let mut states = self.states.lock().map_err(|_| RatchetError::Unavailable("lock poisoned".into()))?;
        let verdict = check(stream, states.get(stream), &next)?;
        if verdict == Verdict::Advance {
            states.insert(stream.clone(), next);
        }
        Ok(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratchet::Mark;

    #[tokio::test]
    async fn streams_are_independent_and_marks_only_rise() {
        let ratchet = MemoryRatchet::default();
        let a = StreamId { key: "a".into(), chain: "c".into(), stream: "block" };
        let b = StreamId { key: "b".into(), chain: "c".into(), stream: "block" };
        let at = |level| State { mark: Mark { level, round: 0, step: 0 }, payload_digest: [level as u8; 32] };
        assert_eq!(ratchet.advance(&a, at(5)).await, Ok(Verdict::Advance));
        assert_eq!(ratchet.advance(&b, at(1)).await, Ok(Verdict::Advance));
        assert_eq!(ratchet.advance(&a, at(5)).await, Ok(Verdict::Repeat));
        assert!(ratchet.advance(&a, at(4)).await.is_err());
        assert_eq!(ratchet.advance(&a, at(6)).await, Ok(Verdict::Advance));
        assert!(ratchet.advance(&a, at(5)).await.is_err());
    }
}

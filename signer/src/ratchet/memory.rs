//! A ratchet kept in process memory. It protects against double-signing while the process lives,
//! and forgets everything on restart: for tests and for protocols without consensus marks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::OwnedMutexGuard;

use super::{commit_decision, Entry, Ratchet, RatchetError, State, StreamId, StreamLock};

type Slot = Arc<tokio::sync::Mutex<Option<State>>>;

#[derive(Default)]
pub struct MemoryRatchet {
    streams: Mutex<HashMap<StreamId, Slot>>,
}

#[async_trait]
impl Ratchet for MemoryRatchet {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn lock(&self, stream: &StreamId) -> Result<Box<dyn StreamLock>, RatchetError> {
        let slot = {
            let mut streams = self.streams.lock().map_err(|_| RatchetError::Unavailable("lock poisoned".into()))?;
            streams.entry(stream.clone()).or_default().clone()
        };
        Ok(Box::new(MemoryLock { stream: stream.clone(), state: slot.lock_owned().await }))
    }

    async fn entries(&self) -> Result<Vec<Entry>, RatchetError> {
        let slots: Vec<(StreamId, Slot)> = {
            let streams = self.streams.lock().map_err(|_| RatchetError::Unavailable("lock poisoned".into()))?;
            streams.iter().map(|(id, slot)| (id.clone(), slot.clone())).collect()
        };
        let mut entries = Vec::new();
        for (id, slot) in slots {
            if let Some(state) = slot.lock().await.clone() {
                entries.push(Entry { key: id.key, chain: id.chain, stream: id.stream.to_string(), state });
            }
        }
        Ok(entries)
    }
}

struct MemoryLock {
    stream: StreamId,
    state: OwnedMutexGuard<Option<State>>,
}

#[async_trait]
impl StreamLock for MemoryLock {
    fn current(&self) -> Option<&State> {
        self.state.as_ref()
    }

    async fn commit(&mut self, next: State) -> Result<State, RatchetError> {
        if let Some(stored) = commit_decision(&self.stream, self.state.as_ref(), &next)? {
            return Ok(stored);
        }
        *self.state = Some(next.clone());
        Ok(next)
    }

    async fn overwrite(&mut self, next: State) -> Result<(), RatchetError> {
        *self.state = Some(next);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::conformance;
    use super::*;

    #[tokio::test]
    async fn follows_the_rule() {
        conformance(&MemoryRatchet::default()).await;
    }
}

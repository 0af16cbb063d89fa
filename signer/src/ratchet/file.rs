//! A ratchet in local files: one file per (key, chain) under `ratchet.file.dir`, durable before a
//! signature is released.
//!
//! Each file holds two 4 KiB slots. A commit writes the whole state, with a sequence number and a
//! SHA-256 checksum, into the slot that does not hold the latest state, then `fdatasync`s. A reader
//! takes the valid slot with the higher sequence number. A torn or lost write therefore leaves the
//! previous state, whose signatures were the only ones released. Overwriting a slot in place costs
//! one data flush (~0.1 ms here) where write-temp-fsync-rename-fsync-dir costs about 0.7 ms; the
//! rename path is used once, to create the file. A lock file stops a second process from using
//! the same directory, since each process trusts its cached copy.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::OwnedMutexGuard;

use super::{commit_decision, Entry, Mark, Ratchet, RatchetError, State, StreamId, StreamLock};
use crate::keys::{Algorithm, Signature};

const SLOT: usize = 4096;
const MAGIC: &[u8; 8] = b"SIGILRT1";
/// magic ‖ sequence (u64 LE) ‖ length (u32 LE) ‖ SHA-256(sequence ‖ length ‖ JSON)
const HEADER: usize = 8 + 8 + 4 + 32;

pub struct FileRatchet {
    dir: PathBuf,
    /// Held for the life of the process: the advisory lock on `<dir>/.lock`.
    _lock: File,
    files: Mutex<HashMap<(String, String), SharedFile>>,
}

/// One (key, chain) file; its async mutex serialises the streams inside it.
type SharedFile = Arc<tokio::sync::Mutex<RatchetFile>>;

struct RatchetFile {
    path: PathBuf,
    loaded: bool,
    handle: Option<Arc<File>>,
    sequence: u64,
    contents: Contents,
}

/// The JSON inside a slot. Readable with `tail -c +53` on a slot, and by `sigil-signer ratchet`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Contents {
    key: String,
    chain: String,
    streams: BTreeMap<String, Record>,
}

/// One stream's state as stored (file slots and ConfigMap entries alike).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Record {
    level: u64,
    round: u64,
    step: u8,
    payload_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signature: Option<(Algorithm, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    context: Option<String>,
}

impl Record {
    pub(crate) fn from_state(state: &State) -> Record {
        Record {
            level: state.mark.level,
            round: state.mark.round,
            step: state.mark.step,
            payload_sha256: hex::encode(state.payload_digest),
            signature: state.signature.map(|s| (s.algorithm(), hex::encode(s.as_bytes()))),
            context: state.context.as_ref().map(hex::encode),
        }
    }

    pub(crate) fn to_state(&self) -> Option<State> {
        let payload_digest = hex::decode(&self.payload_sha256).ok()?.try_into().ok()?;
        let signature = match &self.signature {
            Some((algorithm, text)) => Some(Signature::from_slice(*algorithm, &hex::decode(text).ok()?).ok()?),
            None => None,
        };
        let context = match &self.context {
            Some(text) => Some(hex::decode(text).ok()?),
            None => None,
        };
        let mark = Mark { level: self.level, round: self.round, step: self.step };
        Some(State { mark, payload_digest, signature, context })
    }
}

fn unavailable(path: &Path, what: impl std::fmt::Display) -> RatchetError {
    RatchetError::Unavailable(format!("ratchet file {}: {what}", path.display()))
}

impl FileRatchet {
    /// Creates `dir` (mode 700) if needed and takes its lock; a second process fails here.
    pub fn open(dir: &Path) -> Result<FileRatchet, RatchetError> {
        create_private_dir(dir)?;
        let lock_path = dir.join(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| unavailable(&lock_path, e))?;
        lock.try_lock().map_err(|_| {
            RatchetError::Unavailable(format!(
                "ratchet directory {} is in use by another process; two signers must never share one \
                 file ratchet (each trusts its own copy). Stop the other one, or use a configMap ratchet",
                dir.display()
            ))
        })?;
        Ok(FileRatchet { dir: dir.to_path_buf(), _lock: lock, files: Mutex::new(HashMap::new()) })
    }

    /// `<dir>/<key>/<chain>.ratchet`, the chain escaped so that any chain id is a safe file name.
    fn path(&self, stream: &StreamId) -> PathBuf {
        let mut name = String::new();
        for (i, c) in stream.chain.chars().enumerate() {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || (c == '.' && i > 0) {
                name.push(c);
            } else {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    name.push_str(&format!("%{b:02X}"));
                }
            }
        }
        self.dir.join(&stream.key).join(format!("{name}.ratchet"))
    }
}

fn create_private_dir(dir: &Path) -> Result<(), RatchetError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| unavailable(dir, e))?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), RatchetError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| unavailable(dir, e))
}

/// One slot: header then JSON, zero-padded to [`SLOT`].
fn encode_slot(path: &Path, sequence: u64, contents: &Contents) -> Result<Vec<u8>, RatchetError> {
    let json = serde_json::to_vec(contents).map_err(|e| unavailable(path, e))?;
    if json.len() > SLOT - HEADER {
        return Err(unavailable(path, "state larger than a slot"));
    }
    let mut slot = Vec::with_capacity(SLOT);
    slot.extend_from_slice(MAGIC);
    slot.extend_from_slice(&sequence.to_le_bytes());
    slot.extend_from_slice(&(json.len() as u32).to_le_bytes());
    let mut hash = Sha256::new();
    hash.update(sequence.to_le_bytes());
    hash.update((json.len() as u32).to_le_bytes());
    hash.update(&json);
    slot.extend_from_slice(&hash.finalize());
    slot.extend_from_slice(&json);
    slot.resize(SLOT, 0);
    Ok(slot)
}

/// A slot's sequence number and contents, if it is intact.
fn decode_slot(slot: &[u8]) -> Option<(u64, Contents)> {
    if slot.len() != SLOT || &slot[..8] != MAGIC {
        return None;
    }
    let sequence = u64::from_le_bytes(slot[8..16].try_into().ok()?);
    let len = u32::from_le_bytes(slot[16..20].try_into().ok()?) as usize;
    let json = slot.get(HEADER..HEADER + len)?;
    let mut hash = Sha256::new();
    hash.update(&slot[8..20]);
    hash.update(json);
    if hash.finalize()[..] != slot[20..HEADER] {
        return None;
    }
    Some((sequence, serde_json::from_slice(json).ok()?))
}

struct Loaded {
    handle: Option<Arc<File>>,
    sequence: u64,
    contents: Contents,
}

/// Reads a ratchet file; a missing file is an empty state. A file with no intact slot is an error:
/// refusing to sign is the only safe answer until a person looks at it.
fn load(path: &Path, stream: &StreamId) -> Result<Loaded, RatchetError> {
    let empty = Contents { key: stream.key.clone(), chain: stream.chain.clone(), streams: BTreeMap::new() };
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Loaded { handle: None, sequence: 0, contents: empty })
        }
        Err(e) => return Err(unavailable(path, e)),
    };
    let mut data = vec![0u8; 2 * SLOT];
    let len = file.metadata().map_err(|e| unavailable(path, e))?.len();
    if len != (2 * SLOT) as u64 {
        return Err(unavailable(path, format!("damaged ({len} bytes, expected {}); refusing to sign", 2 * SLOT)));
    }
    file.read_exact_at(&mut data, 0).map_err(|e| unavailable(path, e))?;
    let best = [decode_slot(&data[..SLOT]), decode_slot(&data[SLOT..])].into_iter().flatten().max_by_key(|(s, _)| *s);
    let Some((sequence, contents)) = best else {
        return Err(unavailable(path, "damaged (no intact slot); refusing to sign"));
    };
    if contents.key != stream.key || contents.chain != stream.chain {
        return Err(unavailable(path, format!("belongs to key {} chain {}", contents.key, contents.chain)));
    }
    Ok(Loaded { handle: Some(Arc::new(file)), sequence, contents })
}

/// Creates the file whole: write a temporary, fsync it, rename it in place, fsync the directory.
fn create(path: &Path, slot: &[u8]) -> Result<File, RatchetError> {
    let dir = path.parent().ok_or_else(|| unavailable(path, "no parent directory"))?;
    create_private_dir(dir)?;
    let temporary = path.with_extension("ratchet.tmp");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(|e| unavailable(&temporary, e))?;
    file.write_all(slot).and_then(|_| file.write_all(&[0u8; SLOT])).and_then(|_| file.sync_all()).map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        unavailable(&temporary, e)
    })?;
    std::fs::rename(&temporary, path).map_err(|e| unavailable(path, e))?;
    sync_dir(dir)?;
    OpenOptions::new().read(true).write(true).open(path).map_err(|e| unavailable(path, e))
}

/// Runs file I/O on this thread, telling a multi-threaded runtime to move its other tasks away
/// first. A commit is one ~0.1 ms flush; handing it to the blocking pool and back costs about as
/// much again.
fn blocking<T>(io: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(io),
        _ => io(),
    }
}

#[async_trait]
impl Ratchet for FileRatchet {
    fn kind(&self) -> &'static str {
        "file"
    }

    async fn lock(&self, stream: &StreamId) -> Result<Box<dyn StreamLock>, RatchetError> {
        let entry = {
            let mut files = self.files.lock().map_err(|_| RatchetError::Unavailable("lock poisoned".into()))?;
            files
                .entry((stream.key.clone(), stream.chain.clone()))
                .or_insert_with(|| {
                    Arc::new(tokio::sync::Mutex::new(RatchetFile {
                        path: self.path(stream),
                        loaded: false,
                        handle: None,
                        sequence: 0,
                        contents: Contents::default(),
                    }))
                })
                .clone()
        };
        let mut file = entry.lock_owned().await;
        if !file.loaded {
            let (path, for_stream) = (file.path.clone(), stream.clone());
            let loaded = blocking(move || load(&path, &for_stream))?;
            file.handle = loaded.handle;
            file.sequence = loaded.sequence;
            file.contents = loaded.contents;
            file.loaded = true;
        }
        let current = file.contents.streams.get(stream.stream).and_then(Record::to_state);
        Ok(Box::new(FileLock { stream: stream.clone(), file, current }))
    }

    async fn entries(&self) -> Result<Vec<Entry>, RatchetError> {
        let dir = self.dir.clone();
        blocking(move || {
            let mut entries = Vec::new();
            let keys = std::fs::read_dir(&dir).map_err(|e| unavailable(&dir, e))?;
            for key_dir in keys.flatten().filter(|e| e.path().is_dir()) {
                for file in std::fs::read_dir(key_dir.path()).map_err(|e| unavailable(&key_dir.path(), e))?.flatten() {
                    let path = file.path();
                    if path.extension().is_none_or(|e| e != "ratchet") {
                        continue;
                    }
                    let data = std::fs::read(&path).map_err(|e| unavailable(&path, e))?;
                    let intact = (data.len() == 2 * SLOT)
                        .then(|| [decode_slot(&data[..SLOT]), decode_slot(&data[SLOT..])])
                        .into_iter()
                        .flatten()
                        .flatten()
                        .max_by_key(|(sequence, _)| *sequence);
                    let (_, contents) = intact.ok_or_else(|| unavailable(&path, "damaged (no intact slot)"))?;
                    for (stream, record) in &contents.streams {
                        let state = record.to_state().ok_or_else(|| unavailable(&path, "damaged record"))?;
                        entries.push(Entry {
                            key: contents.key.clone(),
                            chain: contents.chain.clone(),
                            stream: stream.clone(),
                            state,
                        });
                    }
                }
            }
            Ok(entries)
        })
    }
}

struct FileLock {
    stream: StreamId,
    file: OwnedMutexGuard<RatchetFile>,
    current: Option<State>,
}

#[async_trait]
impl StreamLock for FileLock {
    fn current(&self) -> Option<&State> {
        self.current.as_ref()
    }

    async fn commit(&mut self, next: State) -> Result<State, RatchetError> {
        if let Some(stored) = commit_decision(&self.stream, self.current.as_ref(), &next)? {
            return Ok(stored);
        }
        self.write(next.clone()).await?;
        Ok(next)
    }

    async fn overwrite(&mut self, next: State) -> Result<(), RatchetError> {
        self.write(next).await
    }
}

impl FileLock {
    async fn write(&mut self, next: State) -> Result<(), RatchetError> {
        let mut contents = self.file.contents.clone();
        contents.streams.insert(self.stream.stream.to_string(), Record::from_state(&next));
        let sequence = self.file.sequence + 1;
        let path = self.file.path.clone();
        let slot = encode_slot(&path, sequence, &contents)?;
        let handle = self.file.handle.clone();
        let written = blocking(move || match handle {
            // The slot not holding the latest state: odd sequence numbers live in slot 1.
            Some(file) => {
                let offset = (sequence % 2) * SLOT as u64;
                file.write_all_at(&slot, offset).and_then(|_| file.sync_data()).map_err(|e| unavailable(&path, e))?;
                Ok(file)
            }
            None if sequence == 1 => {
                // A new file: slot 0 is empty, slot 1 holds sequence 1.
                let empty = encode_slot(&path, 0, &Contents { streams: BTreeMap::new(), ..contents })?;
                let file = create(&path, &empty)?;
                file.write_all_at(&slot, SLOT as u64)
                    .and_then(|_| file.sync_data())
                    .map_err(|e| unavailable(&path, e))?;
                Ok(Arc::new(file))
            }
            None => Err(unavailable(&path, "vanished")),
        })?;
        self.file.handle = Some(written);
        self.file.sequence = sequence;
        self.file.contents.streams.insert(self.stream.stream.to_string(), Record::from_state(&next));
        self.current = Some(next);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::conformance;
    use super::*;

    #[tokio::test]
    async fn follows_the_rule() {
        let dir = tempfile::tempdir().unwrap();
        conformance(&FileRatchet::open(dir.path()).unwrap()).await;
    }

    fn stream() -> StreamId {
        StreamId { key: "baker".into(), chain: "NetXdQprcVkpaWU".into(), stream: "block" }
    }

    fn state(level: u64) -> State {
        State {
            mark: Mark { level, round: 1, step: 0 },
            payload_digest: [level as u8; 32],
            signature: Some(Signature::new(Algorithm::Ed25519, [level as u8; 64])),
            context: Some(vec![level as u8]),
        }
    }

    async fn commit(ratchet: &FileRatchet, level: u64) {
        let mut lock = ratchet.lock(&stream()).await.unwrap();
        lock.commit(state(level)).await.unwrap();
    }

    async fn current(dir: &Path) -> Option<State> {
        let ratchet = FileRatchet::open(dir).unwrap();
        let lock = ratchet.lock(&stream()).await.unwrap();
        lock.current().cloned()
    }

    #[tokio::test]
    async fn survives_a_restart_and_alternates_slots() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ratchet = FileRatchet::open(dir.path()).unwrap();
            for level in 1..=5 {
                commit(&ratchet, level).await;
            }
            assert!(FileRatchet::open(dir.path()).is_err(), "a second process must not share the directory");
        }
        assert_eq!(current(dir.path()).await, Some(state(5)));
        let path = dir.path().join("baker/NetXdQprcVkpaWU.ratchet");
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len(), 2 * SLOT);
        let sequences: Vec<u64> =
            [&data[..SLOT], &data[SLOT..]].iter().filter_map(|s| decode_slot(s)).map(|(q, _)| q).collect();
        assert_eq!(sequences, vec![4, 5]);
    }

    #[tokio::test]
    async fn a_torn_write_falls_back_to_the_previous_state_and_total_damage_refuses() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ratchet = FileRatchet::open(dir.path()).unwrap();
            for level in 1..=4 {
                commit(&ratchet, level).await;
            }
        }
        let path = dir.path().join("baker/NetXdQprcVkpaWU.ratchet");
        let mut data = std::fs::read(&path).unwrap();
        // Sequence 4 lives in slot 0; tear it.
        data[HEADER + 3] ^= 0xff;
        std::fs::write(&path, &data).unwrap();
        assert_eq!(current(dir.path()).await, Some(state(3)));
        data[SLOT + HEADER + 3] ^= 0xff;
        std::fs::write(&path, &data).unwrap();
        let ratchet = FileRatchet::open(dir.path()).unwrap();
        let error = ratchet.lock(&stream()).await.err().unwrap();
        assert!(error.to_string().contains("damaged"), "{error}");
        std::fs::write(&path, b"short").unwrap();
        let error = ratchet.lock(&StreamId { stream: "attestation", ..stream() }).await.err();
        // The file is already cached as unloadable only per lock attempt: it still refuses.
        assert!(error.is_some());
    }

    #[test]
    fn chain_ids_become_safe_file_names() {
        let dir = tempfile::tempdir().unwrap();
        let ratchet = FileRatchet::open(dir.path()).unwrap();
        let odd = StreamId { key: "v".into(), chain: "../etc/passwd".into(), stream: "consensus" };
        assert_eq!(ratchet.path(&odd), dir.path().join("v/%2E.%2Fetc%2Fpasswd.ratchet"));
        let cosmos = StreamId { chain: "cosmoshub-4".into(), ..odd };
        assert_eq!(ratchet.path(&cosmos), dir.path().join("v/cosmoshub-4.ratchet"));
    }
}

//! A ratchet in a local directory: one append-only journal of marks for every key, chain and
//! stream (`<dir>/marks.journal`), durable before a signature is released.
//!
//! A commit appends one checksummed record (the stream's new state) and waits until an
//! `fdatasync` covering it has completed. Commits on any streams share flushes (group commit): a
//! flusher thread flushes everything appended when it is asked, and whatever is appended meanwhile
//! goes with its next flush, so a request waits at most for the flush under way and one more. The
//! rule that decides what may be signed does not change ([`commit_decision`], under the stream's
//! lock, which is held until the mark is durable: a state the next request on the stream sees is
//! durable).
//!
//! The journal grows a megabyte at a time, written with zeros and synced once, so that a flush
//! after an append carries data only. Recovery reads the records in order and stops at the first
//! that is not intact: only records after the last completed flush can be torn, and none of their
//! signatures was released. The torn tail is zeroed before anything is appended. A journal past
//! [`COMPACT_AT`] bytes is rewritten as one record per stream (write a temporary, fsync, rename,
//! fsync the directory). A failed write or flush stops the store until the process restarts (after
//! a failed `fsync` the page cache cannot be trusted). A lock file stops a second process from using the directory, since each process
//! trusts its copy in memory. A directory of the previous layout (two checksummed slots per key and
//! chain, `<key>/<chain>.ratchet`) is read once into a new journal, and its files removed.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{watch, OwnedMutexGuard};

use super::{commit_decision, Entry, Mark, Ratchet, RatchetError, State, StreamId, StreamLock};
use crate::keys::{Algorithm, Signature};

/// The journal's first bytes.
const MAGIC: &[u8; 8] = b"SIGILJ01";
/// A record: length of the JSON (u32 LE) ‖ sequence (u64 LE) ‖ SHA-256(length ‖ sequence ‖ JSON) ‖ JSON.
const RECORD_HEADER: usize = 4 + 8 + 32;
/// No record is larger (a state is a few hundred bytes); a larger length is damage.
const MAX_RECORD: usize = 64 * 1024;
/// Past this size the journal is rewritten with one record per stream.
const COMPACT_AT: u64 = 4 * 1024 * 1024;
/// The journal grows by this much at a time, written with zeros and synced once: a flush after
/// an append into space already written carries no metadata (a file growing at every append made
/// each `fdatasync` also commit the new size).
const CHUNK: u64 = 1024 * 1024;
const JOURNAL: &str = "marks.journal";

pub struct FileRatchet {
    journal: Arc<Journal>,
    /// Held for the life of the process: the advisory lock on `<dir>/.lock`.
    _lock: File,
    streams: Mutex<HashMap<StreamId, Arc<tokio::sync::Mutex<()>>>>,
}

/// (key, chain, stream)
type StreamKey = (String, String, String);

struct Journal {
    dir: PathBuf,
    path: PathBuf,
    compact_at: std::sync::atomic::AtomicU64,
    appends: Mutex<Appends>,
    /// Group commit: what is durable (the flusher thread publishes it).
    flushes: watch::Sender<Flushes>,
    flusher: Arc<Flusher>,
}

/// Wakes the flusher thread: a flush is wanted, or the store is closing.
#[derive(Default)]
struct Flusher {
    state: Mutex<FlusherState>,
    wake: std::sync::Condvar,
}

#[derive(Default)]
struct FlusherState {
    requested: bool,
    closed: bool,
}

impl Flusher {
    fn request(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.requested = true;
            self.wake.notify_one();
        }
    }

    fn close(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.closed = true;
            self.wake.notify_one();
        }
    }

    /// Waits for a request; `false` once closed with none left (a commit still waiting is served).
    fn wait_for_request(&self) -> bool {
        let Ok(mut state) = self.state.lock() else { return false };
        while !state.requested && !state.closed {
            let Ok(next) = self.wake.wait(state) else { return false };
            state = next;
        }
        std::mem::take(&mut state.requested)
    }
}

/// Everything written so far, under one short lock.
struct Appends {
    file: Arc<File>,
    /// Where the records end; zeros follow, up to `allocated`.
    len: u64,
    allocated: u64,
    /// The sequence number of the next record; every record below it is written.
    next: u64,
    states: BTreeMap<StreamKey, Record>,
    /// Set when a write failed: the store refuses everything until the process restarts.
    failed: Option<String>,
}

#[derive(Default)]
struct Flushes {
    /// Every record with a lower sequence number is durable.
    durable: u64,
    failed: Option<String>,
    /// Flushes made.
    count: u64,
}

/// One journal record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct JournalRecord {
    key: String,
    chain: String,
    stream: String,
    #[serde(flatten)]
    record: Record,
}

/// One stream's state as stored (journal records and ConfigMap entries alike).
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
    /// Creates `dir` (mode 700) if needed, takes its lock (a second process fails here) and reads
    /// the journal, cutting off a torn tail; an unreadable journal is an error.
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
        FileRatchet::with_journal(Journal::open(dir, COMPACT_AT)?, lock)
    }

    /// Starts the flusher thread: flushes run beside the async runtime, whose threads go on
    /// serving requests meanwhile.
    fn with_journal(journal: Journal, lock: File) -> Result<FileRatchet, RatchetError> {
        let journal = Arc::new(journal);
        let (weak, flusher) = (Arc::downgrade(&journal), journal.flusher.clone());
        std::thread::Builder::new()
            .name("ratchet-flusher".into())
            .spawn(move || Journal::flush_until_closed(weak, flusher))
            .map_err(|e| unavailable(&journal.path, format!("cannot start the flusher thread: {e}")))?;
        Ok(FileRatchet { journal, _lock: lock, streams: Mutex::new(HashMap::new()) })
    }

    /// [`FileRatchet::open`] with the journal rewritten past `bytes`: for tests that crash the
    /// process in the middle of a compaction.
    #[doc(hidden)]
    pub fn open_compacting_at(dir: &Path, bytes: u64) -> Result<FileRatchet, RatchetError> {
        let ratchet = FileRatchet::open(dir)?;
        ratchet.journal.compact_at.store(bytes, std::sync::atomic::Ordering::Relaxed);
        Ok(ratchet)
    }

    /// How many flushes the journal has made: fewer than commits when they were shared.
    pub fn flushes(&self) -> u64 {
        self.journal.flushes.borrow().count
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

fn encode_record(path: &Path, sequence: u64, key: &StreamKey, record: &Record) -> Result<Vec<u8>, RatchetError> {
    let (key, chain, stream) = key.clone();
    let json = serde_json::to_vec(&JournalRecord { key, chain, stream, record: record.clone() })
        .map_err(|e| unavailable(path, e))?;
    if json.len() > MAX_RECORD {
        return Err(unavailable(path, "a state larger than a record"));
    }
    let len = (json.len() as u32).to_le_bytes();
    let mut out = Vec::with_capacity(RECORD_HEADER + json.len());
    out.extend_from_slice(&len);
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(
        &Sha256::new().chain_update(len).chain_update(sequence.to_le_bytes()).chain_update(&json).finalize(),
    );
    out.extend_from_slice(&json);
    Ok(out)
}

/// The intact records of a journal's bytes, in order, up to the first that is not; the number of
/// the next record, and where the intact ones end.
fn decode_records(data: &[u8]) -> (Vec<(StreamKey, Record)>, u64, usize) {
    let (mut records, mut next, mut at) = (Vec::new(), 0, MAGIC.len());
    while let Some(header) = data.get(at..at + RECORD_HEADER) {
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let sequence = u64::from_le_bytes(header[4..12].try_into().expect("8 bytes"));
        let Some(json) = data.get(at + RECORD_HEADER..at + RECORD_HEADER + len).filter(|_| len <= MAX_RECORD) else {
            break;
        };
        let digest = Sha256::new().chain_update(&header[..12]).chain_update(json).finalize();
        // Numbers run on from the first record (a compacted journal starts where the old one ended).
        if digest[..] != header[12..] || (!records.is_empty() && sequence != next) {
            break;
        }
        let Ok(entry) = serde_json::from_slice::<JournalRecord>(json) else { break };
        records.push(((entry.key, entry.chain, entry.stream), entry.record));
        next = sequence + 1;
        at += RECORD_HEADER + len;
    }
    (records, next, at)
}

/// Writes `states` as a new journal whole, with room to grow: a temporary, fsynced, renamed over
/// the journal, and the directory fsynced. Returns the open journal, where its records end, and its
/// size.
fn write_journal(
    dir: &Path,
    path: &Path,
    first: u64,
    states: &BTreeMap<StreamKey, Record>,
) -> Result<(File, u64, u64), RatchetError> {
    let mut data = MAGIC.to_vec();
    for (sequence, (key, record)) in (first..).zip(states) {
        data.extend_from_slice(&encode_record(path, sequence, key, record)?);
    }
    let end = data.len() as u64;
    data.resize((end + CHUNK).next_multiple_of(CHUNK) as usize, 0);
    let temporary = path.with_extension("journal.tmp");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(|e| unavailable(&temporary, e))?;
    file.write_all(&data).and_then(|_| file.sync_all()).map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        unavailable(&temporary, e)
    })?;
    std::fs::rename(&temporary, path).map_err(|e| unavailable(path, e))?;
    sync_dir(dir)?;
    let file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| unavailable(path, e))?;
    Ok((file, end, data.len() as u64))
}

impl Journal {
    fn open(dir: &Path, compact_at: u64) -> Result<Journal, RatchetError> {
        let path = dir.join(JOURNAL);
        let mut journal = match std::fs::read(&path) {
            Ok(data) => {
                if data.get(..MAGIC.len()) != Some(&MAGIC[..]) {
                    return Err(unavailable(&path, "damaged (not a sigil marks journal); refusing to sign"));
                }
                let (records, next, end) = decode_records(&data);
                let file = OpenOptions::new().read(true).write(true).open(&path).map_err(|e| unavailable(&path, e))?;
                if let Some(torn) = data[end..].iter().rposition(|b| *b != 0) {
                    // A torn tail from a crash: none of it was released. Zeroed before appending.
                    tracing::warn!(path = %path.display(), bytes = torn + 1, "dropping a torn journal tail");
                    let zeros = vec![0; torn + 1];
                    file.write_all_at(&zeros, end as u64)
                        .and_then(|_| file.sync_data())
                        .map_err(|e| unavailable(&path, e))?;
                }
                Some(Appends {
                    file: Arc::new(file),
                    len: end as u64,
                    allocated: data.len() as u64,
                    next,
                    states: records.into_iter().collect(),
                    failed: None,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(unavailable(&path, e)),
        };
        // Files of the previous layout (an upgrade, or a move into the journal cut short by a
        // crash): each stream keeps the higher mark, in a new journal, before they are removed.
        let old = migrate_slot_files(dir)?;
        if journal.is_none() || !old.is_empty() {
            let (mut states, first) = journal.map(|j| (j.states, j.next)).unwrap_or_default();
            for (key, record) in old {
                let position = |r: &Record| (r.level, r.round, r.step);
                if states.get(&key).is_none_or(|current| position(&record) > position(current)) {
                    states.insert(key, record);
                }
            }
            let (file, len, allocated) = write_journal(dir, &path, first, &states)?;
            remove_slot_files(dir)?;
            let next = first + states.len() as u64;
            journal = Some(Appends { file: Arc::new(file), len, allocated, next, states, failed: None });
        }
        let appends = journal.expect("read or written above");
        let (flushes, _) = watch::channel(Flushes { durable: appends.next, ..Flushes::default() });
        let flusher = Arc::new(Flusher::default());
        Ok(Journal {
            dir: dir.to_path_buf(),
            path,
            compact_at: compact_at.into(),
            appends: Mutex::new(appends),
            flushes,
            flusher,
        })
    }

    fn appends(&self) -> Result<std::sync::MutexGuard<'_, Appends>, RatchetError> {
        self.appends.lock().map_err(|_| RatchetError::Unavailable("ratchet journal lock poisoned".into()))
    }

    /// Appends `record` for `key`; the sequence number to wait for.
    fn append(&self, key: StreamKey, record: Record) -> Result<u64, RatchetError> {
        let mut appends = self.appends()?;
        if let Some(failed) = &appends.failed {
            return Err(unavailable(&self.path, failed));
        }
        let sequence = appends.next;
        let bytes = encode_record(&self.path, sequence, &key, &record)?;
        if appends.len + bytes.len() as u64 > appends.allocated {
            let (file, at) = (appends.file.clone(), appends.allocated);
            let grown = blocking(|| file.write_all_at(&vec![0; CHUNK as usize], at).and_then(|_| file.sync_all()));
            if let Err(error) = grown {
                let failed = format!("growing the journal failed ({error}); restart the signer");
                appends.failed = Some(failed.clone());
                return Err(unavailable(&self.path, failed));
            }
            appends.allocated += CHUNK;
        }
        if let Err(error) = appends.file.write_all_at(&bytes, appends.len) {
            let failed = format!("a write failed ({error}); restart the signer");
            appends.failed = Some(failed.clone());
            return Err(unavailable(&self.path, failed));
        }
        appends.len += bytes.len() as u64;
        appends.next += 1;
        appends.states.insert(key, record);
        if appends.len > self.compact_at.load(std::sync::atomic::Ordering::Relaxed) {
            blocking(|| self.compact(&mut appends))?;
        }
        Ok(sequence)
    }

    /// Rewrites the journal as one record per stream. Every state is in it, so every record
    /// written so far is durable once it is in place.
    fn compact(&self, appends: &mut Appends) -> Result<(), RatchetError> {
        let first = appends.next;
        let result = write_journal(&self.dir, &self.path, first, &appends.states);
        let (file, len, allocated) = result.inspect_err(|error| appends.failed = Some(error.to_string()))?;
        appends.next = first + appends.states.len() as u64;
        (appends.file, appends.len, appends.allocated) = (Arc::new(file), len, allocated);
        let durable = appends.next;
        self.flushes.send_modify(|f| f.durable = f.durable.max(durable));
        Ok(())
    }

    /// Returns once the record numbered `sequence` is durable, asking the flusher for a flush when
    /// none covering it has been made.
    async fn wait_durable(&self, sequence: u64) -> Result<(), RatchetError> {
        loop {
            // Subscribed before looking, so that no flush finishing in between is missed.
            let mut changed = self.flushes.subscribe();
            {
                let flushes = changed.borrow_and_update();
                if flushes.durable > sequence {
                    return Ok(());
                }
                if let Some(failed) = &flushes.failed {
                    return Err(unavailable(&self.path, failed));
                }
            }
            self.flusher.request();
            let _ = changed.changed().await;
        }
    }

    /// The flusher's loop, on a thread of its own: one `fdatasync` for everything appended when it
    /// was asked, then again while more was asked meanwhile. Ends when the store is dropped.
    fn flush_until_closed(journal: std::sync::Weak<Journal>, flusher: Arc<Flusher>) {
        while flusher.wait_for_request() {
            let Some(journal) = journal.upgrade() else { return };
            let Ok((file, covered)) = journal.appends().map(|a| (a.file.clone(), a.next)) else { return };
            if journal.flushes.borrow().durable >= covered {
                continue;
            }
            let flushed = file.sync_data();
            journal.flushes.send_modify(|f| {
                f.count += 1;
                match &flushed {
                    Ok(()) => f.durable = f.durable.max(covered),
                    Err(error) => f.failed = Some(format!("a flush failed ({error}); restart the signer")),
                }
            });
        }
    }

    fn failure(&self) -> Option<String> {
        let appends = self.appends().ok()?;
        appends.failed.clone().or_else(|| self.flushes.borrow().failed.clone())
    }
}

/// Runs rare, slow file I/O (growing or compacting the journal, a few ms) on this thread, telling a
/// multi-threaded runtime to move its other tasks away first.
fn blocking<T>(io: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(io),
        _ => io(),
    }
}

impl Drop for FileRatchet {
    fn drop(&mut self) {
        self.journal.flusher.close();
    }
}

#[async_trait]
impl Ratchet for FileRatchet {
    fn kind(&self) -> &'static str {
        "file"
    }

    async fn lock(&self, stream: &StreamId) -> Result<Box<dyn StreamLock>, RatchetError> {
        let entry = {
            let mut streams = self.streams.lock().map_err(|_| RatchetError::Unavailable("lock poisoned".into()))?;
            streams.entry(stream.clone()).or_default().clone()
        };
        let guard = entry.lock_owned().await;
        // After a failed write or flush, a state in memory may not be on disk: hand back nothing.
        if let Some(failed) = self.journal.failure() {
            return Err(unavailable(&self.journal.path, failed));
        }
        let key = (stream.key.clone(), stream.chain.clone(), stream.stream.to_string());
        let current = match self.journal.appends()?.states.get(&key) {
            Some(record) => Some(record.to_state().ok_or_else(|| unavailable(&self.journal.path, "damaged record"))?),
            None => None,
        };
        Ok(Box::new(FileLock { journal: self.journal.clone(), stream: stream.clone(), _guard: guard, current }))
    }

    async fn entries(&self) -> Result<Vec<Entry>, RatchetError> {
        let appends = self.journal.appends()?;
        appends
            .states
            .iter()
            .map(|((key, chain, stream), record)| {
                let state = record.to_state().ok_or_else(|| unavailable(&self.journal.path, "damaged record"))?;
                Ok(Entry { key: key.clone(), chain: chain.clone(), stream: stream.clone(), state })
            })
            .collect()
    }

    fn health(&self) -> Result<(), String> {
        self.journal
            .failure()
            .map_or(Ok(()), |failed| Err(format!("ratchet journal {}: {failed}", self.journal.path.display())))
    }
}

struct FileLock {
    journal: Arc<Journal>,
    stream: StreamId,
    _guard: OwnedMutexGuard<()>,
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
        let key = (self.stream.key.clone(), self.stream.chain.clone(), self.stream.stream.to_string());
        let sequence = self.journal.append(key, Record::from_state(&next))?;
        self.journal.wait_durable(sequence).await?;
        self.current = Some(next);
        Ok(())
    }
}

// The previous layout, read once into the journal: `<key>/<chain>.ratchet`, two 4 KiB slots of
// magic ‖ sequence (u64 LE) ‖ length (u32 LE) ‖ SHA-256(sequence ‖ length ‖ JSON) ‖ JSON, the
// valid slot with the higher sequence holding the state.
const SLOT: usize = 4096;
const SLOT_MAGIC: &[u8; 8] = b"SIGILRT1";
const SLOT_HEADER: usize = 8 + 8 + 4 + 32;

#[derive(Deserialize)]
struct SlotContents {
    key: String,
    chain: String,
    streams: BTreeMap<String, Record>,
}

fn decode_slot(slot: &[u8]) -> Option<(u64, SlotContents)> {
    if slot.len() != SLOT || &slot[..8] != SLOT_MAGIC {
        return None;
    }
    let sequence = u64::from_le_bytes(slot[8..16].try_into().ok()?);
    let len = u32::from_le_bytes(slot[16..20].try_into().ok()?) as usize;
    let json = slot.get(SLOT_HEADER..SLOT_HEADER + len)?;
    let digest = Sha256::new().chain_update(&slot[8..20]).chain_update(json).finalize();
    (digest[..] == slot[20..SLOT_HEADER]).then_some(())?;
    Some((sequence, serde_json::from_slice(json).ok()?))
}

fn slot_files(dir: &Path) -> Result<Vec<PathBuf>, RatchetError> {
    let mut files = Vec::new();
    for key_dir in std::fs::read_dir(dir).map_err(|e| unavailable(dir, e))?.flatten().filter(|e| e.path().is_dir()) {
        let entries = std::fs::read_dir(key_dir.path()).map_err(|e| unavailable(&key_dir.path(), e))?;
        files.extend(entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "ratchet")));
    }
    Ok(files)
}

/// Every state of a previous-layout directory; a file with no intact slot refuses, as it did.
fn migrate_slot_files(dir: &Path) -> Result<BTreeMap<StreamKey, Record>, RatchetError> {
    let mut states = BTreeMap::new();
    for path in slot_files(dir)? {
        let data = std::fs::read(&path).map_err(|e| unavailable(&path, e))?;
        let intact = (data.len() == 2 * SLOT)
            .then(|| [decode_slot(&data[..SLOT]), decode_slot(&data[SLOT..])])
            .into_iter()
            .flatten()
            .flatten()
            .max_by_key(|(sequence, _)| *sequence);
        let (_, contents) = intact.ok_or_else(|| unavailable(&path, "damaged (no intact slot); refusing to sign"))?;
        for (stream, record) in contents.streams {
            states.insert((contents.key.clone(), contents.chain.clone(), stream), record);
        }
    }
    Ok(states)
}

/// Once their states are in a durable journal.
fn remove_slot_files(dir: &Path) -> Result<(), RatchetError> {
    for path in slot_files(dir)? {
        std::fs::remove_file(&path).map_err(|e| unavailable(&path, e))?;
        if let Some(key_dir) = path.parent() {
            sync_dir(key_dir)?;
        }
    }
    Ok(())
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
    async fn survives_a_restart_and_belongs_to_one_process() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ratchet = FileRatchet::open(dir.path()).unwrap();
            for level in 1..=5 {
                commit(&ratchet, level).await;
            }
            assert!(FileRatchet::open(dir.path()).is_err(), "a second process must not share the directory");
        }
        assert_eq!(current(dir.path()).await, Some(state(5)));
    }

    /// A crash tears at most the records after the last flush: the last complete record is the
    /// state, the torn bytes are cut off, and the journal goes on from there. A journal that is not
    /// one refuses.
    #[tokio::test]
    async fn a_torn_tail_keeps_the_last_complete_record_and_damage_refuses() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ratchet = FileRatchet::open(dir.path()).unwrap();
            for level in 1..=4 {
                commit(&ratchet, level).await;
            }
        }
        let path = dir.path().join(JOURNAL);
        let end_of_records = |data: &[u8]| data.iter().rposition(|b| *b != 0).unwrap() + 1;
        let mut data = std::fs::read(&path).unwrap();
        let end = end_of_records(&data);
        data[end - 5..end].fill(0);
        data[end - 40] ^= 0xff;
        std::fs::write(&path, &data).unwrap();
        assert_eq!(current(dir.path()).await, Some(state(3)));
        let data = std::fs::read(&path).unwrap();
        assert!(end_of_records(&data) < end - 40, "the torn record was zeroed");
        {
            let ratchet = FileRatchet::open(dir.path()).unwrap();
            commit(&ratchet, 6).await;
        }
        assert_eq!(current(dir.path()).await, Some(state(6)));

        // A flipped byte in the last record: its checksum fails, the one before holds.
        let mut data = std::fs::read(&path).unwrap();
        let last = end_of_records(&data) - 3;
        data[last] ^= 0xff;
        std::fs::write(&path, &data).unwrap();
        assert_eq!(current(dir.path()).await, Some(state(3)));

        std::fs::write(&path, b"not a journal").unwrap();
        let error = FileRatchet::open(dir.path()).err().unwrap();
        assert!(error.to_string().contains("damaged"), "{error}");
    }

    /// Commits on many streams at once share flushes, and each is durable when it returns.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_commits_share_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let ratchet = Arc::new(FileRatchet::open(dir.path()).unwrap());
        let mut tasks = Vec::new();
        for chain in 0..16 {
            let ratchet = ratchet.clone();
            tasks.push(tokio::spawn(async move {
                let id = StreamId { chain: format!("chain-{chain}"), ..stream() };
                for level in 1..=20 {
                    ratchet.lock(&id).await.unwrap().commit(state(level)).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let flushes = ratchet.flushes();
        assert!(flushes < 16 * 20, "{flushes} flushes for {} commits", 16 * 20);
        drop(ratchet);
        let reopened = FileRatchet::open(dir.path()).unwrap();
        let entries = reopened.entries().await.unwrap();
        assert_eq!(entries.len(), 16);
        assert!(entries.iter().all(|e| e.state == state(20)), "{entries:?}");
    }

    /// Past its size the journal is rewritten with one record per stream; nothing is lost.
    #[tokio::test]
    async fn compaction_keeps_every_stream() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ratchet = FileRatchet::open_compacting_at(dir.path(), 4096).unwrap();
            for level in 1..=100 {
                commit(&ratchet, level).await;
                let other = StreamId { stream: "attestation", ..stream() };
                ratchet.lock(&other).await.unwrap().commit(state(level)).await.unwrap();
            }
        }
        let data = std::fs::read(dir.path().join(JOURNAL)).unwrap();
        assert!(data.iter().rposition(|b| *b != 0).unwrap() < 8192, "rewritten with one record per stream");
        let ratchet = FileRatchet::open(dir.path()).unwrap();
        let entries = ratchet.entries().await.unwrap();
        assert_eq!(entries.len(), 2);
        assert!(entries.iter().all(|e| e.state == state(100)), "{entries:?}");
    }

    /// A directory of the previous layout (two slots per key and chain) is read into the journal,
    /// and a damaged one still refuses.
    #[tokio::test]
    async fn the_previous_layout_moves_into_the_journal() {
        let encode = |sequence: u64, json: &str| {
            let mut slot = SLOT_MAGIC.to_vec();
            slot.extend_from_slice(&sequence.to_le_bytes());
            slot.extend_from_slice(&(json.len() as u32).to_le_bytes());
            slot.extend_from_slice(&Sha256::new().chain_update(&slot[8..20]).chain_update(json).finalize());
            slot.extend_from_slice(json.as_bytes());
            slot.resize(SLOT, 0);
            slot
        };
        let record = serde_json::to_string(&Record::from_state(&state(7))).unwrap();
        let older = serde_json::to_string(&Record::from_state(&state(6))).unwrap();
        let contents =
            |record: &str| format!(r#"{{"key":"baker","chain":"NetXdQprcVkpaWU","streams":{{"block":{record}}}}}"#);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("baker")).unwrap();
        let old = dir.path().join("baker/NetXdQprcVkpaWU.ratchet");
        std::fs::write(&old, [encode(8, &contents(&record)), encode(7, &contents(&older))].concat()).unwrap();
        assert_eq!(current(dir.path()).await, Some(state(7)));
        assert!(!old.exists(), "the old file is gone once the journal holds its state");
        assert_eq!(current(dir.path()).await, Some(state(7)));

        let damaged = tempfile::tempdir().unwrap();
        std::fs::create_dir(damaged.path().join("baker")).unwrap();
        std::fs::write(damaged.path().join("baker/NetXdQprcVkpaWU.ratchet"), b"short").unwrap();
        let error = FileRatchet::open(damaged.path()).err().unwrap();
        assert!(error.to_string().contains("no intact slot"), "{error}");
    }

    /// Chain ids are inside the records, never in file names.
    #[tokio::test]
    async fn any_chain_id_is_just_data() {
        let dir = tempfile::tempdir().unwrap();
        let odd = StreamId { key: "v".into(), chain: "../etc/passwd".into(), stream: "consensus" };
        {
            let ratchet = FileRatchet::open(dir.path()).unwrap();
            ratchet.lock(&odd).await.unwrap().commit(state(1)).await.unwrap();
        }
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let ratchet = FileRatchet::open(dir.path()).unwrap();
        assert_eq!(ratchet.lock(&odd).await.unwrap().current(), Some(&state(1)));
    }
}

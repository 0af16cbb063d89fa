//! A ratchet in a local directory: one append-only journal of marks for every key, chain and
//! stream (`<dir>/marks.journal`), durable before a signature is released.
//!
//! A commit appends one checksummed record (the stream's new state) and waits until an
//! `fdatasync` covering it has completed. Commits on any streams share flushes (group commit): a
//! flusher thread flushes everything appended when it is asked, and whatever is appended meanwhile
//! goes with its next flush, so a request waits at most for the flush under way and one more. The
//! rule that decides what may be signed does not change ([`commit_decision`], under the stream's
//! lock, which is held until the mark is durable, even when the request is given up meanwhile: a
//! state the next request on the stream sees is durable, or covered by a durable reservation).
//!
//! The journal grows a megabyte at a time, written with zeros and synced once, so that a flush
//! after an append carries data only. Recovery reads the records in order and stops at the first
//! that is not intact: only records after the last completed flush can be torn, and none of their
//! signatures was released (unless a flushed reservation covered it, below). What recovery read
//! is then written as a new journal, one record per stream (a temporary, fsync, rename, fsync of
//! the directory), so that what the process trusts is on disk and not only in the page cache. The
//! same rewrite compacts a journal past [`COMPACT_AT`] bytes.
//!
//! With `reserveNextStep`, a record may also reserve the next step, and a request that a flushed
//! reservation covers does not wait for its own record (see [`FileLock`]). A failed write or flush
//! stops the store until the process restarts (after a failed `fsync` the page cache cannot be
//! trusted). A lock file stops a second process from using the directory, since each process
//! trusts its copy in memory. A directory of the previous layout (two checksummed slots per key
//! and chain, `<key>/<chain>.ratchet`) is read once into a new journal, and its files removed.

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
    /// Whether commits reserve the next step they are told of (`reserveNextStep`).
    reserve: bool,
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
    /// Held by a test to keep the flusher from flushing.
    #[cfg(test)]
    hold_flushes: Mutex<()>,
    /// Set by a test to make flushes fail.
    #[cfg(test)]
    fail_flushes: std::sync::atomic::AtomicBool,
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
    /// Per stream, the sequence number of the first record that holds its current highest mark;
    /// none for streams whose records are all durable since the journal was opened.
    reserved_at: HashMap<StreamKey, u64>,
    /// Set when a write failed: the store refuses everything until the process restarts.
    failed: Option<String>,
}

#[derive(Default)]
struct Flushes {
    /// Every record with a lower sequence number is durable.
    durable: u64,
    /// The journal's length when `durable` was reached: its bytes below are on disk.
    durable_len: u64,
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
    /// Set when the record reserves marks above what was signed (see [`FileLock`]): the record's
    /// own mark is then the reservation, with an all-zero digest that no request has, and this is
    /// what was signed. A reader that does not know the field sees the reservation alone, which
    /// refuses at least as much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signed: Option<Box<Record>>,
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
            signed: None,
        }
    }

    /// `state`, reserving every mark up to `reserved` when that is above it.
    fn reserving(state: &State, reserved: Mark) -> Record {
        if reserved <= state.mark {
            return Record::from_state(state);
        }
        let reservation = State { mark: reserved, payload_digest: [0; 32], signature: None, context: None };
        Record { signed: Some(Box::new(Record::from_state(state))), ..Record::from_state(&reservation) }
    }

    /// The highest mark the record holds: its reservation, or what was signed.
    fn mark(&self) -> Mark {
        Mark { level: self.level, round: self.round, step: self.step }
    }

    /// The record as a restart must see it: a reservation stands alone, since anything up to it
    /// may have been signed and released after the last flush.
    fn recovered(self) -> Record {
        Record { signed: None, ..self }
    }

    /// What was signed, without the reservation: only for a store nobody signs through any more.
    fn released(&self) -> Record {
        self.signed.as_deref().cloned().unwrap_or_else(|| self.clone())
    }

    /// What was signed last (in this process: a reservation's record keeps it beside).
    pub(crate) fn to_state(&self) -> Option<State> {
        if let Some(signed) = &self.signed {
            return signed.to_state();
        }
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
        Ok(FileRatchet { journal, reserve: false, _lock: lock, streams: Mutex::new(HashMap::new()) })
    }

    /// [`FileRatchet::open`] with the journal rewritten past `bytes`: for tests that crash the
    /// process in the middle of a compaction.
    #[doc(hidden)]
    pub fn open_compacting_at(dir: &Path, bytes: u64) -> Result<FileRatchet, RatchetError> {
        let ratchet = FileRatchet::open(dir)?;
        ratchet.journal.compact_at.store(bytes, std::sync::atomic::Ordering::Relaxed);
        Ok(ratchet)
    }

    /// Commits reserve the next step a request names ([`StreamLock::commit_reserving`]) when
    /// `reserve`; else they reserve nothing.
    pub fn reserving_next_steps(mut self, reserve: bool) -> FileRatchet {
        self.reserve = reserve;
        self
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
        let read = match std::fs::read(&path) {
            Ok(data) => {
                if data.get(..MAGIC.len()) != Some(&MAGIC[..]) {
                    return Err(unavailable(&path, "damaged (not a sigil marks journal); refusing to sign"));
                }
                let (records, next, end) = decode_records(&data);
                if let Some(torn) = data[end..].iter().rposition(|b| *b != 0) {
                    // A torn tail from a crash: none of it was released. Left out of the new journal.
                    tracing::warn!(path = %path.display(), bytes = torn + 1, "dropping a torn journal tail");
                }
                if records.iter().any(|(_, r)| r.signed.is_some()) {
                    tracing::warn!(path = %path.display(), "the signer did not stop cleanly: reserved steps are refused");
                }
                // The last record of each stream holds its highest mark; a reservation stands
                // alone, since anything up to it may have been signed after the last flush.
                Some((records.into_iter().map(|(key, record)| (key, record.recovered())).collect(), next))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(unavailable(&path, e)),
        };
        let (mut states, first): (BTreeMap<_, _>, u64) = read.unwrap_or_default();
        // Files of the previous layout (an upgrade, or a move into the journal cut short by a
        // crash): each stream keeps the higher mark, in the new journal, before they are removed.
        for (key, record) in migrate_slot_files(dir)? {
            if states.get(&key).is_none_or(|current| record.mark() > current.mark()) {
                states.insert(key, record);
            }
        }
        // What a restart trusts must be on disk, not only in the page cache (after a failed flush
        // or a volume that lost its cache, a record read here may never have reached the disk):
        // the journal is written anew, whole, every time it is opened.
        let (file, len, allocated) = write_journal(dir, &path, first, &states)?;
        remove_slot_files(dir)?;
        let next = first + states.len() as u64;
        let reserved_at = HashMap::new();
        let appends = Appends { file: Arc::new(file), len, allocated, next, states, reserved_at, failed: None };
        let (durable, durable_len) = (appends.next, appends.len);
        let (flushes, _) = watch::channel(Flushes { durable, durable_len, ..Flushes::default() });
        let flusher = Arc::new(Flusher::default());
        Ok(Journal {
            dir: dir.to_path_buf(),
            path,
            compact_at: compact_at.into(),
            appends: Mutex::new(appends),
            flushes,
            flusher,
            #[cfg(test)]
            hold_flushes: Mutex::new(()),
            #[cfg(test)]
            fail_flushes: false.into(),
        })
    }

    fn appends(&self) -> Result<std::sync::MutexGuard<'_, Appends>, RatchetError> {
        self.appends.lock().map_err(|_| RatchetError::Unavailable("ratchet journal lock poisoned".into()))
    }

    /// Appends `next` for `key`, reserving the marks up to `reserved` (see [`FileLock`]), and
    /// returns the sequence number to wait for before `next`'s signature may be released: that
    /// of the record that first held a mark at or above `next`'s when one is already written
    /// (its flush may be over: the request then waits for none), else this record's. Never
    /// lowers the stream's highest mark.
    fn append_reserving(&self, key: StreamKey, next: &State, reserved: Mark) -> Result<u64, RatchetError> {
        let mut appends = self.appends()?;
        let held = appends.states.get(&key);
        // Only a reservation covers: a signed state at this very mark (a repeat with no stored
        // signature) must wait for the record that stores the new signature.
        let reservation = held.filter(|r| r.signed.is_some()).map(Record::mark);
        let held = held.map(Record::mark);
        let highest = [Some(reserved), Some(next.mark), held].into_iter().flatten().max().expect("three marks");
        let sequence = self.append(&mut appends, key.clone(), Record::reserving(next, highest))?;
        let covering = match reservation {
            Some(reservation) if reservation >= next.mark => appends.reserved_at.get(&key).copied().unwrap_or(sequence),
            _ => sequence,
        };
        if held.is_none_or(|held| highest > held) {
            appends.reserved_at.insert(key, sequence);
        }
        if covering != sequence {
            // Released before its own record is durable: the flusher carries it (and the next
            // reservation) to disk meanwhile.
            self.flusher.request();
        }
        Ok(covering)
    }

    /// Appends `next` for `key` as it is, lower than the stream's mark or not (`ratchet set
    /// --force`); the sequence number to wait for.
    fn append_overwrite(&self, key: StreamKey, next: &State) -> Result<u64, RatchetError> {
        let mut appends = self.appends()?;
        let sequence = self.append(&mut appends, key.clone(), Record::from_state(next))?;
        appends.reserved_at.insert(key, sequence);
        Ok(sequence)
    }

    /// Appends `record` for `key`; its sequence number.
    fn append(&self, appends: &mut Appends, key: StreamKey, record: Record) -> Result<u64, RatchetError> {
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
            blocking(|| self.compact(appends))?;
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
        let (durable, durable_len) = (appends.next, appends.len);
        self.flushes.send_modify(|f| (f.durable, f.durable_len) = (durable, durable_len));
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
                if let Some(failed) = &flushes.failed {
                    return Err(unavailable(&self.path, failed));
                }
                if flushes.durable > sequence {
                    return Ok(());
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
            let Ok((file, covered, len)) = journal.appends().map(|a| (a.file.clone(), a.next, a.len)) else { return };
            if journal.flushes.borrow().durable >= covered {
                continue;
            }
            #[cfg(test)]
            let _held = journal.hold_flushes.lock();
            let flushed = file.sync_data();
            #[cfg(test)]
            let flushed = match journal.fail_flushes.load(std::sync::atomic::Ordering::SeqCst) {
                true => Err(std::io::Error::other("injected")),
                false => flushed,
            };
            journal.flushes.send_modify(|f| {
                f.count += 1;
                match &flushed {
                    // After a failed flush the lost pages are marked clean: a later flush that
                    // succeeds proves nothing about them.
                    Ok(()) if f.failed.is_none() && covered > f.durable => (f.durable, f.durable_len) = (covered, len),
                    Ok(()) => {}
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
    /// Stops the flusher. A clean stop gives back what was reserved: nobody can sign through this
    /// store any more, so nothing above what each stream signed was released, and the journal is
    /// rewritten with what was signed (the next start refuses no reserved mark). When that fails,
    /// the reservations stay, which only refuses more.
    fn drop(&mut self) {
        self.journal.flusher.close();
        let Ok(mut appends) = self.journal.appends() else { return };
        let reserved = appends.states.values().any(|r| r.signed.is_some());
        if appends.failed.is_none() && reserved {
            let signed: BTreeMap<_, _> = appends.states.iter().map(|(k, r)| (k.clone(), r.released())).collect();
            let first = appends.next;
            if let Err(error) = write_journal(&self.journal.dir, &self.journal.path, first, &signed) {
                tracing::warn!(%error, "cannot give back the reserved marks; the next start refuses them");
            }
        }
        // Whatever still holds the journal (a commit waiting for a flush that will not come) fails.
        appends.failed.get_or_insert_with(|| "the store was closed".into());
        drop(appends);
        self.journal.flushes.send_modify(|f| {
            f.failed.get_or_insert_with(|| "the store was closed".into());
        });
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
        let (journal, stream, reserve) = (self.journal.clone(), stream.clone(), self.reserve);
        Ok(Box::new(FileLock { journal, stream, reserve, pending: None, guard: Some(guard), current }))
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

/// One stream, locked. A commit with a reservation ([`StreamLock::commit_reserving`]) writes,
/// beside the state it signs, a reservation of the marks up to the one the protocol will most
/// likely ask for next. A later request at or below a reservation already durable is released
/// without waiting for its own record's flush, which follows in the background. A restart after a
/// crash reads the reservation alone (see [`Record::recovered`]): everything up to it is refused,
/// since it may have been signed after the last flush. So every released signature is covered by
/// a durable record, as without reservations; what a crash costs is the reserved marks, never a
/// second signature.
struct FileLock {
    journal: Arc<Journal>,
    stream: StreamId,
    reserve: bool,
    /// The record a commit waits for. If its caller goes away first (a client hung up, a
    /// timeout), the stream stays locked until that record is durable: the next request on the
    /// stream never answers from a state that is not on disk.
    pending: Option<u64>,
    guard: Option<OwnedMutexGuard<()>>,
    current: Option<State>,
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let (Some(sequence), Some(guard)) = (self.pending.take(), self.guard.take()) else { return };
        let journal = self.journal.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(async move {
                // A failed flush stops the store: the next lock is refused either way.
                let _ = journal.wait_durable(sequence).await;
                drop(guard);
            })),
            // Nobody could wait for the flush: the stream stays locked rather than open early.
            Err(_) => std::mem::forget(guard),
        }
    }
}

#[async_trait]
impl StreamLock for FileLock {
    fn current(&self) -> Option<&State> {
        self.current.as_ref()
    }

    async fn commit(&mut self, next: State) -> Result<State, RatchetError> {
        let mark = next.mark;
        self.commit_reserving(next, mark).await
    }

    async fn commit_reserving(&mut self, next: State, reserved: Mark) -> Result<State, RatchetError> {
        if let Some(stored) = commit_decision(&self.stream, self.current.as_ref(), &next)? {
            return Ok(stored);
        }
        let reserved = if self.reserve { reserved } else { next.mark };
        let covering = self.journal.append_reserving(self.key(), &next, reserved)?;
        self.pending = Some(covering);
        self.journal.wait_durable(covering).await?;
        self.pending = None;
        self.current = Some(next.clone());
        Ok(next)
    }

    async fn overwrite(&mut self, next: State) -> Result<(), RatchetError> {
        let sequence = self.journal.append_overwrite(self.key(), &next)?;
        self.pending = Some(sequence);
        self.journal.wait_durable(sequence).await?;
        self.pending = None;
        self.current = Some(next);
        Ok(())
    }
}

impl FileLock {
    fn key(&self) -> StreamKey {
        (self.stream.key.clone(), self.stream.chain.clone(), self.stream.stream.to_string())
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

    fn reserving(dir: &Path) -> FileRatchet {
        FileRatchet::open(dir).unwrap().reserving_next_steps(true)
    }

    /// The journal as a power cut would leave it: what the last completed flush covered.
    fn durable_journal(ratchet: &FileRatchet) -> Vec<u8> {
        let len = ratchet.journal.flushes.borrow().durable_len as usize;
        std::fs::read(&ratchet.journal.path).unwrap()[..len].to_vec()
    }

    fn at(level: u64, round: u64, step: u8, digest: u8) -> State {
        State {
            mark: Mark { level, round, step },
            payload_digest: [digest; 32],
            signature: Some(Signature::new(Algorithm::Ed25519, [digest; 64])),
            context: None,
        }
    }

    /// A request at a mark an earlier, durable record reserved is released while the flusher is
    /// held: it waits for no flush. One above the reservation waits for its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    // Held across awaits on purpose: the flusher thread waits on it, no task does.
    #[allow(clippy::await_holding_lock)]
    async fn a_reserved_mark_is_released_without_a_flush_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let ratchet = Arc::new(reserving(dir.path()));
        let prevote = at(10, 0, 2, 1);
        let precommit = Mark { step: 3, ..prevote.mark };
        ratchet.lock(&stream()).await.unwrap().commit_reserving(prevote, precommit).await.unwrap();
        let flushes = ratchet.flushes();
        let held = ratchet.journal.hold_flushes.lock().unwrap();
        let mut lock = ratchet.lock(&stream()).await.unwrap();
        let next_height = Mark { level: 11, round: 0, step: 2 };
        lock.commit_reserving(at(10, 0, 3, 2), next_height).await.unwrap();
        assert_eq!(ratchet.flushes(), flushes, "released with the flusher held");
        drop(lock);
        let above = commit_in_background(&ratchet, at(12, 0, 2, 3), Mark { level: 12, round: 0, step: 3 });
        assert!(!finishes_soon(&above).await, "a mark above the reservation waits for its flush");
        drop(held);
        above.await.unwrap();
        assert!(ratchet.flushes() > flushes);
    }

    fn commit_in_background(ratchet: &Arc<FileRatchet>, next: State, reserved: Mark) -> tokio::task::JoinHandle<()> {
        let ratchet = ratchet.clone();
        tokio::spawn(async move {
            ratchet.lock(&stream()).await.unwrap().commit_reserving(next, reserved).await.unwrap();
        })
    }

    /// Whether `task` ends within 100 ms (asked of a task that must not end while a flush is held).
    async fn finishes_soon(task: &tokio::task::JoinHandle<()>) -> bool {
        let finished = async {
            while !task.is_finished() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_millis(100), finished).await.is_ok()
    }

    /// A mark stored without its signature (imported from another signer) reserves nothing:
    /// signing its very request waits for the record that stores the signature, so a restart
    /// answers a repeat with that signature and never makes a second one (an ECDSA signature with
    /// a random nonce would differ, and a block with another signature is another block).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    // Held across awaits on purpose: the flusher thread waits on it, no task does.
    #[allow(clippy::await_holding_lock)]
    async fn a_mark_without_its_signature_covers_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ratchet = Arc::new(reserving(dir.path()));
        let imported = State { signature: None, ..at(10, 0, 2, 1) };
        ratchet.lock(&stream()).await.unwrap().commit(imported).await.unwrap();
        let held = ratchet.journal.hold_flushes.lock().unwrap();
        let repeat = commit_in_background(&ratchet, at(10, 0, 2, 1), Mark { level: 10, round: 0, step: 3 });
        assert!(!finishes_soon(&repeat).await, "the repeat waits for its own flush");
        drop(held);
        repeat.await.unwrap();
    }

    /// After a crash the reservation stands alone: the reserved marks and everything below them
    /// are refused, whatever the payload; above them, signing goes on. A clean stop gives the
    /// reservation back. Without reservations the last signed state stays, for its repeats.
    #[tokio::test]
    async fn a_crash_refuses_every_reserved_mark_and_a_clean_stop_none() {
        let (dir, crashed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let reserved = Mark { level: 11, round: 0, step: 2 };
        let other = StreamId { stream: "other", ..stream() };
        {
            let ratchet = reserving(dir.path());
            let mut lock = ratchet.lock(&stream()).await.unwrap();
            lock.commit_reserving(at(10, 0, 3, 1), reserved).await.unwrap();
            assert_eq!(lock.current(), Some(&at(10, 0, 3, 1)), "in this process, what was signed");
            drop(lock);
            ratchet.lock(&other).await.unwrap().commit(at(10, 0, 3, 1)).await.unwrap();
            // A crash here (kill -9, a power cut): the journal as written.
            std::fs::copy(dir.path().join(JOURNAL), crashed.path().join(JOURNAL)).unwrap();
        }
        let ratchet = FileRatchet::open(crashed.path()).unwrap();
        let current = ratchet.lock(&stream()).await.unwrap().current().cloned();
        assert_eq!(current.as_ref().map(|s| s.mark), Some(reserved));
        for refused in [at(10, 0, 3, 1), at(10, 1, 2, 5), at(11, 0, 1, 6), at(11, 0, 2, 7)] {
            let refusal = super::super::check(&stream(), current.as_ref(), &refused);
            assert!(refusal.is_err(), "{:?} must be refused", refused.mark);
        }
        let above = super::super::check(&stream(), current.as_ref(), &at(11, 0, 3, 8));
        assert_eq!(above, Ok(super::super::Verdict::Advance));
        let plain = ratchet.lock(&other).await.unwrap().current().cloned();
        assert_eq!(plain, Some(at(10, 0, 3, 1)), "no reservation: the signed state, for its repeats");

        let stopped = FileRatchet::open(dir.path()).unwrap();
        let current = stopped.lock(&stream()).await.unwrap().current().cloned();
        assert_eq!(current, Some(at(10, 0, 3, 1)), "after a clean stop, what was signed");
        let reserved_step = super::super::check(&stream(), current.as_ref(), &at(11, 0, 2, 7));
        assert_eq!(reserved_step, Ok(super::super::Verdict::Advance));
    }

    /// After a failed flush nothing counts as durable again, even when a later flush succeeds
    /// (the kernel marks the lost pages clean): the commit fails, and so does every one after.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_failed_flush_nothing_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let ratchet = FileRatchet::open(dir.path()).unwrap();
        commit(&ratchet, 1).await;
        let durable = ratchet.journal.flushes.borrow().durable;
        ratchet.journal.fail_flushes.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(ratchet.lock(&stream()).await.unwrap().commit(state(2)).await.is_err());
        ratchet.journal.fail_flushes.store(false, std::sync::atomic::Ordering::SeqCst);
        let flushes = ratchet.flushes();
        ratchet.journal.flusher.request();
        let flushed = async {
            while ratchet.flushes() == flushes {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), flushed).await.unwrap();
        assert_eq!(ratchet.journal.flushes.borrow().durable, durable, "a later flush proves nothing");
        assert!(ratchet.lock(&stream()).await.is_err(), "the store refuses until restarted");
    }

    /// A restart after a crash writes the reservation down as a refusal for good: stopping
    /// cleanly later, having signed nothing, gives nothing back.
    #[tokio::test]
    async fn a_reservation_left_by_a_crash_stays_refused() {
        let (dir, crashed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let reserved = Mark { level: 11, round: 0, step: 2 };
        {
            let ratchet = reserving(dir.path());
            ratchet.lock(&stream()).await.unwrap().commit_reserving(at(10, 0, 3, 1), reserved).await.unwrap();
            std::fs::copy(dir.path().join(JOURNAL), crashed.path().join(JOURNAL)).unwrap();
        }
        for start in ["after the crash", "after a clean stop"] {
            let ratchet = reserving(crashed.path());
            let current = ratchet.lock(&stream()).await.unwrap().current().cloned();
            assert_eq!(current.map(|s| (s.mark, s.payload_digest)), Some((reserved, [0; 32])), "{start}");
        }
    }

    /// A commit whose caller went away before its flush (a client hung up) keeps the stream
    /// locked until its record is durable: an identical request then cannot be answered from a
    /// state that is not on disk.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    // Held across awaits on purpose: the flusher thread waits on it, no task does.
    #[allow(clippy::await_holding_lock)]
    async fn a_cancelled_commit_keeps_its_stream_until_durable() {
        let dir = tempfile::tempdir().unwrap();
        let ratchet = Arc::new(FileRatchet::open(dir.path()).unwrap());
        let held = ratchet.journal.hold_flushes.lock().unwrap();
        let cancelled = commit_in_background(&ratchet, at(10, 0, 2, 1), Mark { level: 10, round: 0, step: 2 });
        // Wait until its record is written (the commit then waits for the held flush), then cancel.
        let written = async {
            while ratchet.journal.appends().unwrap().states.is_empty() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), written).await.unwrap();
        cancelled.abort();
        let _ = cancelled.await;
        let next = {
            let ratchet = ratchet.clone();
            tokio::spawn(async move {
                drop(ratchet.lock(&stream()).await.unwrap());
            })
        };
        assert!(!finishes_soon(&next).await, "the stream stays locked while the record is not durable");
        drop(held);
        next.await.unwrap();
    }

    /// Power cuts at random moments of a CometBFT-like stream of requests (some reserving the next
    /// step, some not, on two streams at once): the journal as the last completed flush left it
    /// refuses everything that could contradict a signature already released.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_power_cut_never_forgets_a_released_signature() {
        // xorshift64: the same cuts every run.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut random = move |below: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % below
        };
        let dir = tempfile::tempdir().unwrap();
        let ratchet = Arc::new(reserving(dir.path()));
        let streams = [stream(), StreamId { stream: "other", ..stream() }];
        let mut released: Vec<(usize, State)> = Vec::new();
        let mut marks = [Mark { level: 1, round: 0, step: 1 }; 2];
        for round in 0..400 {
            let which = random(2) as usize;
            let mark = marks[which];
            // The next step, now and then a new round or a skipped step.
            let next = match random(10) {
                0 => Mark { round: mark.round + 1, step: 2, ..mark },
                1 => Mark { level: mark.level + 1, round: 0, step: 1 },
                _ if mark.step < 3 => Mark { step: mark.step + 1, ..mark },
                _ => Mark { level: mark.level + 1, round: 0, step: 1 },
            };
            marks[which] = next;
            let state = at(next.level, next.round, next.step, random(256) as u8);
            let mut lock = ratchet.lock(&streams[which]).await.unwrap();
            let stored = if random(5) > 0 {
                let reserve = match next.step {
                    1 | 2 => Mark { step: next.step + 1, ..next },
                    _ => Mark { level: next.level + 1, round: 0, step: 2 },
                };
                lock.commit_reserving(state.clone(), reserve).await.unwrap()
            } else {
                lock.commit(state.clone()).await.unwrap()
            };
            drop(lock);
            released.push((which, stored));
            if round % 7 == 0 {
                let cut = tempfile::tempdir().unwrap();
                std::fs::write(cut.path().join(JOURNAL), durable_journal(&ratchet)).unwrap();
                let recovered = FileRatchet::open(cut.path()).unwrap();
                for (which, signed) in &released {
                    let lock = recovered.lock(&streams[*which]).await.unwrap();
                    let current = lock.current().expect("a released signature's stream has a mark");
                    let conflicting = State { payload_digest: [!signed.payload_digest[0]; 32], ..signed.clone() };
                    assert!(current.mark >= signed.mark, "round {round}: {:?} forgot {:?}", current.mark, signed.mark);
                    assert!(super::super::check(&streams[*which], Some(current), &conflicting).is_err());
                }
            }
        }
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
        assert!(end_of_records(&data) < end - 40, "the torn record is gone");
        {
            let ratchet = FileRatchet::open(dir.path()).unwrap();
            commit(&ratchet, 6).await;
            commit(&ratchet, 7).await;
        }

        // A flipped byte in the last record: its checksum fails, the one before holds.
        let mut data = std::fs::read(&path).unwrap();
        let last = end_of_records(&data) - 3;
        data[last] ^= 0xff;
        std::fs::write(&path, &data).unwrap();
        assert_eq!(current(dir.path()).await, Some(state(6)));

        std::fs::write(&path, b"not a journal").unwrap();
        let error = FileRatchet::open(dir.path()).err().unwrap();
        assert!(error.to_string().contains("damaged"), "{error}");
    }

    /// Commits on many streams at once share flushes, and each is durable when it returns.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_commits_share_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let ratchet = Arc::new(reserving(dir.path()));
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
        let mut names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, [".lock", JOURNAL]);
        let ratchet = FileRatchet::open(dir.path()).unwrap();
        assert_eq!(ratchet.lock(&odd).await.unwrap().current(), Some(&state(1)));
    }
}

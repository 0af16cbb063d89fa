//! The audit trail: one record per signature and per refusal, for every protocol, so that an
//! operator can answer "what did we sign at height H, and when?" from the logs alone.
//!
//! Every record is a log event of target `sigil_signer::audit` (info for signatures, warn for
//! refusals: both shown at the default level, as JSON with `--log-format json`). With `audit.file`
//! the same records are also appended to a file as JSON lines, rotated by size, for hosts with no
//! log collector. A record is written after the signature is durable and before it is returned,
//! so a record names a signature the client may have received; a crash between the two loses the
//! record, never the high-water mark.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};

use crate::keys::Signature;
use crate::metrics::Metrics;

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A new signature.
    Signed,
    /// The same request again, answered with the signature already given for it.
    Repeated,
    /// Refused: `reason` names the rule.
    Refused,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Signed => "signed",
            Outcome::Repeated => "repeated",
            Outcome::Refused => "refused",
        }
    }
}

/// One audit record. Empty fields are left out.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Record<'a> {
    pub outcome: Outcome,
    pub protocol: &'static str,
    /// The configured key name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<&'a str>,
    /// How the chain names the key: a `tz…` hash, a CometBFT validator address, an Atto address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_hash: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// The height (CometBFT) or level (Tezos). Named `height` in both, as `level` is the log
    /// record's severity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub round: Option<u64>,
    /// From the request reaching the sign path to its answer.
    #[serde(rename = "latencyMicros", serialize_with = "micros")]
    pub latency: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<&'static str>,
    /// Who asked: the HTTP client's address, or the CometBFT node's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<&'a str>,
    /// The rule that refused (the reason label of `sigil_signer_refusals_total`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// The refusal as the client read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The signature, hex.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "signature_hex")]
    pub signature: Option<Signature>,
}

impl<'a> Record<'a> {
    /// A refusal by a protocol front, before the sign path saw the request.
    pub fn refused(protocol: &'static str, reason: &'static str, error: String) -> Self {
        Record {
            outcome: Outcome::Refused,
            protocol,
            key: None,
            key_hash: None,
            chain: None,
            kind: None,
            height: None,
            round: None,
            latency: Duration::ZERO,
            backend: None,
            client: None,
            reason: Some(reason),
            error: Some(error),
            signature: None,
        }
    }
}

fn micros<S: serde::Serializer>(latency: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX))
}

fn signature_hex<S: serde::Serializer>(signature: &Option<Signature>, serializer: S) -> Result<S::Ok, S::Error> {
    match signature {
        Some(signature) => serializer.serialize_str(&hex::encode(signature.as_bytes())),
        None => serializer.serialize_none(),
    }
}

/// `audit` in the config: the optional file. (The log records need no setting.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditConfig {
    /// Append every record to this file as a JSON line (created mode 600).
    pub file: PathBuf,
    /// Rotate when the file reaches this size: it becomes `FILE.1`, `FILE.1` becomes `FILE.2`…
    /// Default 100 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// How many rotated files to keep besides the current one. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<u32>,
}

pub const DEFAULT_MAX_BYTES: u64 = 100 * 1024 * 1024;
pub const DEFAULT_KEEP: u32 = 10;

/// At most this many refusal records a second (in bursts of [`REFUSAL_BURST`]): a client that
/// sends nothing but bad requests cannot flood the log or rotate the signatures out of the file.
/// Signatures are never dropped.
pub const REFUSALS_PER_SECOND: f64 = 10.0;
pub const REFUSAL_BURST: f64 = 100.0;
/// Text a client chose (a chain id in an error) is cut to this many bytes.
const MAX_TEXT: usize = 256;
/// Records waiting for the file writer; past it a record is dropped and counted.
const FILE_QUEUE: usize = 16 * 1024;
/// The most rotated files `keep` may ask for.
pub const MAX_KEEP: u32 = 1000;

/// Where records go: the log always, and the file when configured.
pub struct Audit {
    file: Option<FileWriter>,
    /// Refusal tokens left and when they were counted.
    refusals: Mutex<(f64, Instant)>,
}

impl Default for Audit {
    fn default() -> Self {
        Audit { file: None, refusals: Mutex::new((REFUSAL_BURST, Instant::now())) }
    }
}

impl Audit {
    /// The log and `config.file`, opened now so that a path the signer cannot write fails startup.
    pub fn open(config: &AuditConfig, metrics: &Metrics) -> std::io::Result<Audit> {
        let max_bytes = config.max_bytes.unwrap_or(DEFAULT_MAX_BYTES).max(1);
        let keep = config.keep.unwrap_or(DEFAULT_KEEP).min(MAX_KEEP);
        let file = AuditFile::open(&config.file, max_bytes, keep)?;
        Ok(Audit { file: Some(FileWriter::start(file, metrics.audit_write_errors.clone())?), ..Audit::default() })
    }

    pub fn record(&self, record: &Record<'_>, metrics: &Metrics) {
        if record.outcome == Outcome::Refused && !self.take_refusal_token() {
            metrics.audit_records_dropped.inc();
            return;
        }
        let error = record.error.as_deref().map(truncated);
        let signature = record.signature.map(|s| hex::encode(s.as_bytes()));
        macro_rules! event {
            ($level:expr) => {
                tracing::event!(
                    target: "sigil_signer::audit",
                    $level,
                    outcome = record.outcome.as_str(),
                    protocol = record.protocol,
                    key = record.key,
                    key_hash = record.key_hash,
                    chain = record.chain,
                    kind = record.kind,
                    height = record.height,
                    round = record.round,
                    latency_us = u64::try_from(record.latency.as_micros()).unwrap_or(u64::MAX),
                    backend = record.backend,
                    client = record.client,
                    reason = record.reason,
                    error = error,
                    signature = signature.as_deref(),
                    "{}",
                    record.outcome.as_str()
                )
            };
        }
        match record.outcome {
            Outcome::Refused => event!(tracing::Level::WARN),
            Outcome::Signed | Outcome::Repeated => event!(tracing::Level::INFO),
        }
        if let Some(file) = &self.file {
            let time = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            let record = Record { error: error.map(str::to_string), ..record.clone() };
            let Ok(mut line) = serde_json::to_vec(&FileLine { time, record: &record }) else { return };
            line.push(b'\n');
            // The sign path never waits for the disk: a full queue drops the record, counted.
            if file.lines.as_ref().is_none_or(|lines| lines.try_send(line).is_err()) {
                metrics.audit_records_dropped.inc();
            }
        }
    }

    fn take_refusal_token(&self) -> bool {
        let mut bucket = self.refusals.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(bucket.1).as_secs_f64() * REFUSALS_PER_SECOND;
        *bucket = ((bucket.0 + refill).min(REFUSAL_BURST), now);
        let allowed = bucket.0 >= 1.0;
        if allowed {
            bucket.0 -= 1.0;
        }
        allowed
    }
}

/// At most [`MAX_TEXT`] bytes, cut on a character boundary.
fn truncated(text: &str) -> &str {
    let mut end = text.len().min(MAX_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The file's own thread: records are written in the order they were made, off the sign path.
struct FileWriter {
    /// `None` once dropped, which ends the thread.
    lines: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FileWriter {
    fn start(mut file: AuditFile, errors: Counter) -> std::io::Result<FileWriter> {
        let (lines, queue) = std::sync::mpsc::sync_channel::<Vec<u8>>(FILE_QUEUE);
        let thread = std::thread::Builder::new().name("audit-file".into()).spawn(move || {
            for line in queue {
                if let Err(error) = file.append(&line) {
                    errors.inc();
                    tracing::warn!(path = %file.path.display(), %error, "could not write the audit file");
                }
            }
        })?;
        Ok(FileWriter { lines: Some(lines), thread: Some(thread) })
    }
}

impl Drop for FileWriter {
    /// Writes what is queued before the process goes.
    fn drop(&mut self) {
        self.lines.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An append-only JSON-lines file, rotated by size.
struct AuditFile {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: File,
    /// Bytes written since the file was opened or last rotated.
    size: u64,
}

#[derive(Serialize)]
struct FileLine<'a> {
    time: String,
    #[serde(flatten)]
    record: &'a Record<'a>,
}

impl AuditFile {
    fn open(path: &Path, max_bytes: u64, keep: u32) -> std::io::Result<AuditFile> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(AuditFile { path: path.to_path_buf(), max_bytes, keep, file, size })
    }

    /// Writes the line, rotating first when it would take the file past `max_bytes`. A rotation
    /// that fails (a full or read-only directory) is reported, and the line still written to the
    /// current file; the next try is another `max_bytes` later.
    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        let mut rotated = Ok(());
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.size = 0;
            rotated = self.rotate().and_then(|()| open_append(&self.path)).map(|file| self.file = file);
        }
        // One write per record, so a reader never sees half a line.
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        rotated
    }

    /// `FILE.keep` is dropped, `FILE.n` becomes `FILE.n+1`, `FILE` becomes `FILE.1`.
    fn rotate(&self) -> std::io::Result<()> {
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.keep == 0 {
            return std::fs::remove_file(&self.path);
        }
        for n in (1..self.keep).rev() {
            match std::fs::rename(numbered(n), numbered(n + 1)) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
        }
        std::fs::rename(&self.path, numbered(1))
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Algorithm;

    fn signed(level: u64) -> Record<'static> {
        Record {
            outcome: Outcome::Signed,
            key: Some("validator"),
            kind: Some("cometbft_precommit"),
            height: Some(level),
            round: Some(0),
            latency: Duration::from_micros(250),
            reason: None,
            error: None,
            signature: Some(Signature::new(Algorithm::Ed25519, [7; 64])),
            ..Record::refused("cometbft", "", String::new())
        }
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn records_are_json_lines_without_empty_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let metrics = Metrics::default();
        let audit = Audit::open(&AuditConfig { file: path.clone(), max_bytes: None, keep: None }, &metrics).unwrap();
        audit.record(&signed(7), &metrics);
        audit.record(&Record::refused("tezos", "bad_request", "cannot sign: empty".into()), &metrics);
        drop(audit);
        let lines = lines(&path);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["outcome"], "signed");
        assert_eq!(lines[0]["height"], 7);
        assert_eq!(lines[0]["latencyMicros"], 250);
        assert_eq!(lines[0]["signature"], hex::encode([7; 64]));
        assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'), "{}", lines[0]);
        assert!(lines[0].get("reason").is_none() && lines[0].get("chain").is_none(), "{}", lines[0]);
        assert_eq!(lines[1]["reason"], "bad_request");
        assert!(lines[1].get("signature").is_none());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    /// The file never grows past `maxBytes` by more than one record, and only `keep` old files stay.
    #[test]
    fn the_file_rotates_by_size_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let config = AuditConfig { file: path.clone(), max_bytes: Some(1000), keep: Some(2) };
        let metrics = Metrics::default();
        let audit = Audit::open(&config, &metrics).unwrap();
        for level in 1..=40 {
            audit.record(&signed(level), &metrics);
        }
        drop(audit);
        let current = lines(&path);
        let first = lines(&dir.path().join("audit.jsonl.1"));
        let second = lines(&dir.path().join("audit.jsonl.2"));
        assert!(!dir.path().join("audit.jsonl.3").exists());
        assert!(std::fs::metadata(&path).unwrap().len() <= 1000);
        // Newest last, nothing lost across the files kept.
        let levels: Vec<u64> =
            [second, first, current].concat().iter().map(|l| l["height"].as_u64().unwrap()).collect();
        assert_eq!(*levels.last().unwrap(), 40);
        assert!(levels.windows(2).all(|w| w[1] == w[0] + 1), "{levels:?}");
        assert_eq!(metrics.audit_write_errors.get(), 0);
    }

    /// A client sending nothing but bad requests gets a bounded number of records, its text cut
    /// short; signatures are never dropped.
    #[test]
    fn refusals_are_bounded_and_signatures_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let metrics = Metrics::default();
        let audit = Audit::open(&AuditConfig { file: path.clone(), max_bytes: None, keep: None }, &metrics).unwrap();
        let chain = "c".repeat(1 << 20);
        for _ in 0..1000 {
            audit.record(&Record::refused("cometbft", "bad_request", format!("chain {chain} is not ours")), &metrics);
            audit.record(&signed(1), &metrics);
        }
        drop(audit);
        let lines = lines(&path);
        let refused = lines.iter().filter(|l| l["outcome"] == "refused").count();
        assert_eq!(lines.len() - refused, 1000, "every signature");
        // The burst, and what refilled while the loop ran (well under a second).
        assert!((100..120).contains(&refused), "{refused} refusals recorded");
        assert_eq!(metrics.audit_records_dropped.get(), 1000 - refused as u64);
        assert!(lines.iter().all(|l| l["error"].as_str().is_none_or(|e| e.len() <= MAX_TEXT)));
        assert!(std::fs::metadata(&path).unwrap().len() < 1000 * 1024);
    }
}

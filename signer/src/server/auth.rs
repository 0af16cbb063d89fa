//! Bearer-token authentication for the API listeners.
//!
//! Tokens come from an environment variable (fixed) or from a token file, re-read when it changes,
//! with `token.previous` beside it accepted too: during a rotation both the old and the new token
//! work. Comparison is constant-time over SHA-256 digests, so neither content nor length leaks.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use http::HeaderValue;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Tokens shorter than this are accepted, but warned about.
const SHORT_TOKEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("environment variable {0} is not set or empty")]
    MissingEnv(String),
    #[error("cannot read token file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("token file {0} is empty")]
    Empty(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A fixed token from this environment variable.
    Env(String),
    /// A token file (re-read on change) and its `<file>.previous` sibling.
    File(PathBuf),
}

type TokenDigest = [u8; 32];

pub struct TokenAuth {
    source: TokenSource,
    accepted: RwLock<Vec<TokenDigest>>,
    /// The token files' stamps when last read: a miss re-reads them only if they changed.
    last_stamps: Mutex<Vec<Option<FileStamp>>>,
}

fn digest(token: &[u8]) -> TokenDigest {
    Sha256::digest(token).into()
}

fn previous_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".previous");
    path.with_file_name(name)
}

impl TokenAuth {
    /// Reads the token(s) now; a missing or empty token is a startup error. Returns a warning
    /// when the token is short.
    pub fn load(source: TokenSource) -> Result<(Self, Option<String>), TokenError> {
        let (accepted, shortest) = read_tokens(&source)?;
        let warning = (shortest < SHORT_TOKEN).then(|| {
            format!("the API token is only {shortest} characters long; use at least {SHORT_TOKEN} random characters")
        });
        let last_stamps = Mutex::new(stamps(&source));
        let auth = TokenAuth { source, accepted: RwLock::new(accepted), last_stamps };
        Ok((auth, warning))
    }

    pub fn source(&self) -> &TokenSource {
        &self.source
    }

    /// Whether the `Authorization` header carries an accepted token, raw (as the Atto node sends
    /// it) or as `Bearer <token>`.
    pub fn check(&self, header: Option<&HeaderValue>) -> bool {
        let Some(header) = header else { return false };
        if self.matches(header.as_bytes()) {
            return true;
        }
        // The files may have changed since the last poll: look once more before refusing.
        if matches!(self.source, TokenSource::File(_)) && self.reload_if_changed() {
            return self.matches(header.as_bytes());
        }
        false
    }

    fn matches(&self, presented: &[u8]) -> bool {
        let raw = digest(presented);
        let bearer = presented.strip_prefix(b"Bearer ").map(digest).unwrap_or([0; 32]);
        let accepted = self.accepted.read().unwrap_or_else(|e| e.into_inner());
        let mut ok = subtle::Choice::from(0);
        for token in accepted.iter() {
            ok |= token.ct_eq(&raw) | token.ct_eq(&bearer);
        }
        ok.into()
    }

    /// Re-reads the token files if they changed since they were last read (a stat each, so a
    /// stream of bad tokens costs no file reads, and a fresh token is never refused).
    fn reload_if_changed(&self) -> bool {
        let now = stamps(&self.source);
        {
            let mut last = self.last_stamps.lock().unwrap_or_else(|e| e.into_inner());
            if *last == now {
                return false;
            }
            *last = now;
        }
        self.reload()
    }

    /// Re-reads the token files. Keeps the current tokens when they cannot be read (a rotation in
    /// progress must not lock the node out). Returns whether the accepted set changed.
    pub fn reload(&self) -> bool {
        match read_tokens(&self.source) {
            Ok((fresh, _)) => {
                let mut accepted = self.accepted.write().unwrap_or_else(|e| e.into_inner());
                if *accepted != fresh {
                    tracing::info!(tokens = fresh.len(), "API token files changed; accepting the new set");
                    *accepted = fresh;
                    return true;
                }
                false
            }
            Err(error) => {
                tracing::warn!(%error, "cannot re-read the API token; keeping the tokens already loaded");
                false
            }
        }
    }

    /// Polls the token files every `interval` until the process ends (token-file sources only).
    pub fn spawn_watcher(self: &std::sync::Arc<Self>, interval: Duration) {
        if !matches!(self.source, TokenSource::File(_)) {
            return;
        }
        let auth = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(auth) = auth.upgrade() else { return };
                auth.reload();
            }
        });
    }
}

/// What identifies a version of a file: a rewrite or an atomic swap (as the kubelet does for
/// Secret volumes) changes at least one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<std::time::SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        #[cfg(unix)]
        inode: std::os::unix::fs::MetadataExt::ino(&meta),
    })
}

fn stamps(source: &TokenSource) -> Vec<Option<FileStamp>> {
    match source {
        TokenSource::Env(_) => Vec::new(),
        TokenSource::File(path) => vec![stamp(path), stamp(&previous_path(path))],
    }
}

/// The accepted digests and the length of the shortest token.
fn read_tokens(source: &TokenSource) -> Result<(Vec<TokenDigest>, usize), TokenError> {
    match source {
        TokenSource::Env(name) => {
            let value = std::env::var(name).ok().filter(|v| !v.is_empty());
            let value = Zeroizing::new(value.ok_or_else(|| TokenError::MissingEnv(name.clone()))?);
            Ok((vec![digest(value.as_bytes())], value.len()))
        }
        TokenSource::File(path) => {
            let current = read_token_file(path)?.ok_or_else(|| TokenError::Empty(path.clone()))?;
            let mut tokens = vec![digest(current.as_bytes())];
            let previous = match read_token_file(&previous_path(path)) {
                Ok(previous) => previous,
                Err(TokenError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => None,
                Err(error) => return Err(error),
            };
            if let Some(previous) = previous {
                tokens.push(digest(previous.as_bytes()));
            }
            Ok((tokens, current.len()))
        }
    }
}

/// The file's token with surrounding whitespace removed (Secrets made from files often end in a
/// newline); `None` when it is empty.
fn read_token_file(path: &Path) -> Result<Option<Zeroizing<String>>, TokenError> {
    let text = crate::files::read_bounded(path, crate::files::SECRET_FILE_LIMIT)
        .map_err(|source| TokenError::Read { path: path.to_path_buf(), source })?;
    let trimmed = text.trim();
    Ok((!trimmed.is_empty()).then(|| Zeroizing::new(trimmed.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(value: &str) -> HeaderValue {
        HeaderValue::from_str(value).unwrap()
    }

    #[test]
    fn env_token_raw_or_bearer() {
        std::env::set_var("SIGIL_TEST_TOKEN_A", "a-long-enough-token-for-the-test-0001");
        let (auth, warning) = TokenAuth::load(TokenSource::Env("SIGIL_TEST_TOKEN_A".into())).unwrap();
        assert!(warning.is_none());
        assert!(auth.check(Some(&header("a-long-enough-token-for-the-test-0001"))));
        assert!(auth.check(Some(&header("Bearer a-long-enough-token-for-the-test-0001"))));
        assert!(!auth.check(Some(&header("a-long-enough-token-for-the-test-0002"))));
        assert!(!auth.check(Some(&header("Bearer "))));
        assert!(!auth.check(Some(&header(""))));
        assert!(!auth.check(None));
        assert!(matches!(
            TokenAuth::load(TokenSource::Env("SIGIL_TEST_TOKEN_UNSET".into())),
            Err(TokenError::MissingEnv(_))
        ));
        std::env::set_var("SIGIL_TEST_TOKEN_SHORT", "short");
        assert!(TokenAuth::load(TokenSource::Env("SIGIL_TEST_TOKEN_SHORT".into())).unwrap().1.is_some());
    }

    #[test]
    fn file_tokens_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "old\n").unwrap();
        let (auth, _) = TokenAuth::load(TokenSource::File(path.clone())).unwrap();
        assert!(auth.check(Some(&header("old"))));

        // Rotation: new token, old one kept as previous. Both work after a reload.
        std::fs::write(dir.path().join("token.previous"), "old").unwrap();
        std::fs::write(&path, "new").unwrap();
        assert!(auth.reload());
        assert!(auth.check(Some(&header("new"))));
        assert!(auth.check(Some(&header("old"))));

        // Grace period over: previous emptied, the old token stops working.
        std::fs::write(dir.path().join("token.previous"), "").unwrap();
        assert!(auth.reload());
        assert!(!auth.check(Some(&header("old"))));
        assert!(auth.check(Some(&header("new"))));

        // An unreadable token file keeps what was loaded.
        std::fs::remove_file(&path).unwrap();
        assert!(!auth.reload());
        assert!(auth.check(Some(&header("new"))));
    }

    #[test]
    fn a_miss_rereads_changed_files_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first").unwrap();
        let (auth, _) = TokenAuth::load(TokenSource::File(path.clone())).unwrap();
        // Written immediately after loading: no waiting period in which "second" is refused.
        std::fs::write(&path, "second-token").unwrap();
        assert!(auth.check(Some(&header("second-token"))));
        assert!(!auth.check(Some(&header("first"))));
        // A stream of bad tokens does not re-read unchanged files.
        assert!(!auth.reload_if_changed());
    }

    #[test]
    fn missing_or_empty_file_is_a_startup_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        assert!(matches!(TokenAuth::load(TokenSource::File(path.clone())), Err(TokenError::Read { .. })));
        std::fs::write(&path, "  \n").unwrap();
        assert!(matches!(TokenAuth::load(TokenSource::File(path)), Err(TokenError::Empty(_))));
    }
}

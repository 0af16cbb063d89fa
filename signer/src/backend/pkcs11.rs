//! A key in a PKCS#11 token (an HSM, or SoftHSM2 in tests), found by token label and key label.
//! Ed25519 keys sign with `CKM_EDDSA`, ECDSA keys (secp256k1, P-256) with `CKM_ECDSA` over the
//! 32-byte digest the protocol front computed (mechanisms as PKCS#11 3.0 defines them,
//! <https://docs.oasis-open.org/pkcs11/pkcs11-curr/v3.0/pkcs11-curr-v3.0.html>).
//!
//! Sessions are not `Sync`: each call takes one from a small pool (or opens one) and runs on the
//! blocking pool. Every signature is normalised to low S and verified against the public key
//! before it is returned: an HSM answering garbage never reaches a chain.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{
    accept_signature, Backend, BackendConfig, BackendError, EcdsaEncoding, InvalidField, KeyBackend, OpenError,
};
use crate::keys::{Algorithm, PublicKey, Signature};

/// `keys.<name>.pkcs11` in the config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pkcs11KeyConfig {
    /// The vendor's PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so.
    pub module: PathBuf,
    /// The token's label (slots are found by it; their numbers change).
    pub token_label: String,
    /// The key pair's label (CKA_LABEL of its private and public key objects).
    pub key_label: String,
    /// A file holding the user PIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_file: Option<PathBuf>,
    /// The name of an environment variable holding the user PIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_env: Option<String>,
}

impl BackendConfig for Pkcs11KeyConfig {
    fn backend(&self) -> Backend {
        Backend::Pkcs11
    }

    fn validate(&self) -> Result<(), InvalidField> {
        if self.pin_file.is_some() == self.pin_env.is_some() {
            return Err(InvalidField::new(None, "set exactly one of pinFile or pinEnv"));
        }
        Ok(())
    }

    fn rules_out_ed25519(&self) -> Option<&'static str> {
        None
    }

    fn open(&self, _key: &str) -> Result<Arc<dyn KeyBackend>, OpenError> {
        Ok(Arc::new(Pkcs11Backend::new(self.clone())))
    }
}

/// DER OIDs of the curves in `CKA_EC_PARAMS`.
const SECP256K1: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];
const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// How many idle sessions are kept.
const POOL: usize = 4;

/// The backend: opened on first use, and again after a failure, so that an unreachable token
/// means "not ready yet" rather than a failed start.
///
/// An HSM that restarts (or a token that is re-initialised, or a module that is finalised by
/// someone else in the process) invalidates every session and object handle. Such an error is
/// transient: the open token and its pooled sessions are discarded, and the next call (a sign, or
/// the readiness probe's [`KeyBackend::check`]) opens the module, the token and a session again,
/// finalising and re-initialising the module first so a restarted device is seen afresh.
pub struct Pkcs11Backend {
    config: Pkcs11KeyConfig,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    opened: Option<Arc<Opened>>,
    /// The module generation of the last open that went stale, when it did: the next open
    /// re-initialises the module unless another key on it already has.
    stale: Option<u64>,
    /// The public key of the first open: a reopened token must still hold the same key.
    known: Option<PublicKey>,
}

/// A token found and logged into, with the key's public half read.
struct Opened {
    context: Pkcs11,
    /// The module's generation when this was opened (see [`Module`]).
    generation: u64,
    slot: Slot,
    pin: Arc<Zeroizing<String>>,
    key_label: String,
    sessions: Arc<Mutex<Vec<Session>>>,
    algorithm: Algorithm,
    public_key: PublicKey,
}

/// A loaded PKCS#11 module. Initialisation is per process and shared by every key on the module,
/// so it lives here, once per module path, not in each key's backend.
struct Module {
    context: Pkcs11,
    /// Bumped at each re-initialisation, so that keys whose sessions died together re-initialise
    /// the module once between them rather than finalising each other's fresh sessions.
    generation: u64,
}

fn modules() -> &'static Mutex<BTreeMap<PathBuf, Arc<Mutex<Module>>>> {
    static MODULES: OnceLock<Mutex<BTreeMap<PathBuf, Arc<Mutex<Module>>>>> = OnceLock::new();
    MODULES.get_or_init(Mutex::default)
}

fn initialize(context: &Pkcs11) -> Result<(), BackendError> {
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(failure("initialize", e)),
    }
}

impl Module {
    /// The module at `path`, loaded and initialised; re-initialised first when `stale` is the
    /// generation it still has (nobody has re-initialised it since that open went stale).
    /// Returns the context and its generation. Blocking.
    fn get(path: &Path, stale: Option<u64>) -> Result<(Pkcs11, u64), BackendError> {
        let module = {
            let mut modules = modules().lock().unwrap_or_else(|e| e.into_inner());
            match modules.get(path) {
                Some(module) => module.clone(),
                None => {
                    let context = Pkcs11::new(path).map_err(|e| permanent(&format!("module {}", path.display()), e))?;
                    initialize(&context)?;
                    let module = Arc::new(Mutex::new(Module { context, generation: 0 }));
                    modules.insert(path.to_path_buf(), module.clone());
                    module
                }
            }
        };
        let mut module = module.lock().unwrap_or_else(|e| e.into_inner());
        if stale == Some(module.generation) {
            // C_Finalize then C_Initialize: the module forgets every session and rereads its
            // devices (a network HSM's client reconnects; SoftHSM rescans its token directory).
            match module.context.clone().finalize() {
                Ok(()) | Err(cryptoki::error::Error::Pkcs11(RvError::CryptokiNotInitialized, _)) => {}
                Err(e) => return Err(failure("finalize", e)),
            }
            initialize(&module.context)?;
            module.generation += 1;
            tracing::info!(module = %path.display(), "PKCS#11 module re-initialised after a session failure");
        }
        Ok((module.context.clone(), module.generation))
    }
}

fn permanent(what: &str, error: impl std::fmt::Display) -> BackendError {
    BackendError::Permanent(format!("PKCS#11 {what}: {error}"))
}

/// Whether an error means the session, its objects or the module state are gone: the device was
/// removed or restarted, the token re-initialised, the module finalised. Reopening may cure it.
fn is_stale(error: &cryptoki::error::Error) -> bool {
    matches!(
        error,
        cryptoki::error::Error::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::DeviceMemory
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::CryptokiNotInitialized
                | RvError::UserNotLoggedIn
                | RvError::SlotIdInvalid
                | RvError::ObjectHandleInvalid
                | RvError::KeyHandleInvalid
                | RvError::GeneralError,
            _
        )
    )
}

/// A PKCS#11 error as a backend error: transient when reopening may cure it, else permanent.
fn failure(what: &str, error: cryptoki::error::Error) -> BackendError {
    if is_stale(&error) {
        BackendError::Transient(format!("PKCS#11 {what}: {error} (the token will be reopened)"))
    } else {
        permanent(what, error)
    }
}

/// Whether a backend error should discard the open token and its sessions.
fn needs_reopen(error: &BackendError) -> bool {
    error.is_transient()
}

impl Pkcs11KeyConfig {
    fn pin(&self) -> Result<Zeroizing<String>, BackendError> {
        match (&self.pin_file, &self.pin_env) {
            (Some(path), None) => {
                let text = crate::files::read_bounded(path, 4096).map_err(|e| permanent("pinFile", e))?;
                Ok(Zeroizing::new(text.trim().to_string()))
            }
            (None, Some(name)) => std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .map(Zeroizing::new)
                .ok_or_else(|| permanent("pinEnv", format!("environment variable {name} is not set"))),
            _ => Err(permanent("config", "set exactly one of pinFile or pinEnv")),
        }
    }
}

impl Pkcs11Backend {
    pub fn new(config: Pkcs11KeyConfig) -> Self {
        Pkcs11Backend { config, state: tokio::sync::Mutex::new(State::default()) }
    }

    /// The open token, opening it (again) if needed.
    async fn opened(&self) -> Result<Arc<Opened>, BackendError> {
        let mut state = self.state.lock().await;
        if let Some(opened) = state.opened.as_ref() {
            return Ok(opened.clone());
        }
        let config = self.config.clone();
        let stale = state.stale;
        let attempt = tokio::task::spawn_blocking(move || {
            let (context, generation) = Module::get(&config.module, stale).map_err(|e| (e, None))?;
            Opened::open(&config, context, generation, stale.is_some()).map_err(|e| (e, Some(generation)))
        })
        .await
        .map_err(|e| BackendError::Transient(format!("PKCS#11 task: {e}")))?;
        let fresh = match attempt {
            Ok(fresh) => fresh,
            Err((error, generation)) => {
                // Still down: the next attempt re-initialises the module again (unless another
                // key has since), so a device that comes back is seen.
                if stale.is_some() {
                    state.stale = generation.or(stale);
                }
                return Err(error);
            }
        };
        // A token that comes back with another key under the label must not sign in its place.
        super::unchanged(state.known.as_ref(), &fresh.public_key, "PKCS#11", &self.config.key_label)?;
        if stale.is_some() {
            tracing::info!(token = %self.config.token_label, key = %self.config.key_label, "PKCS#11 token reopened");
        }
        let fresh = Arc::new(fresh);
        state.known = Some(fresh.public_key.clone());
        state.opened = Some(fresh.clone());
        state.stale = None;
        Ok(fresh)
    }

    /// After `error` on `opened`: forget it and its sessions when the error says they are dead
    /// (unless a concurrent call has already reopened the token).
    async fn after_error(&self, opened: &Arc<Opened>, error: &BackendError) {
        if !needs_reopen(error) {
            return;
        }
        let mut state = self.state.lock().await;
        if state.opened.as_ref().is_some_and(|current| Arc::ptr_eq(current, opened)) {
            tracing::warn!(token = %self.config.token_label, key = %self.config.key_label, %error,
                "PKCS#11 session failed; discarding the token's sessions, reopening on the next call");
            // Dropped, not closed (see `open_session`): the module re-initialisation that comes
            // with the next open frees them.
            opened.sessions.lock().unwrap_or_else(|e| e.into_inner()).clear();
            state.opened = None;
            state.stale = Some(opened.generation);
        }
    }

    /// Runs `work` on a session of the open token (pooled, or a new one), on the blocking pool;
    /// the session goes back to the pool (or is closed) unless `work` found it dead.
    async fn with_session<T: Send + 'static>(
        &self,
        fresh_session: bool,
        work: impl FnOnce(&Opened, &Session) -> Result<T, BackendError> + Send + 'static,
    ) -> Result<T, BackendError> {
        let opened = self.opened().await?;
        let task = opened.clone();
        let outcome = tokio::task::spawn_blocking(move || -> Result<T, BackendError> {
            let pooled =
                if fresh_session { None } else { task.sessions.lock().unwrap_or_else(|e| e.into_inner()).pop() };
            let session = match pooled {
                Some(session) => session,
                None => {
                    let session = open_session(&task.context, task.slot)?;
                    if let Err(error) = login(&session, &task.pin) {
                        return Err(close_unless_dead(session, error));
                    }
                    session
                }
            };
            let outcome = work(&task, &session);
            if outcome.as_ref().is_err_and(needs_reopen) {
                return outcome; // dead: dropped without C_CloseSession
            }
            let mut pool = task.sessions.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < POOL {
                pool.push(session);
            } else {
                drop(pool);
                let _ = session.close();
            }
            outcome
        })
        .await
        .map_err(|e| BackendError::Transient(format!("PKCS#11 task: {e}")))
        .and_then(|outcome| outcome);
        if let Err(error) = &outcome {
            self.after_error(&opened, error).await;
        }
        outcome
    }
}

impl Opened {
    /// Finds the token and the key on the module `context` (of `generation`), logs in and reads
    /// the public key. Blocking. When `reopening` (a previous open went stale), a missing token or
    /// key is transient: the device may still be coming back.
    fn open(config: &Pkcs11KeyConfig, context: Pkcs11, generation: u64, reopening: bool) -> Result<Self, BackendError> {
        let pin = Arc::new(config.pin()?);
        let gone = |what: &str, message: String| match reopening {
            true => BackendError::Transient(format!("PKCS#11 {what}: {message} (retrying)")),
            false => permanent(what, message),
        };
        let slot = context
            .get_slots_with_token()
            .map_err(|e| failure("slots", e))?
            .into_iter()
            .find(|slot| context.get_token_info(*slot).is_ok_and(|t| t.label() == config.token_label))
            .ok_or_else(|| gone("token", format!("no token labelled {:?}", config.token_label)))?;
        let session = open_session(&context, slot)?;
        let key = || {
            login(&session, &pin)?;
            let lookup = |e| match e {
                Missing(message) => gone("key", message),
                Failed(error) => error,
            };
            let (algorithm, public_key) = read_public_key(&session, &config.key_label).map_err(lookup)?;
            // The private key must be there too, or signing would fail later.
            find(&session, ObjectClass::PRIVATE_KEY, &config.key_label).map_err(lookup)?;
            Ok((algorithm, public_key))
        };
        let (algorithm, public_key) = match key() {
            Ok(found) => found,
            Err(error) => return Err(close_unless_dead(session, error)),
        };
        Ok(Opened {
            context,
            generation,
            slot,
            pin,
            key_label: config.key_label.clone(),
            sessions: Arc::new(Mutex::new(vec![session])),
            algorithm,
            public_key,
        })
    }
}

/// A read-only session that is **not** closed when dropped. Handles are numbers the module hands
/// out again after a re-initialisation: closing a dead session's handle later could close another
/// key's fresh session. Healthy sessions are closed explicitly; dead ones are only dropped, and
/// the re-initialisation that follows frees them.
fn open_session(context: &Pkcs11, slot: Slot) -> Result<Session, BackendError> {
    context.open_ro_session_no_drop(slot).map_err(|e| failure("session", e))
}

/// Closes a session given up on because of `error`, unless `error` says it is dead already.
fn close_unless_dead(session: Session, error: BackendError) -> BackendError {
    if !needs_reopen(&error) {
        let _ = session.close();
    }
    error
}

/// Why an object lookup failed: not there, or the token did not answer.
enum Lookup {
    Missing(String),
    Failed(BackendError),
}

use Lookup::{Failed, Missing};

/// The key pair's algorithm and public key, from its public key object.
fn read_public_key(session: &Session, label: &str) -> Result<(Algorithm, PublicKey), Lookup> {
    let public = find(session, ObjectClass::PUBLIC_KEY, label)?;
    let attributes = session
        .get_attributes(public, &[AttributeType::KeyType, AttributeType::EcParams, AttributeType::EcPoint])
        .map_err(|e| Failed(failure("public key", e)))?;
    let (mut key_type, mut params, mut point) = (None, Vec::new(), Vec::new());
    for attribute in attributes {
        match attribute {
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::EcParams(p) => params = p,
            Attribute::EcPoint(p) => point = p,
            _ => {}
        }
    }
    let algorithm = match key_type {
        Some(KeyType::EC_EDWARDS) => Algorithm::Ed25519,
        Some(KeyType::EC) if params == SECP256K1 => Algorithm::Secp256k1,
        Some(KeyType::EC) if params == P256 => Algorithm::P256,
        other => {
            return Err(Failed(permanent(
                "key",
                format!(
                    "{label:?} is {other:?} with curve {}; sigil signs with ed25519, secp256k1 or P-256",
                    hex::encode(&params)
                ),
            )))
        }
    };
    // CKA_EC_POINT is a DER OCTET STRING around the raw point.
    let raw = match point.as_slice() {
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() => rest,
        other => other,
    };
    let public_key = PublicKey::from_bytes(algorithm, raw).map_err(|e| Failed(permanent("public key", e)))?;
    Ok((algorithm, public_key))
}

fn login(session: &Session, pin: &Zeroizing<String>) -> Result<(), BackendError> {
    match session.login(UserType::User, Some(&AuthPin::new(pin.as_str().into()))) {
        // Login is per application: another session may have done it already.
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) if is_stale(&e) => Err(failure("login", e)),
        Err(e) => Err(permanent("login (check the PIN)", e)),
    }
}

fn find(session: &Session, class: ObjectClass, label: &str) -> Result<ObjectHandle, Lookup> {
    let found = session
        .find_objects(&[Attribute::Class(class), Attribute::Label(label.as_bytes().to_vec())])
        .map_err(|e| Failed(failure("find", e)))?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(Missing(format!("no {class} labelled {label:?} on the token"))),
        _ => Err(Failed(permanent(
            "key",
            format!("{} objects of class {class} are labelled {label:?}; labels must be unique", found.len()),
        ))),
    }
}

/// On an open token, a key that has gone missing means the token changed under us (re-initialised,
/// restored): transient, so the token is reopened and the key looked up afresh.
fn find_again(session: &Session, class: ObjectClass, label: &str) -> Result<ObjectHandle, BackendError> {
    find(session, class, label).map_err(|e| match e {
        Missing(message) => BackendError::Transient(format!("PKCS#11 key: {message} any more (reopening the token)")),
        Failed(error) => error,
    })
}

#[async_trait]
impl KeyBackend for Pkcs11Backend {
    fn kind(&self) -> &'static str {
        "pkcs11"
    }

    async fn public_key(&self) -> Result<PublicKey, BackendError> {
        Ok(self.opened().await?.public_key.clone())
    }

    async fn sign(&self, payload: &[u8]) -> Result<Signature, BackendError> {
        let message = payload.to_vec();
        let (raw, public_key) = self
            .with_session(false, move |opened, session| {
                let key = find_again(session, ObjectClass::PRIVATE_KEY, &opened.key_label)?;
                let mechanism = match opened.algorithm {
                    Algorithm::Ed25519 => Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                    Algorithm::Secp256k1 | Algorithm::P256 => Mechanism::Ecdsa,
                    // Never: keys are found by their EC or Edwards type.
                    Algorithm::Bls12_381 => {
                        return Err(BackendError::Permanent("PKCS#11 tokens do not sign BLS12-381".into()))
                    }
                };
                let signature = session.sign(&mechanism, key, &message).map_err(|e| failure("sign", e))?;
                Ok((signature, opened.public_key.clone()))
            })
            .await?;
        // SoftHSM, for one, returns high S about half the time; chains want low S.
        accept_signature(&public_key, payload, &raw, EcdsaEncoding::Raw)
            .map_err(|reason| permanent("sign", format!("the token's answer: {reason}; refused")))
    }

    /// Talks to the token: a new session, the login, the key pair looked up, and its public key
    /// still the one we started with. A dead token fails here and is reopened on the next call.
    async fn check(&self) -> Result<(), BackendError> {
        self.with_session(true, |opened, session| {
            find_again(session, ObjectClass::PRIVATE_KEY, &opened.key_label)?;
            let (_, now) = read_public_key(session, &opened.key_label).map_err(|e| match e {
                Missing(message) => {
                    BackendError::Transient(format!("PKCS#11 key: {message} any more (reopening the token)"))
                }
                Failed(error) => error,
            })?;
            super::unchanged(Some(&opened.public_key), &now, "PKCS#11", &opened.key_label)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use cryptoki::context::Function;
    use cryptoki::error::Error;

    use super::*;

    #[test]
    fn dead_sessions_are_transient_and_reopen_the_token() {
        for rv in [
            RvError::SessionHandleInvalid,
            RvError::DeviceRemoved,
            RvError::TokenNotPresent,
            RvError::CryptokiNotInitialized,
            RvError::KeyHandleInvalid,
        ] {
            let error = failure("sign", Error::Pkcs11(rv, Function::Sign));
            assert!(error.is_transient() && needs_reopen(&error), "{rv:?}: {error}");
            assert!(error.to_string().contains("the token will be reopened"), "{error}");
        }
        for rv in [RvError::DataLenRange, RvError::MechanismInvalid, RvError::PinIncorrect] {
            let error = failure("sign", Error::Pkcs11(rv, Function::Sign));
            assert!(!error.is_transient() && !needs_reopen(&error), "{rv:?}: {error}");
        }
    }
}

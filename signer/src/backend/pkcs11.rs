//! A key in a PKCS#11 token (an HSM, or SoftHSM2 in tests), found by token label and key label.
//! Ed25519 keys sign with `CKM_EDDSA`, ECDSA keys (secp256k1, P-256) with `CKM_ECDSA` over the
//! 32-byte digest the protocol front computed. Research: research/kms.md §4.
//!
//! Sessions are not `Sync`: each call takes one from a small pool (or opens one) and runs on the
//! blocking pool. Every signature is normalised to low S and verified against the public key
//! before it is returned: an HSM answering garbage never reaches a chain.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{accept_signature, BackendError, EcdsaEncoding, KeyBackend};
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

/// DER OIDs of the curves in `CKA_EC_PARAMS`.
const SECP256K1: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];
const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// How many idle sessions are kept.
const POOL: usize = 4;

/// The backend: opened on first use, and again after a failure, so that an unreachable token
/// means "not ready yet" rather than a failed start.
pub struct Pkcs11Backend {
    config: Pkcs11KeyConfig,
    opened: tokio::sync::Mutex<Option<Arc<Opened>>>,
}

/// A token found and logged into, with the key's public half read.
struct Opened {
    context: Arc<Pkcs11>,
    slot: Slot,
    pin: Arc<Zeroizing<String>>,
    key_label: String,
    sessions: Arc<Mutex<Vec<Session>>>,
    algorithm: Algorithm,
    public_key: PublicKey,
}

fn permanent(what: &str, error: impl std::fmt::Display) -> BackendError {
    BackendError::Permanent(format!("PKCS#11 {what}: {error}"))
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
        Pkcs11Backend { config, opened: tokio::sync::Mutex::new(None) }
    }

    async fn opened(&self) -> Result<Arc<Opened>, BackendError> {
        let mut opened = self.opened.lock().await;
        if let Some(opened) = opened.as_ref() {
            return Ok(opened.clone());
        }
        let config = self.config.clone();
        let fresh = tokio::task::spawn_blocking(move || Opened::open(&config))
            .await
            .map_err(|e| BackendError::Transient(format!("PKCS#11 task: {e}")))??;
        let fresh = Arc::new(fresh);
        *opened = Some(fresh.clone());
        Ok(fresh)
    }
}

impl Opened {
    /// Loads the module, finds the token and the key, and reads the public key. Blocking.
    fn open(config: &Pkcs11KeyConfig) -> Result<Self, BackendError> {
        let pin = Arc::new(config.pin()?);
        let context =
            Pkcs11::new(&config.module).map_err(|e| permanent(&format!("module {}", config.module.display()), e))?;
        match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(permanent("initialize", e)),
        }
        let slot = context
            .get_slots_with_token()
            .map_err(|e| permanent("slots", e))?
            .into_iter()
            .find(|slot| context.get_token_info(*slot).is_ok_and(|t| t.label() == config.token_label))
            .ok_or_else(|| permanent("token", format!("no token labelled {:?}", config.token_label)))?;
        let session = context.open_ro_session(slot).map_err(|e| permanent("session", e))?;
        login(&session, &pin)?;
        let public = find(&session, ObjectClass::PUBLIC_KEY, &config.key_label)?;
        let attributes = session
            .get_attributes(public, &[AttributeType::KeyType, AttributeType::EcParams, AttributeType::EcPoint])
            .map_err(|e| permanent("public key", e))?;
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
                return Err(permanent(
                    "key",
                    format!(
                        "{:?} is {other:?} with curve {}; sigil signs with ed25519, secp256k1 or P-256",
                        config.key_label,
                        hex::encode(&params)
                    ),
                ))
            }
        };
        // CKA_EC_POINT is a DER OCTET STRING around the raw point.
        let raw = match point.as_slice() {
            [0x04, len, rest @ ..] if usize::from(*len) == rest.len() => rest,
            other => other,
        };
        let public_key = PublicKey::from_bytes(algorithm, raw).map_err(|e| permanent("public key", e))?;
        // The private key must be there too, or signing would fail later.
        find(&session, ObjectClass::PRIVATE_KEY, &config.key_label)?;
        Ok(Opened {
            context: Arc::new(context),
            slot,
            pin,
            key_label: config.key_label.clone(),
            sessions: Arc::new(Mutex::new(vec![session])),
            algorithm,
            public_key,
        })
    }
}

fn login(session: &Session, pin: &Zeroizing<String>) -> Result<(), BackendError> {
    match session.login(UserType::User, Some(&AuthPin::new(pin.as_str().into()))) {
        // Login is per application: another session may have done it already.
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(permanent("login (check the PIN)", e)),
    }
}

fn find(session: &Session, class: ObjectClass, label: &str) -> Result<ObjectHandle, BackendError> {
    let found = session
        .find_objects(&[Attribute::Class(class), Attribute::Label(label.as_bytes().to_vec())])
        .map_err(|e| permanent("find", e))?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(permanent("key", format!("no {class} labelled {label:?} on the token"))),
        _ => Err(permanent(
            "key",
            format!("{} objects of class {class} are labelled {label:?}; labels must be unique", found.len()),
        )),
    }
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
        let opened = self.opened().await?;
        let (context, slot, pin, sessions, label, algorithm) = (
            opened.context.clone(),
            opened.slot,
            opened.pin.clone(),
            opened.sessions.clone(),
            opened.key_label.clone(),
            opened.algorithm,
        );
        let message = payload.to_vec();
        let raw = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, BackendError> {
            let pooled = sessions.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let session = match pooled {
                Some(session) => session,
                None => {
                    let session = context
                        .open_ro_session(slot)
                        .map_err(|e| BackendError::Transient(format!("PKCS#11 session: {e}")))?;
                    login(&session, &pin)?;
                    session
                }
            };
            let key = find(&session, ObjectClass::PRIVATE_KEY, &label)?;
            let mechanism = match algorithm {
                Algorithm::Ed25519 => Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                Algorithm::Secp256k1 | Algorithm::P256 => Mechanism::Ecdsa,
            };
            let signature = session
                .sign(&mechanism, key, &message)
                .map_err(|e| BackendError::Transient(format!("PKCS#11 sign: {e}")))?;
            let mut pool = sessions.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < POOL {
                pool.push(session);
            }
            Ok(signature)
        })
        .await
        .map_err(|e| BackendError::Transient(format!("PKCS#11 task: {e}")))??;
        // SoftHSM, for one, returns high S about half the time; chains want low S.
        accept_signature(&opened.public_key, payload, &raw, EcdsaEncoding::Raw)
            .map_err(|reason| permanent("sign", format!("the token's answer: {reason}; refused")))
    }
}

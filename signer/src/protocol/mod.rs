//! Protocol fronts: each turns wire requests into [`crate::sign::SignRequest`]s and signatures
//! back into wire replies.
//!
//! A protocol is one folder: its config section (`config.rs`, implementing [`ProtocolConfig`]),
//! its sign kinds and ratchet streams, and its listener or client. `SignerConfig::protocols` lists
//! the sections; validation and startup go through this trait, and the core (`policy`, `ratchet`,
//! `sign`) knows no protocol.

pub mod atto;
pub mod cometbft;
pub mod tezos;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use tokio::sync::watch;

use crate::app::StartupError;
use crate::config::ConfigError;
use crate::keys::{Algorithm, PublicKey};
use crate::policy::Policy;
use crate::sign::Signer;

/// What validation and startup ask of every protocol's config section.
pub trait ProtocolConfig: Send + Sync {
    /// Its name in messages: `Atto`, `Tezos`, `CometBFT`.
    fn name(&self) -> &'static str;

    /// The keys it signs with, each with the config path that names it (`atto.key`).
    fn keys(&self) -> Vec<(String, &str)>;

    /// The curves its keys may be on.
    fn algorithms(&self) -> &'static [Algorithm];

    /// Whether it signs messages with levels or heights, which need a durable high-water mark.
    fn needs_marks(&self) -> bool;

    /// Its listener, by config path (`atto.listen`), if it has one.
    fn listen(&self) -> Option<(&'static str, SocketAddr)>;

    /// Checks the section's own fields. (`SignerConfig::validate` has checked the rest: its keys
    /// exist, serve no other protocol, are Ed25519 if it needs that, and a ratchet if it needs marks.)
    fn validate(&self) -> Result<(), ConfigError>;

    /// What `key` (one of [`ProtocolConfig::keys`]) may sign.
    fn policy(&self, key: &str) -> Result<Policy, ConfigError>;

    /// How the chain names a public key (an `atto://` address, a `tz1…`, a validator address).
    fn display_key(&self) -> KeyDisplay;

    /// What serves it once the signer exists.
    fn services(&self, signer: &Arc<Signer>) -> Result<Vec<Service>, StartupError>;
}

/// A protocol's name for a public key.
pub type KeyDisplay = fn(&PublicKey) -> String;

/// A task that runs until the stop signal turns true.
pub type Task = Box<dyn FnOnce(watch::Receiver<bool>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

pub enum Service {
    /// An HTTP API: its name in logs (`atto API`), its address and its routes.
    Listener { name: &'static str, addr: SocketAddr, router: Router },
    /// A connection this signer keeps dialing (a CometBFT node).
    Dialer(Task),
}

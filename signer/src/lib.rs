//! sigil-signer: a remote signer for validators. See ARCHITECTURE.md for the sign path.

pub mod app;
pub mod backend;
pub mod config;
pub mod files;
pub mod keys;
pub mod metrics;
pub mod policy;
pub mod protocol;
pub mod ratchet;
pub mod server;
pub mod sign;

//! sigil-signer: a remote signer for validators. See docs/architecture.md for the sign path.

pub mod admin;
pub mod app;
pub mod audit;
pub mod backend;
pub mod config;
pub mod files;
pub mod interchange;
pub mod keys;
pub mod metrics;
pub mod policy;
pub mod process;
pub mod protocol;
pub mod ratchet;
pub mod server;
pub mod sign;

/// rustls needs one process-wide crypto provider, and the AWS SDK and the Kubernetes client each
/// enable one. Every entry point that makes TLS clients calls this first: ring, for everyone.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

//! sigil-signer: a remote signer for validators. See ARCHITECTURE.md for the sign path.

pub mod backend;
pub mod keys;
pub mod metrics;
pub mod policy;
pub mod ratchet;
pub mod sign;

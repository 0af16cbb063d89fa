//! The Tezos remote-signer HTTP API (octez-client, octez-baker): encodings, request parsing,
//! per-key policy, and the routes.

pub mod api;
pub mod encoding;
pub mod operation;
pub mod policy;

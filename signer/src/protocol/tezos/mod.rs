//! The Tezos remote-signer HTTP API (octez-client, octez-baker): request parsing,
//! per-key policy, and the routes.

pub mod api;
pub mod config;
pub mod operation;
pub mod policy;

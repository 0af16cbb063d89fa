//! The Atto signer REST API, a drop-in for attocash/signer (research/atto.md).

pub mod api;
pub mod model;

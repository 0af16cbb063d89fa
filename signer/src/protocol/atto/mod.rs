//! The Atto signer REST API, a drop-in for attocash/signer (<https://github.com/attocash/signer>;
//! see docs/atto.md).

pub mod api;
pub mod config;
mod env;
pub mod model;

//! sigil-operator: reconciles RemoteSigner resources (docs/operator.md).

pub mod api;
pub mod controller;
pub mod images;
pub mod leader;
pub mod metrics;
pub mod sidecar;
pub mod webhook;

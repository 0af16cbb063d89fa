//! sigil-operator: reconciles RemoteSigner resources (see ARCHITECTURE.md, the Kubernetes path).

pub mod api;
pub mod controller;
pub mod leader;
pub mod metrics;
pub mod webhook;

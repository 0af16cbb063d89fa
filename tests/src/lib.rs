//! Cross-component tests for sigil, and the harness that gives them a real Kubernetes API server.

pub mod cluster;
pub mod docs;
pub mod fake_kms;
pub mod kind;
pub mod load;
pub mod ministack;
pub mod process;
pub mod softhsm;
pub mod tezos;

//! The RemoteSigner controller: pure decisions in `desired`, `token` and `status`; the I/O that
//! applies them in `reconcile`.

pub mod desired;
pub mod reconcile;
pub mod status;
pub mod token;

//! The RemoteSigner controller: pure decisions in `desired`, `token` and `status`; the I/O that
//! applies them in `reconcile`, and for token rotation in `rotation`.

pub mod desired;
#[cfg(test)]
mod fake_api;
mod initial_marks;
pub mod reconcile;
mod rotation;
pub mod status;
pub mod token;

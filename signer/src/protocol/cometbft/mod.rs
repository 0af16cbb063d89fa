//! CometBFT privval: sigil dials the validator node's `priv_validator_laddr` and answers its
//! requests, as tmkms does (<https://github.com/iqlusioninc/tmkms>; see docs/cometbft.md).

pub mod config;
pub mod connection;
pub mod proto;
pub mod state_file;
pub mod validator;

//! Protocol fronts: each turns wire requests into [`crate::sign::SignRequest`]s and signatures
//! back into wire replies.

pub mod atto;
pub mod cometbft;
pub mod tezos;

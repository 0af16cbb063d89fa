//! Listeners: the accept loop, token auth, the management endpoints, and startup from a config.

pub mod auth;
pub mod http;
pub mod management;

//! The management listener: liveness, readiness, metrics. No auth (it serves no secrets and the
//! kubelet's probes carry no token); bind it where only probes and Prometheus reach it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::keys::PublicKey;
use crate::sign::{KeyEntry, Signer};

pub fn router(signer: Arc<Signer>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        // attocash/signer's actuator paths, so existing probes and scrape configs keep working.
        .route("/health", get(|| async { ([(header::CONTENT_TYPE, "application/json")], r#"{"status":"UP"}"#) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/prometheus", get(metrics))
        .with_state(signer)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(signer): State<Arc<Signer>>) -> impl IntoResponse {
    let names = |pick: &dyn Fn(&KeyEntry) -> bool| {
        let mut names: Vec<&str> = signer.keys().filter(|k| pick(k)).map(|k| k.name.as_str()).collect();
        names.sort_unstable();
        names.join(", ")
    };
    let cleared = |k: &KeyEntry| {
        let id = k.public_key().map(PublicKey::id);
        signer.ratchet().key_cleared(&k.name, id.as_deref()).is_ok()
    };
    let mut problems: Vec<String> = [
        ("waiting for keys", names(&|k| k.public_key().is_none())),
        ("keys unreachable", names(&|k| k.public_key().is_some() && !k.is_ready())),
        ("one key configured twice", names(&|k| signer.same_key(k).is_some())),
        ("keys not yet cleared by sigil-operator", names(&|k| k.public_key().is_some() && !cleared(k))),
    ]
    .into_iter()
    .filter(|(_, keys)| !keys.is_empty())
    .map(|(what, keys)| format!("{what}: {keys}"))
    .collect();
    if let Err(store) = signer.ratchet().health() {
        problems.push(store);
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("{}\n", problems.join("; ")))
    }
}

async fn metrics(State(signer): State<Arc<Signer>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], signer.metrics().encode())
}

//! The management listener: liveness, readiness, metrics. No auth (it serves no secrets and the
//! kubelet's probes carry no token); bind it where only probes and Prometheus reach it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::sign::Signer;

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
    let waiting: Vec<&str> = signer.keys().filter(|k| k.public_key().is_none()).map(|k| k.name.as_str()).collect();
    if waiting.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("waiting for keys: {}\n", waiting.join(", ")))
    }
}

async fn metrics(State(signer): State<Arc<Signer>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], signer.metrics().encode())
}

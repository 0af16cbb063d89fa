//! The HTTP routes of the Atto signer API, as an unmodified Atto node calls them.
//!
//! Status codes follow what the node's client does with them: it retries only on 408 and 429, so
//! anything that may succeed later answers one of those; 4xx/5xx are final (attocash/commons's
//! `HttpSignerRemote`,
//! <https://github.com/attocash/commons/blob/v7.0.2/commons-signer-remote/src/commonMain/kotlin/cash/atto/commons/node/HttpSignerRemote.kt>).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::model::{Block, ChallengeRequest, TargetRequest, Vote};
use crate::audit::Record;
use crate::keys::Algorithm;
use crate::policy::SignKind;
use crate::ratchet::RatchetError;
use crate::server::auth::TokenAuth;
pub use crate::server::http::Limits;
use crate::server::http::{bounded, Observed};
use crate::sign::{SignError, SignRequest, Signer};

const PROTOCOL: &str = "atto";

/// What the node may ask for. Parsed case-insensitively, as Spring's enum binding does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Capability {
    Challenge,
    Block,
    Vote,
}

/// What an Atto key signs.
pub const BLOCK: SignKind = SignKind::new("atto", "atto_block");
pub const VOTE: SignKind = SignKind::new("atto", "atto_vote");
pub const CHALLENGE: SignKind = SignKind::new("atto", "atto_challenge");

impl Capability {
    pub fn kind(self) -> SignKind {
        match self {
            Capability::Challenge => CHALLENGE,
            Capability::Block => BLOCK,
            Capability::Vote => VOTE,
        }
    }

    /// A comma-separated list like `CHALLENGE, vote` (the `ATTO_SIGNER_CAPABILITIES` form).
    pub fn parse_list(list: &str) -> Result<Vec<Capability>, String> {
        list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::parse).collect()
    }
}

impl std::str::FromStr for Capability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_uppercase().as_str() {
            "CHALLENGE" => Ok(Capability::Challenge),
            "BLOCK" => Ok(Capability::Block),
            "VOTE" => Ok(Capability::Vote),
            _ => Err(format!("unknown capability {s:?}: expected CHALLENGE, BLOCK or VOTE")),
        }
    }
}

impl<'de> Deserialize<'de> for Capability {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Clone)]
struct Api {
    signer: Arc<Signer>,
    key: Arc<str>,
    auth: Arc<TokenAuth>,
    in_flight: Arc<Semaphore>,
}

/// The router for one Atto key. Every route requires the token, GET included.
pub fn router(signer: Arc<Signer>, key: &str, auth: Arc<TokenAuth>, limits: Limits) -> Router {
    let api = Api { signer, key: key.into(), auth, in_flight: Arc::new(Semaphore::new(limits.max_in_flight)) };
    let observed = Observed { metrics: api.signer.metrics().clone(), protocol: PROTOCOL, endpoint: endpoint_label };
    bounded(
        Router::new()
            .route("/public-keys", get(public_keys))
            .route("/blocks", post(blocks))
            .route("/votes", post(votes))
            .route("/challenges", post(challenges))
            .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
            .layer(middleware::from_fn_with_state(api.clone(), authenticate)),
        limits,
        StatusCode::REQUEST_TIMEOUT,
        observed,
    )
    .with_state(api)
}

/// An error answer: `{"message": ...}` like upstream's exception handler, empty for 401.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: Some(message.into()) }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = match self.message {
            Some(message) => (self.status, Json(serde_json::json!({ "message": message }))).into_response(),
            None => self.status.into_response(),
        };
        if matches!(self.status, StatusCode::TOO_MANY_REQUESTS) {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<SignError> for ApiError {
    fn from(error: SignError) -> Self {
        let status = match &error {
            _ if error.is_retryable() => StatusCode::TOO_MANY_REQUESTS,
            SignError::NotAllowed { kind, .. } => {
                return ApiError::new(StatusCode::BAD_REQUEST, missing_capability(*kind))
            }
            SignError::Ratchet(RatchetError::Refused { .. }) | SignError::HeightJump { .. } => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, error.to_string())
    }
}

/// Upstream's wording (SignatureService.kt), so operators' log searches keep working.
fn missing_capability(kind: SignKind) -> String {
    let (what, capability) = match kind {
        BLOCK => ("a block", "BLOCK"),
        VOTE => ("a vote", "VOTE"),
        _ => ("a challenge", "CHALLENGE"),
    };
    format!("Signing {what} is not allowed. Capability {capability} is missing.")
}

fn endpoint_label(path: &str) -> &'static str {
    match path {
        "/public-keys" => "public_keys",
        "/blocks" => "blocks",
        "/votes" => "votes",
        "/challenges" => "challenges",
        _ => "other",
    }
}

async fn authenticate(State(api): State<Api>, request: Request, next: Next) -> Response {
    if api.auth.check(request.headers().get(header::AUTHORIZATION)) {
        next.run(request).await
    } else {
        let client = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.to_string());
        let message = "missing or wrong bearer token".to_string();
        api.refused(client.as_deref().unwrap_or_default(), "unauthorized", StatusCode::UNAUTHORIZED, message);
        ApiError { status: StatusCode::UNAUTHORIZED, message: None }.into_response()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PublicKeyResponse {
    public_key: String,
}

#[derive(Serialize)]
struct SignatureResponse {
    signature: String,
}

impl Api {
    /// This key's Ed25519 public key, once its backend has answered.
    fn public_key(&self) -> Result<[u8; 32], ApiError> {
        let entry = self.signer.key(&self.key).ok_or_else(|| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("key {} is not configured", self.key))
        })?;
        let public_key = entry.public_key().ok_or_else(|| {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, format!("key {} is not ready yet; retry", self.key))
        })?;
        match (public_key.algorithm(), <[u8; 32]>::try_from(public_key.as_bytes())) {
            (Algorithm::Ed25519, Ok(bytes)) => Ok(bytes),
            (algorithm, _) => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("key {} is {algorithm}; Atto needs an ed25519 key", self.key),
            )),
        }
    }

    fn decode<T: DeserializeOwned>(&self, body: Result<Bytes, BytesRejection>, client: &str) -> Result<T, ApiError> {
        let body = body.map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))?;
        serde_json::from_slice(&body).map_err(|error| {
            let message = format!("invalid request body: {error}");
            self.refused(client, "bad_request", StatusCode::BAD_REQUEST, message)
        })
    }

    fn check_public_key(&self, requested: &[u8; 32], ours: &[u8; 32], client: &str) -> Result<(), ApiError> {
        if requested == ours {
            return Ok(());
        }
        let message = format!(
            "Different public key {}: this signer holds {}",
            hex::encode_upper(requested),
            hex::encode_upper(ours)
        );
        Err(self.refused(client, "foreign_key", StatusCode::BAD_REQUEST, message))
    }

    /// A refusal of this front: counted, in the audit trail, and the client's answer.
    fn refused(&self, client: &str, reason: &'static str, status: StatusCode, message: String) -> ApiError {
        self.signer.metrics().refuse(PROTOCOL, reason);
        let key_hash = self.signer.key(&self.key).and_then(|k| k.key_hash());
        let record = Record {
            key: Some(&self.key),
            key_hash,
            client: Some(client),
            ..Record::refused(PROTOCOL, reason, message)
        };
        self.signer.audit_refusal(&record);
        ApiError::new(status, record.error.unwrap_or_default())
    }

    async fn sign(&self, kind: SignKind, payload: &[u8], client: &str) -> Result<Json<SignatureResponse>, ApiError> {
        let _slot = self.in_flight.try_acquire().map_err(|_| {
            self.refused(client, "overload", StatusCode::TOO_MANY_REQUESTS, "signer busy; retry".into())
        })?;
        let request =
            SignRequest { client: Some(client), ..SignRequest::new(&self.key, PROTOCOL, kind, None, payload) };
        let signature = self.signer.sign(request).await?.signature;
        Ok(Json(SignatureResponse { signature: hex::encode_upper(signature.as_bytes()) }))
    }
}

async fn public_keys(State(api): State<Api>) -> Result<Json<PublicKeyResponse>, ApiError> {
    Ok(Json(PublicKeyResponse { public_key: hex::encode_upper(api.public_key()?) }))
}

async fn blocks(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SignatureResponse>, ApiError> {
    let (ours, client) = (api.public_key()?, peer.to_string());
    let block = api.decode::<TargetRequest<Block>>(body, &client)?.target;
    api.check_public_key(block.public_key(), &ours, &client)?;
    api.sign(BLOCK, &block.hash(), &client).await
}

async fn votes(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SignatureResponse>, ApiError> {
    let (ours, client) = (api.public_key()?, peer.to_string());
    let vote = api.decode::<TargetRequest<Vote>>(body, &client)?.target;
    api.check_public_key(&vote.public_key.0, &ours, &client)?;
    api.sign(VOTE, &vote.hash(), &client).await
}

async fn challenges(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SignatureResponse>, ApiError> {
    let (ours, client) = (api.public_key()?, peer.to_string());
    let request = api.decode::<ChallengeRequest>(body, &client)?;
    api.sign(CHALLENGE, &request.target.digest(&ours, request.timestamp), &client).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_parse_like_spring() {
        assert_eq!(
            Capability::parse_list("challenge, block ,VOTE").unwrap(),
            vec![Capability::Challenge, Capability::Block, Capability::Vote]
        );
        assert!(Capability::parse_list("CHALLENGE,SEND").unwrap_err().contains("SEND"));
        assert_eq!(Capability::parse_list(" , ").unwrap(), vec![]);
    }

    #[test]
    fn upstream_capability_messages() {
        assert_eq!(missing_capability(BLOCK), "Signing a block is not allowed. Capability BLOCK is missing.");
        assert_eq!(missing_capability(VOTE), "Signing a vote is not allowed. Capability VOTE is missing.");
        assert_eq!(
            missing_capability(CHALLENGE),
            "Signing a challenge is not allowed. Capability CHALLENGE is missing."
        );
    }
}

//! The Tezos remote-signer HTTP API as octez-client and octez-baker call it: octez's
//! `signer_services.ml` defines it, `http_gen.ml` is the client
//! (<https://github.com/tezos/tezos-mirror/blob/master/src/lib_signer_services/signer_services.ml>,
//! <https://github.com/tezos/tezos-mirror/blob/master/src/lib_signer_backends/http_gen.ml>).
//!
//! Errors use octez's body shape, `[{"kind":"temporary","id":"failure","msg":…}]`, with distinct
//! status codes like Signatory (octez only cares that it is not 200): 400 undecodable, 401
//! authentication, 403 policy, 404 unknown key, 409 high-water mark, 503 try later, 500 backend.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::Semaphore;

use super::config::LiveSwitches;
use super::operation;
use super::policy::{Refusal, TezosPolicy};
use crate::audit::Record;
use crate::keys::tezos;
use crate::keys::{Algorithm, BlsScheme};
use crate::policy::SignKind;
use crate::ratchet::{Mark, RatchetError};
use crate::server::http::{bounded, Limits, Observed};
use crate::sign::{SignError, SignRequest, Signer};

const PROTOCOL: &str = "tezos";

/// A BLS proof of possession (`GET /bls_prove_possession/<tz4…>`), as the sign path knows it.
pub const PROVE_POSSESSION: SignKind = SignKind::new(PROTOCOL, "tezos_proof_of_possession");

/// One key served over the Tezos API.
pub struct TezosKey {
    pub name: String,
    pub policy: TezosPolicy,
    /// `tz1…`, known once the backend has answered.
    pkh: OnceLock<(String, [u8; 21])>,
}

impl TezosKey {
    pub fn new(name: String, policy: TezosPolicy) -> Self {
        TezosKey { name, policy, pkh: OnceLock::new() }
    }
}

#[derive(Clone)]
struct Api {
    signer: Arc<Signer>,
    keys: Arc<Vec<TezosKey>>,
    switches: Arc<LiveSwitches>,
    in_flight: Arc<Semaphore>,
}

pub fn router(signer: Arc<Signer>, keys: Vec<TezosKey>, switches: Arc<LiveSwitches>, limits: Limits) -> Router {
    let api = Api { signer, keys: Arc::new(keys), switches, in_flight: Arc::new(Semaphore::new(limits.max_in_flight)) };
    let observed = Observed { metrics: api.signer.metrics().clone(), protocol: PROTOCOL, endpoint: endpoint_label };
    bounded(
        Router::new()
            .route("/keys/{pkh}", get(public_key).post(sign))
            .route("/authorized_keys", get(authorized_keys))
            .route("/known_keys", get(known_keys))
            .route("/bls_prove_possession/{pkh}", get(prove_possession))
            .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") }),
        limits,
        StatusCode::SERVICE_UNAVAILABLE,
        observed,
    )
    .with_state(api)
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!([{ "kind": "temporary", "id": "failure", "msg": self.message }]);
        (self.status, Json(body)).into_response()
    }
}

impl From<SignError> for ApiError {
    fn from(error: SignError) -> Self {
        let status = match &error {
            _ if error.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
            SignError::Ratchet(RatchetError::Refused { .. }) | SignError::HeightJump { .. } => StatusCode::CONFLICT,
            SignError::NotAllowed { .. } => StatusCode::FORBIDDEN,
            SignError::UnknownKey(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, error.to_string())
    }
}

fn endpoint_label(path: &str) -> &'static str {
    match path {
        "/authorized_keys" => "authorized_keys",
        "/known_keys" => "known_keys",
        p if p.starts_with("/bls_prove_possession/") => "bls_prove_possession",
        p if p.starts_with("/keys/") => "keys",
        _ => "other",
    }
}

impl Api {
    /// The key whose hash is `pkh`, among those whose backend has answered.
    fn find(&self, pkh: &str) -> Option<(&TezosKey, &(String, [u8; 21]))> {
        self.keys.iter().find_map(|key| {
            let hash = match key.pkh.get() {
                Some(hash) => hash,
                None => {
                    let public_key = self.signer.key(&key.name)?.public_key()?;
                    key.pkh.get_or_init(|| (tezos::pkh(public_key), tezos::pkh_bytes(public_key)))
                }
            };
            (hash.0 == pkh).then_some((key, hash))
        })
    }

    /// One of the bounded in-flight slots, or 503.
    fn slot(&self, who: &Who<'_>) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
        self.in_flight
            .try_acquire()
            .map_err(|_| self.refused(who, "overload", StatusCode::SERVICE_UNAVAILABLE, "signer busy; retry".into()))
    }

    fn algorithm(&self, key: &TezosKey) -> Option<Algorithm> {
        self.signer.key(&key.name)?.public_key().map(|k| k.algorithm())
    }

    fn unknown(&self, pkh: &str, who: &Who<'_>) -> ApiError {
        self.refused(who, "unknown_key", StatusCode::NOT_FOUND, format!("no key {pkh} here"))
    }

    fn refuse(&self, refusal: Refusal, who: &Who<'_>) -> ApiError {
        let status = match refusal {
            Refusal::MissingAuthentication { .. } | Refusal::BadAuthentication { .. } => StatusCode::UNAUTHORIZED,
            _ => StatusCode::FORBIDDEN,
        };
        self.refused(who, refusal.reason(), status, refusal.to_string())
    }

    fn bad_request(&self, message: String, who: &Who<'_>) -> ApiError {
        self.refused(who, "bad_request", StatusCode::BAD_REQUEST, message)
    }

    /// A refusal of this front: counted, in the audit trail, and the client's answer.
    fn refused(&self, who: &Who<'_>, reason: &'static str, status: StatusCode, message: String) -> ApiError {
        self.signer.metrics().refuse(PROTOCOL, reason);
        let record = Record {
            key: who.key,
            key_hash: who.pkh,
            client: Some(&who.client),
            ..Record::refused(PROTOCOL, reason, message)
        };
        self.signer.audit_refusal(&record);
        ApiError::new(status, record.error.unwrap_or_default())
    }
}

/// Who asked, for the audit trail: the client's address and, once known, the key.
struct Who<'a> {
    client: String,
    key: Option<&'a str>,
    pkh: Option<&'a str>,
}

impl<'a> Who<'a> {
    fn new(peer: SocketAddr) -> Self {
        Who { client: peer.to_string(), key: None, pkh: None }
    }

    fn asking_for(self, key: &'a TezosKey, pkh: &'a str) -> Self {
        Who { key: Some(&key.name), pkh: Some(pkh), ..self }
    }
}

async fn public_key(State(api): State<Api>, Path(pkh): Path<String>) -> Result<Response, ApiError> {
    let unknown = || {
        api.signer.metrics().refuse(PROTOCOL, "unknown_key");
        ApiError::new(StatusCode::NOT_FOUND, format!("no key {pkh} here"))
    };
    let (key, _) = api.find(&pkh).ok_or_else(unknown)?;
    let public_key = api.signer.key(&key.name).and_then(|e| e.public_key()).ok_or_else(unknown)?;
    Ok(Json(serde_json::json!({ "public_key": tezos::public_key_b58(public_key) })).into_response())
}

#[derive(Deserialize)]
struct SignQuery {
    authentication: Option<String>,
    /// The client's signature version (octez's `Signature.V0`…`V3`); only BLS (tz4) keys sign
    /// differently by version.
    version: Option<String>,
}

/// How a key of `algorithm` signs for the client's `version`, as octez-signer's `Handler.sign`
/// chooses (<https://github.com/tezos/tezos-mirror/blob/master/src/bin_signer/handler.ml>):
/// version 1 signs BLS with message augmentation (`signature_v1.ml`), 2 and 3 (and no version,
/// octez's latest) with the proof-of-possession scheme; version 0 predates BLS. Other curves
/// sign alike in every version, so a version sigil does not know is refused only for BLS keys,
/// rather than guessed.
fn bls_scheme(algorithm: Algorithm, version: Option<&str>) -> Result<BlsScheme, String> {
    if algorithm != Algorithm::Bls12_381 {
        return Ok(BlsScheme::Pop);
    }
    match version.map(str::trim) {
        None | Some("" | "2" | "3") => Ok(BlsScheme::Pop),
        Some("1") => Ok(BlsScheme::Augmented),
        Some("0") => Err("signature version 0 has no BLS keys: a tz4 key signs with version 1 or later".into()),
        Some(other) => Err(format!("unknown signature version {other:?} for a tz4 key: sigil knows 1, 2 and 3")),
    }
}

async fn sign(
    State(api): State<Api>,
    Path(pkh): Path<String>,
    Query(query): Query<SignQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let who = Who::new(peer);
    let (key, (_, pkh_bytes)) = api.find(&pkh).ok_or_else(|| api.unknown(&pkh, &who))?;
    let who = who.asking_for(key, &pkh);
    key.policy.check_client(peer.ip()).map_err(|r| api.refuse(r, &who))?;
    let body = body.map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))?;
    let data = decode_body(&body).map_err(|m| api.bad_request(m, &who))?;
    let authentication = query.authentication.as_deref();
    key.policy.check_authentication(pkh_bytes, &data, authentication).map_err(|r| api.refuse(r, &who))?;
    let request = operation::parse(&data).map_err(|e| api.bad_request(format!("cannot sign: {e}"), &who))?;
    key.policy.check_request(&request).map_err(|r| api.refuse(r, &who))?;
    let algorithm = api.algorithm(key).ok_or_else(|| api.unknown(&pkh, &who))?;
    let scheme = bls_scheme(algorithm, query.version.as_deref()).map_err(|m| api.bad_request(m, &who))?;

    let _slot = api.slot(&who)?;
    let chain = request.watermark.map(|w| tezos::chain_id_b58(w.chain_id)).unwrap_or_default();
    let mark = match (request.watermark, request.kind.stream()) {
        (Some(w), Some(stream)) => {
            Some((Mark { level: u64::from(w.level), round: u64::from(w.round), step: 0 }, stream))
        }
        _ => None,
    };
    let payload = tezos::signed_payload(algorithm, &data);
    // An augmented signature is another signature of the same bytes: a repeat in the other
    // scheme is refused like different data, never answered with the stored signature.
    let augmented = (scheme == BlsScheme::Augmented).then(|| [b"augmented:".as_slice(), &data].concat());
    let request_to_sign = SignRequest {
        scheme,
        identity: augmented.as_deref(),
        client: Some(&who.client),
        ..SignRequest::new(&key.name, &chain, request.kind.sign_kind(), mark, &payload)
    };
    let signature = api.signer.sign(request_to_sign).await?.signature;
    if mark.is_none() {
        tracing::info!(key = %key.name, kind = %request.kind, operations = ?request.operations, "signed operations");
    }
    Ok(Json(serde_json::json!({ "signature": tezos::signature_b58(&signature) })).into_response())
}

/// The body is a JSON string of hex, e.g. `"11ed9d217c…"`.
fn decode_body(body: &[u8]) -> Result<Vec<u8>, String> {
    let text: String =
        serde_json::from_slice(body).map_err(|e| format!("the body must be a JSON string of hex bytes: {e}"))?;
    hex::decode(text.trim()).map_err(|e| format!("the body is not hex: {e}"))
}

/// `{}` when no key requires authentication (exactly that: octez reads an empty list as "required").
async fn authorized_keys(State(api): State<Api>) -> Json<serde_json::Value> {
    let mut hashes: Vec<String> = api.keys.iter().flat_map(|k| k.policy.authorized_keys()).map(tezos::pkh).collect();
    hashes.sort();
    hashes.dedup();
    if hashes.is_empty() {
        Json(serde_json::json!({}))
    } else {
        Json(serde_json::json!({ "authorized_keys": hashes }))
    }
}

#[derive(Deserialize)]
struct ProvePossessionQuery {
    /// Prove possession over this public key instead of the signer's own (octez's `bls_pk`).
    bls_pk: Option<String>,
}

/// `GET /bls_prove_possession/<tz4…>`: a proof of possession (`MinPk.Pop.pop_prove`) over the
/// key's own public key, or over `bls_pk`, as octez-signer answers it. Off unless the key's
/// `allowProofOfPossession` is on in the config file *now*, and within `proofOfPossessionUntil`.
/// The octez client sends no `authentication` for this call (`http_gen.ml`), so none is asked
/// for; `allowedIps` applies as to signing. The proof uses its own suite string, so it can never
/// pass for a signature of an operation, and it moves no high-water mark.
async fn prove_possession(
    State(api): State<Api>,
    Path(pkh): Path<String>,
    Query(query): Query<ProvePossessionQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Result<Response, ApiError> {
    let who = Who::new(peer);
    let (key, _) = api.find(&pkh).ok_or_else(|| api.unknown(&pkh, &who))?;
    let who = who.asking_for(key, &pkh);
    key.policy.check_client(peer.ip()).map_err(|r| api.refuse(r, &who))?;
    let public_key = api.signer.key(&key.name).and_then(|e| e.public_key()).ok_or_else(|| api.unknown(&pkh, &who))?;
    if public_key.algorithm() != Algorithm::Bls12_381 {
        let message = format!("{pkh} is not a BLS (tz4) key: only tz4 keys prove possession");
        return Err(api.bad_request(message, &who));
    }
    // Within the in-flight bound: the switch is a file read.
    let _slot = api.slot(&who)?;
    api.switches.check_proof_of_possession(&key.name).map_err(|r| api.refuse(r, &who))?;
    let message = match query.bls_pk.as_deref() {
        Some(text) => {
            let other = tezos::parse_public_key(text).map_err(|e| api.bad_request(format!("bls_pk: {e}"), &who))?;
            if other.algorithm() != Algorithm::Bls12_381 {
                return Err(api.bad_request("bls_pk: expected a BLpk… key".into(), &who));
            }
            other.as_bytes().to_vec()
        }
        None => public_key.as_bytes().to_vec(),
    };
    let request = SignRequest {
        scheme: BlsScheme::ProvePossession,
        client: Some(&who.client),
        ..SignRequest::new(&key.name, "", PROVE_POSSESSION, None, &message)
    };
    let proof = api.signer.sign(request).await?.signature;
    tracing::info!(key = %key.name, over = %query.bls_pk.as_deref().unwrap_or("its own key"), "proved possession");
    Ok(Json(serde_json::json!({ "bls_prove_possession": tezos::signature_b58(&proof) })).into_response())
}

async fn known_keys(State(api): State<Api>) -> Result<Json<serde_json::Value>, ApiError> {
    if !api.switches.list_known_keys() {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "listing keys is off (tezos.listKnownKeys)"));
    }
    let known: Vec<String> = api
        .keys
        .iter()
        .filter_map(|key| api.signer.key(&key.name).and_then(|e| e.public_key()))
        .map(tezos::pkh)
        .collect();
    Ok(Json(serde_json::json!({ "known_keys": known })))
}

/// The request kinds a key's policy allows, as the signer's coarse policy.
pub fn sign_kinds(policy: &TezosPolicy) -> impl Iterator<Item = SignKind> + '_ {
    policy.kinds().map(operation::RequestKind::sign_kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_hex_strings() {
        assert_eq!(decode_body(br#""0312ab""#).unwrap(), vec![0x03, 0x12, 0xab]);
        assert!(decode_body(b"0312ab").unwrap_err().contains("JSON string"));
        assert!(decode_body(br#""03zz""#).unwrap_err().contains("not hex"));
    }
}

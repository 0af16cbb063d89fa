//! A stand-in for GCP Cloud KMS: Google ships no emulator and none is published on PyPI, npm or
//! crates.io, so this follows the public REST surface the official client uses: `GET
//! /v1/{version}/publicKey` and `POST /v1/{version}:asymmetricSign`, CRC32C checks both ways,
//! Google's error body. Keys are real (Ed25519, secp256k1, P-256), so signatures verify anywhere.
//! Faults can be switched on to see what the signer makes of a failing service. The REST
//! reference:
//! <https://cloud.google.com/kms/docs/reference/rest/v1/projects.locations.keyRings.cryptoKeys.cryptoKeyVersions/asymmetricSign>.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use sigil_signer::keys::{Algorithm, PublicKey, SecretKey};

pub use super::Fault;
use super::{ecdsa_as_a_service, signed_by_fault};

struct Key {
    secret: Option<SecretKey>,
    /// The algorithm name getPublicKey reports (another name for a key we cannot sign with).
    algorithm: &'static str,
}

#[derive(Default)]
struct Inner {
    keys: BTreeMap<String, Key>,
    fault: Mutex<Fault>,
    signs: AtomicU64,
}

/// A running fake; stops when dropped.
pub struct FakeGcpKms {
    pub endpoint: String,
    inner: Arc<Inner>,
    _server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGcpKms {
    fn drop(&mut self) {
        self._server.abort();
    }
}

/// The resource name of key `name`'s version 1 in the fake's one key ring.
pub fn key_version(name: &str) -> String {
    format!("projects/sigil-test/locations/global/keyRings/sigil/cryptoKeys/{name}/cryptoKeyVersions/1")
}

/// GCP's algorithm name for one of ours; Cloud KMS has no BLS12-381 keys.
fn algorithm_name(algorithm: Algorithm) -> Option<&'static str> {
    match algorithm {
        Algorithm::Ed25519 => Some("EC_SIGN_ED25519"),
        Algorithm::Secp256k1 => Some("EC_SIGN_SECP256K1_SHA256"),
        Algorithm::P256 => Some("EC_SIGN_P256_SHA256"),
        Algorithm::Bls12_381 => None,
    }
}

impl FakeGcpKms {
    /// Serves `keys` (by name) on a loopback port. `unsupported` names keys that exist but have an
    /// algorithm sigil does not sign with.
    pub async fn start(keys: Vec<(&str, SecretKey)>, unsupported: &[(&str, &'static str)]) -> FakeGcpKms {
        let mut inner = Inner::default();
        for (name, secret) in keys {
            // A test that hands the fake a key Cloud KMS cannot hold is wrong, not the signer.
            let algorithm = algorithm_name(secret.algorithm()).expect("Cloud KMS holds no BLS12-381 keys");
            inner.keys.insert(key_version(name), Key { secret: Some(secret), algorithm });
        }
        for (name, algorithm) in unsupported {
            inner.keys.insert(key_version(name), Key { secret: None, algorithm });
        }
        let inner = Arc::new(inner);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake");
        let addr: SocketAddr = listener.local_addr().unwrap();
        let app = Router::new().route("/v1/{*resource}", any(handle)).with_state(inner.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        FakeGcpKms { endpoint: format!("http://{addr}"), inner, _server: server }
    }

    pub fn set_fault(&self, fault: Fault) {
        *self.inner.fault.lock().unwrap() = fault;
    }

    /// asymmetricSign calls answered with a signature.
    pub fn signs(&self) -> u64 {
        self.inner.signs.load(Ordering::SeqCst)
    }

    pub fn public_key(&self, name: &str) -> PublicKey {
        self.inner.keys[&key_version(name)].secret.as_ref().expect("a signing key").public_key()
    }
}

fn error(status: StatusCode, name: &str, message: &str) -> Response {
    let body = json!({"error": {"code": status.as_u16(), "message": message, "status": name}});
    (status, Json(body)).into_response()
}

fn crc(bytes: &[u8]) -> String {
    crc32c::crc32c(bytes).to_string()
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    Path(resource): Path<String>,
    body: String,
) -> Response {
    let fault = *inner.fault.lock().unwrap();
    match fault {
        Fault::Unavailable => {
            return error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "The service is unavailable.")
        }
        Fault::Unauthenticated => {
            return error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials.",
            )
        }
        Fault::PermissionDenied => {
            return error(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                "Permission 'cloudkms.cryptoKeyVersions.useToSign' denied on resource.",
            )
        }
        Fault::Slow(delay) => tokio::time::sleep(delay).await,
        _ => {}
    }
    if let (&Method::GET, Some(version)) = (&method, resource.strip_suffix("/publicKey")) {
        return public_key(&inner, version);
    }
    if let (&Method::POST, Some(version)) = (&method, resource.strip_suffix(":asymmetricSign")) {
        return asymmetric_sign(&inner, version, &body, fault);
    }
    error(StatusCode::NOT_FOUND, "NOT_FOUND", &format!("{method} /v1/{resource} is not part of this fake"))
}

fn not_found(version: &str) -> Response {
    error(StatusCode::NOT_FOUND, "NOT_FOUND", &format!("CryptoKeyVersion {version} not found."))
}

fn public_key(inner: &Inner, version: &str) -> Response {
    let Some(key) = inner.keys.get(version) else { return not_found(version) };
    let der = match &key.secret {
        Some(secret) => spki_der(secret),
        // An RSA-sized blob: what matters is that the algorithm is refused.
        None => vec![0x30; 64],
    };
    let pem = pem(&der);
    Json(json!({
        "pem": pem,
        "algorithm": key.algorithm,
        "pemCrc32c": crc(pem.as_bytes()),
        "name": version,
        "protectionLevel": "HSM",
    }))
    .into_response()
}

fn asymmetric_sign(inner: &Inner, version: &str, body: &str, fault: Fault) -> Response {
    let Some(key) = inner.keys.get(version) else { return not_found(version) };
    let invalid = |message: &str| error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message);
    let Some(secret) = &key.secret else {
        return invalid(&format!("The key's algorithm {} does not fit this fake.", key.algorithm));
    };
    let Ok(request) = serde_json::from_str::<Value>(body) else { return invalid("Invalid JSON payload.") };
    let decode = |value: &Value| value.as_str().and_then(|text| B64.decode(text).ok());
    let (payload, sent_crc, verified_field) = match secret.algorithm() {
        Algorithm::Ed25519 => {
            if request.get("digest").is_some() {
                return invalid("Digest is not supported for EC_SIGN_ED25519; send data.");
            }
            (request.get("data").and_then(decode), request.get("dataCrc32c"), "verifiedDataCrc32c")
        }
        _ => {
            if request.get("data").is_some() {
                return invalid("This fake signs ECDSA keys over a digest; send digest.sha256.");
            }
            (request.pointer("/digest/sha256").and_then(decode), request.get("digestCrc32c"), "verifiedDigestCrc32c")
        }
    };
    let Some(payload) = payload else { return invalid("Nothing to sign.") };
    if secret.algorithm().signs_digest() && payload.len() != 32 {
        return invalid("The digest must be 32 bytes for a SHA-256 algorithm.");
    }
    let verified = match sent_crc {
        None => false,
        Some(sent) if sent.as_str() == Some(&crc(&payload)) => {
            // Corrupt the exchange as if the bytes changed on the way in: KMS would not confirm.
            let mut fault = inner.fault.lock().unwrap();
            if let Fault::CorruptRequest(left) = *fault {
                *fault = if left > 1 { Fault::CorruptRequest(left - 1) } else { Fault::None };
                false
            } else {
                true
            }
        }
        Some(_) => return invalid("The checksum in field dataCrc32c/digestCrc32c did not match the data."),
    };
    let raw: [u8; 64] = secret
        .sign(&signed_by_fault(fault, secret.algorithm(), payload))
        .expect("the fake signs")
        .as_bytes()
        .try_into()
        .expect("64 bytes");
    let count = inner.signs.fetch_add(1, Ordering::SeqCst);
    let signature = match secret.algorithm() {
        Algorithm::Ed25519 | Algorithm::Bls12_381 => raw.to_vec(),
        // DER, and high S every other time, as a real service may.
        Algorithm::Secp256k1 => {
            k256::ecdsa::Signature::from_slice(&ecdsa_as_a_service(Algorithm::Secp256k1, raw, count))
                .unwrap()
                .to_der()
                .as_bytes()
                .to_vec()
        }
        Algorithm::P256 => p256::ecdsa::Signature::from_slice(&ecdsa_as_a_service(Algorithm::P256, raw, count))
            .unwrap()
            .to_der()
            .as_bytes()
            .to_vec(),
    };
    let mut answer = json!({
        "signature": B64.encode(&signature),
        "signatureCrc32c": crc(&signature),
        "name": version,
        "protectionLevel": "HSM",
    });
    answer[verified_field] = json!(verified);
    Json(answer).into_response()
}

/// The key as SubjectPublicKeyInfo DER.
fn spki_der(secret: &SecretKey) -> Vec<u8> {
    use p256::pkcs8::EncodePublicKey;
    let bytes = secret.to_bytes();
    match secret.algorithm() {
        Algorithm::Bls12_381 => unreachable!("start() takes no BLS12-381 key"),
        Algorithm::Ed25519 => {
            let prefix = hex::decode("302a300506032b6570032100").unwrap();
            [&prefix[..], secret.public_key().as_bytes()].concat()
        }
        Algorithm::Secp256k1 => k256::SecretKey::from_slice(&bytes[..])
            .unwrap()
            .public_key()
            .to_public_key_der()
            .unwrap()
            .as_bytes()
            .to_vec(),
        Algorithm::P256 => p256::SecretKey::from_slice(&bytes[..])
            .unwrap()
            .public_key()
            .to_public_key_der()
            .unwrap()
            .as_bytes()
            .to_vec(),
    }
}

fn pem(der: &[u8]) -> String {
    let body = B64.encode(der);
    let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n"))
}

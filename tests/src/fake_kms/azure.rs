//! A stand-in for Azure Key Vault and the Entra token endpoint, over HTTPS (azure_core refuses
//! bearer tokens over plain HTTP) with a self-signed certificate the client is told to trust
//! through `SSL_CERT_FILE`. It plays the whole Workload Identity exchange: the client sends a
//! request without a token, gets the vault's 401 challenge, trades the pod's federated token for
//! an access token at `AZURE_AUTHORITY_HOST`, and then gets keys (JWK) and signatures (`r || s`,
//! base64url) for `ES256` / `ES256K` digests.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use k256::elliptic_curve::sec1::ToEncodedPoint;
use serde_json::{json, Value};
use sigil_signer::keys::{Algorithm, PublicKey, SecretKey};

use super::{ecdsa_as_a_service, signed_by_fault, Fault};

pub const TENANT: &str = "72f988bf-0000-0000-0000-000000000000";
pub const CLIENT_ID: &str = "5b1e4f3a-0000-0000-0000-000000000000";
/// Every key's one version.
pub const VERSION: &str = "0123456789abcdef0123456789abcdef";

struct Inner {
    url: String,
    keys: BTreeMap<String, SecretKey>,
    federated_token: String,
    issued: Mutex<HashSet<String>>,
    fault: Mutex<Fault>,
    signs: AtomicU64,
}

/// A running fake; stops when dropped. Its certificate and the pod's federated token are files in
/// the directory given to [`FakeKeyVault::start`].
pub struct FakeKeyVault {
    pub url: String,
    inner: Arc<Inner>,
    ca_file: PathBuf,
    token_file: PathBuf,
    _server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKeyVault {
    fn drop(&mut self) {
        self._server.abort();
    }
}

impl FakeKeyVault {
    pub async fn start(keys: Vec<(&str, SecretKey)>, dir: &Path) -> FakeKeyVault {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake");
        let url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let ca_file = dir.join("fake-key-vault.pem");
        std::fs::write(&ca_file, certified.cert.pem()).unwrap();
        let federated_token = format!("eyJhbGciOiJSUzI1NiJ9.{}.sig", hex::encode(rand_bytes()));
        let token_file = dir.join("azure-identity-token");
        std::fs::write(&token_file, &federated_token).unwrap();

        let inner = Arc::new(Inner {
            url: url.clone(),
            keys: keys.into_iter().map(|(name, key)| (name.to_string(), key)).collect(),
            federated_token,
            issued: Mutex::new(HashSet::new()),
            fault: Mutex::new(Fault::None),
            signs: AtomicU64::new(0),
        });
        let app =
            Router::new().route("/{tenant}/oauth2/v2.0/token", post(token)).fallback(vault).with_state(inner.clone());
        let der = rustls::pki_types::CertificateDer::from(certified.cert.der().to_vec());
        let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der], key)
            .unwrap();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let mut http = hyper::server::conn::http1::Builder::new();
                    http.timer(TokioTimer::new());
                    let _ = http.serve_connection(TokioIo::new(tls), TowerToHyperService::new(app)).await;
                });
            }
        });
        FakeKeyVault { url, inner, ca_file, token_file, _server: server }
    }

    /// What a pod with Entra Workload Identity has (the AKS webhook sets these), pointed at the
    /// fake, plus trust in the fake's certificate.
    pub fn pod_env(&self) -> Vec<(String, String)> {
        [
            ("AZURE_AUTHORITY_HOST", self.url.clone()),
            ("AZURE_TENANT_ID", TENANT.to_string()),
            ("AZURE_CLIENT_ID", CLIENT_ID.to_string()),
            ("AZURE_FEDERATED_TOKEN_FILE", self.token_file.display().to_string()),
            ("SSL_CERT_FILE", self.ca_file.display().to_string()),
        ]
        .map(|(name, value)| (name.to_string(), value))
        .to_vec()
    }

    pub fn set_fault(&self, fault: Fault) {
        *self.inner.fault.lock().unwrap() = fault;
    }

    /// Sign calls answered with a signature.
    pub fn signs(&self) -> u64 {
        self.inner.signs.load(Ordering::SeqCst)
    }

    pub fn public_key(&self, name: &str) -> PublicKey {
        self.inner.keys[name].public_key()
    }
}

fn rand_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    bytes
}

/// Entra's token endpoint for the client-assertion grant Workload Identity uses.
async fn token(
    State(inner): State<Arc<Inner>>,
    UrlPath(tenant): UrlPath<String>,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    let refused = |code: u32, description: &str| {
        let body = json!({"error": "invalid_client", "error_description": format!("AADSTS{code}: {description}"),
                          "error_codes": [code]});
        (StatusCode::UNAUTHORIZED, Json(body)).into_response()
    };
    if tenant != TENANT || field("client_id") != CLIENT_ID {
        return refused(700016, "Application not found in the directory.");
    }
    let bad_assertion = field("client_assertion") != inner.federated_token
        || field("grant_type") != "client_credentials"
        || *inner.fault.lock().unwrap() == Fault::Unauthenticated;
    if bad_assertion {
        return refused(700213, "No matching federated identity record found for presented assertion.");
    }
    let access_token = hex::encode(rand_bytes());
    inner.issued.lock().unwrap().insert(access_token.clone());
    Json(json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": access_token}))
        .into_response()
}

fn vault_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": {"code": code, "message": message}}))).into_response()
}

/// `GET /keys/{name}[/{version}]` and `POST /keys/{name}/{version}/sign` (the version may be
/// empty: the client then asks for `/keys/{name}//sign`).
async fn vault(State(inner): State<Arc<Inner>>, request: Request) -> Response {
    let authorized = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|token| inner.issued.lock().unwrap().contains(token));
    if !authorized {
        let challenge = format!(r#"Bearer authorization="{}/{TENANT}", resource="https://vault.azure.net""#, inner.url);
        let mut response = vault_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "AKV10000: Request is missing a Bearer or PoP token.",
        );
        response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge.parse().unwrap());
        return response;
    }
    let fault = *inner.fault.lock().unwrap();
    match fault {
        Fault::Unavailable => {
            return vault_error(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", "The service is unavailable.")
        }
        Fault::PermissionDenied => {
            return vault_error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "The user, group or application does not have keys sign permission on this key vault.",
            )
        }
        Fault::Slow(delay) => tokio::time::sleep(delay).await,
        _ => {}
    }
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (name, version, action) = match parts.as_slice() {
        ["keys", name] => (*name, "", None),
        ["keys", name, version] => (*name, *version, None),
        ["keys", name, version, action] => (*name, *version, Some(*action)),
        _ => {
            return vault_error(StatusCode::NOT_FOUND, "NotFound", &format!("{method} {path} is not part of this fake"))
        }
    };
    let Some(secret) = inner.keys.get(name).filter(|_| version.is_empty() || version == VERSION) else {
        return vault_error(
            StatusCode::NOT_FOUND,
            "KeyNotFound",
            &format!("A key with (name/id) {name} was not found in this key vault."),
        );
    };
    let kid = format!("{}/keys/{name}/{VERSION}", inner.url);
    let body = axum::body::to_bytes(request.into_body(), 64 * 1024).await.unwrap_or_default();
    match (method.as_str(), action) {
        ("GET", None) => Json(json!({"key": jwk(secret, &kid), "attributes": {"enabled": true}})).into_response(),
        ("POST", Some("sign")) => sign(&inner, secret, &kid, &body, fault),
        _ => vault_error(StatusCode::METHOD_NOT_ALLOWED, "BadParameter", "Unsupported operation."),
    }
}

fn jwk(secret: &SecretKey, kid: &str) -> Value {
    let public = secret.public_key();
    let point = match secret.algorithm() {
        Algorithm::Secp256k1 => {
            k256::PublicKey::from_sec1_bytes(public.as_bytes()).unwrap().to_encoded_point(false).as_bytes().to_vec()
        }
        _ => p256::PublicKey::from_sec1_bytes(public.as_bytes()).unwrap().to_encoded_point(false).as_bytes().to_vec(),
    };
    let crv = if secret.algorithm() == Algorithm::Secp256k1 { "P-256K" } else { "P-256" };
    json!({"kid": kid, "kty": "EC-HSM", "crv": crv, "key_ops": ["sign", "verify"],
           "x": B64URL.encode(&point[1..33]), "y": B64URL.encode(&point[33..65])})
}

fn sign(inner: &Inner, secret: &SecretKey, kid: &str, body: &[u8], fault: Fault) -> Response {
    let bad = |message: &str| vault_error(StatusCode::BAD_REQUEST, "BadParameter", message);
    let Ok(request) = serde_json::from_slice::<Value>(body) else { return bad("The request body is not JSON.") };
    let expected = if secret.algorithm() == Algorithm::Secp256k1 { "ES256K" } else { "ES256" };
    if request["alg"] != expected {
        return bad(&format!("Algorithm {} is not valid for this key; use {expected}.", request["alg"]));
    }
    let digest = request["value"].as_str().and_then(|v| B64URL.decode(v).ok()).filter(|d| d.len() == 32);
    let Some(digest) = digest else { return bad("The digest must be 32 bytes for ES256/ES256K.") };
    let raw: [u8; 64] = secret
        .sign(&signed_by_fault(fault, secret.algorithm(), digest))
        .unwrap()
        .as_bytes()
        .try_into()
        .expect("64 bytes");
    let count = inner.signs.fetch_add(1, Ordering::SeqCst);
    let raw = ecdsa_as_a_service(secret.algorithm(), raw, count);
    Json(json!({"kid": kid, "value": B64URL.encode(raw)})).into_response()
}

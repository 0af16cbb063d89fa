//! The sidecar-injection webhook: Pods labelled `sigil.dev/signer: <RemoteSigner>` get the
//! signer at CREATE. The mutation is the pure [`patch::inject`]; this module adds the admission
//! decision, the HTTPS server and the webhook configuration the operator applies itself.

pub mod cache;
pub mod patch;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt as _;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::controller::desired::FIELD_MANAGER;
use crate::controller::status;
use crate::images::ImagePolicy;
use crate::metrics::Metrics;
use cache::SignerCache;
use patch::SIGNER_LABEL;
use sigil_signer::server::http::ConnectionLimits;

/// The largest admission request read: a Pod is at most ~1.5 MiB in etcd, and the API server
/// refuses request bodies over 3 MiB.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 512;
/// After a failed certificate switch (the webhook configuration could not be updated), retry after.
const RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Where the HTTPS server listens.
    pub addr: SocketAddr,
    /// Out of cluster: register the webhook by this URL (`https://127.0.0.1:PORT`). In cluster:
    /// `None`, and the webhook is reached through `service` in `namespace`.
    pub url: Option<String>,
    pub service: String,
    pub service_port: u16,
    /// The operator's namespace: the TLS Secret lives there, and its pods are never injected.
    pub namespace: String,
    /// Only inject in this namespace (the operator's `--namespace`).
    pub watch_namespace: Option<String>,
    /// The signer images pods may run.
    pub images: ImagePolicy,
    /// A ClusterRole that owns the webhook registration and certificate, so that they go when it
    /// goes (the Helm chart names its own); `run` looks up its uid into `owner`.
    pub owner_cluster_role: Option<String>,
    pub owner: Option<OwnerReference>,
    /// Certificate lifetimes.
    pub tls: tls::Policy,
}

impl WebhookConfig {
    /// One configuration per scope, so that namespace-scoped installs do not collide.
    pub fn configuration_name(&self) -> String {
        match &self.watch_namespace {
            Some(namespace) => format!("sigil-operator-{namespace}"),
            None => "sigil-operator".into(),
        }
    }

    fn secret_name(&self) -> String {
        format!("{}-webhook-tls", self.configuration_name())
    }

    /// The names the serving certificate must carry: the URL's host (an IP address becomes an IP
    /// SAN), or the Service's DNS names.
    pub fn names(&self) -> Vec<String> {
        match &self.url {
            Some(url) => {
                let authority = url.trim_start_matches("https://").split(['/', '?', '#']).next().unwrap_or_default();
                let host = match authority.strip_prefix('[') {
                    Some(v6) => v6.split(']').next().unwrap_or_default(),
                    None => authority.split(':').next().unwrap_or_default(),
                };
                vec![host.to_string()]
            }
            None => {
                let (service, namespace) = (&self.service, &self.namespace);
                vec![
                    format!("{service}.{namespace}.svc"),
                    format!("{service}.{namespace}.svc.cluster.local"),
                    format!("{service}.{namespace}"),
                ]
            }
        }
    }
}

/// The MutatingWebhookConfiguration: CREATE of opted-in Pods only, fail closed (safe because the
/// selector is opt-in), no side effects, re-invoked if another webhook changes the pod.
pub fn webhook_configuration(config: &WebhookConfig, ca_pem: &str) -> serde_json::Value {
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let client_config = match &config.url {
        Some(url) => json!({ "url": format!("{}/mutate", url.trim_end_matches('/')), "caBundle": ca_bundle }),
        None => json!({
            "service": { "namespace": config.namespace, "name": config.service, "port": config.service_port, "path": "/mutate" },
            "caBundle": ca_bundle,
        }),
    };
    let namespace_selector = match &config.watch_namespace {
        Some(namespace) => json!({ "matchLabels": { "kubernetes.io/metadata.name": namespace } }),
        None => json!({ "matchExpressions": [{
            "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", config.namespace],
        }] }),
    };
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": config.configuration_name(),
            "labels": { "app.kubernetes.io/managed-by": "sigil-operator" },
            "ownerReferences": config.owner.iter().collect::<Vec<_>>(),
        },
        "webhooks": [{
            "name": "inject.sigil.dev",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "reinvocationPolicy": "IfNeeded",
            "timeoutSeconds": 5,
            "clientConfig": client_config,
            "rules": [{ "operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced" }],
            "objectSelector": { "matchExpressions": [{ "key": SIGNER_LABEL, "operator": "Exists" }] },
            "namespaceSelector": namespace_selector,
        }],
    })
}

async fn register(client: &Client, config: &WebhookConfig, ca_pem: &str) -> Result<(), kube::Error> {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let object = webhook_configuration(config, ca_pem);
    api.patch(&config.configuration_name(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&object)).await?;
    Ok(())
}

#[derive(Clone)]
struct Admission {
    client: Client,
    metrics: Arc<Metrics>,
    signers: SignerCache,
    images: Arc<ImagePolicy>,
    native_sidecars: bool,
}

/// The admission decision for one request.
pub async fn review(
    client: &Client,
    signers: &SignerCache,
    images: &ImagePolicy,
    native_sidecars: bool,
    request: &AdmissionRequest<Pod>,
) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let (Operation::Create, Some(pod)) = (&request.operation, &request.object) else { return response };
    let Some(name) = pod.labels().get(SIGNER_LABEL) else { return response };
    let namespace = request.namespace.clone().unwrap_or_default();
    // Fail closed: a validator must not start without its signer.
    let rs = match signers.get(client, &namespace, name).await {
        Ok(Some(rs)) => rs,
        Ok(None) => {
            return response.deny(format!(
                "sigil: RemoteSigner {name} (label {SIGNER_LABEL}) does not exist in namespace {namespace}; \
                 create it, or remove the label"
            ))
        }
        Err(error) => return response.deny(format!("sigil: cannot read RemoteSigner {namespace}/{name}: {error}")),
    };
    let ready = rs.status.as_ref().and_then(|s| s.condition(status::READY));
    match ready {
        Some(c) if c.status == "True" => {}
        Some(c) => {
            return response.deny(format!(
                "sigil: RemoteSigner {namespace}/{name} is not Ready ({}: {}); the pod would start without a working signer",
                c.reason, c.message
            ))
        }
        None => {
            return response.deny(format!(
                "sigil: RemoteSigner {namespace}/{name} has no status yet; is sigil-operator running?"
            ))
        }
    }
    let image = match images.image_for(rs.spec.sidecar.as_ref().and_then(|s| s.image.as_deref())) {
        Ok(image) => image,
        Err(reason) => return response.deny(format!("sigil: RemoteSigner {namespace}/{name}: {reason}")),
    };
    match patch::inject(pod, &rs, &image, native_sidecars) {
        Err(reason) => response.deny(format!("sigil: {reason}")),
        Ok(injection) => {
            let ops = match serde_json::from_value::<json_patch::Patch>(serde_json::Value::Array(injection.patch)) {
                Ok(ops) => ops,
                Err(error) => return response.deny(format!("sigil: internal error building the patch: {error}")),
            };
            let mut response = match response.with_patch(ops) {
                Ok(response) => response,
                Err(error) => return AdmissionResponse::from(request).deny(format!("sigil: {error}")),
            };
            if !injection.warnings.is_empty() {
                response.warnings = Some(injection.warnings.iter().map(|w| format!("sigil: {w}")).collect());
            }
            response
        }
    }
}

async fn mutate(State(admission): State<Admission>, headers: HeaderMap, body: Body) -> Response {
    let started = std::time::Instant::now();
    // Whoever can reach the port may call this: anything but an admission review of a Pod gets a
    // bare 400, with nothing about why.
    let Some(request) = admission_request(&headers, body).await else {
        return (StatusCode::BAD_REQUEST, "bad request\n").into_response();
    };
    let response =
        review(&admission.client, &admission.signers, &admission.images, admission.native_sidecars, &request).await;
    let answer = Json(response.into_review()).into_response();
    admission.metrics.admission_duration.observe(started.elapsed().as_secs_f64());
    answer
}

/// The request inside `body` when it is a JSON `admission.k8s.io/v1` AdmissionReview of a Pod of
/// at most [`MAX_BODY`] bytes; `None` for anything else.
async fn admission_request(headers: &HeaderMap, body: Body) -> Option<AdmissionRequest<Pod>> {
    let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return None;
    }
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|length| length > MAX_BODY) {
        return None;
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.ok()?;
    let review: AdmissionReview<Pod> = serde_json::from_slice(&bytes).ok()?;
    if review.types.api_version != "admission.k8s.io/v1" || review.types.kind != "AdmissionReview" {
        return None;
    }
    let request: AdmissionRequest<Pod> = review.try_into().ok()?;
    let pod = (request.kind.group.as_str(), request.kind.version.as_str(), request.kind.kind.as_str())
        == ("", "v1", "Pod")
        && request.resource.resource == "pods"
        && request.sub_resource.is_none();
    pod.then_some(request)
}

/// Native sidecars (init containers with restartPolicy Always) are on by default from Kubernetes
/// 1.29; older API servers get the signer as a regular container.
async fn native_sidecars(client: &Client) -> bool {
    match client.apiserver_version().await {
        Ok(version) => {
            let minor: u32 = version.minor.trim_end_matches('+').parse().unwrap_or(u32::MAX);
            let native = version.major != "1" || minor >= 29;
            if !native {
                tracing::info!(version = %version.git_version, "no native sidecars on this cluster; injecting a regular container");
            }
            native
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read the cluster version; assuming native sidecars");
            true
        }
    }
}

/// Provisions TLS, registers the webhook, and serves it until `shutdown`. Keeps the certificate
/// current without a restart: see [`maintain`].
pub async fn run(
    client: Client,
    config: WebhookConfig,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let native_sidecars = native_sidecars(&client).await;
    let mut config = config;
    if let Some(name) = &config.owner_cluster_role {
        let role = Api::<ClusterRole>::all(client.clone())
            .get(name)
            .await
            .map_err(|e| anyhow::anyhow!("cannot read ClusterRole {name} (--owner-cluster-role): {e}"))?;
        config.owner = Some(OwnerReference {
            api_version: "rbac.authorization.k8s.io/v1".into(),
            kind: "ClusterRole".into(),
            name: name.clone(),
            uid: role.metadata.uid.unwrap_or_default(),
            ..Default::default()
        });
    }
    let material = ensure_certificate(&client, &config).await?;
    let resolver = tls::Resolver::new(&material)?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (--webhook-addr): {e}", config.addr))?;
    tracing::info!(addr = %listener.local_addr()?, serial = %material.serial(), "webhook listening");
    register(&client, &config, &material.ca_pem).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot register MutatingWebhookConfiguration {}: {e}; the operator needs patch on it \
             (and create, for its first registration)",
            config.configuration_name()
        )
    })?;
    let maintainer = tokio::spawn(maintain(client.clone(), config.clone(), resolver.clone(), material));

    let app = Router::new()
        .route("/mutate", post(mutate))
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .with_state(Admission {
            signers: SignerCache::start(&client, config.watch_namespace.as_deref(), metrics.clone()),
            metrics,
            client,
            images: Arc::new(config.images.clone()),
            native_sidecars,
        });
    serve(listener, resolver, app, shutdown).await;
    maintainer.abort();
    Ok(())
}

async fn ensure_certificate(client: &Client, config: &WebhookConfig) -> Result<tls::Material, tls::TlsError> {
    let owner = config.owner.as_ref();
    tls::ensure(client, &config.namespace, &config.secret_name(), &config.names(), owner, &config.tls).await
}

/// Keeps this replica's certificate current. It watches the one Secret every replica shares, so
/// a certificate another replica renewed is served here within seconds; and it wakes when the
/// certificate is due (renewal at two thirds, a staged CA's promotion, an expired CA leaving the
/// caBundle), at least hourly, to renew it itself. A changed caBundle is registered before a
/// certificate it must vouch for is served.
async fn maintain(client: Client, config: WebhookConfig, resolver: Arc<tls::Resolver>, mut current: tls::Material) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &config.namespace);
    let selector = format!("metadata.name={}", config.secret_name());
    let watch = watcher(secrets, watcher::Config::default().fields(&selector)).default_backoff();
    tokio::pin!(watch);
    let mut registered = current.ca_pem.clone();
    let mut retry = false;
    loop {
        let now = Timestamp::now();
        let wait = if retry {
            RETRY
        } else {
            Duration::try_from(tls::next_check(&current, now, &config.tls).duration_since(now)).unwrap_or(RETRY)
        };
        let fresh = tokio::select! {
            event = watch.next() => match event {
                Some(Ok(watcher::Event::Apply(secret) | watcher::Event::InitApply(secret))) => {
                    let stored = tls::from_secret(&secret);
                    match tls::plan(Some(&stored), &config.names(), Timestamp::now(), &config.tls) {
                        Ok(None) => Ok(stored),
                        // Not usable as it is (for our names, say): make it so.
                        _ => ensure_certificate(&client, &config).await,
                    }
                }
                Some(Ok(watcher::Event::Delete(_))) => ensure_certificate(&client, &config).await,
                Some(Ok(_)) => continue,
                Some(Err(error)) => {
                    // The stream backs off by itself before the next attempt.
                    tracing::warn!(%error, "cannot watch the webhook certificate Secret; retrying");
                    continue;
                }
                None => {
                    tracing::error!("the webhook certificate watch ended; certificates are no longer renewed");
                    return;
                }
            },
            _ = tokio::time::sleep(wait) => {
                // Also re-register now and then: the configuration may have been deleted or edited.
                registered.clear();
                ensure_certificate(&client, &config).await
            }
        };
        let fresh = match fresh {
            Ok(fresh) => fresh,
            Err(error) => {
                tracing::warn!(error = %error, "cannot check the webhook certificate; retrying");
                retry = true;
                continue;
            }
        };
        if fresh.ca_pem != registered {
            if let Err(error) = register(&client, &config, &fresh.ca_pem).await {
                // The new certificate may need the new caBundle: keep serving the old one.
                tracing::warn!(%error, "cannot update the webhook configuration's caBundle; retrying");
                retry = true;
                continue;
            }
            registered = fresh.ca_pem.clone();
            tracing::info!(cas = fresh.bundle_len(), "registered the webhook caBundle");
        }
        retry = false;
        if (&fresh.cert_pem, &fresh.key_pem) != (&current.cert_pem, &current.key_pem) {
            if let Err(error) = resolver.replace(&fresh) {
                tracing::warn!(%error, "cannot load the renewed webhook certificate; keeping the current one");
                retry = true;
                continue;
            }
            tracing::info!(serial = %fresh.serial(), not_after = ?fresh.not_after(), "serving a renewed webhook certificate");
        }
        current = fresh;
    }
}

/// Serves HTTPS until `shutdown` through the signer's accept loop (bounded connections, deadlines
/// on the handshake and headers, a pause after a failed accept, drain). A connection opened before
/// the certificate was renewed answers its next request with `Connection: close`: the API server
/// then reconnects and checks the new certificate while the old one is still valid, and never has
/// a kept-alive connection closed under a request it is sending.
async fn serve(
    listener: tokio::net::TcpListener,
    resolver: Arc<tls::Resolver>,
    app: Router,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(resolver.clone()));
    let handshake = {
        let resolver = resolver.clone();
        move |stream| {
            let (acceptor, generation) = (acceptor.clone(), CertificateGeneration(resolver.generation()));
            async move { Some((acceptor.accept(stream).await.ok()?, generation)) }
        }
    };
    let app = app.layer(axum::middleware::from_fn_with_state(resolver, close_after_renewal));
    let limits = ConnectionLimits { max_connections: MAX_CONNECTIONS, ..ConnectionLimits::default() };
    sigil_signer::server::http::serve_with(listener, app, limits, shutdown, handshake).await;
}

/// The certificate a connection was opened under.
#[derive(Clone, Copy)]
struct CertificateGeneration(u64);

async fn close_after_renewal(
    State(resolver): State<Arc<tls::Resolver>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let opened_under = request.extensions().get::<CertificateGeneration>().copied();
    let mut response = next.run(request).await;
    if opened_under.is_some_and(|CertificateGeneration(generation)| generation != resolver.generation()) {
        response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: Option<&str>) -> WebhookConfig {
        WebhookConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            url: url.map(String::from),
            service: "sigil-operator".into(),
            service_port: 443,
            namespace: "sigil".into(),
            watch_namespace: None,
            images: ImagePolicy::new("sigil-signer:test", &[]),
            owner_cluster_role: None,
            owner: None,
            tls: tls::Policy::default(),
        }
    }

    #[test]
    fn names_are_the_url_host_or_the_service_names() {
        assert_eq!(config(Some("https://127.0.0.1:8443")).names(), ["127.0.0.1"]);
        assert_eq!(config(Some("https://[::1]:8443/x")).names(), ["::1"]);
        assert_eq!(config(Some("https://webhook.example.com/")).names(), ["webhook.example.com"]);
        assert_eq!(
            config(None).names(),
            ["sigil-operator.sigil.svc", "sigil-operator.sigil.svc.cluster.local", "sigil-operator.sigil"]
        );
    }

    async fn parsed(content_type: Option<&str>, body: &str) -> bool {
        let mut headers = HeaderMap::new();
        if let Some(content_type) = content_type {
            headers.insert(header::CONTENT_TYPE, content_type.parse().unwrap());
        }
        admission_request(&headers, Body::from(body.to_string())).await.is_some()
    }

    fn review_of(kind: &str, resource: &str, api_version: &str) -> String {
        json!({
            "apiVersion": api_version, "kind": "AdmissionReview",
            "request": {
                "uid": "1", "kind": { "group": "", "version": "v1", "kind": kind },
                "resource": { "group": "", "version": "v1", "resource": resource },
                "operation": "CREATE", "userInfo": {}, "namespace": "n",
                "object": { "apiVersion": "v1", "kind": kind, "metadata": { "name": "p" } },
            }
        })
        .to_string()
    }

    #[tokio::test]
    async fn only_admission_reviews_of_pods_are_read() {
        let pod = review_of("Pod", "pods", "admission.k8s.io/v1");
        assert!(parsed(Some("application/json"), &pod).await);
        assert!(parsed(Some("application/json; charset=utf-8"), &pod).await);
        assert!(!parsed(None, &pod).await, "no content type");
        assert!(!parsed(Some("text/plain"), &pod).await);
        assert!(!parsed(Some("application/json"), &review_of("Pod", "pods", "admission.k8s.io/v1beta1")).await);
        assert!(!parsed(Some("application/json"), &review_of("Secret", "secrets", "admission.k8s.io/v1")).await);
        assert!(!parsed(Some("application/json"), "{}").await);
        assert!(!parsed(Some("application/json"), "not json").await);
        let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(MAX_BODY));
        assert!(!parsed(Some("application/json"), &huge).await);
    }
}

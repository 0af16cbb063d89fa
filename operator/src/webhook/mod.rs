//! The sidecar-injection webhook: Pods labelled `sigil.dev/signer: <RemoteSigner>` get the
//! signer at CREATE. The mutation is the pure [`patch::inject`]; this module adds the admission
//! decision, the HTTPS server and the webhook configuration the operator applies itself.

pub mod patch;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::api::RemoteSigner;
use crate::controller::desired::FIELD_MANAGER;
use crate::images::ImagePolicy;
use patch::SIGNER_LABEL;

/// How often the certificate is checked for renewal.
const RENEW_CHECK: Duration = Duration::from_secs(12 * 3600);

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

    /// The names the serving certificate must carry.
    fn names(&self) -> Vec<String> {
        match &self.url {
            Some(url) => {
                let host = url.trim_start_matches("https://").split(['/', ':']).next().unwrap_or_default();
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
    images: Arc<ImagePolicy>,
    native_sidecars: bool,
}

/// The admission decision for one request.
pub async fn review(
    client: &Client,
    images: &ImagePolicy,
    native_sidecars: bool,
    request: &AdmissionRequest<Pod>,
) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let (Operation::Create, Some(pod)) = (&request.operation, &request.object) else { return response };
    let Some(name) = pod.labels().get(SIGNER_LABEL) else { return response };
    let namespace = request.namespace.clone().unwrap_or_default();
    let signers: Api<RemoteSigner> = Api::namespaced(client.clone(), &namespace);
    // Fail closed: a validator must not start without its signer.
    let rs = match signers.get_opt(name).await {
        Ok(Some(rs)) => rs,
        Ok(None) => {
            return response.deny(format!(
                "sigil: RemoteSigner {name} (label {SIGNER_LABEL}) does not exist in namespace {namespace}; \
                 create it, or remove the label"
            ))
        }
        Err(error) => return response.deny(format!("sigil: cannot read RemoteSigner {namespace}/{name}: {error}")),
    };
    let ready = rs.status.as_ref().and_then(|s| s.conditions.first()).filter(|c| c.type_ == "Ready");
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

async fn mutate(
    State(admission): State<Admission>,
    Json(body): Json<AdmissionReview<Pod>>,
) -> Json<AdmissionReview<DynamicObject>> {
    let request: Result<AdmissionRequest<Pod>, _> = body.try_into();
    let response = match request {
        Ok(request) => review(&admission.client, &admission.images, admission.native_sidecars, &request).await,
        Err(error) => AdmissionResponse::invalid(format!("sigil: not an AdmissionReview: {error}")),
    };
    Json(response.into_review())
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

/// Provisions TLS, registers the webhook, and serves it until `shutdown`. Renews the certificate
/// before it expires, without a restart.
pub async fn run(
    client: Client,
    config: WebhookConfig,
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
    let material =
        tls::ensure(&client, &config.namespace, &config.secret_name(), &config.names(), config.owner.as_ref()).await?;
    let resolver = tls::Resolver::new(&material)?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (--webhook-addr): {e}", config.addr))?;
    tracing::info!(addr = %listener.local_addr()?, "webhook listening");
    register(&client, &config, &material.ca_pem).await?;

    let renewer = {
        let (client, config, resolver) = (client.clone(), config.clone(), resolver.clone());
        tokio::spawn(async move {
            let mut current = material;
            loop {
                tokio::time::sleep(RENEW_CHECK).await;
                let owner = config.owner.as_ref();
                match tls::ensure(&client, &config.namespace, &config.secret_name(), &config.names(), owner).await {
                    Ok(fresh) if fresh != current => {
                        let applied = resolver.replace(&fresh).map_err(anyhow::Error::from);
                        let registered = register(&client, &config, &fresh.ca_pem).await.map_err(anyhow::Error::from);
                        match applied.and(registered) {
                            Ok(()) => current = fresh,
                            Err(error) => tracing::warn!(%error, "could not switch to the renewed webhook certificate"),
                        }
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "could not check the webhook certificate"),
                }
            }
        })
    };

    let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(resolver));
    let app = Router::new()
        .route("/mutate", post(mutate))
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .layer(axum::extract::DefaultBodyLimit::max(4 * 1024 * 1024))
        .with_state(Admission { client, images: Arc::new(config.images.clone()), native_sidecars });
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => { tracing::warn!(%error, "webhook accept failed"); continue; }
            },
            _ = &mut shutdown => break,
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), acceptor.accept(stream)).await else {
                tracing::debug!(%peer, "TLS handshake failed or timed out");
                return;
            };
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(5));
            let _ = http.serve_connection(TokioIo::new(tls), TowerToHyperService::new(app)).await;
        });
    }
    renewer.abort();
    Ok(())
}

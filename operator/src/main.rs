use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use clap::Parser;
use sigil_operator::controller::reconcile::{self, Context};
use sigil_operator::images::ImagePolicy;
use sigil_operator::leader::{Elector, LeaseConfig};
use sigil_operator::metrics::Metrics;
use sigil_operator::webhook::{self, WebhookConfig};

/// Reconciles sigil RemoteSigner resources: API tokens and their rotation, signer config, ratchet
/// storage and RBAC, Workload Identity annotations. Uses the in-cluster config, or KUBECONFIG.
#[derive(Parser)]
#[command(version, about, args_override_self = true)]
struct Args {
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, env = "SIGIL_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Elect a leader through a Lease, so that replicas never act at once. Turn off only when a
    /// single replica is guaranteed.
    #[arg(long, env = "SIGIL_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Namespace of the leader Lease: the operator's own (POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    #[arg(long, default_value = "sigil-operator")]
    lease_name: String,
    /// How long a leader's Lease lasts without renewal.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
    /// After SIGTERM, how long the webhook keeps answering before it stops: the API server keeps
    /// calling a terminating pod until its endpoint is gone, and a refused call refuses a pod.
    #[arg(long, env = "SIGIL_SHUTDOWN_DELAY", default_value = "10s", value_parser = parse_duration)]
    shutdown_delay: Duration,
    /// This replica's identity in the Lease (POD_NAME); hostname and a random suffix otherwise.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Reconcile RemoteSigners in this namespace only (every namespace when unset).
    #[arg(long, env = "SIGIL_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Serve the sidecar-injection webhook (on every replica: admission needs no leader).
    #[arg(long, env = "SIGIL_WEBHOOK", default_value_t = true, action = clap::ArgAction::Set)]
    webhook: bool,
    /// Where the webhook's HTTPS server listens.
    #[arg(long, env = "SIGIL_WEBHOOK_ADDR", default_value = "0.0.0.0:8443")]
    webhook_addr: SocketAddr,
    /// Out of cluster: register the webhook by this URL, e.g. https://127.0.0.1:8443 (as envtest
    /// does). In cluster, leave unset: the API server reaches it through --webhook-service.
    #[arg(long, env = "SIGIL_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// The Service in front of the webhook (in the operator's namespace).
    #[arg(long, default_value = "sigil-operator")]
    webhook_service: String,
    #[arg(long, default_value_t = 443)]
    webhook_service_port: u16,
    /// The sigil-signer image injected when a RemoteSigner does not name one.
    #[arg(long, env = "SIGIL_SIGNER_IMAGE", default_value = concat!("ghcr.io/sigil-dev/sigil-signer:", env!("CARGO_PKG_VERSION")))]
    signer_image: String,
    /// Image prefixes a RemoteSigner's spec.sidecar.image may use (comma-separated): the image
    /// runs with the key, so only images you trust. An entry ending in `/`, `:` or `@` allows
    /// anything after it; otherwise only a tag or digest may follow. Default: --signer-image's
    /// repository.
    #[arg(long, env = "SIGIL_ALLOWED_SIGNER_IMAGES", value_delimiter = ',')]
    allowed_signer_images: Vec<String>,
    /// A ClusterRole that owns what the operator creates outside any RemoteSigner (its webhook
    /// registration and certificate), so that they are removed with it: the Helm chart passes
    /// its own, and `helm uninstall` leaves nothing behind.
    #[arg(long, env = "SIGIL_OWNER_CLUSTER_ROLE")]
    owner_cluster_role: Option<String>,
    /// Tests only: how long a webhook serving certificate is valid (renewed at two thirds).
    #[arg(long, hide = true, value_parser = parse_duration)]
    webhook_certificate_validity: Option<Duration>,
    /// Log format: text or json.
    #[arg(long, env = "SIGIL_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration: k8s_openapi::jiff::SignedDuration = text.parse().map_err(|e| format!("{text:?}: {e}"))?;
    Duration::try_from(duration).map_err(|_| format!("{text:?} must be positive"))
}

fn main() -> Result<()> {
    sigil_signer::install_crypto_provider();
    let args = Args::parse();
    let filter = std::env::var("SIGIL_LOG").unwrap_or_default();
    sigil_signer::process::init_logging(&filter, args.log_format == "json");
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run(args))
}

#[derive(Clone)]
struct Health {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

async fn run(args: Args) -> Result<()> {
    let client = kube::Client::try_default().await.context("no Kubernetes config (in-cluster or KUBECONFIG)")?;
    let metrics = Arc::new(Metrics::default());
    let health = Health { metrics: metrics.clone(), ready: Arc::new(AtomicBool::new(false)) };
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on {} (--metrics-addr)", args.metrics_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "metrics listening");
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(|State(h): State<Health>| async move { h.metrics.encode() }))
        .with_state(health.clone());
    // The signer's accept loop: bounded connections and a header deadline on this listener too.
    let limits = sigil_signer::server::http::ConnectionLimits::default();
    tokio::spawn(sigil_signer::server::http::serve(listener, app, limits, std::future::pending()));

    let mut elector = Elector::new(LeaseConfig {
        namespace: args.lease_namespace.clone(),
        name: args.lease_name,
        identity: args.identity.unwrap_or_else(default_identity),
        duration: args.lease_duration,
    });
    // Reachability of the API server is what readiness means for a standby replica.
    client.apiserver_version().await.context("the Kubernetes API server does not answer")?;
    // Two stops: the controller's at once on SIGTERM (the standby takes over the Lease), the
    // webhook's after --shutdown-delay (it answers until the API server no longer calls it).
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (stop_webhook, webhook_stopped) = tokio::sync::watch::channel(false);
    let until = |stopped: &tokio::sync::watch::Receiver<bool>| {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let images = ImagePolicy::new(&args.signer_image, &args.allowed_signer_images);
    let mut webhook_task = None;
    tracing::info!(allowed = ?images.allowed, "signer images allowed");
    if args.webhook {
        let config = WebhookConfig {
            addr: args.webhook_addr,
            url: args.webhook_url.clone(),
            service: args.webhook_service.clone(),
            service_port: args.webhook_service_port,
            namespace: args.lease_namespace.clone(),
            watch_namespace: args.namespace.clone(),
            images: images.clone(),
            owner_cluster_role: args.owner_cluster_role.clone(),
            owner: None,
            tls: webhook_tls_policy(args.webhook_certificate_validity)?,
        };
        let (client, stopped, metrics) = (client.clone(), until(&webhook_stopped), metrics.clone());
        webhook_task = Some(tokio::spawn(async move {
            if let Err(error) = webhook::run(client, config, metrics, stopped).await {
                tracing::error!(
                    error = format!("{error:#}"),
                    "the webhook stopped; labelled pods are refused until it is back"
                );
                std::process::exit(1);
            }
        }));
    }
    // Runs last, whatever the way out: not ready, the webhook answering a while longer, then
    // drained.
    let shutdown_webhook = |webhook_task: Option<tokio::task::JoinHandle<()>>, since: tokio::time::Instant| {
        let (health, delay) = (health.clone(), args.shutdown_delay);
        async move {
            health.ready.store(false, Ordering::Relaxed);
            if let Some(task) = webhook_task {
                tracing::info!(?delay, "stopping: the webhook answers until its endpoint is gone");
                tokio::time::sleep_until(since + delay).await;
                let _ = stop_webhook.send(true);
                let _ = task.await;
            }
        }
    };
    health.ready.store(true, Ordering::Relaxed);
    if args.leader_election {
        let lease = &elector.config;
        tracing::info!(identity = %lease.identity, lease = %lease.name, "waiting to lead");
        tokio::select! {
            _ = elector.acquire(&client) => {}
            _ = sigil_signer::process::shutdown_signal() => {
                let _ = stop.send(true);
                shutdown_webhook(webhook_task, tokio::time::Instant::now()).await;
                return Ok(());
            }
        }
        tracing::info!(identity = %elector.config.identity, "leading");
    }
    metrics.leader.set(1);
    let ctx = Context::new(client.clone(), metrics.clone(), images);
    let controller = tokio::spawn(reconcile::run(ctx, args.namespace.clone(), until(&stopped)));
    let outcome = tokio::select! {
        _ = sigil_signer::process::shutdown_signal() => Ok(()),
        _ = elector.hold(&client), if args.leader_election => {
            Err(anyhow::anyhow!("lost the leader Lease {}; exiting so that only the new leader acts", elector.config.name))
        }
    };
    let since = tokio::time::Instant::now();
    metrics.leader.set(0);
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), controller).await;
    if args.leader_election && outcome.is_ok() {
        elector.release(&client).await;
    }
    shutdown_webhook(webhook_task, since).await;
    outcome
}

fn webhook_tls_policy(validity: Option<Duration>) -> Result<webhook::tls::Policy> {
    let mut policy = webhook::tls::Policy::default();
    if let Some(validity) = validity {
        anyhow::ensure!(validity >= Duration::from_secs(10), "--webhook-certificate-validity must be at least 10s");
        policy.leaf_validity = k8s_openapi::jiff::SignedDuration::try_from(validity)?.min(policy.leaf_validity);
    }
    Ok(policy)
}

async fn readyz(State(health): State<Health>) -> (StatusCode, &'static str) {
    if health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "sigil-operator".into());
    let mut suffix = [0u8; 4];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut suffix);
    format!("{}-{:02x}{:02x}{:02x}{:02x}", host.trim(), suffix[0], suffix[1], suffix[2], suffix[3])
}

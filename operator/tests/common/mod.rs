//! Helpers for the operator's tests against a real API server: the CRD, the operator binary, its
//! metrics, and waiting for RemoteSigner states.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use sigil_operator::api::{RemoteSigner, RemoteSignerSpec};
use sigil_tests::cluster::{wait_for, TestCluster};

pub const DEADLINE: Duration = Duration::from_secs(60);

/// Installs (or updates) the RemoteSigner CRD, as `kubectl apply --server-side` would.
pub async fn install_crd(client: &Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = sigil_operator::api::crd();
    crds.patch("remotesigners.sigil.dev", &PatchParams::apply("sigil-tests").force(), &Patch::Apply(&crd)).await?;
    wait_for("the CRD to be established", DEADLINE, || async {
        let crd = crds.get("remotesigners.sigil.dev").await?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        Ok(established.then_some(()))
    })
    .await
}

/// A running sigil-operator scoped to one namespace; killed on drop.
pub struct Operator {
    child: Child,
    pub metrics: SocketAddr,
    pub logs: mpsc::Receiver<String>,
}

impl Operator {
    pub fn start(kubeconfig: &Path, namespace: &str, extra: &[&str]) -> Result<Operator> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sigil-operator"))
            .args(["--namespace", namespace, "--lease-namespace", namespace, "--metrics-addr", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .args(if extra.iter().any(|a| a.starts_with("--webhook")) { &[][..] } else { &["--webhook=false"][..] })
            .args(extra)
            .env_clear()
            .env("KUBECONFIG", kubeconfig)
            .env("SIGIL_LOG", "info,sigil_operator=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("start sigil-operator")?;
        let logs = sigil_tests::process::lines(child.stderr.take().expect("stderr is piped"));
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = logs.recv_timeout(left) else {
                bail!("sigil-operator did not start; its output:\n{}", seen.join("\n"));
            };
            seen.push(line.clone());
            let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if event["message"] == "metrics listening" {
                let metrics = event["addr"].as_str().unwrap_or_default().parse()?;
                return Ok(Operator { child, metrics, logs });
            }
        }
    }

    /// SIGKILL: no lease release, no cleanup (a crash).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// One metric's value, 0 when absent.
    pub fn metric(&self, name: &str) -> f64 {
        let Ok(mut stream) = TcpStream::connect(self.metrics) else { return -1.0 };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut body = String::new();
        let _ = stream.read_to_string(&mut body);
        body.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn create(client: &Client, namespace: &str, name: &str, spec: RemoteSignerSpec) -> Result<RemoteSigner> {
    let api: Api<RemoteSigner> = Api::namespaced(client.clone(), namespace);
    Ok(api.create(&PostParams::default(), &RemoteSigner::new(name, spec)).await?)
}

/// Waits until the RemoteSigner's status describes its current generation and `Ready` has `status`.
pub async fn wait_ready(client: &Client, namespace: &str, name: &str, status: &str) -> Result<RemoteSigner> {
    let api: Api<RemoteSigner> = Api::namespaced(client.clone(), namespace);
    wait_for(&format!("RemoteSigner {name} Ready={status}"), DEADLINE, || async {
        let rs = api.get(name).await?;
        let current = rs.status.as_ref().and_then(|s| s.observed_generation) == rs.metadata.generation;
        let ready = rs.status.as_ref().and_then(|s| s.conditions.first()).map(|c| c.status.as_str()) == Some(status);
        Ok((current && ready).then_some(rs))
    })
    .await
}

pub fn repo_path(relative: &str) -> PathBuf {
    sigil_tests::cluster::repo_root().join(relative)
}

pub async fn cluster() -> Result<TestCluster> {
    let cluster = TestCluster::local().await?;
    install_crd(&cluster.client).await?;
    Ok(cluster)
}

/// Webhook flags for a free loopback port, registered by URL (as envtest does).
pub fn webhook_args() -> Vec<String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    vec![
        "--webhook-addr".into(),
        format!("127.0.0.1:{port}"),
        "--webhook-url".into(),
        format!("https://127.0.0.1:{port}"),
        "--signer-image".into(),
        "sigil-signer:test".into(),
    ]
}

/// The Atto spec the tests start from: key `seed` of Secret `voter-key`, ServiceAccount `voter`.
pub fn atto_spec() -> RemoteSignerSpec {
    let spec = RemoteSignerSpec::atto(
        "voter-key",
        "seed",
        vec![sigil_operator::api::AttoCapability::Challenge, sigil_operator::api::AttoCapability::Vote],
    );
    RemoteSignerSpec { service_account_name: Some("voter".into()), ..spec }
}

pub fn pod(name: &str, signer: Option<&str>) -> Pod {
    let labels = match signer {
        Some(signer) => json!({ "app": "node", "sigil.dev/signer": signer }),
        None => json!({ "app": "node" }),
    };
    serde_json::from_value(json!({
        "metadata": { "name": name, "labels": labels },
        "spec": { "serviceAccountName": "voter", "containers": [{ "name": "node", "image": "atto/node:1" }] }
    }))
    .unwrap()
}

/// Deletes this namespace's webhook configuration when the test ends (it is cluster-scoped, so
/// the namespace's deletion does not take it along).
pub struct WebhookCleanup(pub std::path::PathBuf, pub String);

impl Drop for WebhookCleanup {
    fn drop(&mut self) {
        use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
        let name = format!("sigil-operator-{}", self.1);
        sigil_tests::cluster::cleanup(&self.0, |client| async move {
            let _ = Api::<MutatingWebhookConfiguration>::all(client).delete(&name, &Default::default()).await;
        });
    }
}

pub async fn setup_key_and_account(client: &Client, ns: &str) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let key = json!({ "metadata": { "name": "voter-key" }, "stringData": { "seed": "00".repeat(32) } });
    secrets.create(&PostParams::default(), &serde_json::from_value(key)?).await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    accounts
        .create(&PostParams::default(), &serde_json::from_value(json!({ "metadata": { "name": "voter" } }))?)
        .await?;
    Ok(())
}

/// Waits until the API server calls our webhook: a pod naming a missing RemoteSigner is refused
/// with our message (before that, the webhook configuration is not in effect yet).
pub async fn webhook_active(pods: &Api<Pod>) -> Result<()> {
    wait_for("the webhook to be called", DEADLINE, || async {
        match pods.create(&PostParams::default(), &pod("probe", Some("no-such-signer"))).await {
            Err(kube::Error::Api(status)) if status.message.contains("RemoteSigner no-such-signer") => Ok(Some(())),
            Ok(_) => {
                pods.delete("probe", &Default::default()).await?;
                Ok(None)
            }
            Err(_) => Ok(None),
        }
    })
    .await
}

/// A kubeconfig that acts as ServiceAccount `account` of `namespace` (impersonation): what a pod
/// running as it could do, and nothing more.
pub fn impersonating_kubeconfig(
    cluster: &sigil_tests::cluster::TestCluster,
    namespace: &str,
    account: &str,
    dir: &Path,
) -> Result<PathBuf> {
    sigil_tests::cluster::impersonating_kubeconfig(&cluster.kubeconfig, namespace, account, dir)
}

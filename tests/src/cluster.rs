//! A real cluster for tests. With `SIGIL_TEST_KUBECONFIG` set, the tests use that cluster (kind, or
//! anything else; e2e/kind/test sets it); otherwise they start, or reuse, the local control plane of
//! `e2e/cluster`. A dedicated variable rather than `KUBECONFIG`, so that a shell pointed at a real
//! cluster never runs the suite against it. Each test gets its own namespace, deleted at its end.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

pub struct TestCluster {
    pub kubeconfig: PathBuf,
    pub client: Client,
}

impl TestCluster {
    /// The cluster named by `SIGIL_TEST_KUBECONFIG`, or the local control plane (started if needed).
    pub async fn get() -> Result<TestCluster> {
        sigil_signer::install_crypto_provider();
        let kubeconfig = match std::env::var_os("SIGIL_TEST_KUBECONFIG") {
            Some(path) if !path.is_empty() => PathBuf::from(path),
            _ => local_control_plane()?,
        };
        Self::from_kubeconfig(kubeconfig).await
    }

    /// The local control plane (started if needed), whatever `SIGIL_TEST_KUBECONFIG` says: for
    /// tests that run the operator or its webhook on this machine (only this API server reaches
    /// 127.0.0.1) or that rely on kwok's nodes.
    pub async fn local() -> Result<TestCluster> {
        Self::from_kubeconfig(local_control_plane()?).await
    }

    /// The cluster a kubeconfig names.
    pub async fn from_kubeconfig(kubeconfig: PathBuf) -> Result<TestCluster> {
        sigil_signer::install_crypto_provider();
        let config = Kubeconfig::read_from(&kubeconfig)
            .with_context(|| format!("reading kubeconfig {}", kubeconfig.display()))?;
        let config = Config::from_custom_kubeconfig(config, &KubeConfigOptions::default()).await?;
        Ok(TestCluster { kubeconfig, client: Client::try_from(config)? })
    }

    /// A fresh namespace `<prefix>-<random>`, deleted when the returned value is dropped.
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace> {
        let mut suffix = [0u8; 4];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut suffix);
        let name = format!("{prefix}-{}", hex::encode(suffix));
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"sigil.dev/test": "true"}}
        }))?;
        Api::<Namespace>::all(self.client.clone()).create(&PostParams::default(), &namespace).await?;
        Ok(TestNamespace { name, kubeconfig: self.kubeconfig.clone() })
    }

    /// Runs a binary the cluster brings (kubectl, helm) with this cluster's kubeconfig.
    pub fn tool(&self, name: &str) -> Command {
        let mut command = Command::new(tool_path(name));
        command.env("KUBECONFIG", &self.kubeconfig);
        command
    }
}

/// `e2e/cluster up` (a no-op when up; serialised with a lock) and its kubeconfig.
fn local_control_plane() -> Result<PathBuf> {
    let script = repo_root().join("e2e/cluster");
    let status = Command::new(&script).arg("up").status().with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!("e2e/cluster up failed ({status}); its logs are under the cluster directory it names");
    }
    Ok(cluster_dir().join("kubeconfig"))
}

fn cluster_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SIGIL_CLUSTER_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("SIGIL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/sigil"));
    cache.join("cluster")
}

/// kubectl and helm: the local control plane's, else the ones on PATH (kind users).
pub fn tool_path(name: &str) -> PathBuf {
    let local = cluster_dir().join("bin").join(name);
    if Path::new(&local).exists() {
        local
    } else {
        PathBuf::from(name)
    }
}

pub struct TestNamespace {
    pub name: String,
    kubeconfig: PathBuf,
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Best effort: a namespace left behind is harmless and visible (label sigil.dev/test).
        cleanup(&self.kubeconfig, |client| async move {
            let _ = Api::<Namespace>::all(client).delete(&name, &DeleteParams::background()).await;
        });
    }
}

/// Runs `work` to completion from a `Drop`: on a thread with its own runtime and its own client.
/// (A client made on the test's runtime cannot be driven while Drop blocks that runtime.)
pub fn cleanup<F, Fut>(kubeconfig: &Path, work: F)
where
    F: FnOnce(Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let kubeconfig = kubeconfig.to_path_buf();
    let _ = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        runtime.block_on(async move {
            let Ok(config) = Kubeconfig::read_from(&kubeconfig) else { return };
            let Ok(config) = Config::from_custom_kubeconfig(config, &KubeConfigOptions::default()).await else {
                return;
            };
            let Ok(client) = Client::try_from(config) else { return };
            let _ = tokio::time::timeout(Duration::from_secs(10), work(client)).await;
        });
    })
    .join();
}

/// A kubeconfig that acts as ServiceAccount `account` of `namespace` (impersonation): what a pod
/// running as it could do, and nothing more. Written to `<dir>/kubeconfig-<account>`.
pub fn impersonating_kubeconfig(kubeconfig: &Path, namespace: &str, account: &str, dir: &Path) -> Result<PathBuf> {
    let mut config: yaml_serde::Value = yaml_serde::from_str(&std::fs::read_to_string(kubeconfig)?)?;
    for user in config["users"].as_sequence_mut().into_iter().flatten() {
        user["user"]["as"] = format!("system:serviceaccount:{namespace}:{account}").into();
    }
    let path = dir.join(format!("kubeconfig-{account}"));
    std::fs::write(&path, yaml_serde::to_string(&config)?)?;
    Ok(path)
}

/// An empty ConfigMap marks store `name`, set up on purpose (sealed), as `sigil-signer ratchet
/// init` makes one: what a signer configured by hand needs before it starts.
pub async fn marks_store(client: &Client, namespace: &str, name: &str) -> Result<()> {
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), namespace);
    sigil_signer::ratchet::configmap::init(&api, name, namespace).await?;
    Ok(())
}

/// Polls `check` every 100 ms until it returns `Some`, or fails after `deadline` saying `what`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= end {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

//! Real pods: the kind cluster `sigil` assembled on this machine (`e2e/kind/up`), sigil's chart
//! installed with the images built here, and the test images (`sigil-clients`, the SoftHSM signer).
//! The images package the binaries this test build made (the same Dockerfile a user builds with,
//! `e2e/images/build`), unless `SIGIL_IMAGE_BINARIES` names others.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, LogParams};
use kube::Api;

use crate::cluster::{repo_root, tool_path, wait_for, TestCluster};

/// The chart's release and namespace in the kind cluster.
pub const RELEASE: &str = "sigil";
pub const SYSTEM: &str = "sigil-system";
/// The node container kind runs the cluster in.
pub const NODE: &str = "sigil-control-plane";

pub struct Kind {
    pub cluster: TestCluster,
}

/// Runs a command, failing with its output when it fails; returns stdout.
pub fn run(command: &mut Command) -> Result<String> {
    let output = command.output().with_context(|| format!("run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

fn script(name: &str) -> Command {
    let mut command = Command::new(repo_root().join(name));
    if std::env::var_os("SIGIL_IMAGE_BINARIES").is_none() {
        if let Ok(binary) = crate::process::signer_binary() {
            command.env("SIGIL_IMAGE_BINARIES", binary.parent().expect("target/<profile>"));
        }
    }
    command
}

impl Kind {
    /// The cluster, up (`e2e/kind/up` builds what is missing and is a no-op when it runs; it takes
    /// a lock, so tests of several processes share one), with the chart installed and the test
    /// images loaded.
    pub async fn get() -> Result<Kind> {
        let kubeconfig = run(&mut script("e2e/kind/up"))?.trim().to_string();
        run(script("e2e/images/build").args(["clients", "softhsm"]))?;
        run(script("e2e/kind/load").args(["sigil-clients:dev", "sigil-signer:test-softhsm"]))?;
        let kind = Kind { cluster: TestCluster::from_kubeconfig(PathBuf::from(kubeconfig)).await? };
        kind.install_chart(RELEASE, SYSTEM, &[])?;
        kind.wait_operator(RELEASE, SYSTEM).await?;
        Ok(kind)
    }

    /// `helm upgrade --install` of charts/sigil with the local images, as a user on an air-gapped
    /// cluster would; serialised across test processes.
    pub fn install_chart(&self, release: &str, namespace: &str, values: &[&str]) -> Result<()> {
        let chart = repo_root().join("charts/sigil");
        let lock = self.cluster.kubeconfig.with_file_name("helm.lock");
        let mut command = Command::new("flock");
        command.arg(&lock).arg(tool_path("helm"));
        command.args(["upgrade", "--install", release]).arg(&chart);
        command.args(["-n", namespace, "--create-namespace", "--wait", "--timeout", "5m"]);
        for value in [
            "image.repository=sigil-operator",
            "image.tag=dev",
            "image.pullPolicy=Never",
            "signerImage.repository=sigil-signer",
            "signerImage.tag=dev",
        ]
        .iter()
        .chain(values)
        {
            command.args(["--set", value]);
        }
        command.env("KUBECONFIG", &self.cluster.kubeconfig);
        run(&mut command).map(drop)
    }

    /// Both operator replicas Ready, in the release's namespace.
    pub async fn wait_operator(&self, release: &str, namespace: &str) -> Result<()> {
        let deployments: Api<Deployment> = Api::namespaced(self.cluster.client.clone(), namespace);
        let name = format!("{release}-operator");
        wait_for("2 operator replicas Ready", Duration::from_secs(180), || async {
            let ready = deployments.get(&name).await?.status.and_then(|s| s.ready_replicas).unwrap_or(0);
            Ok((ready == 2).then_some(()))
        })
        .await
    }

    /// A command in the kind node (crictl, ctr): the container runtime, as an operator with a
    /// shell on the node would use it.
    pub fn node(&self, args: &[&str]) -> Result<String> {
        run(Command::new("docker").args(["exec", NODE]).args(args))
    }

    pub fn kubectl(&self) -> Command {
        self.cluster.tool("kubectl")
    }

    /// Every line a container has logged so far.
    pub async fn logs(&self, namespace: &str, pod: &str, container: &str) -> Result<Vec<String>> {
        let pods: Api<Pod> = Api::namespaced(self.cluster.client.clone(), namespace);
        let params = LogParams { container: Some(container.into()), ..Default::default() };
        Ok(pods.logs(pod, &params).await?.lines().map(String::from).collect())
    }

    /// The pods of a selector, by name.
    pub async fn pods(&self, namespace: &str, selector: &str) -> Result<Vec<Pod>> {
        let pods: Api<Pod> = Api::namespaced(self.cluster.client.clone(), namespace);
        Ok(pods.list(&ListParams::default().labels(selector)).await?.items)
    }

    /// A test image of our own, made from `dockerfile` in `context` and loaded into the node.
    pub fn image(&self, tag: &str, context: &Path, dockerfile: &str) -> Result<()> {
        std::fs::write(context.join("Dockerfile"), dockerfile)?;
        run(Command::new("docker").args(["build", "-q", "-t", tag]).arg(context))?;
        run(script("e2e/kind/load").arg(tag)).map(drop)
    }
}

/// `kubectl port-forward` to a pod's port, on a free loopback port; stopped when dropped.
pub struct PortForward {
    child: std::process::Child,
    pub addr: std::net::SocketAddr,
}

impl PortForward {
    pub async fn start(kind: &Kind, namespace: &str, pod: &str, port: u16) -> Result<PortForward> {
        let local = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let child = kind
            .kubectl()
            .args(["-n", namespace, "port-forward", &format!("pod/{pod}"), &format!("{}:{port}", local.port())])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let forward = PortForward { child, addr: local };
        wait_for("the port-forward", Duration::from_secs(30), || async {
            Ok(tokio::net::TcpStream::connect(local).await.ok().map(drop))
        })
        .await?;
        Ok(forward)
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP GET over a port-forward: (status, body).
pub async fn get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut text)).await??;
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}

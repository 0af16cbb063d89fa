//! The test cluster itself: real controllers, scheduling onto kwok nodes, garbage collection,
//! and the tools it brings.

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::Api;
use sigil_tests::cluster::{wait_for, TestCluster};

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn deployment_runs_on_kwok_and_is_garbage_collected() -> Result<()> {
    let cluster = TestCluster::local().await?;
    let namespace = cluster.namespace("gc").await?;
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &namespace.name);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), &namespace.name);
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &namespace.name);

    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]}
            }
        }
    }))?;
    deployments.create(&PostParams::default(), &deployment).await?;

    // kube-controller-manager makes the ReplicaSet and the Pod, kube-scheduler binds it to a
    // kwok node, kwok reports it Running.
    let selector = ListParams::default().labels("app=web");
    let pod = wait_for("a Running pod on a kwok node", DEADLINE, || async {
        let list = pods.list(&selector).await?;
        Ok(list.items.into_iter().find(|p| {
            let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            let node = p.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or_default();
            running && node.starts_with("kwok-node-")
        }))
    })
    .await?;
    let owner = &pod.metadata.owner_references.as_ref().expect("the pod has an owner")[0];
    assert_eq!(owner.kind, "ReplicaSet");
    assert_eq!(replica_sets.list(&selector).await?.items.len(), 1);

    // Deleting the Deployment lets the garbage collector remove what it owned.
    deployments.delete("web", &DeleteParams::background()).await?;
    wait_for("the ReplicaSet and Pod to be garbage-collected", DEADLINE, || async {
        let gone = replica_sets.list(&selector).await?.items.is_empty() && pods.list(&selector).await?.items.is_empty();
        Ok(gone.then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn brings_kubernetes_1_33_kubectl_and_helm() -> Result<()> {
    let cluster = TestCluster::get().await?;
    let server = cluster.client.apiserver_version().await?;
    assert_eq!((server.major.as_str(), server.minor.as_str()), ("1", "33"), "{server:?}");
    assert!(server.git_version.starts_with("v1.33."), "{}", server.git_version);

    let output = cluster.tool("kubectl").args(["version", "-o", "json"]).output()?;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let version: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(version["serverVersion"]["gitVersion"], server.git_version.as_str());
    assert!(version["clientVersion"]["gitVersion"].as_str().unwrap_or_default().starts_with("v1.33."), "{version}");

    let output = cluster.tool("helm").args(["version", "--short"]).output()?;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("v3."));
    Ok(())
}

#[tokio::test]
async fn cluster_script_names_a_busy_port_and_starts_nothing() -> Result<()> {
    TestCluster::local().await?; // the binaries are built
    let busy = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = busy.local_addr()?.port();
    let state = tempfile::tempdir()?;
    let output = std::process::Command::new(sigil_tests::cluster::repo_root().join("e2e/cluster"))
        .arg("up")
        .env("SIGIL_CLUSTER_DIR", state.path().join("cluster"))
        .env("SIGIL_APISERVER_PORT", port.to_string())
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains(&format!("port {port} (SIGIL_APISERVER_PORT) is in use")), "{stderr}");
    assert!(!state.path().join("cluster/pids").exists(), "nothing was started");
    Ok(())
}

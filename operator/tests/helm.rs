//! The Helm chart against the real API server: `helm lint` is clean, `helm install` creates the
//! operator's Deployment (2 replicas), PDB, Services, ServiceAccount and least-privilege RBAC, and
//! an operator running as the chart's ServiceAccount (impersonated: the local control plane's pods
//! are kwok's, which run nothing) reconciles and injects with exactly the chart's rights. `helm
//! uninstall` removes all of it, including the webhook registration and certificate the operator
//! created at runtime (owned by the chart's ClusterRole), and leaves the CRD (Helm's rule).

mod common;

use anyhow::{ensure, Result};
use common::*;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use sigil_tests::cluster::{wait_for, TestCluster};

fn helm(cluster: &TestCluster, args: &[&str]) -> Result<String> {
    let output = cluster.tool("helm").args(args).output()?;
    ensure!(
        output.status.success(),
        "helm {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test]
async fn helm_lint_is_clean() -> Result<()> {
    let cluster = TestCluster::get().await?;
    let chart = repo_path("charts/sigil");
    let out = helm(&cluster, &["lint", "--strict", "--kube-version", "1.33.0", chart.to_str().unwrap()])?;
    ensure!(out.contains("0 chart(s) failed"), "{out}");
    // values.schema.json refuses what the chart cannot use.
    let refused = cluster
        .tool("helm")
        .args(["template", "x", chart.to_str().unwrap(), "--kube-version", "1.33.0", "--set", "replicaCount=0"])
        .output()?;
    ensure!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("replicaCount"));
    Ok(())
}

#[tokio::test]
async fn install_serve_and_uninstall_leaving_only_the_crd() -> Result<()> {
    let cluster = cluster().await?;
    let namespace = cluster.namespace("helm").await?;
    let (client, ns) = (cluster.client.clone(), namespace.name.clone());
    let release = format!("sigil-{}", &ns[5..]);
    let fullname = format!("{release}-operator");
    let chart = repo_path("charts/sigil");
    let _cleanup = WebhookCleanup(cluster.kubeconfig.clone(), ns.clone());
    helm(
        &cluster,
        &["install", &release, chart.to_str().unwrap(), "-n", &ns, "--set", &format!("watchNamespace={ns}")],
    )?;

    let deployment = Api::<Deployment>::namespaced(client.clone(), &ns).get(&fullname).await?;
    let spec = deployment.spec.clone().unwrap();
    assert_eq!(spec.replicas, Some(2));
    let container = &spec.template.spec.as_ref().unwrap().containers[0];
    let security = container.security_context.clone().unwrap();
    assert_eq!((security.read_only_root_filesystem, security.allow_privilege_escalation), (Some(true), Some(false)));
    assert!(container.readiness_probe.is_some() && container.liveness_probe.is_some() && container.resources.is_some());
    Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns).get(&fullname).await?;
    Api::<Service>::namespaced(client.clone(), &ns).get(&fullname).await?;
    Api::<Service>::namespaced(client.clone(), &ns).get(&format!("{fullname}-metrics")).await?;
    let role = Api::<ClusterRole>::all(client.clone()).get(&fullname).await?;
    let chart_rules: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo_path("charts/sigil/rbac/operator-rules.yaml"))?)?;
    assert_eq!(role.rules.as_ref().unwrap().len(), chart_rules.as_array().unwrap().len() + 1);

    // The operator as the chart's ServiceAccount, with the chart's rights and nothing more.
    setup_key_and_account(&client, &ns).await?;
    create(&client, &ns, "voter", atto_spec()).await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = impersonating_kubeconfig(&cluster, &ns, &fullname, dir.path())?;
    let mut args = webhook_args();
    args.extend(["--owner-cluster-role".to_string(), fullname.clone()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut operator = Operator::start(&kubeconfig, &ns, &args)?;
    wait_ready(&client, &ns, "voter", "True").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    webhook_active(&pods).await?;
    let injected = pods.create(&PostParams::default(), &pod("node", Some("voter"))).await?;
    assert!(injected.spec.unwrap().init_containers.is_some_and(|c| c[0].name == "sigil-signer"));
    let webhooks = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let registration = webhooks.get(&format!("sigil-operator-{ns}")).await?;
    let owner = &registration.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("ClusterRole", fullname.as_str()));
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let certificate = format!("sigil-operator-{ns}-webhook-tls");
    assert_eq!(secrets.get(&certificate).await?.owner_references()[0].uid, role.uid().unwrap());
    operator.kill();

    helm(&cluster, &["uninstall", &release, "-n", &ns, "--wait"])?;
    wait_for("everything the chart and the operator made to be gone", DEADLINE, || async {
        let gone = Api::<Deployment>::namespaced(client.clone(), &ns).get_opt(&fullname).await?.is_none()
            && Api::<Service>::namespaced(client.clone(), &ns).get_opt(&fullname).await?.is_none()
            && Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns).get_opt(&fullname).await?.is_none()
            && Api::<ServiceAccount>::namespaced(client.clone(), &ns).get_opt(&fullname).await?.is_none()
            && Api::<ClusterRole>::all(client.clone()).get_opt(&fullname).await?.is_none()
            && Api::<ClusterRoleBinding>::all(client.clone()).get_opt(&fullname).await?.is_none()
            && webhooks.get_opt(&format!("sigil-operator-{ns}")).await?.is_none()
            && secrets.get_opt(&certificate).await?.is_none();
        Ok(gone.then_some(()))
    })
    .await?;
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    assert!(crds.get_opt("remotesigners.sigil.dev").await?.is_some(), "Helm keeps CRDs");
    Ok(())
}

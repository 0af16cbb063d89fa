//! Sidecar injection through the real API server: the operator registers its webhook by URL with
//! its own CA, and the API server calls it for labelled pods.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use sigil_operator::api::*;
use sigil_tests::cluster::wait_for;

#[tokio::test]
async fn labelled_pods_get_the_signer_and_others_are_untouched() -> Result<()> {
    let cluster = cluster().await?;
    let namespace = cluster.namespace("inject").await?;
    let (client, ns) = (cluster.client.clone(), namespace.name.as_str());
    let _cleanup = WebhookCleanup(cluster.kubeconfig.clone(), ns.to_string());
    setup_key_and_account(&client, ns).await?;
    create(&client, ns, "voter", atto_spec()).await?;
    let args = webhook_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _operator = Operator::start(&cluster.kubeconfig, ns, &args)?;
    wait_ready(&client, ns, "voter", "True").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    webhook_active(&pods).await?;

    // A labelled pod: native sidecar, mounts, node env.
    let injected = pods.create(&PostParams::default(), &pod("node", Some("voter"))).await?;
    let spec = injected.spec.clone().unwrap();
    let sidecar = &spec.init_containers.as_ref().expect("an init container")[0];
    assert_eq!((sidecar.name.as_str(), sidecar.restart_policy.as_deref()), ("sigil-signer", Some("Always")));
    assert_eq!(sidecar.image.as_deref(), Some("sigil-signer:test"));
    let volumes: Vec<&str> = spec.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
    for expected in ["sigil-token", "sigil-config", "sigil-key"] {
        assert!(volumes.contains(&expected), "{volumes:?}");
    }
    let env: Vec<String> = spec.containers[0].env.iter().flatten().map(|e| e.name.clone()).collect();
    assert!(env.contains(&"ATTO_SIGNER_REMOTE_TOKEN".to_string()), "{env:?}");
    assert_eq!(injected.annotations().get("sigil.dev/injected").map(String::as_str), Some("voter"));

    // An unlabelled pod is not even sent to the webhook.
    let plain = pods.create(&PostParams::default(), &pod("plain", None)).await?;
    let spec = plain.spec.unwrap();
    assert!(spec.init_containers.is_none() && spec.containers.len() == 1 && spec.containers[0].env.is_none());

    // Through a Deployment (the controller-manager creates the pods), to Running on kwok.
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "atto-node" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "atto-node" } },
            "template": {
                "metadata": { "labels": { "app": "atto-node", "sigil.dev/signer": "voter" } },
                "spec": { "serviceAccountName": "voter", "containers": [{ "name": "node", "image": "atto/node:1" }] }
            }
        }
    }))?;
    Api::<Deployment>::namespaced(client.clone(), ns).create(&PostParams::default(), &deployment).await?;
    wait_for("2 injected pods Running", DEADLINE, || async {
        let list = pods.list(&ListParams::default().labels("app=atto-node")).await?;
        let running = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter(|p| {
                p.spec.as_ref().and_then(|s| s.init_containers.as_ref()).is_some_and(|c| c[0].name == "sigil-signer")
            })
            .count();
        Ok((running == 2).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn fails_closed() -> Result<()> {
    let cluster = cluster().await?;
    let namespace = cluster.namespace("closed").await?;
    let (client, ns) = (cluster.client.clone(), namespace.name.as_str());
    let _cleanup = WebhookCleanup(cluster.kubeconfig.clone(), ns.to_string());
    setup_key_and_account(&client, ns).await?;
    let mut broken = atto_spec();
    broken.key.secret_ref = Some(SecretKeyRef { name: "missing-key".into(), key: "seed".into() });
    create(&client, ns, "broken", broken).await?;
    create(&client, ns, "voter", atto_spec()).await?;
    let args = webhook_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut operator = Operator::start(&cluster.kubeconfig, ns, &args)?;
    wait_ready(&client, ns, "voter", "True").await?;
    wait_ready(&client, ns, "broken", "False").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    webhook_active(&pods).await?;

    // A RemoteSigner that is not Ready: refused, saying why.
    let error = pods.create(&PostParams::default(), &pod("a", Some("broken"))).await.unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("RemoteSigner") && message.contains("is not Ready") && message.contains("missing-key"),
        "{message}"
    );

    // The operator (and its webhook) down: labelled pods refused, others unaffected.
    operator.kill();
    wait_for("labelled pods to be refused while the webhook is down", Duration::from_secs(30), || async {
        Ok(pods.create(&PostParams::default(), &pod("b", Some("voter"))).await.is_err().then_some(()))
    })
    .await?;
    pods.create(&PostParams::default(), &pod("c", None)).await?;

    // Back up: injection resumes. On a fresh port: the old one may have gone to another process
    // meanwhile, and the operator registers its webhook with its current address anyway.
    let restart = webhook_args();
    let restart: Vec<&str> = restart.iter().map(String::as_str).collect();
    let _operator = Operator::start(&cluster.kubeconfig, ns, &restart)?;
    let injected = wait_for("injection to resume", DEADLINE, || async {
        match pods.create(&PostParams::default(), &pod("d", Some("voter"))).await {
            Ok(pod) => Ok(Some(pod)),
            Err(_) => Ok(None),
        }
    })
    .await?;
    assert!(injected.spec.unwrap().init_containers.is_some_and(|c| c[0].name == "sigil-signer"));
    Ok(())
}

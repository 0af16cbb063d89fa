//! No drift for GitOps: a RemoteSigner and the user's Deployment, applied the way Argo CD applies
//! them (server-side apply under its field manager), stay exactly as applied after the operator
//! has reconciled, rotated nothing into them, and injected the Deployment's pods: a server-side
//! dry-run apply of the same manifests finds nothing to change.

mod common;

use anyhow::Result;
use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use kube::{Api, Client};
use serde_json::{json, Value};
use sigil_tests::cluster::wait_for;

const MANAGER: &str = "argocd-controller";

fn manifests() -> [Value; 2] {
    let signer = json!({
        "apiVersion": "sigil.dev/v1alpha1",
        "kind": "RemoteSigner",
        "metadata": { "name": "voter", "labels": { "app.kubernetes.io/instance": "validators" },
                      "annotations": { "argocd.argoproj.io/tracking-id": "validators:sigil.dev/RemoteSigner:ns/voter" } },
        "spec": { "protocol": "Atto", "key": { "secretRef": { "name": "voter-key", "key": "seed" } },
                  "atto": { "capabilities": ["CHALLENGE", "VOTE"] }, "serviceAccountName": "voter" },
    });
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "atto-voter", "labels": { "app.kubernetes.io/instance": "validators" } },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "atto-voter" } },
            "template": {
                "metadata": { "labels": { "app": "atto-voter", "sigil.dev/signer": "voter" } },
                "spec": { "serviceAccountName": "voter", "containers": [{ "name": "node", "image": "atto/node:1" }] },
            },
        },
    });
    [signer, deployment]
}

fn api(client: &Client, ns: &str, manifest: &Value) -> Api<DynamicObject> {
    let (group, version) = match manifest["apiVersion"].as_str().unwrap().split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", manifest["apiVersion"].as_str().unwrap()),
    };
    let gvk = GroupVersionKind::gvk(group, version, manifest["kind"].as_str().unwrap());
    let plural = format!("{}s", gvk.kind.to_ascii_lowercase());
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk_with_plural(&gvk, &plural))
}

/// What Argo CD compares: spec, labels and annotations (the last without the server's bookkeeping).
fn compared(object: &DynamicObject) -> Value {
    let mut annotations = object.metadata.annotations.clone().unwrap_or_default();
    annotations.remove("deployment.kubernetes.io/revision");
    json!({ "spec": object.data["spec"], "labels": object.metadata.labels, "annotations": annotations })
}

#[tokio::test]
async fn the_operator_leaves_what_argo_cd_applied_as_it_was() -> Result<()> {
    let cluster = cluster().await?;
    let namespace = cluster.namespace("drift").await?;
    let (client, ns) = (cluster.client.clone(), namespace.name.as_str());
    let _cleanup = WebhookCleanup(cluster.kubeconfig.clone(), ns.to_string());
    setup_key_and_account(&client, ns).await?;
    let apply = PatchParams::apply(MANAGER).force();
    for manifest in manifests() {
        let name = manifest["metadata"]["name"].as_str().unwrap().to_string();
        api(&client, ns, &manifest).patch(&name, &apply, &Patch::Apply(&manifest)).await?;
    }
    let args = webhook_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _operator = Operator::start(&cluster.kubeconfig, ns, &args)?;
    wait_ready(&client, ns, "voter", "True").await?;
    // The Deployment's pod, created after the webhook is in effect, carries the signer.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    wait_for("an injected pod of the Deployment", DEADLINE, || async {
        let mut list = pods.list(&ListParams::default().labels("app=atto-voter")).await?;
        let injected = list.items.iter().any(|p| {
            p.spec.as_ref().and_then(|s| s.init_containers.as_ref()).is_some_and(|c| c[0].name == "sigil-signer")
        });
        if !injected {
            // Pods made before the webhook was registered: the next one is injected.
            for pod in list.items.drain(..) {
                pods.delete(&pod.metadata.name.unwrap_or_default(), &Default::default()).await?;
            }
        }
        Ok(injected.then_some(()))
    })
    .await?;

    let dry_run = PatchParams { dry_run: true, ..PatchParams::apply(MANAGER).force() };
    for manifest in manifests() {
        let name = manifest["metadata"]["name"].as_str().unwrap().to_string();
        let api = api(&client, ns, &manifest);
        let live = api.get(&name).await?;
        let again = api.patch(&name, &dry_run, &Patch::Apply(&manifest)).await?;
        assert_eq!(compared(&again), compared(&live), "{name}: applying the manifest again would change it");
        assert_eq!(live.metadata.generation, Some(1), "{name}: nobody but the user wrote its spec");
        // And the spec is what the manifest says (the API server only added its defaults).
        let spec = &live.data["spec"];
        for (field, value) in manifest["spec"].as_object().unwrap() {
            if field != "template" {
                assert_eq!(&spec[field], value, "{name}: spec.{field}");
            }
        }
    }
    let deployment = Api::<Deployment>::namespaced(client.clone(), ns).get("atto-voter").await?;
    let template = deployment.spec.unwrap().template.spec.unwrap();
    assert!(template.init_containers.is_none() && template.containers.len() == 1, "the template is never patched");
    Ok(())
}

//! Sidecar injection through the real API server: the operator registers its webhook by URL with
//! its own CA, and the API server calls it for labelled pods.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use sigil_operator::api::*;
use sigil_tests::cluster::{wait_for, TestCluster};

/// RemoteSigner `voter` Ready, with an operator whose webhook the API server calls for `ns`. The
/// operator runs, and the webhook registration stays, while the returned value lives.
async fn voter_with_webhook(cluster: &TestCluster, ns: &str) -> Result<(Operator, WebhookCleanup)> {
    let cleanup = WebhookCleanup(cluster.kubeconfig.clone(), ns.to_string());
    setup_key_and_account(&cluster.client, ns).await?;
    create(&cluster.client, ns, "voter", atto_spec()).await?;
    let args = webhook_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let operator = Operator::start(&cluster.kubeconfig, ns, &args)?;
    wait_ready(&cluster.client, ns, "voter", "True").await?;
    webhook_active(&Api::namespaced(cluster.client.clone(), ns)).await?;
    Ok((operator, cleanup))
}

/// `status.signers` follows the injected pods through the controller's watch on them. Twice: the
/// first time the reconcile its own status write starts may notice the change; the second time
/// only the watch can tell the controller.
#[tokio::test]
async fn signers_follow_the_injected_pods() -> Result<()> {
    let cluster = cluster().await?;
    let namespace = cluster.namespace("signers").await?;
    let (client, ns) = (cluster.client.clone(), namespace.name.as_str());
    let _running = voter_with_webhook(&cluster, ns).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let signers: Api<RemoteSigner> = Api::namespaced(client.clone(), ns);
    let count = || async { anyhow::Ok(signers.get("voter").await?.status.and_then(|s| s.signers).unwrap_or_default()) };
    for round in ["first", "second"] {
        pods.create(&PostParams::default(), &pod("node", Some("voter"))).await?;
        let what = format!("the injected pod counted ({round} time)");
        wait_for(&what, Duration::from_secs(20), || async { Ok(count().await?.ends_with("/1").then_some(())) }).await?;
        pods.delete("node", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await?;
        let what = format!("the deleted pod no longer counted ({round} time)");
        wait_for(&what, Duration::from_secs(20), || async { Ok((count().await? == "0/0").then_some(())) }).await?;
        wait_for("the pod gone", Duration::from_secs(20), || async {
            Ok(pods.get_opt("node").await?.is_none().then_some(()))
        })
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn labelled_pods_get_the_signer_and_others_are_untouched() -> Result<()> {
    let cluster = cluster().await?;
    let namespace = cluster.namespace("inject").await?;
    let (client, ns) = (cluster.client.clone(), namespace.name.as_str());
    let _running = voter_with_webhook(&cluster, ns).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);

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

/// What reaches the kubelet: the pod as the API server stored it, after the ServiceAccount plugin
/// mounted the API token into every container and sigil's webhook ran. Only the signer may hold
/// a credential: a node container that is taken over finds none, and without one cannot touch
/// the marks; the token the signer holds could have (the control).
#[tokio::test]
async fn only_the_signer_container_can_write_the_marks() -> Result<()> {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};

    let cluster = cluster().await?;
    let namespace = cluster.namespace("credentials").await?;
    let (client, ns) = (cluster.client.clone(), namespace.name.as_str());
    let _cleanup = WebhookCleanup(cluster.kubeconfig.clone(), ns.to_string());
    setup_key_and_account(&client, ns).await?;
    let mut tezos = atto_spec();
    (tezos.protocol, tezos.atto) = (Protocol::Tezos, None);
    create(&client, ns, "baker", tezos).await?;
    let args = webhook_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _operator = Operator::start(&cluster.kubeconfig, ns, &args)?;
    wait_ready(&client, ns, "baker", "True").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    webhook_active(&pods).await?;

    let two_containers = |name: &str, annotations: serde_json::Value| -> Result<Pod> {
        Ok(serde_json::from_value(json!({
            "metadata": { "name": name, "labels": { "sigil.dev/signer": "baker" }, "annotations": annotations },
            "spec": { "serviceAccountName": "voter", "containers": [
                { "name": "node", "image": "tezos/tezos:v22" },
                { "name": "exporter", "image": "exporter:1" },
            ] }
        }))?)
    };
    // Here as on any cluster, the ServiceAccount plugin mounts the API token into every container
    // of a pod sigil does not touch:
    let plain = pods.create(&PostParams::default(), &pod("plain", None)).await?;
    let plain_mounts = plain.spec.unwrap().containers[0].volume_mounts.clone().unwrap_or_default();
    assert!(plain_mounts.iter().any(|m| m.name.starts_with("kube-api-access-")), "{plain_mounts:?}");
    let stored = pods.create(&PostParams::default(), &two_containers("node", json!({}))?).await?;
    let stored = pods.get(&stored.name_any()).await?;
    let spec = stored.spec.clone().unwrap();
    assert_eq!(spec.automount_service_account_token, Some(false));
    let token_volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| {
            v.projected.as_ref().is_some_and(|p| p.sources.iter().flatten().any(|s| s.service_account_token.is_some()))
        })
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(token_volumes, ["sigil-api-access"], "the plugin's kube-api-access volume is gone");
    for container in &spec.containers {
        let mounts: Vec<&str> = container.volume_mounts.iter().flatten().map(|m| m.name.as_str()).collect();
        assert!(mounts.is_empty(), "{} must mount nothing of sigil's or the API's: {mounts:?}", container.name);
    }
    let signer = &spec.init_containers.as_ref().unwrap()[0];
    let api_mount =
        signer.volume_mounts.iter().flatten().find(|m| m.name == "sigil-api-access").expect("the signer's token");
    assert_eq!(api_mount.mount_path, "/var/run/secrets/kubernetes.io/serviceaccount");

    // The attacker in the node container has no credential: as such a client, the marks stay as
    // they are.
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let mut marks = config_maps.get("baker-ratchet").await?;
    marks.data.get_or_insert_with(Default::default).insert("validator.NetXdQprcVkpaWU.block".into(), "{}".into());
    let kubeconfig = cluster.kubeconfig.clone();
    let as_client = |auth: AuthInfo| {
        let kubeconfig = kubeconfig.clone();
        async move {
            let kubeconfig = Kubeconfig::read_from(&kubeconfig)?;
            let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
            config.auth_info = auth;
            anyhow::Ok(Api::<ConfigMap>::namespaced(kube::Client::try_from(config)?, ns))
        }
    };
    let nobody = as_client(AuthInfo::default()).await?;
    let refused = nobody.replace("baker-ratchet", &PostParams::default(), &marks).await.unwrap_err();
    assert!(matches!(&refused, kube::Error::Api(s) if s.code == 401 || s.code == 403), "{refused}");
    // The control: with the ServiceAccount's token, what the signer's volume holds (and what the
    // node held before sigil took it), the same write is accepted.
    let output = cluster.tool("kubectl").args(["create", "token", "voter", "-n", ns]).output()?;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout)?.trim().to_string();
    let signer_token = as_client(AuthInfo { token: Some(token.into()), ..Default::default() }).await?;
    signer_token.replace("baker-ratchet", &PostParams::default(), &marks).await?;

    // Opting out keeps the node's token, with a warning.
    let sharing = two_containers("sharing", json!({ "sigil.dev/share-credentials-with-node": "true" }))?;
    let stored = pods.create(&PostParams::default(), &sharing).await?;
    let node = &stored.spec.unwrap().containers[0];
    assert!(node.volume_mounts.iter().flatten().any(|m| m.name.starts_with("kube-api-access-")));

    // Pods that would expose the signer to the node or to their other containers are refused.
    for (field, name) in [("hostNetwork", "host-network"), ("shareProcessNamespace", "shared-pids")] {
        let mut exposed = two_containers(name, json!({}))?;
        let mut spec = serde_json::to_value(exposed.spec.take())?;
        spec[field] = json!(true);
        exposed.spec = serde_json::from_value(spec)?;
        let refused = pods.create(&PostParams::default(), &exposed).await.unwrap_err().to_string();
        assert!(refused.contains(&format!("the pod sets {field}: true")), "{refused}");
    }
    Ok(())
}

/// The signer image runs with the key: a RemoteSigner naming an image outside the operator's
/// allowlist is not Ready, and its pods are refused, saying why.
#[tokio::test]
async fn only_allowed_signer_images_run() -> Result<()> {
    let cluster = cluster().await?;
    let namespace = cluster.namespace("images").await?;
    let (client, ns) = (cluster.client.clone(), namespace.name.as_str());
    let _cleanup = WebhookCleanup(cluster.kubeconfig.clone(), ns.to_string());
    setup_key_and_account(&client, ns).await?;
    let mut spec = atto_spec();
    spec.sidecar = Some(SidecarSpec { image: Some("docker.io/attacker/sigil-signer:1".into()), resources: None });
    create(&client, ns, "voter", spec).await?;
    let args = webhook_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _operator = Operator::start(&cluster.kubeconfig, ns, &args)?;
    let rs = wait_ready(&client, ns, "voter", "False").await?;
    let ready = &rs.status.unwrap().conditions[0];
    assert_eq!(ready.reason, "ImageNotAllowed");
    assert!(ready.message.contains("allowed: sigil-signer"), "{}", ready.message);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    webhook_active(&pods).await?;
    let refused = pods.create(&PostParams::default(), &pod("node", Some("voter"))).await.unwrap_err().to_string();
    assert!(refused.contains("not an allowed signer image"), "{refused}");

    // Its own image repository, another tag: allowed.
    let signers: Api<RemoteSigner> = Api::namespaced(client.clone(), ns);
    let patch = json!({ "spec": { "sidecar": { "image": "sigil-signer:0.2.0" } } });
    signers.patch("voter", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await?;
    wait_ready(&client, ns, "voter", "True").await?;
    let injected = pods.create(&PostParams::default(), &pod("node", Some("voter"))).await?;
    assert_eq!(injected.spec.unwrap().init_containers.unwrap()[0].image.as_deref(), Some("sigil-signer:0.2.0"));
    Ok(())
}

/// The webhook answers from its watch of RemoteSigners, with no API call, once the watch holds a
/// Ready one; a RemoteSigner the watch has not delivered yet is read with a GET, so one created
/// and Ready a moment ago gets its pods at once.
#[tokio::test]
async fn admissions_are_served_from_the_watch_cache() -> Result<()> {
    let cluster = cluster().await?;
    let namespace = cluster.namespace("cache").await?;
    let (client, ns) = (cluster.client.clone(), namespace.name.as_str());
    let (operator, _cleanup) = voter_with_webhook(&cluster, ns).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let cached = r#"sigil_operator_admission_lookups_total{source="cache"}"#;
    wait_for("the cache to serve an admission", DEADLINE, || async {
        let name = format!("node-{}", rand_core::RngCore::next_u32(&mut rand_core::OsRng));
        pods.create(&PostParams::default(), &pod(&name, Some("voter"))).await?;
        Ok((operator.metric(cached) >= 1.0).then_some(()))
    })
    .await?;
    let (from_cache, from_get) = (operator.metric(cached), operator.metric(&cached.replace("cache", "get")));
    for i in 0..5 {
        pods.create(&PostParams::default(), &pod(&format!("cached-{i}"), Some("voter"))).await?;
    }
    assert_eq!(operator.metric(cached), from_cache + 5.0, "five more admissions from the cache");
    assert_eq!(operator.metric(&cached.replace("cache", "get")), from_get, "and no GET");
    let handled = operator.metric("sigil_operator_admission_duration_seconds_count");
    assert!(handled >= from_cache + 5.0, "every admission is timed: {handled}");

    // A second RemoteSigner, labelled pods at once after Ready: served, the cache or a GET.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let key = serde_json::json!({ "metadata": { "name": "second-key" }, "stringData": { "seed": "01".repeat(32) } });
    secrets.create(&PostParams::default(), &serde_json::from_value(key)?).await?;
    let spec = RemoteSignerSpec::atto("second-key", "seed", vec![AttoCapability::Vote]);
    create(&client, ns, "second", RemoteSignerSpec { service_account_name: Some("voter".into()), ..spec }).await?;
    wait_ready(&client, ns, "second", "True").await?;
    let injected = pods.create(&PostParams::default(), &pod("second-node", Some("second"))).await?;
    assert!(injected.spec.unwrap().init_containers.is_some_and(|c| c[0].name == "sigil-signer"));
    Ok(())
}

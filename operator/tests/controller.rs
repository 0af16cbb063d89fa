//! The controller against a real API server (e2e/cluster, or SIGIL_TEST_KUBECONFIG).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use common::*;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use sigil_operator::api::*;
use sigil_signer::config::SignerConfig;
use sigil_tests::cluster::{wait_for, TestCluster};

async fn create_from_json<K>(client: &Client, namespace: &str, object: serde_json::Value) -> Result<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    Ok(api.create(&PostParams::default(), &serde_json::from_value(object)?).await?)
}

/// The validator key Secret the specs refer to (`voter-key`, key `seed`).
async fn key_secret(client: &Client, namespace: &str) -> Result<Secret> {
    named_key_secret(client, namespace, "voter-key", 0).await
}

/// A key of its own for each RemoteSigner: two on one key are refused (KeyInUse).
async fn named_key_secret(client: &Client, namespace: &str, name: &str, seed: u8) -> Result<Secret> {
    let seed = format!("{seed:02x}").repeat(32);
    create_from_json(client, namespace, json!({ "metadata": { "name": name }, "stringData": { "seed": seed } })).await
}

fn atto_spec_with_key(secret: &str) -> RemoteSignerSpec {
    let mut spec = atto_spec();
    spec.key.secret_ref = Some(SecretKeyRef { name: secret.into(), key: "seed".into() });
    spec
}

/// A kubeconfig that acts as ServiceAccount `account`, bound to exactly the operator's rules
/// (charts/sigil/rbac/operator-rules.yaml). Returns the file and the cluster-scoped objects to delete.
async fn least_privilege_kubeconfig(
    cluster: &TestCluster,
    namespace: &str,
    dir: &std::path::Path,
) -> Result<std::path::PathBuf> {
    let client = &cluster.client;
    let rules: serde_json::Value =
        yaml_serde::from_str(&std::fs::read_to_string(repo_path("charts/sigil/rbac/operator-rules.yaml"))?)?;
    let name = format!("sigil-operator-{namespace}");
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { "sigil.dev/test": "true" } }, "rules": rules
    }))?;
    Api::<ClusterRole>::all(client.clone()).create(&PostParams::default(), &role).await?;
    create_from_json::<ServiceAccount>(client, namespace, json!({ "metadata": { "name": "sigil-operator" } })).await?;
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { "sigil.dev/test": "true" } },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name },
        "subjects": [{ "kind": "ServiceAccount", "name": "sigil-operator", "namespace": namespace }],
    }))?;
    Api::<ClusterRoleBinding>::all(client.clone()).create(&PostParams::default(), &binding).await?;

    impersonating_kubeconfig(cluster, namespace, "sigil-operator", dir)
}

async fn delete_cluster_rbac(client: &Client, namespace: &str) {
    let name = format!("sigil-operator-{namespace}");
    let _ = Api::<ClusterRoleBinding>::all(client.clone()).delete(&name, &DeleteParams::default()).await;
    let _ = Api::<ClusterRole>::all(client.clone()).delete(&name, &DeleteParams::default()).await;
}

fn owned_by(meta: &kube::api::ObjectMeta, rs: &RemoteSigner) -> bool {
    meta.owner_references.iter().flatten().any(|o| o.uid == rs.uid().unwrap_or_default() && o.controller == Some(true))
}

#[tokio::test]
async fn lifecycle_under_least_privilege() -> Result<()> {
    let cluster = cluster().await?;
    let namespace = cluster.namespace("lifecycle").await?;
    let ns = namespace.name.as_str();
    let client = cluster.client.clone();
    let dir = tempfile::tempdir()?;
    let kubeconfig = least_privilege_kubeconfig(&cluster, ns, dir.path()).await?;
    let result = lifecycle(&client, ns, &kubeconfig).await;
    delete_cluster_rbac(&client, ns).await;
    result
}

async fn lifecycle(client: &Client, ns: &str, kubeconfig: &std::path::Path) -> Result<()> {
    create_from_json::<ServiceAccount>(client, ns, json!({ "metadata": { "name": "voter" } })).await?;
    key_secret(client, ns).await?;
    let mut spec = atto_spec();
    spec.workload_identity = Some(WorkloadIdentitySpec {
        gcp_service_account: Some("signer@project.iam.gserviceaccount.com".into()),
        ..Default::default()
    });
    create(client, ns, "voter", spec).await?;
    let _operator = Operator::start(kubeconfig, ns, &[])?;

    // Ready, with every child owned by the RemoteSigner.
    let rs = wait_ready(client, ns, "voter", "True").await?;
    let status = rs.status.clone().unwrap();
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.key_backend.as_deref(), Some("secretRef"));
    let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(
        types,
        ["Ready", "TokenReady", "ConfigReady", "MarksReady", "KeyReady", "IdentityReady", "SignersReady"]
    );
    assert!(status.token_rotated_at.is_some());
    assert!(rs.finalizers().contains(&"sigil.dev/identity".to_string()));

    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let token = secrets.get("voter-token").await?;
    assert!(owned_by(&token.metadata, &rs));
    let data = token.data.clone().unwrap();
    assert_eq!(data["token"].0.len(), 64);
    assert!(data["token.previous"].0.is_empty());
    let labels = token.labels();
    assert_eq!(labels.get("sigil.dev/remote-signer").map(String::as_str), Some("voter"));

    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let config = config_maps.get("voter-config").await?;
    assert!(owned_by(&config.metadata, &rs));
    let yaml = config.data.unwrap()["signer.yaml"].clone();
    let parsed = SignerConfig::from_yaml(&yaml)?;
    assert_eq!(parsed.atto.unwrap().capabilities.len(), 2);
    // Atto keeps no marks, but its signer reports its key in a store of its own, which outlives
    // the RemoteSigner like every store.
    let store = config_maps.get("voter-ratchet").await?;
    assert!(store.owner_references().is_empty() && sigil_signer::ratchet::configmap::is_sealed(&store));
    assert_eq!(status.marks.as_ref().map(|m| m.uid.as_str()), store.metadata.uid.as_deref());

    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let annotations = accounts.get("voter").await?.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations.get("iam.gke.io/gcp-service-account").map(String::as_str),
        Some("signer@project.iam.gserviceaccount.com")
    );

    // A spec change: the config follows and the status describes generation 2.
    let signers: Api<RemoteSigner> = Api::namespaced(client.clone(), ns);
    let patch = json!({ "spec": { "atto": { "capabilities": ["CHALLENGE", "VOTE", "BLOCK"] } } });
    signers.patch("voter", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    wait_ready(client, ns, "voter", "True").await?;
    let yaml = config_maps.get("voter-config").await?.data.unwrap()["signer.yaml"].clone();
    assert!(yaml.contains("BLOCK"), "{yaml}");
    assert_eq!(secrets.get("voter-token").await?.data.unwrap()["token"], data["token"], "a spec edit keeps the token");

    // A cloud key: rendered with no secret in it (the sidecar authenticates by Workload Identity),
    // and the status names the backend.
    let version = "projects/p/locations/global/keyRings/r/cryptoKeys/voter/cryptoKeyVersions/1";
    let patch = json!({ "spec": { "key": { "secretRef": null, "gcpKms": { "keyVersion": version } } } });
    signers.patch("voter", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let rs = wait_ready(client, ns, "voter", "True").await?;
    assert_eq!(rs.status.unwrap().key_backend.as_deref(), Some("gcpKms"));
    let yaml = config_maps.get("voter-config").await?.data.unwrap()["signer.yaml"].clone();
    let key = SignerConfig::from_yaml(&yaml)?.keys["validator"].clone();
    assert_eq!(key.gcp_kms.map(|g| g.key_version).as_deref(), Some(version), "{yaml}");
    assert!(key.local.is_none());
    let patch = json!({ "spec": { "key": { "gcpKms": null, "secretRef": { "name": "voter-key", "key": "seed" } } } });
    signers.patch("voter", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    wait_ready(client, ns, "voter", "True").await?;

    // The key Secret disappears: not Ready, and the status says which Secret.
    secrets.delete("voter-key", &DeleteParams::default()).await?;
    signers
        .patch(
            "voter",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "metadata": { "annotations": { "touch": "1" } } })),
        )
        .await?;
    let rs = wait_for("ConfigReady=False for the missing key Secret", DEADLINE, || async {
        let rs = signers.get("voter").await?;
        let missing = rs.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.reason == "KeySecretNotFound"));
        Ok(missing.then_some(rs))
    })
    .await?;
    let ready = &rs.status.unwrap().conditions[0];
    assert_eq!(ready.status, "False");
    assert!(ready.message.contains("Secret voter-key"), "{}", ready.message);
    key_secret(client, ns).await?;
    signers
        .patch(
            "voter",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "metadata": { "annotations": { "touch": "2" } } })),
        )
        .await?;
    wait_ready(client, ns, "voter", "True").await?;

    // Tezos: ratchet storage and its RBAC appear, and the rendered config keeps marks there.
    let patch = json!({ "spec": { "protocol": "Tezos", "atto": null } });
    signers.patch("voter", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    wait_ready(client, ns, "voter", "True").await?;
    let rendered =
        config_maps.get("voter-config").await?.data.unwrap_or_default().remove("signer.yaml").unwrap_or_default();
    let rendered = sigil_signer::config::SignerConfig::from_yaml(&rendered)?;
    let ratchet = rendered.ratchet.and_then(|r| r.config_map).expect("a ConfigMap ratchet");
    assert_eq!((ratchet.name.as_str(), ratchet.namespace.as_str()), ("voter-ratchet", ns));
    assert!(rendered.tezos.is_some());
    let role = Api::<Role>::namespaced(client.clone(), ns).get("voter-ratchet").await?;
    assert_eq!(role.rules.unwrap()[0].resource_names.clone().unwrap(), vec!["voter-ratchet".to_string()]);
    let binding = Api::<RoleBinding>::namespaced(client.clone(), ns).get("voter-ratchet").await?;
    assert_eq!(binding.subjects.unwrap()[0].name, "voter");
    assert!(config_maps.get_opt("voter-ratchet").await?.is_some());

    // Identity removed from the spec: the annotation and the finalizer go.
    let patch =
        json!({ "spec": { "protocol": "Atto", "atto": { "capabilities": ["VOTE"] }, "workloadIdentity": null } });
    signers.patch("voter", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let rs = wait_ready(client, ns, "voter", "True").await?;
    assert!(!rs.finalizers().contains(&"sigil.dev/identity".to_string()));
    let annotations = accounts.get("voter").await?.metadata.annotations.unwrap_or_default();
    assert!(!annotations.contains_key("iam.gke.io/gcp-service-account"), "{annotations:?}");
    assert!(config_maps.get_opt("voter-ratchet").await?.is_some(), "marks are never dropped by a spec edit");

    // Identity back, then delete: annotations removed before the RemoteSigner goes, children GC'd.
    let patch = json!({ "spec": { "workloadIdentity": { "awsRoleArn": "arn:aws:iam::123456789012:role/signer" } } });
    signers.patch("voter", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    wait_for("the IRSA annotation", DEADLINE, || async {
        let annotations = accounts.get("voter").await?.metadata.annotations.unwrap_or_default();
        Ok(annotations.contains_key("eks.amazonaws.com/role-arn").then_some(()))
    })
    .await?;
    signers.delete("voter", &DeleteParams::default()).await?;
    wait_for("the RemoteSigner, its children and its annotations to be gone", DEADLINE, || async {
        let annotations: BTreeMap<String, String> =
            accounts.get("voter").await?.metadata.annotations.unwrap_or_default();
        let gone = signers.get_opt("voter").await?.is_none()
            && secrets.get_opt("voter-token").await?.is_none()
            && config_maps.get_opt("voter-config").await?.is_none()
            && Api::<Role>::namespaced(client.clone(), ns).get_opt("voter-ratchet").await?.is_none()
            && !annotations.contains_key("eks.amazonaws.com/role-arn");
        Ok(gone.then_some(()))
    })
    .await?;
    assert!(config_maps.get_opt("voter-ratchet").await?.is_some(), "the marks outlive their RemoteSigner");
    assert!(accounts.get_opt("voter").await?.is_some(), "the user's ServiceAccount itself stays");
    Ok(())
}

#[tokio::test]
async fn invalid_specs_are_refused_at_admission() -> Result<()> {
    let cluster = cluster().await?;
    let namespace = cluster.namespace("admission").await?;
    let mut two_backends = atto_spec();
    two_backends.key.gcp_kms =
        Some(GcpKmsSpec { key_version: "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1".into() });
    let mut tezos_with_capabilities = atto_spec();
    tezos_with_capabilities.protocol = Protocol::Tezos;
    let mut short_grace = atto_spec();
    short_grace.token = Some(TokenSpec { rotation_interval: None, grace_period: Some("10s".into()) });
    let mut long_grace = atto_spec();
    long_grace.token = Some(TokenSpec { rotation_interval: Some("1h".into()), grace_period: Some("2h".into()) });
    let tezos = |ratchet: serde_json::Value| -> Result<RemoteSignerSpec> {
        let mut spec = atto_spec();
        (spec.protocol, spec.atto) = (Protocol::Tezos, None);
        spec.ratchet = Some(serde_json::from_value(ratchet)?);
        Ok(spec)
    };
    let fence = json!({ "fence": { "level": 5 } });
    let both = json!({ "fence": { "level": 5, "chainId": "NetXdQprcVkpaWU" }, "configMapKeyRef": { "name": "m", "key": "k" } });
    let file_store =
        json!({ "store": "File", "initialMarks": { "fence": { "level": 5, "chainId": "NetXdQprcVkpaWU" } } });
    let zero = json!({ "initialMarks": { "fence": { "level": 0, "chainId": "NetXdQprcVkpaWU" } } });
    for (spec, expected) in [
        (tezos(json!({ "initialMarks": fence }))?, "spec.ratchet.initialMarks.fence: set chainId"),
        (tezos(json!({ "initialMarks": both }))?, "set exactly one of configMapKeyRef, secretKeyRef, fence"),
        (tezos(file_store)?, "spec.ratchet.initialMarks needs store ConfigMap"),
        (tezos(zero)?, "should be greater than or equal to 1"),
        (two_backends, "spec.key: set exactly one of secretRef, pkcs11, gcpKms, awsKms, azureKeyVault"),
        (tezos_with_capabilities, "spec.atto (capabilities) is only for protocol Atto"),
        (short_grace, "spec.token.gracePeriod is a duration of at least 1m"),
        (long_grace, "spec.token.gracePeriod must be shorter than spec.token.rotationInterval"),
    ] {
        let error = create(&cluster.client, &namespace.name, "bad", spec).await.unwrap_err();
        let message = format!("{error:#}");
        assert!(message.contains(expected), "{message}");
    }
    Ok(())
}

/// The controller watches what it made: the signer's Role and RoleBinding deleted by hand (a
/// `kubectl delete`) come back at once, not at the next periodic reconcile (hours away for a
/// Ready RemoteSigner). Deleted twice: the first time a reconcile still under way after Ready
/// (the one its own status write starts) may restore them; the second time only the watch can.
#[tokio::test]
async fn the_marks_access_deleted_by_hand_comes_back() -> Result<()> {
    let cluster = cluster().await?;
    let namespace = cluster.namespace("owns").await?;
    let (client, ns) = (cluster.client.clone(), namespace.name.as_str());
    key_secret(&client, ns).await?;
    create(&client, ns, "voter", atto_spec_with_key("voter-key")).await?;
    let _operator = Operator::start(&cluster.kubeconfig, ns, &[])?;
    wait_ready(&client, ns, "voter", "True").await?;
    let roles: Api<Role> = Api::namespaced(client.clone(), ns);
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), ns);
    let uid = |meta: &kube::api::ObjectMeta| meta.uid.clone().unwrap_or_default();
    for round in ["first", "second"] {
        let role = uid(&roles.get("voter-ratchet").await?.metadata);
        let binding = uid(&bindings.get("voter-ratchet").await?.metadata);
        roles.delete("voter-ratchet", &DeleteParams::default()).await?;
        bindings.delete("voter-ratchet", &DeleteParams::default()).await?;
        wait_for(&format!("the Role and RoleBinding back ({round} deletion)"), Duration::from_secs(20), || async {
            let role_back = roles.get_opt("voter-ratchet").await?.is_some_and(|r| uid(&r.metadata) != role);
            let binding_back = bindings.get_opt("voter-ratchet").await?.is_some_and(|b| uid(&b.metadata) != binding);
            Ok((role_back && binding_back).then_some(()))
        })
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn restart_mid_way_loses_and_duplicates_nothing() -> Result<()> {
    let cluster = cluster().await?;
    let namespace = cluster.namespace("restart").await?;
    let (client, ns) = (cluster.client.clone(), namespace.name.as_str());
    for i in 0..5 {
        named_key_secret(&client, ns, &format!("signer-{i}-key"), i).await?;
    }
    for i in 0..3 {
        create(&client, ns, &format!("signer-{i}"), atto_spec_with_key(&format!("signer-{i}-key"))).await?;
    }
    let mut operator = Operator::start(&cluster.kubeconfig, ns, &[])?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut tokens = BTreeMap::new();
    for i in 0..3 {
        wait_ready(&client, ns, &format!("signer-{i}"), "True").await?;
        tokens.insert(i, secrets.get(&format!("signer-{i}-token")).await?.data.unwrap()["token"].clone());
    }
    operator.kill();
    for i in 3..5 {
        create(&client, ns, &format!("signer-{i}"), atto_spec_with_key(&format!("signer-{i}-key"))).await?;
    }
    let _operator = Operator::start(&cluster.kubeconfig, ns, &[])?;
    for i in 0..5 {
        wait_ready(&client, ns, &format!("signer-{i}"), "True").await?;
    }
    for (i, token) in tokens {
        assert_eq!(
            secrets.get(&format!("signer-{i}-token")).await?.data.unwrap()["token"],
            token,
            "signer-{i} kept its token"
        );
    }
    let ours = secrets.list(&ListParams::default().labels("app.kubernetes.io/managed-by=sigil-operator")).await?;
    assert_eq!(ours.items.len(), 5, "one token Secret per RemoteSigner");
    Ok(())
}

#[tokio::test]
async fn only_the_leader_acts_and_a_standby_takes_over() -> Result<()> {
    let cluster = cluster().await?;
    let namespace = cluster.namespace("leader").await?;
    let (client, ns) = (cluster.client.clone(), namespace.name.as_str());
    key_secret(&client, ns).await?;
    let lease = ["--lease-duration", "3s"];
    let mut operators =
        [Operator::start(&cluster.kubeconfig, ns, &lease)?, Operator::start(&cluster.kubeconfig, ns, &lease)?];
    let leader = wait_for("one leader", DEADLINE, || async {
        let leaders: Vec<usize> = (0..2).filter(|&i| operators[i].metric("sigil_operator_leader") == 1.0).collect();
        Ok((leaders.len() == 1).then(|| leaders[0]))
    })
    .await?;
    create(&client, ns, "first", atto_spec()).await?;
    wait_ready(&client, ns, "first", "True").await?;
    let standby = 1 - leader;
    assert!(operators[leader].metric("sigil_operator_reconciles_total") >= 1.0);
    assert_eq!(operators[standby].metric("sigil_operator_reconciles_total"), 0.0, "the standby never reconciles");
    assert_eq!(operators[standby].metric("sigil_operator_leader"), 0.0);

    // The leader crashes without releasing its Lease: the standby leads once it expires.
    operators[leader].kill();
    wait_for("the standby to lead", Duration::from_secs(30), || async {
        Ok((operators[standby].metric("sigil_operator_leader") == 1.0).then_some(()))
    })
    .await?;
    named_key_secret(&client, ns, "second-key", 2).await?;
    create(&client, ns, "second", atto_spec_with_key("second-key")).await?;
    wait_ready(&client, ns, "second", "True").await?;
    Ok(())
}

#[tokio::test]
async fn token_rotates_and_the_previous_one_is_dropped_after_grace() -> Result<()> {
    let cluster = cluster().await?;
    let namespace = cluster.namespace("rotation").await?;
    let (client, ns) = (cluster.client.clone(), namespace.name.as_str());
    key_secret(&client, ns).await?;
    // A token Secret from an earlier operator run, rotated 110 s ago: the operator adopts it, and
    // with a 2 m interval its rotation is 10 s away (the test need not wait out a whole interval).
    let rotated_at =
        (k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(110)).to_string();
    create_from_json::<Secret>(
        &client,
        ns,
        json!({
            "metadata": { "name": "rotating-token", "annotations": { "sigil.dev/rotated-at": rotated_at } },
            "stringData": { "token": "first-token-from-an-earlier-run", "token.previous": "" },
        }),
    )
    .await?;
    let mut spec = atto_spec();
    spec.token = Some(TokenSpec { rotation_interval: Some("2m".into()), grace_period: Some("1m".into()) });
    create(&client, ns, "rotating", spec).await?;
    // Two Atto nodes that read the token from their environment.
    let deployment: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
        "metadata": { "name": "nodes" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "nodes" } },
            "template": {
                "metadata": { "labels": { "app": "nodes", "sigil.dev/signer": "rotating" } },
                "spec": { "containers": [{ "name": "node", "image": "atto/node:1" }] }
            }
        }
    }))?;
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &deployment)
        .await?;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), ns);
    let running = |list: &kube::api::ObjectList<k8s_openapi::api::core::v1::Pod>| -> Vec<String> {
        list.items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .map(|p| p.name_any())
            .collect()
    };
    let originals = wait_for("two node pods Running", DEADLINE, || async {
        let names = running(&pods.list(&ListParams::default().labels("app=nodes")).await?);
        Ok((names.len() == 2).then_some(names))
    })
    .await?;
    let operator = Operator::start(&cluster.kubeconfig, ns, &[])?;
    wait_ready(&client, ns, "rotating", "True").await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let first = k8s_openapi::ByteString(b"first-token-from-an-earlier-run".to_vec());
    assert_eq!(secrets.get("rotating-token").await?.data.unwrap()["token"], first, "adopted, not replaced");

    let rotation = Duration::from_secs(90);
    let rotated = wait_for("the first rotation", rotation, || async {
        let data = secrets.get("rotating-token").await?.data.unwrap();
        Ok((data["token"] != first).then_some(data))
    })
    .await?;
    assert_eq!(rotated["token.previous"], first, "the old token stays valid during the grace period");
    let signers: Api<RemoteSigner> = Api::namespaced(client.clone(), ns);
    wait_for("status to show the grace period", DEADLINE, || async {
        let status = signers.get("rotating").await?.status.unwrap_or_default();
        Ok(status.previous_token_expires_at.map(|_| ()))
    })
    .await?;

    // The pods holding the old token are replaced, one at a time; only then is it dropped. The
    // deadline is the 1-minute grace period plus room for two replacements on a busy machine.
    let dropped = wait_for("the previous token to be dropped", Duration::from_secs(180), || async {
        let data = secrets.get("rotating-token").await?.data.unwrap();
        let names = running(&pods.list(&ListParams::default().labels("app=nodes")).await?);
        if data["token.previous"].0.is_empty() {
            assert!(
                names.iter().all(|n| !originals.contains(n)),
                "previous dropped while {names:?} still ran the old token"
            );
            return Ok(Some(()));
        }
        Ok(None)
    })
    .await;
    if let Err(error) = dropped {
        // Say what the operator and the cluster saw, so that a failure here can be diagnosed
        // from the CI log: the pods' phases and readiness, and the namespace's events.
        let logs: Vec<String> = operator.logs.try_iter().collect();
        let tail = logs[logs.len().saturating_sub(40)..].join("\n");
        let listed = pods.list(&ListParams::default()).await?.items;
        let pods: Vec<String> = listed
            .iter()
            .map(|p| {
                let status = p.status.clone().unwrap_or_default();
                let ready: Vec<String> =
                    status.conditions.iter().flatten().map(|c| format!("{}={}", c.type_, c.status)).collect();
                let deleting = p.metadata.deletion_timestamp.is_some();
                format!("{} {:?} deleting={deleting} {ready:?}", p.name_any(), status.phase)
            })
            .collect();
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
        let events: Vec<String> = events
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .map(|e| format!("{} {}", e.reason.clone().unwrap_or_default(), e.note.clone().unwrap_or_default()))
            .collect();
        return Err(error.context(format!(
            "operator log (last 40 lines):\n{tail}\npods:\n{}\nevents:\n{}",
            pods.join("\n"),
            events.join("\n")
        )));
    }
    wait_for("two fresh pods Running", DEADLINE, || async {
        let names = running(&pods.list(&ListParams::default().labels("app=nodes")).await?);
        Ok((names.len() == 2 && names.iter().all(|n| !originals.contains(n))).then_some(()))
    })
    .await?;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let reasons: Vec<String> =
        events.list(&ListParams::default()).await?.items.into_iter().filter_map(|e| e.reason).collect();
    for reason in ["TokenRotated", "PodRestarted", "PreviousTokenDropped"] {
        assert!(reasons.iter().any(|r| r == reason), "no {reason} event in {reasons:?}");
    }
    Ok(())
}

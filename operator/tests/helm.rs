//! The Helm chart against the real API server: `helm lint` is clean, `helm install` creates the
//! operator's Deployment (2 replicas), PDB, Services, ServiceAccount and least-privilege RBAC, and
//! an operator running as the chart's ServiceAccount (impersonated: the local control plane's pods
//! are kwok's, which run nothing) reconciles and injects with exactly the chart's rights. `helm
//! uninstall` removes all of it, including the webhook registration and certificate the operator
//! created at runtime (owned by the chart's ClusterRole), and leaves the CRD (Helm's rule).
//! The rendered RBAC is checked rule by rule, with and without `watchNamespace`; with it, the
//! operator runs confined to the watched namespace plus its own Lease and certificate Secret.

mod common;

use anyhow::{ensure, Context, Result};
use common::*;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};
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
    let pod_security = spec.template.spec.as_ref().unwrap().security_context.clone().unwrap();
    assert_eq!((pod_security.run_as_non_root, pod_security.run_as_user), (Some(true), Some(65532)));
    let container = &spec.template.spec.as_ref().unwrap().containers[0];
    let security = container.security_context.clone().unwrap();
    assert_eq!((security.read_only_root_filesystem, security.allow_privilege_escalation), (Some(true), Some(false)));
    assert_eq!(security.capabilities.and_then(|c| c.drop), Some(vec!["ALL".to_string()]));
    assert!(container.readiness_probe.is_some() && container.liveness_probe.is_some() && container.resources.is_some());
    Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns).get(&fullname).await?;
    Api::<Service>::namespaced(client.clone(), &ns).get(&fullname).await?;
    Api::<Service>::namespaced(client.clone(), &ns).get(&format!("{fullname}-metrics")).await?;
    let role = Api::<ClusterRole>::all(client.clone()).get(&fullname).await?;
    // Namespaced install: the ClusterRole keeps only what is cluster-scoped; the rest is a Role.
    assert_eq!(role.rules.as_ref().unwrap().len(), 2);
    Api::<Role>::namespaced(client.clone(), &ns).get(&fullname).await?;

    // The operator as the chart's ServiceAccount, with the chart's rights and nothing more.
    setup_key_and_account(&client, &ns).await?;
    create(&client, &ns, "voter", atto_spec()).await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = impersonating_kubeconfig(&cluster, &ns, &fullname, dir.path())?;
    let mut args = webhook_args();
    args.extend(["--owner-cluster-role".to_string(), fullname.clone(), "--lease-name".into(), fullname.clone()]);
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
            && Api::<Role>::namespaced(client.clone(), &ns).get_opt(&fullname).await?.is_none()
            && Api::<RoleBinding>::namespaced(client.clone(), &ns)
                .get_opt(&format!("{fullname}-self"))
                .await?
                .is_none()
            && webhooks.get_opt(&format!("sigil-operator-{ns}")).await?.is_none()
            && secrets.get_opt(&certificate).await?.is_none()
            && Api::<Lease>::namespaced(client.clone(), &ns).get_opt(&fullname).await?.is_none();
        Ok(gone.then_some(()))
    })
    .await?;
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    assert!(crds.get_opt("remotesigners.sigil.dev").await?.is_some(), "Helm keeps CRDs");
    Ok(())
}

/// Every object `helm template` renders with `values` (`--set` arguments).
fn rendered(values: &[&str]) -> Result<Vec<Value>> {
    let chart = repo_path("charts/sigil");
    let mut args = vec!["template", "sigil", chart.to_str().unwrap(), "--namespace", "sigil-system"];
    args.extend(["--kube-version", "1.33.0"]);
    for value in values {
        args.extend(["--set", value]);
    }
    let output = std::process::Command::new(sigil_tests::cluster::tool_path("helm")).args(&args).output()?;
    ensure!(output.status.success(), "helm template: {}", String::from_utf8_lossy(&output.stderr));
    let mut objects = Vec::new();
    for document in yaml_serde::Deserializer::from_slice(&output.stdout) {
        objects.push(Value::deserialize(document)?);
    }
    Ok(objects)
}

/// The RBAC objects `helm template` renders: (kind, namespace, name) → rules (Roles), or the
/// binding's roleRef and subjects.
fn rendered_rbac(values: &[&str]) -> Result<std::collections::BTreeMap<String, Value>> {
    let mut objects = std::collections::BTreeMap::new();
    for object in rendered(values)? {
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let key = format!(
            "{kind} {}/{}",
            object["metadata"]["namespace"].as_str().unwrap_or("-"),
            object["metadata"]["name"].as_str().unwrap_or_default()
        );
        match kind.as_str() {
            "ClusterRole" | "Role" => objects.insert(key, object["rules"].clone()),
            "ClusterRoleBinding" | "RoleBinding" => {
                objects.insert(key, json!({ "roleRef": object["roleRef"], "subjects": object["subjects"] }))
            }
            _ => None,
        };
    }
    Ok(objects)
}

/// The operator's environment in the rendered Deployment.
fn operator_env(values: &[&str]) -> Result<std::collections::BTreeMap<String, String>> {
    let deployment = rendered(values)?.into_iter().find(|o| o["kind"] == "Deployment").context("a Deployment")?;
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].as_array().cloned().unwrap_or_default();
    Ok(env.iter().filter_map(|e| Some((e["name"].as_str()?.to_string(), e["value"].as_str()?.to_string()))).collect())
}

/// The signer images a RemoteSigner may name are the installer's choice: by default the chart's
/// own signer repository (the operator derives it), or the listed prefixes.
#[test]
fn the_signer_image_allowlist_is_a_chart_value() -> Result<()> {
    let env = operator_env(&[])?;
    assert!(env["SIGIL_SIGNER_IMAGE"].starts_with("ghcr.io/sigil-dev/sigil-signer:"), "{env:?}");
    assert!(!env.contains_key("SIGIL_ALLOWED_SIGNER_IMAGES"), "the default: the signer image's repository");
    let env = operator_env(&["allowedSignerImages={registry.example.com/sigil/,ghcr.io/sigil-dev/sigil-signer}"])?;
    assert_eq!(env["SIGIL_ALLOWED_SIGNER_IMAGES"], "registry.example.com/sigil/,ghcr.io/sigil-dev/sigil-signer");
    Ok(())
}

use serde::Deserialize as _;

/// What the operator needs where it acts (charts/sigil/rbac/operator-rules.yaml without its Lease
/// rule), exactly.
fn where_it_acts() -> Value {
    json!([
        { "apiGroups": ["sigil.dev"], "resources": ["remotesigners"], "verbs": ["get", "list", "watch", "patch"] },
        { "apiGroups": ["sigil.dev"], "resources": ["remotesigners/status"], "verbs": ["get", "patch"] },
        { "apiGroups": ["sigil.dev"], "resources": ["remotesigners/finalizers"], "verbs": ["update"] },
        { "apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch", "create", "patch", "update"] },
        { "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "patch", "update"] },
        { "apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get", "patch"] },
        { "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": ["get", "list", "watch", "create", "patch", "delete"] },
        { "apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"] },
        { "apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"] },
        { "apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"] },
    ])
}

fn cluster_scoped(webhook: Option<&str>) -> Vec<Value> {
    let mut rules = Vec::new();
    if let Some(webhook) = webhook {
        rules.push(json!({
            "apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
            "resourceNames": [webhook], "verbs": ["create", "patch"],
        }));
    }
    rules.push(json!({
        "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"],
        "resourceNames": ["sigil-operator"], "verbs": ["get"],
    }));
    rules
}

fn own_namespace(certificate: Option<&str>) -> Value {
    let mut rules = vec![
        json!({ "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["sigil-operator"], "verbs": ["get", "update"] }),
        json!({ "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"] }),
    ];
    if let Some(certificate) = certificate {
        rules.push(json!({ "apiGroups": [""], "resources": ["secrets"], "resourceNames": [certificate], "verbs": ["get", "list", "watch", "update"] }));
        rules.push(json!({ "apiGroups": [""], "resources": ["secrets"], "verbs": ["create"] }));
    }
    Value::Array(rules)
}

fn binding(kind: &str, name: &str) -> Value {
    json!({
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name },
        "subjects": [{ "kind": "ServiceAccount", "name": "sigil-operator", "namespace": "sigil-system" }],
    })
}

fn assert_same(rendered: &std::collections::BTreeMap<String, Value>, expected: Vec<(&str, Value)>) {
    let expected: std::collections::BTreeMap<String, Value> =
        expected.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let keys = |m: &std::collections::BTreeMap<String, Value>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(rendered), keys(&expected), "the RBAC objects");
    for (key, value) in &expected {
        let got = rendered[key].as_array().map(|rules| rules.iter().collect::<Vec<_>>());
        let want = value.as_array().map(|rules| rules.iter().collect::<Vec<_>>());
        match (got, want) {
            (Some(got), Some(want)) => {
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(g, w, "{key}: rule {i}");
                }
                assert_eq!(got.len(), want.len(), "{key}: number of rules");
            }
            _ => assert_eq!(&rendered[key], value, "{key}"),
        }
    }
}

/// Whether any rule in `rules` lets its holder delete a ConfigMap (the marks store) in any way.
fn may_delete_config_maps(rules: &Value) -> bool {
    let has = |rule: &Value, field: &str, wanted: &[&str]| {
        rule[field].as_array().into_iter().flatten().any(|v| v.as_str().is_some_and(|v| wanted.contains(&v)))
    };
    rules.as_array().into_iter().flatten().any(|rule| {
        has(rule, "apiGroups", &["", "*"])
            && has(rule, "resources", &["configmaps", "*"])
            && has(rule, "verbs", &["delete", "deletecollection", "*"])
    })
}

#[test]
fn rendered_rbac_is_exactly_the_least_privilege() -> Result<()> {
    // The marks outlive their RemoteSigner: whatever the values, the operator may not delete a
    // ConfigMap (nor may the rules file the RBAC tests bind).
    let variants: [&[&str]; 3] =
        [&[], &["watchNamespace=validators"], &["watchNamespace=validators", "webhook.enabled=false"]];
    for values in variants {
        for (object, rules) in rendered_rbac(values)? {
            assert!(!may_delete_config_maps(&rules), "{values:?}: {object} may delete ConfigMaps");
        }
    }
    let file: Value =
        yaml_serde::from_str(&std::fs::read_to_string(repo_path("charts/sigil/rbac/operator-rules.yaml"))?)?;
    assert!(!may_delete_config_maps(&file), "operator-rules.yaml may delete ConfigMaps");
    let control = json!([{ "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "delete"] }]);
    assert!(may_delete_config_maps(&control), "the check itself");

    // Every namespace: the rules where it acts in a ClusterRole.
    let mut all = where_it_acts().as_array().unwrap().clone();
    all.extend(cluster_scoped(Some("sigil-operator")));
    assert_same(
        &rendered_rbac(&[])?,
        vec![
            ("ClusterRole -/sigil-operator", Value::Array(all)),
            ("ClusterRoleBinding -/sigil-operator", binding("ClusterRole", "sigil-operator")),
            ("Role sigil-system/sigil-operator-self", own_namespace(Some("sigil-operator-webhook-tls"))),
            ("RoleBinding sigil-system/sigil-operator-self", binding("Role", "sigil-operator-self")),
        ],
    );

    // One namespace: the same rules in a Role there; the ClusterRole keeps what is cluster-scoped,
    // each narrowed to its one name.
    assert_same(
        &rendered_rbac(&["watchNamespace=validators"])?,
        vec![
            ("ClusterRole -/sigil-operator", Value::Array(cluster_scoped(Some("sigil-operator-validators")))),
            ("ClusterRoleBinding -/sigil-operator", binding("ClusterRole", "sigil-operator")),
            ("Role validators/sigil-operator", where_it_acts()),
            ("RoleBinding validators/sigil-operator", binding("Role", "sigil-operator")),
            ("Role sigil-system/sigil-operator-self", own_namespace(Some("sigil-operator-validators-webhook-tls"))),
            ("RoleBinding sigil-system/sigil-operator-self", binding("Role", "sigil-operator-self")),
        ],
    );

    // Without the webhook: no webhook configuration, no certificate Secret.
    assert_same(
        &rendered_rbac(&["watchNamespace=validators", "webhook.enabled=false"])?,
        vec![
            ("ClusterRole -/sigil-operator", Value::Array(cluster_scoped(None))),
            ("ClusterRoleBinding -/sigil-operator", binding("ClusterRole", "sigil-operator")),
            ("Role validators/sigil-operator", where_it_acts()),
            ("RoleBinding validators/sigil-operator", binding("Role", "sigil-operator")),
            ("Role sigil-system/sigil-operator-self", own_namespace(None)),
            ("RoleBinding sigil-system/sigil-operator-self", binding("Role", "sigil-operator-self")),
        ],
    );

    // The file the controller's RBAC test binds is the same rules, plus the Lease rule the chart
    // moves to the operator's namespace.
    let file: Value =
        yaml_serde::from_str(&std::fs::read_to_string(repo_path("charts/sigil/rbac/operator-rules.yaml"))?)?;
    let mut expected = where_it_acts().as_array().unwrap().clone();
    expected.push(
        json!({ "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"] }),
    );
    assert_eq!(file, Value::Array(expected));
    Ok(())
}

async fn client_for(kubeconfig: &std::path::Path) -> Result<Client> {
    let config = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default()).await?;
    Ok(Client::try_from(config)?)
}

fn forbidden<T: std::fmt::Debug>(result: kube::Result<T>) -> bool {
    matches!(result, Err(kube::Error::Api(status)) if status.code == 403)
}

/// `watchNamespace` set to another namespace than the operator's: the operator, as the chart's
/// ServiceAccount, reconciles and injects there, with its Lease and certificate at home, and can
/// do nothing elsewhere. Also shows how the API server authorises the webhook registration: a
/// server-side apply that creates the object is authorised as `create` with its name (so
/// `resourceNames` narrows it), while a plain POST create is refused.
#[tokio::test]
async fn a_namespaced_install_confines_the_operator() -> Result<()> {
    let cluster = cluster().await?;
    let home = cluster.namespace("helm-home").await?;
    let watched = cluster.namespace("helm-watched").await?;
    let elsewhere = cluster.namespace("helm-elsewhere").await?;
    let client = cluster.client.clone();
    let (home, watched) = (home.name.clone(), watched.name.clone());
    let release = format!("sigil-{}", &home[10..]);
    let fullname = format!("{release}-operator");
    let chart = repo_path("charts/sigil");
    let _cleanup = WebhookCleanup(cluster.kubeconfig.clone(), watched.clone());
    helm(
        &cluster,
        &["install", &release, chart.to_str().unwrap(), "-n", &home, "--set", &format!("watchNamespace={watched}")],
    )?;
    let mut uninstall = cluster.tool("helm");
    uninstall.args(["uninstall", &release, "-n", &home]);
    let _uninstall = Uninstall(uninstall);

    setup_key_and_account(&client, &watched).await?;
    create(&client, &watched, "voter", atto_spec()).await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = impersonating_kubeconfig(&cluster, &home, &fullname, dir.path())?;
    let mut args = webhook_args();
    args.extend(
        ["--owner-cluster-role", &fullname, "--lease-name", &fullname, "--lease-namespace", &home].map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let operator = Operator::start(&kubeconfig, &watched, &args)?;
    wait_ready(&client, &watched, "voter", "True").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &watched);
    webhook_active(&pods).await?;
    let injected = pods.create(&PostParams::default(), &pod("node", Some("voter"))).await?;
    assert!(injected.spec.unwrap().init_containers.is_some_and(|c| c[0].name == "sigil-signer"));
    assert_eq!(operator.metric("sigil_operator_leader"), 1.0, "it leads, through the Lease at home");
    let certificate = format!("sigil-operator-{watched}-webhook-tls");
    Api::<Secret>::namespaced(client.clone(), &home).get(&certificate).await?;

    // What the ServiceAccount cannot do.
    let confined = client_for(&kubeconfig).await?;
    let lp = ListParams::default();
    assert!(forbidden(Api::<Secret>::all(confined.clone()).list(&lp).await), "Secrets cluster-wide");
    assert!(forbidden(Api::<Secret>::namespaced(confined.clone(), &elsewhere.name).list(&lp).await));
    assert!(forbidden(Api::<Secret>::namespaced(confined.clone(), &home).list(&lp).await), "only its certificate");
    assert!(forbidden(Api::<Secret>::namespaced(confined.clone(), &home).get("someone-else").await));
    let remote_signers = Api::<sigil_operator::api::RemoteSigner>::namespaced(confined.clone(), &elsewhere.name);
    assert!(forbidden(remote_signers.list(&lp).await));
    let webhooks = Api::<MutatingWebhookConfiguration>::all(confined.clone());
    assert!(forbidden(webhooks.list(&lp).await));
    assert!(forbidden(webhooks.get(&format!("sigil-operator-{watched}")).await), "patch and create only");
    // Server-side apply of another name: refused, although it would be a create.
    let other = format!("sigil-operator-{}", elsewhere.name);
    let apply = json!({ "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration", "metadata": { "name": other } });
    assert!(forbidden(webhooks.patch(&other, &PatchParams::apply("sigil-tests"), &Patch::Apply(&apply)).await));
    // A POST create, even of its own name: the name is not known when RBAC decides, so a
    // resourceNames-narrowed create refuses it (the operator registers by server-side apply).
    let own: MutatingWebhookConfiguration =
        serde_json::from_value(json!({ "metadata": { "name": format!("sigil-operator-{watched}") } }))?;
    assert!(forbidden(webhooks.create(&PostParams::default(), &own).await));
    // The operator registered its configuration itself, though it did not exist before: server-side
    // apply of a missing object is authorised as `create` with the object's name.
    let registered =
        Api::<MutatingWebhookConfiguration>::all(client.clone()).get(&format!("sigil-operator-{watched}")).await?;
    assert_eq!(registered.owner_references()[0].name, fullname);
    Ok(())
}

/// Runs `helm uninstall` when the test ends, passed or not.
struct Uninstall(std::process::Command);

impl Drop for Uninstall {
    fn drop(&mut self) {
        let _ = self.0.output();
    }
}

/// How the API server authorises a server-side apply that creates its object (what the operator
/// does for its first webhook registration): as `patch`, and then also as `create` with the
/// object's name, so a `create` narrowed by `resourceNames` allows it; `patch` alone does not.
/// (kubernetes/kubernetes: staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go,
/// `createAuthorizerAttributes`.)
#[tokio::test]
async fn server_side_apply_of_a_missing_object_is_authorised_as_a_named_create() -> Result<()> {
    let cluster = cluster().await?;
    let namespace = cluster.namespace("ssa-create").await?;
    let client = cluster.client.clone();
    let ns = namespace.name.clone();
    let name = format!("sigil-test-{ns}");
    let account: ServiceAccount = serde_json::from_value(json!({ "metadata": { "name": "applier" } }))?;
    Api::<ServiceAccount>::namespaced(client.clone(), &ns).create(&PostParams::default(), &account).await?;
    let roles = Api::<ClusterRole>::all(client.clone());
    let bindings = Api::<ClusterRoleBinding>::all(client.clone());
    let _cleanup = ClusterRbacCleanup(cluster.kubeconfig.clone(), name.clone());
    let grant = |verbs: &[&str]| -> Result<ClusterRole> {
        Ok(serde_json::from_value(json!({
            "metadata": { "name": name, "labels": { "sigil.dev/test": "true" } },
            "rules": [{ "apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
                        "resourceNames": [name], "verbs": verbs }],
        }))?)
    };
    roles.create(&PostParams::default(), &grant(&["patch"])?).await?;
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { "sigil.dev/test": "true" } },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name },
        "subjects": [{ "kind": "ServiceAccount", "name": "applier", "namespace": ns }],
    }))?;
    bindings.create(&PostParams::default(), &binding).await?;
    let dir = tempfile::tempdir()?;
    let applier = client_for(&impersonating_kubeconfig(&cluster, &ns, "applier", dir.path())?).await?;
    let webhooks = Api::<MutatingWebhookConfiguration>::all(applier);
    let object = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": { "name": name, "labels": { "sigil.dev/test": "true" } },
    });
    let (params, patch) = (PatchParams::apply("sigil-tests").force(), Patch::Apply(&object));
    let apply = || webhooks.patch(&name, &params, &patch);

    // `patch` alone: the apply would create the object, and that is refused.
    let refused = apply().await;
    assert!(forbidden(refused), "patch without create");
    // `create` narrowed to the name: allowed; RBAC decides with rules that are eventually
    // consistent, so wait for it.
    roles
        .patch(&name, &PatchParams::apply("sigil-tests").force(), &Patch::Apply(&grant(&["create", "patch"])?))
        .await?;
    wait_for("the named create to be allowed", DEADLINE, || async {
        match apply().await {
            Ok(created) => Ok(Some(created)),
            Err(kube::Error::Api(status)) if status.code == 403 => Ok(None),
            Err(error) => Err(error.into()),
        }
    })
    .await?;
    // Updating it by apply needs `patch` only; a POST create of the same name is still refused
    // (the name is not part of the request RBAC sees), which is why the operator applies.
    apply().await?;
    let plain: MutatingWebhookConfiguration = serde_json::from_value(json!({ "metadata": { "name": name } }))?;
    assert!(forbidden(webhooks.create(&PostParams::default(), &plain).await));
    Ok(())
}

/// Deletes a test's ClusterRole, ClusterRoleBinding and webhook configuration of one name.
struct ClusterRbacCleanup(std::path::PathBuf, String);

impl Drop for ClusterRbacCleanup {
    fn drop(&mut self) {
        let name = self.1.clone();
        sigil_tests::cluster::cleanup(&self.0, |client| async move {
            let _ = Api::<ClusterRoleBinding>::all(client.clone()).delete(&name, &Default::default()).await;
            let _ = Api::<ClusterRole>::all(client.clone()).delete(&name, &Default::default()).await;
            let _ = Api::<MutatingWebhookConfiguration>::all(client).delete(&name, &Default::default()).await;
        });
    }
}

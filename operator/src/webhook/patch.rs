//! The pod mutation, as a pure function: a Pod and its RemoteSigner in, a JSON patch (plus
//! warnings) out. Idempotent: a pod that already has `sigil-signer` gets an empty patch, so
//! re-invocation and replays change nothing. It adds the signer, and takes from the node's
//! containers only what would hand them the signer's powers: the pod's Kubernetes API token (which
//! may rewrite the marks) and the cloud web-identity tokens (which may use the KMS key directly).

use k8s_openapi::api::core::v1::{Container, Pod, Volume};
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::api::{Protocol, RemoteSigner};
use crate::controller::desired::{config_map_name, secret_volumes, service_account, token_secret_name};
use crate::sidecar::{API_ACCESS_DIR, API_PORT, CONFIG_DIR, CONFIG_FILE, CONTAINER, MANAGEMENT_PORT, TOKEN_DIR};

/// The pod label that opts in: `sigil.dev/signer: <RemoteSigner name>`.
pub const SIGNER_LABEL: &str = "sigil.dev/signer";
/// Set on injected pods: which RemoteSigner was injected.
pub const INJECTED_ANNOTATION: &str = "sigil.dev/injected";
/// `native` (an initContainer with restartPolicy Always) or `container` (a regular container).
/// Without it: native where the cluster supports it (Kubernetes 1.29 and later).
pub const MODE_ANNOTATION: &str = "sigil.dev/sidecar-mode";
/// `"true"`: the node's containers keep the pod's API and cloud credentials. Weakens the
/// guarantee: a compromised node can then rewrite the marks, or use a KMS key directly.
pub const SHARE_CREDENTIALS_ANNOTATION: &str = "sigil.dev/share-credentials-with-node";
/// Atto: the containers (comma-separated) that get the API token in their environment. Default:
/// the `kubectl.kubernetes.io/default-container`, else the first container.
pub const TOKEN_CONTAINERS_ANNOTATION: &str = "sigil.dev/token-containers";
const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

const VOLUMES: [&str; 5] = ["sigil-token", "sigil-config", "sigil-key", "sigil-identity", "sigil-api-access"];
/// The cloud web-identity token volumes EKS (IRSA) and Azure Workload Identity mount, and the
/// environment that points at them.
const CLOUD_TOKEN_VOLUMES: [&str; 2] = ["aws-iam-token", "azure-identity-token"];
const CLOUD_ENV: [&str; 9] = [
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_STS_REGIONAL_ENDPOINTS",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
];

#[derive(Debug, Default, PartialEq)]
pub struct Injection {
    /// JSON patch operations (RFC 6902).
    pub patch: Vec<Value>,
    pub warnings: Vec<String>,
}

pub fn has_signer(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return false };
    spec.containers.iter().chain(spec.init_containers.iter().flatten()).any(|c| c.name == CONTAINER)
}

/// Why a pod does not get a signer: the webhook refuses it with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodRefusal {
    #[error("the pod has no spec")]
    NoSpec,
    #[error("the pod sets {field}: true, so {reason}; sigil refuses to put a key there")]
    SharesNamespace { field: &'static str, reason: &'static str },
    #[error("the pod already has a volume named {0}; sigil needs that name")]
    VolumeName(&'static str),
    #[error("the pod names container {0} for the Atto token, but has no such container")]
    NoTokenContainer(String),
}

/// A pod that shares the node's network or processes with its containers, or its containers'
/// processes with each other, would expose the signer: refused, naming the field.
fn refuse_shared_namespaces(pod: &Pod) -> Result<(), PodRefusal> {
    let Some(spec) = &pod.spec else { return Err(PodRefusal::NoSpec) };
    let why = [
        (spec.host_network, "hostNetwork", "the signer's loopback APIs would be the whole node's, reachable by every process on it and every pod with hostNetwork"),
        (spec.host_pid, "hostPID", "every process on the node could read the signer's memory and files through /proc"),
        (spec.host_ipc, "hostIPC", "the node's processes would share the signer's IPC namespace"),
        (spec.share_process_namespace, "shareProcessNamespace", "the node's containers could read the signer's memory and files (the key) through /proc"),
    ];
    match why.into_iter().find(|(set, _, _)| *set == Some(true)) {
        Some((_, field, reason)) => Err(PodRefusal::SharesNamespace { field, reason }),
        None => Ok(()),
    }
}

/// The pod's API token (the ServiceAccount admission plugin's `kube-api-access-*`, or any
/// projected ServiceAccount token for the API server's audience).
fn is_api_token_volume(volume: &Volume) -> bool {
    let projected_token = volume.projected.as_ref().is_some_and(|p| {
        p.sources
            .iter()
            .flatten()
            .any(|s| s.service_account_token.as_ref().is_some_and(|t| t.audience.as_deref().unwrap_or("").is_empty()))
    });
    volume.name.starts_with("kube-api-access-") || projected_token
}

/// The patch that adds the signer to `pod`, running `image` (already checked against the
/// allowlist). `Err` is a refusal with its reason. `native_default` says whether the cluster runs
/// native sidecars (the pod's annotation may override it).
pub fn inject(pod: &Pod, rs: &RemoteSigner, image: &str, native_default: bool) -> Result<Injection, PodRefusal> {
    refuse_shared_namespaces(pod)?;
    let Some(spec) = &pod.spec else { return Err(PodRefusal::NoSpec) };
    let pending = pod.status.as_ref().and_then(|s| s.phase.as_deref()).is_none_or(|phase| phase == "Pending");
    if has_signer(pod) || !pending {
        return Ok(Injection::default());
    }
    let existing: Vec<&str> = spec.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
    if let Some(clash) = VOLUMES.iter().find(|v| existing.contains(v)) {
        return Err(PodRefusal::VolumeName(clash));
    }

    let name = rs.name_any();
    let annotations = pod.metadata.annotations.as_ref();
    let annotation = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
    let token_targets = if rs.spec.protocol == Protocol::Atto { token_containers(pod)? } else { Vec::new() };
    let mut out = Injection::default();
    let mut ops = Vec::new();
    let mut add = |path: String, value: Value| ops.push(json!({ "op": "add", "path": path, "value": value }));

    // The node's containers lose the pod's credentials: the API token, which may update the
    // marks, and cloud web-identity tokens, which may sign with the KMS key, bypassing the marks.
    // What the ServiceAccount plugin and cloud webhooks mounted before us is what reaches the
    // kubelet unless removed here; automountServiceAccountToken: false keeps the plugin from
    // mounting it again when admission is re-run after us.
    let share = annotation(SHARE_CREDENTIALS_ANNOTATION) == Some("true");
    let volumes = spec.volumes.iter().flatten();
    let api_tokens: Vec<&str> = volumes.clone().filter(|v| is_api_token_volume(v)).map(|v| v.name.as_str()).collect();
    let cloud_tokens: Vec<&str> =
        volumes.clone().filter(|v| CLOUD_TOKEN_VOLUMES.contains(&v.name.as_str())).map(|v| v.name.as_str()).collect();
    let users =
        [("initContainers", spec.init_containers.as_deref().unwrap_or_default()), ("containers", &spec.containers[..])];
    let mut removals = Vec::new();
    let mut cloud_mounts: Vec<Value> = Vec::new();
    let mut cloud_env: Vec<Value> = Vec::new();
    for (list, containers) in users {
        for (i, container) in containers.iter().enumerate() {
            for (j, mount) in container.volume_mounts.as_deref().unwrap_or_default().iter().enumerate().rev() {
                let api = api_tokens.contains(&mount.name.as_str()) || mount.mount_path == API_ACCESS_DIR;
                let cloud = cloud_tokens.contains(&mount.name.as_str());
                if cloud && !cloud_mounts.iter().any(|m| m["name"] == mount.name) {
                    cloud_mounts.push(json!({ "name": mount.name, "mountPath": mount.mount_path, "readOnly": true }));
                }
                if (api || cloud) && !share {
                    removals.push(json!({ "op": "remove", "path": format!("/spec/{list}/{i}/volumeMounts/{j}") }));
                }
            }
            for env in container.env.iter().flatten().filter(|e| CLOUD_ENV.contains(&e.name.as_str())) {
                if !cloud_env.iter().any(|e| e["name"] == env.name) {
                    cloud_env.push(serde_json::to_value(env).unwrap_or_default());
                }
            }
        }
    }
    if share {
        out.warnings.push(format!(
            "{SHARE_CREDENTIALS_ANNOTATION}: the node's containers keep the pod's Kubernetes API and cloud \
             credentials: a compromised node could rewrite the high-water marks or use the key directly"
        ));
    } else {
        // The plugin's own volume goes too; a volume the user declared stays, unmounted.
        for (index, volume) in spec.volumes.as_deref().unwrap_or_default().iter().enumerate().rev() {
            if volume.name.starts_with("kube-api-access-") {
                removals.push(json!({ "op": "remove", "path": format!("/spec/volumes/{index}") }));
            }
        }
        add("/spec/automountServiceAccountToken".into(), json!(false));
    }

    if annotations.is_none() {
        add("/metadata/annotations".into(), json!({}));
    }
    add(format!("/metadata/annotations/{}", escape(INJECTED_ANNOTATION)), json!(name));
    let identity = rs.spec.workload_identity.clone().unwrap_or_default();
    if !share {
        // For a cloud webhook that runs after this one: give the node's containers no token.
        let users: Vec<&str> =
            spec.init_containers.iter().flatten().chain(&spec.containers).map(|c| c.name.as_str()).collect();
        if identity.aws_role_arn.is_some() {
            add(
                format!("/metadata/annotations/{}", escape("eks.amazonaws.com/skip-containers")),
                json!(users.join(",")),
            );
        }
        if identity.azure_client_id.is_some() {
            add(
                format!("/metadata/annotations/{}", escape("azure.workload.identity/skip-containers")),
                json!(users.join(";")),
            );
        }
    }

    let secret_volumes = secret_volumes(rs);
    let mut volumes = vec![
        json!({ "name": "sigil-token", "secret": { "secretName": token_secret_name(&name), "defaultMode": 0o444 } }),
        json!({ "name": "sigil-config", "configMap": { "name": config_map_name(&name) } }),
        // The signer's own API credential, mounted into it alone: a short-lived token of the
        // pod's ServiceAccount, the cluster CA and the namespace, as the plugin would mount them.
        json!({ "name": "sigil-api-access", "projected": { "defaultMode": 0o444, "sources": [
            { "serviceAccountToken": { "path": "token", "expirationSeconds": 3607 } },
            { "configMap": { "name": "kube-root-ca.crt", "items": [{ "key": "ca.crt", "path": "ca.crt" }] } },
            { "downwardAPI": { "items": [{ "path": "namespace", "fieldRef": { "apiVersion": "v1", "fieldPath": "metadata.namespace" } }] } },
        ] } }),
    ];
    volumes.extend(secret_volumes.iter().map(|(volume, _)| volume.clone()));
    append_all(&mut add, "/spec/volumes", spec.volumes.is_none(), &volumes);

    let native = match annotation(MODE_ANNOTATION) {
        Some("container") => false,
        Some("native") => true,
        _ => native_default,
    };
    let mut mounts = secret_volumes
        .iter()
        .map(|(volume, dir)| json!({ "name": volume["name"], "mountPath": dir, "readOnly": true }))
        .collect::<Vec<_>>();
    mounts.extend(cloud_mounts);
    let container = signer_container(rs, image, native, &mounts, &cloud_env);
    if native {
        // First, so it is up before the other init containers and the node start.
        match &spec.init_containers {
            None => add("/spec/initContainers".into(), json!([container])),
            Some(_) => add("/spec/initContainers/0".into(), container),
        }
    } else {
        add("/spec/containers/-".into(), container);
    }

    for (index, user) in spec.containers.iter().enumerate().filter(|(_, c)| token_targets.contains(&c.name)) {
        let env = atto_env(&name, user, &mut out.warnings);
        append_all(&mut add, &format!("/spec/containers/{index}/env"), user.env.is_none(), &env);
    }
    if token_targets.len() == 1 && spec.containers.len() > 1 && annotation(TOKEN_CONTAINERS_ANNOTATION).is_none() {
        out.warnings.push(format!(
            "only container {} gets the Atto API token; name others in the annotation {TOKEN_CONTAINERS_ANNOTATION}",
            token_targets[0]
        ));
    }

    let pod_account = spec.service_account_name.clone().unwrap_or_else(|| "default".into());
    let signer_account = service_account(rs);
    if pod_account != signer_account {
        out.warnings.push(format!(
            "pod runs as ServiceAccount {pod_account} but RemoteSigner {name} configures {signer_account}: \
             the ratchet RBAC and Workload Identity are on {signer_account}"
        ));
    }
    if identity.azure_client_id.is_some()
        && pod.labels().get("azure.workload.identity/use").map(String::as_str) != Some("true")
    {
        out.warnings.push(
            "RemoteSigner uses Azure Workload Identity, but the pod lacks the label azure.workload.identity/use: \"true\"; \
             Azure's webhook will not give it a token"
                .into(),
        );
    }
    // Removals first, against the indexes as the pod has them; additions after.
    out.patch = removals.into_iter().chain(ops).collect();
    Ok(out)
}

/// The Atto node containers that get the API token: the annotation's list, else the default
/// container, else the first.
fn token_containers(pod: &Pod) -> Result<Vec<String>, PodRefusal> {
    let spec = pod.spec.as_ref().ok_or(PodRefusal::NoSpec)?;
    let annotations = pod.metadata.annotations.as_ref();
    let names: Vec<String> = match annotations.and_then(|a| a.get(TOKEN_CONTAINERS_ANNOTATION)) {
        Some(list) => list.split(',').map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect(),
        None => match annotations.and_then(|a| a.get(DEFAULT_CONTAINER_ANNOTATION)) {
            Some(default) => vec![default.clone()],
            None => spec.containers.iter().take(1).map(|c| c.name.clone()).collect(),
        },
    };
    if let Some(missing) = names.iter().find(|n| !spec.containers.iter().any(|c| c.name == **n)) {
        return Err(PodRefusal::NoTokenContainer(missing.clone()));
    }
    Ok(names)
}

/// `add` each value to the array at `path`, creating the array when it does not exist.
fn append_all(add: &mut impl FnMut(String, Value), path: &str, missing: bool, values: &[Value]) {
    if values.is_empty() {
        return;
    }
    if missing {
        add(path.to_string(), Value::Array(values.to_vec()));
    } else {
        for value in values {
            add(format!("{path}/-"), value.clone());
        }
    }
}

/// The node's remote-signer settings, except those the container already sets (left as they are,
/// with a warning).
fn atto_env(name: &str, container: &Container, warnings: &mut Vec<String>) -> Vec<Value> {
    let wanted = [
        json!({ "name": "ATTO_SIGNER_BACKEND", "value": "REMOTE" }),
        json!({ "name": "ATTO_SIGNER_REMOTE_URL", "value": format!("http://127.0.0.1:{API_PORT}") }),
        json!({ "name": "ATTO_SIGNER_REMOTE_TOKEN", "valueFrom": { "secretKeyRef": { "name": token_secret_name(name), "key": "token" } } }),
    ];
    let present: Vec<&str> = container.env.iter().flatten().map(|e| e.name.as_str()).collect();
    wanted
        .into_iter()
        .filter(|env| {
            let key = env["name"].as_str().unwrap_or_default();
            let set = present.contains(&key);
            if set {
                warnings.push(format!("container {} sets {key} itself; sigil left it as it is", container.name));
            }
            !set
        })
        .collect()
}

/// `mounts`: what the signer container mounts besides its token and config (its Secret volumes,
/// and cloud web-identity token mounts moved from the node's containers).
fn signer_container(rs: &RemoteSigner, image: &str, native: bool, mounts: &[Value], env: &[Value]) -> Value {
    let sidecar = rs.spec.sidecar.clone().unwrap_or_default();
    let resources = sidecar
        .resources
        .map(|r| serde_json::to_value(r).unwrap_or_default())
        .unwrap_or_else(|| json!({ "requests": { "cpu": "10m", "memory": "32Mi" }, "limits": { "memory": "64Mi" } }));
    // Whole-volume mounts (no subPath), so rotated tokens reach the signer.
    let mut volume_mounts = vec![
        json!({ "name": "sigil-token", "mountPath": TOKEN_DIR, "readOnly": true }),
        json!({ "name": "sigil-config", "mountPath": CONFIG_DIR, "readOnly": true }),
        json!({ "name": "sigil-api-access", "mountPath": API_ACCESS_DIR, "readOnly": true }),
    ];
    volume_mounts.extend(mounts.iter().cloned());
    let mut container = json!({
        "name": CONTAINER,
        "image": image,
        "args": ["--config", format!("{CONFIG_DIR}/{CONFIG_FILE}"), "--log-format", "json"],
        "ports": [{ "name": "sigil-mgmt", "containerPort": MANAGEMENT_PORT, "protocol": "TCP" }],
        "startupProbe": { "httpGet": { "path": "/readyz", "port": MANAGEMENT_PORT }, "periodSeconds": 1, "failureThreshold": 120 },
        "livenessProbe": { "httpGet": { "path": "/healthz", "port": MANAGEMENT_PORT }, "periodSeconds": 10 },
        "readinessProbe": { "httpGet": { "path": "/readyz", "port": MANAGEMENT_PORT }, "periodSeconds": 5 },
        "resources": resources,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"] },
            "seccompProfile": { "type": "RuntimeDefault" },
        },
        "volumeMounts": volume_mounts,
    });
    if !env.is_empty() {
        container["env"] = json!(env);
    }
    if native {
        container["restartPolicy"] = json!("Always");
    }
    container
}

/// JSON Pointer escaping (RFC 6901).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AttoCapability, RemoteSignerSpec, WorkloadIdentitySpec};

    fn remote_signer(protocol: Protocol) -> RemoteSigner {
        let spec = RemoteSignerSpec::atto("voter-key", "seed", vec![AttoCapability::Vote]);
        let mut rs = RemoteSigner::new(
            "voter",
            RemoteSignerSpec { protocol, service_account_name: Some("voter".into()), ..spec },
        );
        rs.metadata.namespace = Some("validators".into());
        rs
    }

    fn pod(value: Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn apply(pod: &Pod, injection: &Injection) -> Pod {
        let mut document = serde_json::to_value(pod).unwrap();
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(injection.patch.clone())).unwrap();
        json_patch::patch(&mut document, &patch).unwrap();
        serde_json::from_value(document).unwrap()
    }

    const IMAGE: &str = "sigil-signer:test";

    #[test]
    fn injects_a_native_sidecar_with_mounts_and_atto_env() {
        let original = pod(json!({
            "metadata": { "name": "node", "labels": { "sigil.dev/signer": "voter" } },
            "spec": { "serviceAccountName": "voter", "containers": [{ "name": "node", "image": "atto/node" }] }
        }));
        let injection = inject(&original, &remote_signer(Protocol::Atto), IMAGE, true).unwrap();
        assert!(injection.warnings.is_empty(), "{:?}", injection.warnings);
        let patched = apply(&original, &injection);
        let spec = patched.spec.clone().unwrap();
        let sidecar = &spec.init_containers.as_ref().unwrap()[0];
        assert_eq!((sidecar.name.as_str(), sidecar.restart_policy.as_deref()), (CONTAINER, Some("Always")));
        assert_eq!(sidecar.image.as_deref(), Some(IMAGE));
        assert!(sidecar.startup_probe.is_some());
        let security = sidecar.security_context.as_ref().unwrap();
        assert_eq!((security.run_as_non_root, security.read_only_root_filesystem), (Some(true), Some(true)));
        assert_eq!((security.run_as_user, security.allow_privilege_escalation), (Some(65532), Some(false)));
        assert_eq!(security.capabilities.as_ref().unwrap().drop, Some(vec!["ALL".to_string()]));
        let mounts = sidecar.volume_mounts.as_ref().unwrap();
        assert!(mounts.iter().all(|m| m.sub_path.is_none() && m.read_only == Some(true)));
        assert_eq!(spec.volumes.as_ref().unwrap().len(), 4, "token, config, API access, key");

        let env = spec.containers[0].env.clone().unwrap();
        let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["ATTO_SIGNER_BACKEND", "ATTO_SIGNER_REMOTE_URL", "ATTO_SIGNER_REMOTE_TOKEN"]);
        let token = env[2].value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!((token.name.as_str(), token.key.as_str()), ("voter-token", "token"));
        assert_eq!(patched.annotations().get(INJECTED_ANNOTATION).map(String::as_str), Some("voter"));
        assert!(
            !spec.containers[0].volume_mounts.iter().flatten().any(|m| m.name == "sigil-key"),
            "the key stays in the signer"
        );
    }

    #[test]
    fn idempotent_and_leaves_running_pods_alone() {
        let rs = remote_signer(Protocol::Atto);
        let original = pod(json!({ "metadata": { "name": "p" }, "spec": { "containers": [{ "name": "node" }] } }));
        let once = apply(&original, &inject(&original, &rs, IMAGE, true).unwrap());
        assert_eq!(inject(&once, &rs, IMAGE, true).unwrap(), Injection::default(), "re-invocation changes nothing");
        let as_container = pod(
            json!({ "metadata": { "name": "p" }, "spec": { "containers": [{ "name": "node" }, { "name": "sigil-signer" }] } }),
        );
        assert!(inject(&as_container, &rs, IMAGE, true).unwrap().patch.is_empty());
        let running = pod(
            json!({ "metadata": { "name": "p" }, "spec": { "containers": [{ "name": "node" }] }, "status": { "phase": "Running" } }),
        );
        assert!(inject(&running, &rs, IMAGE, true).unwrap().patch.is_empty());
    }

    #[test]
    fn container_mode_and_warnings() {
        let mut rs = remote_signer(Protocol::Atto);
        rs.spec.workload_identity =
            Some(WorkloadIdentitySpec { azure_client_id: Some("cid".into()), ..Default::default() });
        let original = pod(json!({
            "metadata": { "name": "p", "annotations": { "sigil.dev/sidecar-mode": "container" } },
            "spec": { "containers": [{ "name": "node", "env": [{ "name": "ATTO_SIGNER_REMOTE_URL", "value": "http://elsewhere" }] }] }
        }));
        let injection = inject(&original, &rs, IMAGE, true).unwrap();
        let patched = apply(&original, &injection);
        let spec = patched.spec.unwrap();
        assert_eq!(spec.containers.len(), 2);
        assert_eq!(spec.containers[1].name, CONTAINER);
        assert!(spec.containers[1].restart_policy.is_none());
        let env = spec.containers[0].env.clone().unwrap();
        assert_eq!(
            env.iter().find(|e| e.name == "ATTO_SIGNER_REMOTE_URL").unwrap().value.as_deref(),
            Some("http://elsewhere")
        );
        assert_eq!(env.len(), 3);
        let warnings = injection.warnings.join("\n");
        assert!(warnings.contains("sets ATTO_SIGNER_REMOTE_URL itself"), "{warnings}");
        assert!(warnings.contains("ServiceAccount default"), "{warnings}");
        assert!(warnings.contains("azure.workload.identity/use"), "{warnings}");
    }

    #[test]
    fn old_clusters_get_a_regular_container_unless_the_pod_asks() {
        let rs = remote_signer(Protocol::Atto);
        let plain = pod(json!({ "metadata": { "name": "p" }, "spec": { "containers": [{ "name": "node" }] } }));
        let spec = apply(&plain, &inject(&plain, &rs, IMAGE, false).unwrap()).spec.unwrap();
        assert!(spec.init_containers.is_none() && spec.containers[1].name == CONTAINER);
        let asks = pod(
            json!({ "metadata": { "name": "p", "annotations": { MODE_ANNOTATION: "native" } }, "spec": { "containers": [{ "name": "node" }] } }),
        );
        let spec = apply(&asks, &inject(&asks, &rs, IMAGE, false).unwrap()).spec.unwrap();
        assert_eq!(spec.init_containers.unwrap()[0].name, CONTAINER);
    }

    /// A pod as the API server hands it to the webhook: the ServiceAccount plugin has already
    /// mounted the API token into every container, and EKS's webhook its web-identity token.
    fn admitted_pod() -> Pod {
        pod(json!({
            "metadata": { "name": "p", "annotations": { "kubectl.kubernetes.io/default-container": "node" } },
            "spec": {
                "serviceAccountName": "voter",
                "initContainers": [{ "name": "setup", "volumeMounts": [
                    { "name": "kube-api-access-x1y2z", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true },
                ] }],
                "containers": [
                    { "name": "exporter", "volumeMounts": [
                        { "name": "data", "mountPath": "/data" },
                        { "name": "kube-api-access-x1y2z", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true },
                    ] },
                    { "name": "node", "env": [
                        { "name": "AWS_ROLE_ARN", "value": "arn:aws:iam::1:role/signer" },
                        { "name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token" },
                    ], "volumeMounts": [
                        { "name": "kube-api-access-x1y2z", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true },
                        { "name": "aws-iam-token", "mountPath": "/var/run/secrets/eks.amazonaws.com/serviceaccount", "readOnly": true },
                        { "name": "data", "mountPath": "/data" },
                    ] },
                ],
                "volumes": [
                    { "name": "data", "emptyDir": {} },
                    { "name": "aws-iam-token", "projected": { "sources": [{ "serviceAccountToken": { "audience": "sts.amazonaws.com", "path": "token" } }] } },
                    { "name": "kube-api-access-x1y2z", "projected": { "sources": [{ "serviceAccountToken": { "path": "token" } }] } },
                ],
            },
        }))
    }

    #[test]
    fn only_the_signer_holds_the_pods_credentials() {
        let mut rs = remote_signer(Protocol::Tezos);
        rs.spec.workload_identity = Some(WorkloadIdentitySpec {
            aws_role_arn: Some("arn:aws:iam::1:role/signer".into()),
            ..Default::default()
        });
        let original = admitted_pod();
        let patched = apply(&original, &inject(&original, &rs, IMAGE, true).unwrap());
        let spec = patched.spec.clone().unwrap();
        assert_eq!(spec.automount_service_account_token, Some(false), "the plugin must not mount it again");
        let volumes: Vec<&str> = spec.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
        assert!(!volumes.iter().any(|v| v.starts_with("kube-api-access-")), "{volumes:?}");
        for container in
            spec.containers.iter().chain(spec.init_containers.iter().flatten()).filter(|c| c.name != CONTAINER)
        {
            let mounts: Vec<&str> = container.volume_mounts.iter().flatten().map(|m| m.name.as_str()).collect();
            assert!(mounts.iter().all(|m| *m == "data"), "{}: {mounts:?}", container.name);
        }
        let signer = spec.init_containers.as_ref().unwrap().iter().find(|c| c.name == CONTAINER).unwrap();
        let mounts: Vec<(&str, &str)> =
            signer.volume_mounts.iter().flatten().map(|m| (m.name.as_str(), m.mount_path.as_str())).collect();
        assert!(mounts.contains(&("sigil-api-access", "/var/run/secrets/kubernetes.io/serviceaccount")), "{mounts:?}");
        assert!(mounts.contains(&("aws-iam-token", "/var/run/secrets/eks.amazonaws.com/serviceaccount")), "{mounts:?}");
        let env: Vec<&str> = signer.env.iter().flatten().map(|e| e.name.as_str()).collect();
        assert_eq!(env, ["AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"]);
        assert_eq!(
            patched.annotations().get("eks.amazonaws.com/skip-containers").map(String::as_str),
            Some("setup,exporter,node"),
            "an EKS webhook running after ours gives the node nothing"
        );

        // The opt-out keeps the node's credentials, and says what that costs.
        let mut sharing = admitted_pod();
        sharing.metadata.annotations.as_mut().unwrap().insert(SHARE_CREDENTIALS_ANNOTATION.into(), "true".into());
        let injection = inject(&sharing, &rs, IMAGE, true).unwrap();
        assert!(
            injection.warnings.iter().any(|w| w.contains("could rewrite the high-water marks")),
            "{:?}",
            injection.warnings
        );
        let spec = apply(&sharing, &injection).spec.unwrap();
        assert_eq!(spec.automount_service_account_token, None);
        let node = spec.containers.iter().find(|c| c.name == "node").unwrap();
        assert_eq!(node.volume_mounts.as_ref().unwrap().len(), 3);
    }

    /// Azure Workload Identity, as its webhook leaves a pod when it ran before sigil's: the token
    /// volume and the `AZURE_*` environment go to the signer, the node's containers keep no token
    /// mount, and the annotation tells an Azure webhook running later to skip them.
    #[test]
    fn azure_workload_identity_moves_to_the_signer() {
        let mut rs = remote_signer(Protocol::Tezos);
        rs.spec.workload_identity = Some(WorkloadIdentitySpec {
            azure_client_id: Some("cid".into()),
            azure_tenant_id: Some("tid".into()),
            ..Default::default()
        });
        let azure_env = json!([
            { "name": "AZURE_CLIENT_ID", "value": "cid" },
            { "name": "AZURE_TENANT_ID", "value": "tid" },
            { "name": "AZURE_FEDERATED_TOKEN_FILE", "value": "/var/run/secrets/azure/tokens/azure-identity-token" },
            { "name": "AZURE_AUTHORITY_HOST", "value": "https://login.microsoftonline.com/" },
        ]);
        let token_mount =
            json!({ "name": "azure-identity-token", "mountPath": "/var/run/secrets/azure/tokens", "readOnly": true });
        let original = pod(json!({
            "metadata": { "name": "p", "labels": { "azure.workload.identity/use": "true" } },
            "spec": {
                "serviceAccountName": "voter",
                "containers": [
                    { "name": "node", "env": azure_env, "volumeMounts": [token_mount, { "name": "data", "mountPath": "/data" }] },
                    { "name": "exporter", "env": azure_env, "volumeMounts": [token_mount] },
                ],
                "volumes": [
                    { "name": "data", "emptyDir": {} },
                    { "name": "azure-identity-token", "projected": { "sources": [{ "serviceAccountToken": {
                        "audience": "api://AzureADTokenExchange", "expirationSeconds": 3600, "path": "azure-identity-token" } }] } },
                ],
            },
        }));
        let injection = inject(&original, &rs, IMAGE, true).unwrap();
        assert!(injection.warnings.is_empty(), "{:?}", injection.warnings);
        let patched = apply(&original, &injection);
        let spec = patched.spec.clone().unwrap();
        for container in &spec.containers {
            let mounts: Vec<&str> = container.volume_mounts.iter().flatten().map(|m| m.name.as_str()).collect();
            assert!(!mounts.contains(&"azure-identity-token"), "{}: {mounts:?}", container.name);
        }
        let signer = spec.init_containers.as_ref().unwrap().iter().find(|c| c.name == CONTAINER).unwrap();
        let mounts: Vec<(&str, &str)> =
            signer.volume_mounts.iter().flatten().map(|m| (m.name.as_str(), m.mount_path.as_str())).collect();
        assert!(mounts.contains(&("azure-identity-token", "/var/run/secrets/azure/tokens")), "{mounts:?}");
        let env: Vec<&str> = signer.env.iter().flatten().map(|e| e.name.as_str()).collect();
        assert_eq!(env, ["AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST"]);
        assert_eq!(
            patched.annotations().get("azure.workload.identity/skip-containers").map(String::as_str),
            Some("node;exporter"),
            "an Azure webhook running after ours gives the node nothing"
        );
        assert!(spec.volumes.iter().flatten().any(|v| v.name == "azure-identity-token"), "the signer's now");
    }

    /// A CometBFT signer's SecretConnection identity key is the signer's alone, like its key.
    #[test]
    fn the_cometbft_identity_key_is_mounted_into_the_signer_only() {
        let mut rs = remote_signer(Protocol::CometBft);
        rs.spec.atto = None;
        rs.spec.cometbft = Some(crate::api::CometBftSpec {
            chain_id: "cosmoshub-4".into(),
            identity_key_secret_ref: Some(crate::api::SecretKeyRef {
                name: "signer-identity".into(),
                key: "key".into(),
            }),
            ..Default::default()
        });
        let original = pod(json!({ "metadata": { "name": "p" }, "spec": { "containers": [{ "name": "node" }] } }));
        let spec = apply(&original, &inject(&original, &rs, IMAGE, true).unwrap()).spec.unwrap();
        let signer = &spec.init_containers.as_ref().unwrap()[0];
        assert!(signer.volume_mounts.iter().flatten().any(|m| m.name == "sigil-identity"));
        assert!(spec.containers[0].volume_mounts.iter().flatten().all(|m| m.name != "sigil-identity"));
        let volume = spec.volumes.iter().flatten().find(|v| v.name == "sigil-identity").unwrap();
        assert_eq!(volume.secret.as_ref().unwrap().secret_name.as_deref(), Some("signer-identity"));
    }

    #[test]
    fn pods_sharing_the_nodes_or_each_others_namespaces_are_refused() {
        let rs = remote_signer(Protocol::Tezos);
        for field in ["hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace"] {
            let shared = pod(
                json!({ "metadata": { "name": "p" }, "spec": { field: true, "containers": [{ "name": "node" }] } }),
            );
            let refused = inject(&shared, &rs, IMAGE, true).unwrap_err().to_string();
            assert!(refused.contains(&format!("{field}: true")), "{refused}");
        }
    }

    #[test]
    fn the_atto_token_goes_to_the_containers_that_need_it() {
        let rs = remote_signer(Protocol::Atto);
        let env_of = |pod: &Pod, name: &str| {
            let spec = pod.spec.as_ref().unwrap();
            let container = spec.containers.iter().find(|c| c.name == name).unwrap();
            container.env.iter().flatten().any(|e| e.name == "ATTO_SIGNER_REMOTE_TOKEN")
        };
        let original = admitted_pod();
        let patched = apply(&original, &inject(&original, &rs, IMAGE, true).unwrap());
        assert!(env_of(&patched, "node") && !env_of(&patched, "exporter"), "the default container only");

        let mut listed = admitted_pod();
        listed
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(TOKEN_CONTAINERS_ANNOTATION.into(), "exporter, node".into());
        let patched = apply(&listed, &inject(&listed, &rs, IMAGE, true).unwrap());
        assert!(env_of(&patched, "node") && env_of(&patched, "exporter"));

        listed.metadata.annotations.as_mut().unwrap().insert(TOKEN_CONTAINERS_ANNOTATION.into(), "nodee".into());
        assert!(inject(&listed, &rs, IMAGE, true).unwrap_err().to_string().contains("container nodee"));
    }

    #[test]
    fn refuses_volume_name_clashes() {
        let original = pod(
            json!({ "metadata": { "name": "p" }, "spec": { "containers": [{ "name": "n" }], "volumes": [{ "name": "sigil-key", "emptyDir": {} }] } }),
        );
        assert!(inject(&original, &remote_signer(Protocol::Atto), IMAGE, true)
            .unwrap_err()
            .to_string()
            .contains("sigil-key"));
    }

    /// Pods of many shapes: the patch applies, adds exactly one signer, keeps every user field,
    /// and a second pass is empty.
    #[test]
    fn property_every_shape_patches_cleanly_and_keeps_user_fields() {
        let rs = remote_signer(Protocol::Atto);
        let mut checked = 0;
        for containers in 1..=3 {
            for init in [None, Some(0), Some(2)] {
                for volumes in [None, Some(0), Some(2)] {
                    for annotations in [false, true] {
                        for env in [false, true] {
                            for mode in ["native", "container"] {
                                let mut spec = json!({ "containers": (0..containers).map(|i| {
                                    let mut c = json!({ "name": format!("c{i}"), "image": "x", "args": [format!("--n={i}")] });
                                    if env { c["env"] = json!([{ "name": "KEEP", "value": format!("{i}") }]); }
                                    c
                                }).collect::<Vec<_>>() });
                                if let Some(n) = init {
                                    spec["initContainers"] = json!((0..n)
                                        .map(|i| json!({ "name": format!("init{i}") }))
                                        .collect::<Vec<_>>());
                                }
                                if let Some(n) = volumes {
                                    spec["volumes"] = json!((0..n)
                                        .map(|i| json!({ "name": format!("v{i}"), "emptyDir": {} }))
                                        .collect::<Vec<_>>());
                                }
                                let mut metadata = json!({ "name": "p", "labels": { "app": "x" } });
                                if annotations || mode == "container" {
                                    metadata["annotations"] = json!({ "user": "kept", MODE_ANNOTATION: mode });
                                }
                                let original = pod(json!({ "metadata": metadata, "spec": spec }));
                                let injection = inject(&original, &rs, IMAGE, true).unwrap();
                                let patched = apply(&original, &injection);
                                let before = original.spec.as_ref().unwrap();
                                let after = patched.spec.as_ref().unwrap();
                                let signers = after
                                    .containers
                                    .iter()
                                    .chain(after.init_containers.iter().flatten())
                                    .filter(|c| c.name == CONTAINER)
                                    .count();
                                assert_eq!(signers, 1);
                                for c in &before.containers {
                                    let kept = after.containers.iter().find(|a| a.name == c.name).unwrap();
                                    assert_eq!((&kept.args, &kept.image), (&c.args, &c.image));
                                    for e in c.env.iter().flatten() {
                                        assert!(kept.env.as_ref().unwrap().contains(e));
                                    }
                                }
                                for c in before.init_containers.iter().flatten() {
                                    assert!(after.init_containers.as_ref().unwrap().contains(c));
                                }
                                for v in before.volumes.iter().flatten() {
                                    assert!(after.volumes.as_ref().unwrap().contains(v));
                                }
                                assert_eq!(patched.labels(), original.labels());
                                for (k, v) in original.annotations() {
                                    assert_eq!(patched.annotations().get(k), Some(v));
                                }
                                assert!(inject(&patched, &rs, IMAGE, true).unwrap().patch.is_empty());
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 216);
    }
}

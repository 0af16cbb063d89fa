//! The pod mutation, as a pure function: a Pod and its RemoteSigner in, a JSON patch (plus
//! warnings) out. Idempotent: a pod that already has `sigil-signer` gets an empty patch, so
//! re-invocation and replays change nothing. It only adds: no user field is removed or replaced.

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::api::{Protocol, RemoteSigner};
use crate::controller::desired::{
    config_map_name, key_volume, service_account, token_secret_name, API_PORT, CONFIG_DIR, CONFIG_FILE, KEY_DIR,
    MANAGEMENT_PORT, TOKEN_DIR,
};

/// The pod label that opts in: `sigil.dev/signer: <RemoteSigner name>`.
pub const SIGNER_LABEL: &str = "sigil.dev/signer";
/// The injected container's name.
pub const CONTAINER: &str = "sigil-signer";
/// Set on injected pods: which RemoteSigner was injected.
pub const INJECTED_ANNOTATION: &str = "sigil.dev/injected";
/// `native` (an initContainer with restartPolicy Always) or `container` (a regular container).
/// Without it: native where the cluster supports it (Kubernetes 1.29 and later).
pub const MODE_ANNOTATION: &str = "sigil.dev/sidecar-mode";

const VOLUMES: [&str; 3] = ["sigil-token", "sigil-config", "sigil-key"];

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

/// The patch that adds the signer to `pod`. `Err` is a refusal with its reason. `native_default`
/// says whether the cluster runs native sidecars (the pod's annotation may override it).
pub fn inject(pod: &Pod, rs: &RemoteSigner, image: &str, native_default: bool) -> Result<Injection, String> {
    let Some(spec) = &pod.spec else { return Err("the pod has no spec".into()) };
    let pending = pod.status.as_ref().and_then(|s| s.phase.as_deref()).is_none_or(|phase| phase == "Pending");
    if has_signer(pod) || !pending {
        return Ok(Injection::default());
    }
    let existing: Vec<&str> = spec.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
    if let Some(clash) = VOLUMES.iter().find(|v| existing.contains(v)) {
        return Err(format!("the pod already has a volume named {clash}; sigil needs that name"));
    }

    let name = rs.name_any();
    let mut out = Injection::default();
    let mut add = |path: String, value: Value| out.patch.push(json!({ "op": "add", "path": path, "value": value }));

    let annotations = pod.metadata.annotations.as_ref();
    if annotations.is_none() {
        add("/metadata/annotations".into(), json!({}));
    }
    add(format!("/metadata/annotations/{}", escape(INJECTED_ANNOTATION)), json!(name));

    let key_volume = key_volume(rs);
    let mut volumes = vec![
        json!({ "name": "sigil-token", "secret": { "secretName": token_secret_name(&name), "defaultMode": 0o444 } }),
        json!({ "name": "sigil-config", "configMap": { "name": config_map_name(&name) } }),
    ];
    volumes.extend(key_volume.clone());
    append_all(&mut add, "/spec/volumes", spec.volumes.is_none(), &volumes);

    let native = match annotations.and_then(|a| a.get(MODE_ANNOTATION)).map(String::as_str) {
        Some("container") => false,
        Some("native") => true,
        _ => native_default,
    };
    let container = signer_container(rs, image, native, key_volume.is_some());
    if native {
        // First, so it is up before the other init containers and the node start.
        match &spec.init_containers {
            None => add("/spec/initContainers".into(), json!([container])),
            Some(_) => add("/spec/initContainers/0".into(), container),
        }
    } else {
        add("/spec/containers/-".into(), container);
    }

    if rs.spec.protocol == Protocol::Atto {
        for (index, user) in spec.containers.iter().enumerate() {
            let env = atto_env(&name, user, &mut out.warnings);
            append_all(&mut add, &format!("/spec/containers/{index}/env"), user.env.is_none(), &env);
        }
    }

    let pod_account = spec.service_account_name.clone().unwrap_or_else(|| "default".into());
    let signer_account = service_account(rs);
    if pod_account != signer_account {
        out.warnings.push(format!(
            "pod runs as ServiceAccount {pod_account} but RemoteSigner {name} configures {signer_account}: \
             the ratchet RBAC and Workload Identity are on {signer_account}"
        ));
    }
    let azure = rs.spec.workload_identity.as_ref().is_some_and(|w| w.azure_client_id.is_some());
    if azure && pod.labels().get("azure.workload.identity/use").map(String::as_str) != Some("true") {
        out.warnings.push(
            "RemoteSigner uses Azure Workload Identity, but the pod lacks the label azure.workload.identity/use: \"true\"; \
             Azure's webhook will not give it a token"
                .into(),
        );
    }
    Ok(out)
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

fn signer_container(rs: &RemoteSigner, image: &str, native: bool, key_volume: bool) -> Value {
    let sidecar = rs.spec.sidecar.clone().unwrap_or_default();
    let resources = sidecar
        .resources
        .map(|r| serde_json::to_value(r).unwrap_or_default())
        .unwrap_or_else(|| json!({ "requests": { "cpu": "10m", "memory": "32Mi" }, "limits": { "memory": "64Mi" } }));
    let mut container = json!({
        "name": CONTAINER,
        "image": sidecar.image.as_deref().unwrap_or(image),
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
        // Whole-volume mounts (no subPath), so rotated tokens reach the signer.
        "volumeMounts": [
            { "name": "sigil-token", "mountPath": TOKEN_DIR, "readOnly": true },
            { "name": "sigil-config", "mountPath": CONFIG_DIR, "readOnly": true },
        ],
    });
    if key_volume {
        let mounts = container["volumeMounts"].as_array_mut().expect("an array");
        mounts.push(json!({ "name": "sigil-key", "mountPath": KEY_DIR, "readOnly": true }));
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
        assert_eq!(security.capabilities.as_ref().unwrap().drop, Some(vec!["ALL".to_string()]));
        let mounts = sidecar.volume_mounts.as_ref().unwrap();
        assert!(mounts.iter().all(|m| m.sub_path.is_none() && m.read_only == Some(true)));
        assert_eq!(spec.volumes.as_ref().unwrap().len(), 3);

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

    #[test]
    fn refuses_volume_name_clashes() {
        let original = pod(
            json!({ "metadata": { "name": "p" }, "spec": { "containers": [{ "name": "n" }], "volumes": [{ "name": "sigil-key", "emptyDir": {} }] } }),
        );
        assert!(inject(&original, &remote_signer(Protocol::Atto), IMAGE, true).unwrap_err().contains("sigil-key"));
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

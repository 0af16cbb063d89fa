//! What should exist for a RemoteSigner, as pure functions: the token Secret, the signer config,
//! the ratchet ConfigMap with its Role and RoleBinding, the ServiceAccount's identity annotations.
//! Every object carries our labels only (never the user's, so Argo CD's tracking labels are never
//! copied), and an ownerReference to the RemoteSigner, except the marks, which must outlive it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};
use sigil_signer::backend::local::LocalKeyConfig;
use sigil_signer::backend::pkcs11::Pkcs11KeyConfig;
use sigil_signer::backend::{AwsKmsKeyConfig, AzureKeyVaultKeyConfig, GcpKmsKeyConfig};
use sigil_signer::config::{ConfigMapRatchetConfig, KeyConfig, ManagementConfig, RatchetConfig, SignerConfig};
use sigil_signer::keys::Algorithm;
use sigil_signer::protocol::atto::api::Capability;
use sigil_signer::protocol::atto::config::AttoConfig;
use sigil_signer::protocol::cometbft::config::{CometBftConfig, SignBytesConfig};
use sigil_signer::protocol::cometbft::validator::Version;
use sigil_signer::protocol::tezos::config::TezosConfig;
use sigil_signer::protocol::tezos::policy::TezosKeyConfig;

use super::token::TokenState;
use crate::api::{
    AttoCapability, CometBftVersion, KeySource, KeySpec, Protocol, RatchetStore, RemoteSigner, SecretKeyRef,
    WorkloadIdentitySpec,
};
use crate::sidecar::{
    API_PORT, COMPANION_KEY_DIR, CONFIG_FILE, IDENTITY_DIR, IDENTITY_FILE, KEY_DIR, KEY_FILE, MANAGEMENT_PORT,
    PIN_FILE, TEZOS_PORT, TOKEN_DIR,
};

/// The one field manager for everything the operator applies.
pub const FIELD_MANAGER: &str = "sigil-operator";
/// On every child: which RemoteSigner it belongs to.
pub const OWNER_LABEL: &str = "sigil.dev/remote-signer";
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "sigil-operator");

/// Token Secret annotations: the rotation schedule survives a lost status.
pub const ROTATED_AT: &str = "sigil.dev/rotated-at";
pub const PREVIOUS_UNTIL: &str = "sigil.dev/previous-until";

pub fn token_secret_name(name: &str) -> String {
    format!("{name}-token")
}
pub fn config_map_name(name: &str) -> String {
    format!("{name}-config")
}
pub fn ratchet_name(name: &str) -> String {
    format!("{name}-ratchet")
}

pub fn service_account(rs: &RemoteSigner) -> String {
    rs.spec.service_account_name.clone().unwrap_or_else(|| "default".into())
}

/// Whether this RemoteSigner's signer keeps a ConfigMap store: its marks (Tezos, CometBFT) and,
/// for every protocol, the public key the signer reports and the operator's clearance of it.
pub fn uses_ratchet_config_map(rs: &RemoteSigner) -> bool {
    rs.spec.ratchet.as_ref().is_none_or(|r| r.store() == RatchetStore::ConfigMap)
}

fn metadata(rs: &RemoteSigner, name: &str) -> Value {
    let owner = rs.controller_owner_ref(&()).expect("a RemoteSigner read from the API has a name and uid");
    json!({
        "name": name,
        "namespace": rs.namespace(),
        "labels": { MANAGED_BY.0: MANAGED_BY.1, "app.kubernetes.io/part-of": "sigil", OWNER_LABEL: rs.name_any() },
        "ownerReferences": [owner],
    })
}

pub fn token_secret(rs: &RemoteSigner, state: &TokenState) -> Value {
    let mut meta = metadata(rs, &token_secret_name(&rs.name_any()));
    let mut annotations = json!({ ROTATED_AT: state.rotated_at.to_string() });
    if let Some(until) = state.previous_until {
        annotations[PREVIOUS_UNTIL] = until.to_string().into();
    }
    meta["annotations"] = annotations;
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": "Opaque",
        // Both keys always exist: an empty token.previous means "none", and the mounted file
        // never disappears from under the signer.
        "stringData": { "token": state.token, "token.previous": state.previous.clone().unwrap_or_default() },
    })
}

/// The token state a Secret we wrote holds, or `None` when it has no usable token.
pub fn token_state(secret: &Secret) -> Option<TokenState> {
    let data = secret.data.as_ref()?;
    let text = |key: &str| {
        data.get(key).and_then(|ByteString(bytes)| String::from_utf8(bytes.clone()).ok()).filter(|v| !v.is_empty())
    };
    let annotations = secret.metadata.annotations.as_ref();
    let time = |key: &str| annotations.and_then(|a| a.get(key)).and_then(|v| v.parse().ok());
    Some(TokenState {
        token: text("token")?,
        previous: text("token.previous"),
        // A Secret without our annotation is treated as due for rotation.
        rotated_at: time(ROTATED_AT).unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        previous_until: time(PREVIOUS_UNTIL),
    })
}

/// The name of the one key in a rendered config.
pub const SIGNER_KEY: &str = "validator";
/// The Tezos companion key's name in the sidecar's config.
pub const COMPANION_KEY: &str = "companion";

/// Where a key comes from, as far as the spec tells: two RemoteSigners with the same source hold
/// the same key. (The same key under two sources is found from the public keys signers report.)
pub fn key_source(spec: &KeySpec) -> Option<String> {
    Some(match spec.source()? {
        KeySource::Secret(secret) => format!("Secret {}, key {}", secret.name, secret.key),
        KeySource::Pkcs11(hsm) => format!("PKCS#11 {} token {} key {}", hsm.module, hsm.token_label, hsm.key_label),
        KeySource::GcpKms(gcp) => format!("GCP KMS {}", gcp.key_version),
        KeySource::AwsKms(aws) => format!("AWS KMS {} {}", aws.region, aws.key_id),
        // Every version of a Key Vault key is counted as the key: the versionless name follows it.
        KeySource::AzureKeyVault(azure) => format!("Azure Key Vault {} key {}", azure.vault_url, azure.key_name),
    })
}

/// Where the rendered signer keeps its marks: the `<name>-ratchet` ConfigMap. Atto keeps no marks,
/// but its signer reports its public key there too, and waits there for the operator's check
/// that no other RemoteSigner uses the key.
fn ratchet_config(rs: &RemoteSigner) -> Result<Option<RatchetConfig>, (&'static str, String)> {
    if !uses_ratchet_config_map(rs) {
        return Err((
            "RatchetNotSupported",
            "spec.ratchet.store File: the injected sidecar has no volume of its own for marks yet; use ConfigMap \
             (the default), which also lets several replicas share one mark"
                .into(),
        ));
    }
    let namespace = rs.namespace().unwrap_or_default();
    Ok(Some(RatchetConfig {
        config_map: Some(ConfigMapRatchetConfig {
            name: ratchet_name(&rs.name_any()),
            namespace,
            wait_for_key_check: true,
        }),
        ..Default::default()
    }))
}

/// The sidecar's config: the same type `sigil-signer --config` parses.
pub fn signer_config(rs: &RemoteSigner) -> Result<SignerConfig, (&'static str, String)> {
    let spec = &rs.spec;
    let key = |algorithm| key_config(&spec.key, algorithm);
    let mut config = SignerConfig {
        keys: BTreeMap::new(),
        ratchet: ratchet_config(rs)?,
        atto: None,
        tezos: None,
        cometbft: Vec::new(),
        // The kubelet probes /readyz from outside the pod; the APIs stay on loopback.
        management: Some(ManagementConfig { listen: ([0, 0, 0, 0], MANAGEMENT_PORT).into() }),
        audit: None,
    };
    match spec.protocol {
        Protocol::Atto => {
            let capabilities = spec.atto.as_ref().map(|a| a.capabilities.clone()).unwrap_or_default();
            config.keys.insert(SIGNER_KEY.into(), key(Some(Algorithm::Ed25519))?);
            config.atto = Some(AttoConfig {
                listen: ([127, 0, 0, 1], API_PORT).into(),
                key: SIGNER_KEY.into(),
                capabilities: capabilities
                    .iter()
                    .map(|c| match c {
                        AttoCapability::Challenge => Capability::Challenge,
                        AttoCapability::Block => Capability::Block,
                        AttoCapability::Vote => Capability::Vote,
                    })
                    .collect(),
                token_file: Some(format!("{TOKEN_DIR}/token").into()),
                token_env: None,
            });
        }
        Protocol::Tezos => {
            // A hex secret or an edsk/spsk/p2sk/BLsk key: the key names its own curve.
            config.keys.insert(SIGNER_KEY.into(), key(None)?);
            let tezos = spec.tezos.clone().unwrap_or_default();
            let allow = Some(tezos.allow.clone()).filter(|a| !a.is_empty());
            // Signatory's default: what a baker signs, nothing that moves funds.
            let allow = allow.unwrap_or_else(|| ["block", "preattestation", "attestation"].map(String::from).to_vec());
            let policy = |allow| TezosKeyConfig {
                allow,
                chains: tezos.chains.clone(),
                authorized_keys: tezos.authorized_keys.clone(),
                allowed_ips: tezos.allowed_ips.clone(),
                allow_proof_of_possession: tezos.allow_proof_of_possession,
                proof_of_possession_until: tezos.proof_of_possession_until.clone(),
            };
            let mut keys = BTreeMap::from([(SIGNER_KEY.to_string(), policy(allow))]);
            if tezos.companion_key_secret_ref.is_some() {
                // The companion key signs the attestations its consensus key signs, nothing else.
                let file = format!("{COMPANION_KEY_DIR}/{KEY_FILE}").into();
                let local = LocalKeyConfig { secret_key_file: Some(file), ..Default::default() };
                config.keys.insert(COMPANION_KEY.into(), KeyConfig::local(local));
                keys.insert(COMPANION_KEY.into(), policy(vec!["attestation".into()]));
            }
            config.tezos = Some(TezosConfig {
                listen: ([127, 0, 0, 1], TEZOS_PORT).into(),
                keys,
                list_known_keys: tezos.list_known_keys,
                config_file: None,
            });
        }
        Protocol::CometBft => {
            let Some(cometbft) = spec.cometbft.as_ref() else {
                return Err(("InvalidSpec", "protocol CometBFT needs spec.cometbft.chainId".into()));
            };
            config.keys.insert(SIGNER_KEY.into(), key(None)?);
            let version = cometbft.version.map(|version| match version {
                CometBftVersion::V0_34 => Version::V0_34,
                CometBftVersion::V0_37 => Version::V0_37,
                CometBftVersion::V0_38 => Version::V0_38,
                CometBftVersion::V1 => Version::V1,
            });
            if cometbft.sign_bytes.is_some() && version.is_some_and(|v| v != Version::V1) {
                return Err((
                    "InvalidSpec",
                    "spec.cometbft.signBytes: only CometBFT v1 nodes send SignBytesRequest; set \
                     spec.cometbft.version to v1 or leave it out"
                        .into(),
                ));
            }
            config.cometbft.push(CometBftConfig {
                connect: cometbft.node_address.clone().unwrap_or_else(|| "tcp://127.0.0.1:26659".into()),
                chain_id: cometbft.chain_id.clone(),
                key: SIGNER_KEY.into(),
                version,
                identity_key_file: cometbft
                    .identity_key_secret_ref
                    .as_ref()
                    .map(|_| format!("{IDENTITY_DIR}/{IDENTITY_FILE}").into()),
                node_id: cometbft.node_id.clone(),
                max_height_jump: cometbft.max_height_jump.and_then(|jump| u64::try_from(jump).ok()),
                sign_bytes: cometbft.sign_bytes.as_ref().map(|sign_bytes| SignBytesConfig {
                    prefix: sign_bytes.prefix.clone(),
                    max_per_minute: sign_bytes.max_per_minute.and_then(|n| u32::try_from(n).ok()),
                }),
            });
        }
    }
    config.validate().map_err(|e| ("InvalidConfig", e.to_string()))?;
    Ok(config)
}

/// The signer's key config for `spec.key`. Cloud keys carry no secret into the pod: the sidecar
/// authenticates with the ServiceAccount's Workload Identity (see [`identity_annotations`]).
fn key_config(spec: &KeySpec, local_algorithm: Option<Algorithm>) -> Result<KeyConfig, (&'static str, String)> {
    let mut key = KeyConfig::default();
    match spec.source() {
        Some(KeySource::Secret(_)) => {
            key.local = Some(LocalKeyConfig {
                secret_key_file: Some(format!("{KEY_DIR}/{KEY_FILE}").into()),
                algorithm: local_algorithm,
                ..Default::default()
            })
        }
        Some(KeySource::Pkcs11(pkcs11)) => {
            key.pkcs11 = Some(Pkcs11KeyConfig {
                module: pkcs11.module.clone().into(),
                token_label: pkcs11.token_label.clone(),
                key_label: pkcs11.key_label.clone(),
                pin_file: Some(format!("{KEY_DIR}/{PIN_FILE}").into()),
                pin_env: None,
            })
        }
        Some(KeySource::GcpKms(gcp)) => {
            key.gcp_kms = Some(GcpKmsKeyConfig { key_version: gcp.key_version.clone(), endpoint: None })
        }
        Some(KeySource::AwsKms(aws)) => {
            key.aws_kms =
                Some(AwsKmsKeyConfig { key_id: aws.key_id.clone(), region: Some(aws.region.clone()), endpoint: None })
        }
        Some(KeySource::AzureKeyVault(azure)) => {
            key.azure_key_vault = Some(AzureKeyVaultKeyConfig {
                vault_url: azure.vault_url.clone(),
                key_name: azure.key_name.clone(),
                key_version: azure.key_version.clone(),
                verify_challenge_resource: None,
            })
        }
        None => return Err(("InvalidSpec", "spec.key: set exactly one backend".into())),
    }
    Ok(key)
}

/// The Secret volumes the sidecar mounts, each with its directory: the key (or the HSM's PIN),
/// the CometBFT identity key, the Tezos companion key. Each is mounted into the signer alone.
pub fn secret_volumes(rs: &RemoteSigner) -> Vec<(Value, &'static str)> {
    [
        key_volume(rs).map(|v| (v, KEY_DIR)),
        identity_volume(rs).map(|v| (v, IDENTITY_DIR)),
        companion_key_secret(rs).map(|s| (secret_volume("sigil-companion-key", s, KEY_FILE), COMPANION_KEY_DIR)),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The Secret of the Tezos companion key the signer serves besides its key, if any.
pub fn companion_key_secret(rs: &RemoteSigner) -> Option<&SecretKeyRef> {
    let tezos = rs.spec.tezos.as_ref().filter(|_| rs.spec.protocol == Protocol::Tezos)?;
    tezos.companion_key_secret_ref.as_ref()
}

/// A volume of one key of a Secret, readable by the signer's non-root user (no other container
/// mounts it).
fn secret_volume(name: &str, secret: &SecretKeyRef, file: &str) -> Value {
    json!({ "name": name, "secret": {
        "secretName": secret.name, "defaultMode": 0o444, "items": [{ "key": secret.key, "path": file }],
    } })
}

/// The Secret volume the sidecar's key directory comes from: the software key, or the HSM's PIN.
/// Cloud KMS keys need none.
fn key_volume(rs: &RemoteSigner) -> Option<Value> {
    let (secret, file) = match (&rs.spec.key.secret_ref, &rs.spec.key.pkcs11) {
        (Some(secret), _) => (secret, KEY_FILE),
        (None, Some(pkcs11)) => (&pkcs11.pin_secret_ref, PIN_FILE),
        (None, None) => return None,
    };
    Some(secret_volume("sigil-key", secret, file))
}

pub fn config_map(rs: &RemoteSigner, config: &SignerConfig) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(rs, &config_map_name(&rs.name_any())),
        "data": { CONFIG_FILE: config.to_yaml() },
    })
}

/// The identity key Secret volume of a CometBFT signer, when the spec names one.
fn identity_volume(rs: &RemoteSigner) -> Option<Value> {
    let secret = rs.spec.cometbft.as_ref()?.identity_key_secret_ref.as_ref()?;
    Some(secret_volume("sigil-identity", secret, IDENTITY_FILE))
}

/// On a marks ConfigMap the operator created: the RemoteSigner (UID) it was created for.
pub const CREATED_FOR: &str = "sigil.dev/created-for";

/// A new, empty marks ConfigMap, created once for a new RemoteSigner. No ownerReference: the
/// marks outlive the RemoteSigner, so that deleting and re-applying it (an Argo CD prune, a
/// `kubectl replace --force`) continues from them instead of starting from zero. Its data belongs
/// to the signer, which writes it with a resourceVersion precondition; the operator never writes
/// the marks, and has no right to delete a ConfigMap.
pub fn ratchet_config_map(rs: &RemoteSigner) -> Value {
    let mut meta = metadata(rs, &ratchet_name(&rs.name_any()));
    meta.as_object_mut().expect("metadata is an object").remove("ownerReferences");
    meta["annotations"] = json!({ CREATED_FOR: rs.uid() });
    json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": meta })
}

/// `get` and `update` on the ratchet ConfigMap alone, plus `list` and `watch` restricted to it
/// (the signer's cache follows other replicas' writes through a watch on that one name).
pub fn ratchet_role(rs: &RemoteSigner) -> Value {
    let name = ratchet_name(&rs.name_any());
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": metadata(rs, &name),
        "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "resourceNames": [name], "verbs": ["get", "update", "list", "watch"] }],
    })
}

pub fn ratchet_role_binding(rs: &RemoteSigner) -> Value {
    let name = ratchet_name(&rs.name_any());
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata(rs, &name),
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name },
        "subjects": [{ "kind": "ServiceAccount", "name": service_account(rs), "namespace": rs.namespace() }],
    })
}

/// The annotations each cloud's Workload Identity reads from the ServiceAccount.
pub fn identity_annotations(identity: Option<&WorkloadIdentitySpec>) -> BTreeMap<String, String> {
    let Some(identity) = identity else { return BTreeMap::new() };
    [
        ("iam.gke.io/gcp-service-account", &identity.gcp_service_account),
        ("eks.amazonaws.com/role-arn", &identity.aws_role_arn),
        ("azure.workload.identity/client-id", &identity.azure_client_id),
        ("azure.workload.identity/tenant-id", &identity.azure_tenant_id),
    ]
    .into_iter()
    .filter_map(|(key, value)| value.clone().map(|v| (key.to_string(), v)))
    .collect()
}

/// The part of the ServiceAccount the operator owns: these annotations and nothing else. Applying
/// it with no annotations releases (removes) the ones applied before.
pub fn service_account_patch(name: &str, namespace: &str, annotations: &BTreeMap<String, String>) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": { "name": name, "namespace": namespace, "annotations": annotations },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{KeySpec, RatchetSpec, RemoteSignerSpec};

    pub fn remote_signer(spec: RemoteSignerSpec) -> RemoteSigner {
        let mut rs = RemoteSigner::new("voter", spec);
        rs.metadata.namespace = Some("validators".into());
        rs.metadata.uid = Some("5f7c-uid".into());
        rs.metadata.labels = Some(BTreeMap::from([
            ("app.kubernetes.io/instance".to_string(), "argo-app".to_string()),
            ("argocd.argoproj.io/instance".to_string(), "argo-app".to_string()),
        ]));
        rs
    }

    pub fn atto_spec() -> RemoteSignerSpec {
        let spec = RemoteSignerSpec::atto("voter-key", "seed", vec![AttoCapability::Challenge, AttoCapability::Vote]);
        RemoteSignerSpec { service_account_name: Some("voter".into()), ..spec }
    }

    #[test]
    fn children_are_owned_and_carry_only_our_labels() {
        let rs = remote_signer(atto_spec());
        let state = TokenState {
            token: "t".into(),
            previous: None,
            rotated_at: k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            previous_until: None,
        };
        let config = signer_config(&rs).unwrap();
        for child in [token_secret(&rs, &state), config_map(&rs, &config), ratchet_role(&rs), ratchet_role_binding(&rs)]
        {
            let meta = &child["metadata"];
            assert_eq!(meta["namespace"], "validators");
            let owner = &meta["ownerReferences"][0];
            assert_eq!((owner["kind"].as_str(), owner["name"].as_str()), (Some("RemoteSigner"), Some("voter")));
            assert_eq!((owner["uid"].as_str(), owner["controller"].as_bool()), (Some("5f7c-uid"), Some(true)));
            let labels = meta["labels"].as_object().unwrap();
            assert_eq!(labels[OWNER_LABEL], "voter");
            assert!(labels.keys().all(|k| !k.contains("instance") && !k.starts_with("argocd")), "{labels:?}");
        }
    }

    #[test]
    fn token_secret_round_trips_its_state() {
        let rs = remote_signer(atto_spec());
        let now = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let state = TokenState {
            token: "new".into(),
            previous: Some("old".into()),
            rotated_at: now,
            previous_until: Some(now + k8s_openapi::jiff::SignedDuration::from_mins(10)),
        };
        let applied = token_secret(&rs, &state);
        assert_eq!(applied["stringData"]["token.previous"], "old");
        // What the API server stores: stringData becomes data.
        let mut stored: Secret = serde_json::from_value(applied.clone()).unwrap();
        stored.data = Some(
            stored.string_data.take().unwrap().into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))).collect(),
        );
        assert_eq!(token_state(&stored), Some(state.clone()));

        let dropped = TokenState { previous: None, previous_until: None, ..state };
        let applied = token_secret(&rs, &dropped);
        assert_eq!(applied["stringData"]["token.previous"], "", "the key stays, empty");
        assert!(applied["metadata"]["annotations"].get(PREVIOUS_UNTIL).is_none());
    }

    #[test]
    fn atto_config_is_what_the_signer_parses() {
        let rs = remote_signer(atto_spec());
        let config = signer_config(&rs).unwrap();
        let yaml = config_map(&rs, &config)["data"][CONFIG_FILE].as_str().unwrap().to_string();
        let parsed = SignerConfig::from_yaml(&yaml).unwrap();
        let atto = parsed.atto.unwrap();
        assert_eq!(atto.listen.to_string(), "127.0.0.1:9090");
        assert_eq!(atto.capabilities, vec![Capability::Challenge, Capability::Vote]);
        assert_eq!(atto.token_file.unwrap().to_str(), Some("/var/run/sigil/token/token"));
        assert_eq!(parsed.management.unwrap().listen.to_string(), "0.0.0.0:9091");
    }

    #[test]
    fn what_this_version_cannot_serve_is_said_plainly() {
        let mut spec = atto_spec();
        spec.protocol = Protocol::Tezos;
        spec.atto = None;
        spec.ratchet = Some(RatchetSpec { store: Some(RatchetStore::File), initial_marks: None });
        assert_eq!(signer_config(&remote_signer(spec)).unwrap_err().0, "RatchetNotSupported");
        // Azure Key Vault has no Ed25519: an Atto signer on it cannot work, and says why.
        let mut spec = atto_spec();
        spec.key = KeySpec {
            azure_key_vault: Some(crate::api::AzureKeyVaultSpec {
                vault_url: "https://v.vault.azure.net".into(),
                key_name: "k".into(),
                key_version: None,
            }),
            ..Default::default()
        };
        let (reason, message) = signer_config(&remote_signer(spec)).unwrap_err();
        assert_eq!(reason, "InvalidConfig");
        assert!(message.contains("Azure Key Vault has no Ed25519 keys"), "{message}");
    }

    #[test]
    fn every_key_backend_renders_without_secrets_for_cloud_keys() {
        use crate::api::{AwsKmsSpec, GcpKmsSpec, Pkcs11Spec, SecretKeyRef};
        let version = "projects/p/locations/global/keyRings/r/cryptoKeys/voter/cryptoKeyVersions/1";
        let gcp = KeySpec { gcp_kms: Some(GcpKmsSpec { key_version: version.into() }), ..Default::default() };
        let rs = remote_signer(RemoteSignerSpec { key: gcp, ..atto_spec() });
        let key = signer_config(&rs).unwrap().keys["validator"].clone();
        assert_eq!(key.gcp_kms.unwrap().key_version, version);
        assert_eq!(key_volume(&rs), None, "no secret in the pod for a cloud key");

        let aws = KeySpec {
            aws_kms: Some(AwsKmsSpec { key_id: "alias/baker".into(), region: "eu-west-1".into() }),
            ..Default::default()
        };
        let rs = remote_signer(RemoteSignerSpec { key: aws, ..atto_spec() });
        let aws = signer_config(&rs).unwrap().keys["validator"].aws_kms.clone().unwrap();
        assert_eq!((aws.key_id.as_str(), aws.region.as_deref()), ("alias/baker", Some("eu-west-1")));

        let pin = SecretKeyRef { name: "hsm-pin".into(), key: "pin".into() };
        let pkcs11 = Pkcs11Spec {
            module: "/usr/lib/softhsm/libsofthsm2.so".into(),
            token_label: "sigil".into(),
            key_label: "voter".into(),
            pin_secret_ref: pin,
        };
        let rs = remote_signer(RemoteSignerSpec {
            key: KeySpec { pkcs11: Some(pkcs11), ..Default::default() },
            ..atto_spec()
        });
        let rendered = signer_config(&rs).unwrap().keys["validator"].pkcs11.clone().unwrap();
        assert_eq!(rendered.pin_file.unwrap().to_str(), Some("/var/run/sigil/key/pin"));
        assert_eq!(key_volume(&rs).unwrap()["secret"]["secretName"], "hsm-pin");
    }

    #[test]
    fn tezos_and_cometbft_signers_keep_their_marks_in_the_ratchet_config_map() {
        let mut spec = atto_spec();
        spec.protocol = Protocol::Tezos;
        spec.atto = None;
        let config = signer_config(&remote_signer(spec)).unwrap();
        let tezos = config.tezos.as_ref().unwrap();
        assert_eq!(tezos.listen, ([127, 0, 0, 1], TEZOS_PORT).into());
        assert_eq!(tezos.keys["validator"].allow, ["block", "preattestation", "attestation"]);
        let ratchet = config.ratchet.as_ref().unwrap().config_map.clone().unwrap();
        assert_eq!((ratchet.name.as_str(), ratchet.namespace.as_str()), ("voter-ratchet", "validators"));
        assert_eq!(config.keys["validator"].local.as_ref().unwrap().algorithm, None, "an edsk key names its curve");

        let mut spec = atto_spec();
        spec.protocol = Protocol::CometBft;
        spec.atto = None;
        spec.cometbft = Some(crate::api::CometBftSpec { chain_id: "cosmoshub-4".into(), ..Default::default() });
        let config = signer_config(&remote_signer(spec)).unwrap();
        assert_eq!(config.cometbft[0].connect, "tcp://127.0.0.1:26659");
        assert_eq!(config.cometbft[0].chain_id, "cosmoshub-4");
        assert!(config.ratchet.unwrap().config_map.is_some());
        // A pinned node and a persistent SecretConnection identity from a Secret.
        let mut spec = atto_spec();
        (spec.protocol, spec.atto) = (Protocol::CometBft, None);
        spec.cometbft = Some(crate::api::CometBftSpec {
            chain_id: "cosmoshub-4".into(),
            node_id: Some("f9baeaa15fedf5e1ef7448dd60f46c01f1a9e9c4".into()),
            identity_key_secret_ref: Some(crate::api::SecretKeyRef {
                name: "signer-identity".into(),
                key: "key".into(),
            }),
            max_height_jump: Some(1000),
            ..Default::default()
        });
        let rs = remote_signer(spec);
        let validator = signer_config(&rs).unwrap().cometbft.remove(0);
        assert_eq!(validator.node_id.as_deref(), Some("f9baeaa15fedf5e1ef7448dd60f46c01f1a9e9c4"));
        assert_eq!(validator.identity_key_file.unwrap().to_str(), Some("/var/run/sigil/identity/key"));
        assert_eq!(validator.max_height_jump, Some(1000));
        assert_eq!(identity_volume(&rs).unwrap()["secret"]["secretName"], "signer-identity");
        // Atto keeps no marks, but its signer reports its key there and waits for the key check.
        let atto = signer_config(&remote_signer(atto_spec())).unwrap().ratchet.unwrap().config_map.unwrap();
        assert!(atto.wait_for_key_check);
    }

    /// The CometBFT fields that keep a signer to its own node reach the signer: the pinned node
    /// id, the signer's identity key from a Secret (a volume of its own), and the height ceiling.
    #[test]
    fn every_tezos_policy_field_and_the_companion_key_reach_the_signer() {
        let mut spec = atto_spec();
        (spec.protocol, spec.atto) = (Protocol::Tezos, None);
        spec.tezos = Some(crate::api::TezosSpec {
            allow: vec!["block".into(), "attestation".into(), "generic:ballot:yay".into()],
            chains: vec!["NetXdQprcVkpaWU".into()],
            authorized_keys: vec!["edpkufnz668CdgnVC4X5KRvJoXCMgicr29Tjmr5vxGzvMdipwkTZmM".into()],
            allowed_ips: vec!["127.0.0.1".into()],
            list_known_keys: true,
            allow_proof_of_possession: true,
            proof_of_possession_until: Some("2026-12-02T18:00:00Z".into()),
            companion_key_secret_ref: Some(SecretKeyRef { name: "companion".into(), key: "secret".into() }),
        });
        let rs = remote_signer(spec);
        let config = signer_config(&rs).unwrap();
        let tezos = config.tezos.as_ref().unwrap();
        assert!(tezos.list_known_keys);
        let consensus = &tezos.keys[SIGNER_KEY];
        assert_eq!(consensus.allow, ["block", "attestation", "generic:ballot:yay"]);
        assert_eq!(consensus.chains, ["NetXdQprcVkpaWU"]);
        assert_eq!(consensus.allowed_ips, ["127.0.0.1"]);
        assert_eq!(consensus.authorized_keys.len(), 1);
        assert!(consensus.allow_proof_of_possession);
        assert_eq!(consensus.proof_of_possession_until.as_deref(), Some("2026-12-02T18:00:00Z"));
        // The companion signs attestations only, under the same rules, from its own Secret.
        let companion = &tezos.keys[COMPANION_KEY];
        assert_eq!(companion.allow, ["attestation"]);
        assert_eq!((&companion.chains, companion.allow_proof_of_possession), (&consensus.chains, true));
        let file = config.keys[COMPANION_KEY].local.as_ref().unwrap().secret_key_file.clone().unwrap();
        assert_eq!(file, std::path::Path::new(COMPANION_KEY_DIR).join(KEY_FILE));
        let volumes = secret_volumes(&rs);
        let (volume, dir) = volumes.iter().find(|(v, _)| v["name"] == "sigil-companion-key").unwrap();
        assert_eq!((volume["secret"]["secretName"].as_str(), *dir), (Some("companion"), COMPANION_KEY_DIR));
        assert_eq!(volume["secret"]["items"][0]["key"], "secret");
    }

    #[test]
    fn cometbft_node_pinning_identity_and_height_jump_are_rendered() {
        use crate::api::{CometBftSpec, SecretKeyRef};
        let node_id = "ab".repeat(20);
        let mut spec = atto_spec();
        spec.protocol = Protocol::CometBft;
        spec.atto = None;
        spec.cometbft = Some(CometBftSpec {
            chain_id: "cosmoshub-4".into(),
            node_id: Some(node_id.clone()),
            identity_key_secret_ref: Some(SecretKeyRef { name: "signer-identity".into(), key: "key".into() }),
            max_height_jump: Some(500),
            ..Default::default()
        });
        let rs = remote_signer(spec);
        let rendered = signer_config(&rs).unwrap().cometbft[0].clone();
        assert_eq!(rendered.node_id.as_deref(), Some(node_id.as_str()));
        assert_eq!(rendered.max_height_jump, Some(500));
        assert_eq!(rendered.identity_key_file, Some(format!("{IDENTITY_DIR}/{IDENTITY_FILE}").into()));
        let volume = identity_volume(&rs).unwrap();
        assert_eq!(volume["name"], "sigil-identity");
        assert_eq!(volume["secret"]["secretName"], "signer-identity");
        assert_eq!(volume["secret"]["items"][0], json!({ "key": "key", "path": IDENTITY_FILE }));

        // Unset: no pin, a fresh identity each start, the default ceiling.
        let mut spec = atto_spec();
        spec.protocol = Protocol::CometBft;
        spec.atto = None;
        spec.cometbft = Some(CometBftSpec { chain_id: "cosmoshub-4".into(), ..Default::default() });
        let rs = remote_signer(spec);
        let rendered = signer_config(&rs).unwrap().cometbft[0].clone();
        assert_eq!((rendered.node_id, rendered.identity_key_file, rendered.max_height_jump), (None, None, None));
        assert_eq!(identity_volume(&rs), None);
    }

    /// `version: v1` and `nodeId` render exactly that; every version maps to the signer's; raw
    /// bytes for a version that cannot send them are an InvalidSpec, not a silent drop.
    #[test]
    fn cometbft_version_node_id_and_sign_bytes_are_rendered() {
        use crate::api::{CometBftSpec, SignBytesSpec};
        let cometbft = |version, sign_bytes| {
            let mut spec = atto_spec();
            (spec.protocol, spec.atto) = (Protocol::CometBft, None);
            spec.cometbft = Some(CometBftSpec {
                chain_id: "celestia".into(),
                node_id: Some("ab".repeat(20)),
                version,
                sign_bytes,
                ..Default::default()
            });
            signer_config(&remote_signer(spec))
        };
        let sign_bytes = SignBytesSpec { prefix: "myapp/p2p/{chainId}/".into(), max_per_minute: Some(10) };
        let rendered = cometbft(Some(CometBftVersion::V1), Some(sign_bytes.clone())).unwrap();
        let yaml = yaml_serde::to_string(&rendered.cometbft).unwrap();
        let expected = format!(
            "- connect: tcp://127.0.0.1:26659\n  chainId: celestia\n  key: {SIGNER_KEY}\n  version: v1\n  nodeId: {}\n  \
             signBytes:\n    prefix: myapp/p2p/{{chainId}}/\n    maxPerMinute: 10\n",
            "ab".repeat(20)
        );
        assert_eq!(yaml, expected);
        for (version, expected) in [
            (CometBftVersion::V0_34, Version::V0_34),
            (CometBftVersion::V0_37, Version::V0_37),
            (CometBftVersion::V0_38, Version::V0_38),
            (CometBftVersion::V1, Version::V1),
        ] {
            assert_eq!(cometbft(Some(version), None).unwrap().cometbft[0].version, Some(expected));
        }
        // Unset: the signer answers every version.
        assert_eq!(cometbft(None, Some(sign_bytes.clone())).unwrap().cometbft[0].version, None);
        let (reason, message) = cometbft(Some(CometBftVersion::V0_38), Some(sign_bytes)).unwrap_err();
        assert_eq!(reason, "InvalidSpec");
        assert!(message.contains("spec.cometbft.signBytes") && message.contains("v1"), "{message}");
        let bad = SignBytesSpec { prefix: "{chainId}".into(), max_per_minute: None };
        let (reason, message) = cometbft(None, Some(bad)).unwrap_err();
        assert_eq!(reason, "InvalidConfig");
        assert!(message.contains("signBytes.prefix"), "{message}");
    }

    #[test]
    fn ratchet_rbac_is_least_privilege() {
        let mut spec = atto_spec();
        spec.protocol = Protocol::Tezos;
        let rs = remote_signer(spec.clone());
        assert!(uses_ratchet_config_map(&rs));
        let role = ratchet_role(&rs);
        assert_eq!(
            role["rules"],
            json!([{ "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["voter-ratchet"], "verbs": ["get", "update", "list", "watch"] }])
        );
        let binding = ratchet_role_binding(&rs);
        assert_eq!(binding["subjects"][0]["name"], "voter");
        let store = ratchet_config_map(&rs);
        assert!(store.get("data").is_none(), "the marks are the signer's");
        assert!(store["metadata"].get("ownerReferences").is_none(), "the marks outlive the RemoteSigner");
        assert_eq!(store["metadata"]["annotations"][CREATED_FOR], "5f7c-uid");
        assert_eq!(store["metadata"]["labels"][OWNER_LABEL], "voter");

        spec.ratchet = Some(RatchetSpec { store: Some(RatchetStore::File), initial_marks: None });
        assert!(!uses_ratchet_config_map(&remote_signer(spec)));
        assert!(uses_ratchet_config_map(&remote_signer(atto_spec())), "every signer reports its key in a store");
    }

    #[test]
    fn key_sources_name_the_key_whatever_the_rest_of_the_spec() {
        use crate::api::{AzureKeyVaultSpec, SecretKeyRef};
        let secret = |name: &str| KeySpec {
            secret_ref: Some(SecretKeyRef { name: name.into(), key: "seed".into() }),
            ..Default::default()
        };
        assert_eq!(key_source(&secret("a")), key_source(&secret("a")));
        assert_ne!(key_source(&secret("a")), key_source(&secret("b")));
        let azure = |version: Option<&str>| KeySpec {
            azure_key_vault: Some(AzureKeyVaultSpec {
                vault_url: "https://v.vault.azure.net".into(),
                key_name: "baker".into(),
                key_version: version.map(String::from),
            }),
            ..Default::default()
        };
        assert_eq!(key_source(&azure(None)), key_source(&azure(Some("v2"))), "every version is the key");
    }

    #[test]
    fn identity_annotations_per_cloud() {
        assert!(identity_annotations(None).is_empty());
        let identity = WorkloadIdentitySpec {
            gcp_service_account: Some("signer@p.iam.gserviceaccount.com".into()),
            azure_client_id: Some("cid".into()),
            azure_tenant_id: Some("tid".into()),
            ..Default::default()
        };
        let annotations = identity_annotations(Some(&identity));
        assert_eq!(annotations.len(), 3);
        assert_eq!(annotations["iam.gke.io/gcp-service-account"], "signer@p.iam.gserviceaccount.com");
        assert_eq!(annotations["azure.workload.identity/tenant-id"], "tid");
        let patch = service_account_patch("voter", "validators", &annotations);
        assert_eq!(patch["metadata"]["annotations"].as_object().unwrap().len(), 3);
    }
}

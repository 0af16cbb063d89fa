//! The `RemoteSigner` custom resource (group `sigil.dev`, version `v1alpha1`).
//!
//! No field has a schema default (defaults live in code, so Argo CD sees no drift), every field is
//! documented (so `kubectl explain` helps), and what can be checked at admission is checked there
//! by CEL rules ([`crd`]).

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sigil_signer::backend::Backend;

/// A signer for one validator key: the operator creates its token, config, ratchet storage and
/// identity wiring, and injects it as a sidecar into pods labelled `sigil.dev/signer: <name>`.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "sigil.dev",
    version = "v1alpha1",
    kind = "RemoteSigner",
    namespaced,
    status = "RemoteSignerStatus",
    shortname = "rsig",
    category = "sigil",
    printcolumn = r#"{"name":"Protocol","type":"string","jsonPath":".spec.protocol"}"#,
    printcolumn = r#"{"name":"Backend","type":"string","jsonPath":".status.keyBackend"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Signers","type":"string","jsonPath":".status.signers"}"#,
    printcolumn = r#"{"name":"Public key","type":"string","jsonPath":".status.publicKey"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RemoteSignerSpec {
    /// The protocol the node speaks to its signer: Atto, Tezos or CometBFT.
    pub protocol: Protocol,
    /// Where the validator key lives. Set exactly one backend.
    pub key: KeySpec,
    /// Atto options. Only for protocol Atto.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub atto: Option<AttoSpec>,
    /// Tezos options. Only for protocol Tezos.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tezos: Option<TezosSpec>,
    /// CometBFT options. Only for protocol CometBFT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cometbft: Option<CometBftSpec>,
    /// Where the double-sign high-water marks are kept. Tezos and CometBFT only; a ConfigMap
    /// `<name>-ratchet` when unset. That ConfigMap outlives the RemoteSigner (a RemoteSigner
    /// re-created under the same name continues from its marks); delete it yourself to start
    /// from zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratchet: Option<RatchetSpec>,
    /// The API token shared by the node and its signer, which the operator generates and rotates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenSpec>,
    /// The ServiceAccount the signing pods run as. It gets the ratchet RBAC and the Workload
    /// Identity annotations. `default` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Cloud identity for KMS backends, written as annotations on the ServiceAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_identity: Option<WorkloadIdentitySpec>,
    /// The injected signer container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<SidecarSpec>,
}

impl RemoteSignerSpec {
    /// An Atto signer whose key is `key` in Secret `secret`; every optional field unset.
    pub fn atto(secret: &str, key: &str, capabilities: Vec<AttoCapability>) -> Self {
        RemoteSignerSpec {
            protocol: Protocol::Atto,
            key: KeySpec {
                secret_ref: Some(SecretKeyRef { name: secret.into(), key: key.into() }),
                ..Default::default()
            },
            atto: Some(AttoSpec { capabilities }),
            tezos: None,
            cometbft: None,
            ratchet: None,
            token: None,
            service_account_name: None,
            workload_identity: None,
            sidecar: None,
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Protocol {
    /// The Atto signer REST API (attocash/signer compatible).
    Atto,
    /// The Tezos remote-signer HTTP API (octez-signer compatible).
    Tezos,
    /// The CometBFT privval protocol (tmkms compatible).
    #[serde(rename = "CometBFT")]
    CometBft,
}

impl Protocol {
    /// Whether signing needs a high-water mark (messages carry levels and rounds).
    pub fn uses_ratchet(self) -> bool {
        !matches!(self, Protocol::Atto)
    }
}

/// Exactly one key backend.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeySpec {
    /// A software key in a Secret in this namespace, mounted read-only into the signer only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// A key in a PKCS#11 HSM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs11: Option<Pkcs11Spec>,
    /// A Google Cloud KMS key version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp_kms: Option<GcpKmsSpec>,
    /// An AWS KMS key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_kms: Option<AwsKmsSpec>,
    /// An Azure Key Vault key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_key_vault: Option<AzureKeyVaultSpec>,
}

/// The key backend `spec.key` selects, with its settings.
#[derive(Clone, Copy, Debug)]
pub enum KeySource<'a> {
    Secret(&'a SecretKeyRef),
    Pkcs11(&'a Pkcs11Spec),
    GcpKms(&'a GcpKmsSpec),
    AwsKms(&'a AwsKmsSpec),
    AzureKeyVault(&'a AzureKeyVaultSpec),
}

impl KeySource<'_> {
    pub fn backend(self) -> Backend {
        match self {
            KeySource::Secret(_) => Backend::Local,
            KeySource::Pkcs11(_) => Backend::Pkcs11,
            KeySource::GcpKms(_) => Backend::GcpKms,
            KeySource::AwsKms(_) => Backend::AwsKms,
            KeySource::AzureKeyVault(_) => Backend::AzureKeyVault,
        }
    }
}

impl KeySpec {
    /// A backend's field under `spec.key`: the signer's name for it, but `secretRef` for a
    /// local key (it comes from a Secret).
    pub fn field(backend: Backend) -> &'static str {
        match backend {
            Backend::Local => "secretRef",
            other => other.field(),
        }
    }

    /// The one backend set, with its settings.
    pub fn source(&self) -> Option<KeySource<'_>> {
        let set: Vec<KeySource<'_>> = [
            self.secret_ref.as_ref().map(KeySource::Secret),
            self.pkcs11.as_ref().map(KeySource::Pkcs11),
            self.gcp_kms.as_ref().map(KeySource::GcpKms),
            self.aws_kms.as_ref().map(KeySource::AwsKms),
            self.azure_key_vault.as_ref().map(KeySource::AzureKeyVault),
        ]
        .into_iter()
        .flatten()
        .collect();
        match set.as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }

    /// The backend, when exactly one is set.
    pub fn backend(&self) -> Option<Backend> {
        self.source().map(KeySource::backend)
    }
}

/// A key inside a Secret.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name (same namespace).
    pub name: String,
    /// The key within the Secret's data.
    pub key: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pkcs11Spec {
    /// Path of the PKCS#11 module inside the signer image, e.g. /usr/lib/softhsm/libsofthsm2.so.
    pub module: String,
    /// The token's label.
    pub token_label: String,
    /// The key's label.
    pub key_label: String,
    /// The Secret key holding the user PIN.
    pub pin_secret_ref: SecretKeyRef,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcpKmsSpec {
    /// projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>/cryptoKeyVersions/<n>
    pub key_version: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsKmsSpec {
    /// Key id or ARN.
    pub key_id: String,
    /// AWS region, e.g. eu-west-1.
    pub region: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureKeyVaultSpec {
    /// https://<vault>.vault.azure.net
    pub vault_url: String,
    /// The key's name.
    pub key_name: String,
    /// A key version; the current version when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_version: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttoSpec {
    /// What the node may ask the signer for: CHALLENGE (peer handshakes), VOTE, BLOCK (genesis only).
    pub capabilities: Vec<AttoCapability>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum AttoCapability {
    /// Sign peer-handshake challenges.
    Challenge,
    /// Sign blocks (only for creating a new genesis).
    Block,
    /// Sign votes.
    Vote,
}

/// The Tezos key's policy: the fields of the signer's `tezos.keys.<name>` (docs/tezos.md).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TezosSpec {
    /// What the key may sign: block, preattestation, attestation, generic:<operation> (e.g.
    /// generic:transaction, generic:ballot or generic:ballot:yay), michelson. Unset: block,
    /// preattestation and attestation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Chain ids (NetXdQprcVkpaWU) the key may sign consensus messages for. Unset: any chain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chains: Vec<String>,
    /// Client public keys (edpk…, sppk…, p2pk…, BLpk…); when set, every sign request must carry
    /// an authentication signature by one of them (octez-client's `authentication=`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorized_keys: Vec<String>,
    /// Client addresses or networks allowed to ask (the node is in the pod: 127.0.0.1).
    /// Unset: any client that reaches the pod-local listener.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_ips: Vec<String>,
    /// Answer GET /known_keys (octez-client list known remote keys).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub list_known_keys: bool,
    /// Answer GET /bls_prove_possession for the tz4 keys, needed once to reveal a tz4 key or
    /// register it as a consensus or companion key. Takes effect without a restart (when the
    /// kubelet refreshes the mounted config, within about a minute).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_proof_of_possession: bool,
    /// When set (RFC 3339), allowProofOfPossession ends then: the signer stops answering by its
    /// own clock, and the operator reports ProofOfPossession=False.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<DateTime>")]
    pub proof_of_possession_until: Option<String>,
    /// A second tz4 key the same sidecar serves: the baker's companion key, which signs
    /// attestations alongside a tz4 consensus key when DAL content exists. A software key
    /// (BLsk…) in a Secret in this namespace, mounted into the signer only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub companion_key_secret_ref: Option<SecretKeyRef>,
}

/// An RFC 3339 time, validated by the API server (`format: date-time`).
#[derive(JsonSchema)]
#[schemars(extend("format" = "date-time"))]
#[allow(dead_code)]
struct DateTime(String);

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CometBftSpec {
    /// The chain id the validator signs for.
    pub chain_id: String,
    /// The node's priv_validator_laddr the signer dials; tcp://127.0.0.1:26659 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_address: Option<String>,
    /// The node's privval SecretConnection identity (40 hex characters): the signer serves only
    /// the node holding that key. Only for nodes that keep a fixed privval identity: stock
    /// CometBFT makes a new one at every start, and a pinned signer would refuse it after a
    /// restart. Unset: any node that answers on nodeAddress is served (within maxHeightJump).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// The signer's own SecretConnection identity key, from a Secret (hex, base64 seed or a
    /// priv_validator_key.json), so the node sees the same signer across restarts. A new
    /// identity each start when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_key_secret_ref: Option<SecretKeyRef>,
    /// The largest height jump above the last signed height the signer accepts (default
    /// 1000000), so a node that is not the validator's own cannot burn the marks by asking for
    /// a signature far ahead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_height_jump: Option<i64>,
    /// The node's CometBFT version (v0.34, v0.37, v0.38, v1). Unset: the signer answers any of
    /// them (the public key in both privval layouts); set it to have the signer refuse what that
    /// version cannot send, such as vote extensions to v0.34 and v0.37.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<CometBftVersion>,
    /// CometBFT v1's SignBytesRequest (raw bytes): refused unless set, and then signed only for
    /// values that start with `prefix` (with the chain id in place of `{chainId}`), that could
    /// not be a vote, proposal or vote extension, at most `maxPerMinute` a minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_bytes: Option<SignBytesSpec>,
}

/// A CometBFT release line, as its privval protocol differs.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CometBftVersion {
    #[serde(rename = "v0.34")]
    V0_34,
    #[serde(rename = "v0.37")]
    V0_37,
    /// v0.38, and v0.39/v0.40, which keep its privval protocol.
    #[serde(rename = "v0.38")]
    V0_38,
    #[serde(rename = "v1")]
    V1,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignBytesSpec {
    /// What every value must start with: the application's domain, `{chainId}`, and at least one
    /// more character, e.g. `myapp/p2p/{chainId}/`.
    pub prefix: String,
    /// At most this many raw-bytes signatures a minute (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_minute: Option<i32>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RatchetSpec {
    /// The store: ConfigMap (several replicas, one mark; the default) or File (a volume of the
    /// pod's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<RatchetStore>,
    /// Marks to start from, for a key that signed before (under another signer): the operator
    /// imports them into the store, never lowering a mark, before the key is cleared to sign.
    /// Until the document is there and fits this RemoteSigner, it is not Ready, and labelled
    /// pods are refused. Set exactly one of configMapKeyRef, secretKeyRef or fence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_marks: Option<InitialMarksSpec>,
}

impl RatchetSpec {
    pub fn store(&self) -> RatchetStore {
        self.store.unwrap_or(RatchetStore::ConfigMap)
    }
}

/// Where the marks a migrated key starts from come from.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InitialMarksSpec {
    /// A marks interchange document (docs/ratchet.md) in a ConfigMap of this namespace, e.g. the
    /// output of `sigil-signer ratchet convert` or `ratchet export`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<ConfigMapKeyRef>,
    /// A marks interchange document in a Secret of this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    /// Nothing below this level (height) is ever signed, on any stream of the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<FenceSpec>,
}

/// A key inside a ConfigMap.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// The ConfigMap's name (same namespace).
    pub name: String,
    /// The key within the ConfigMap's data.
    pub key: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FenceSpec {
    /// The first level (CometBFT: height) the key may sign at.
    pub level: i64,
    /// The chain it holds on. Unset: spec.cometbft.chainId, or the one chain of spec.tezos.chains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RatchetStore {
    /// ConfigMap `<name>-ratchet`, written with a resourceVersion precondition.
    ConfigMap,
    /// A file on a volume the pod provides, fsynced before each signature.
    File,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenSpec {
    /// How often the token is replaced, as a duration like 720h (the default) or 24h. At least 1m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_interval: Option<String>,
    /// How long the previous token stays valid after a rotation, like 10m (the default). At least
    /// 1m: kubelets take up to a minute or so to update mounted Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadIdentitySpec {
    /// GKE: the Google service account, written as iam.gke.io/gcp-service-account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp_service_account: Option<String>,
    /// EKS IRSA: the IAM role ARN, written as eks.amazonaws.com/role-arn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_role_arn: Option<String>,
    /// Azure Workload Identity: the client id, written as azure.workload.identity/client-id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_client_id: Option<String>,
    /// Azure Workload Identity: the tenant id, written as azure.workload.identity/tenant-id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_tenant_id: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSpec {
    /// The sigil-signer image; the operator's own version when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU and memory for the signer container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// What the operator observed and did.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteSignerStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, and the conditions behind it: TokenReady, ConfigReady, MarksReady, KeyReady,
    /// IdentityReady; then SignersReady, whether the injected signers run (not part of Ready: a
    /// pod is injected only once its RemoteSigner is Ready).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Injected pods whose `sigil-signer` container is Ready, of all injected pods: `2/2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signers: Option<String>,
    /// The key backend in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_backend: Option<String>,
    /// The key's name on its chain (tz1…, atto://…, a CometBFT validator address), as the signer
    /// reports it once running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// When the API token was last generated (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_rotated_at: Option<String>,
    /// Until when the previous token is still accepted (RFC 3339), during a rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_token_expires_at: Option<String>,
    /// The ServiceAccount that carries this signer's identity annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_service_account: Option<String>,
    /// The ConfigMap holding this signer's high-water marks, as first seen. It outlives the
    /// RemoteSigner; a store that vanishes or is replaced by another object stops signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marks: Option<MarksStatus>,
}

/// Which object holds the marks.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MarksStatus {
    /// The ConfigMap's name.
    pub config_map: String,
    /// Its UID: another object under the same name is another store.
    pub uid: String,
}

/// A condition in the Kubernetes convention.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Ready, TokenReady, ConfigReady, MarksReady, KeyReady, IdentityReady or SignersReady.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// A CamelCase reason.
    pub reason: String,
    /// What a person needs to know.
    pub message: String,
    /// When status last changed (RFC 3339).
    pub last_transition_time: String,
    /// The generation this condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl RemoteSignerStatus {
    /// The condition of this type, if reported.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// The CRD as installed: kube-derive's schema plus the CEL rules that reject bad specs at
/// admission with a message a person can act on.
pub fn crd() -> CustomResourceDefinition {
    let mut crd = serde_json::to_value(RemoteSigner::crd()).expect("a CRD serializes");
    let spec = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let rule = |rule: &str, message: &str| serde_json::json!({ "rule": rule, "message": message });
    spec["x-kubernetes-validations"] = serde_json::json!([
        rule("!has(self.atto) || self.protocol == 'Atto'", "spec.atto (capabilities) is only for protocol Atto"),
        rule("!has(self.tezos) || self.protocol == 'Tezos'", "spec.tezos is only for protocol Tezos"),
        rule("!has(self.cometbft) || self.protocol == 'CometBFT'", "spec.cometbft is only for protocol CometBFT"),
        rule("self.protocol != 'Atto' || has(self.atto)", "protocol Atto needs spec.atto.capabilities"),
        rule("self.protocol != 'CometBFT' || has(self.cometbft)", "protocol CometBFT needs spec.cometbft.chainId"),
        rule(
            "!has(self.ratchet) || self.protocol != 'Atto'",
            "spec.ratchet is for Tezos and CometBFT; Atto keeps no marks"
        ),
        rule(
            "!has(self.ratchet) || !has(self.ratchet.initialMarks) || !has(self.ratchet.initialMarks.fence) || has(self.ratchet.initialMarks.fence.chainId) || self.protocol == 'CometBFT' || (has(self.tezos) && has(self.tezos.chains) && size(self.tezos.chains) == 1)",
            "spec.ratchet.initialMarks.fence: set chainId (the key signs on more than one chain)"
        ),
    ]);
    spec["properties"]["ratchet"]["x-kubernetes-validations"] = serde_json::json!([rule(
        "!has(self.initialMarks) || !has(self.store) || self.store == 'ConfigMap'",
        "spec.ratchet.initialMarks needs store ConfigMap: the operator imports them into the ConfigMap store"
    )]);
    let initial_marks = &mut spec["properties"]["ratchet"]["properties"]["initialMarks"];
    initial_marks["x-kubernetes-validations"] = serde_json::json!([rule(
        "[has(self.configMapKeyRef), has(self.secretKeyRef), has(self.fence)].filter(x, x).size() == 1",
        "spec.ratchet.initialMarks: set exactly one of configMapKeyRef, secretKeyRef, fence"
    )]);
    initial_marks["properties"]["fence"]["properties"]["level"]["minimum"] = 1.into();
    let backends: Vec<&str> = Backend::ALL.iter().map(|b| KeySpec::field(*b)).collect();
    let has: Vec<String> = backends.iter().map(|field| format!("has(self.{field})")).collect();
    spec["properties"]["key"]["x-kubernetes-validations"] = serde_json::json!([rule(
        &format!("[{}].filter(x, x).size() == 1", has.join(", ")),
        &format!("spec.key: set exactly one of {}", backends.join(", "))
    )]);
    spec["properties"]["atto"]["properties"]["capabilities"]["minItems"] = 1.into();
    let cometbft = &mut spec["properties"]["cometbft"]["properties"];
    cometbft["maxHeightJump"]["minimum"] = 1.into();
    cometbft["nodeId"]["pattern"] = "^[0-9a-fA-F]{40}$".into();
    cometbft["signBytes"]["properties"]["maxPerMinute"]["minimum"] = 1.into();
    spec["properties"]["cometbft"]["x-kubernetes-validations"] = serde_json::json!([rule(
        "!has(self.signBytes) || !has(self.version) || self.version == 'v1'",
        "spec.cometbft.signBytes: only CometBFT v1 nodes send SignBytesRequest; set version v1 or leave version out"
    )]);
    let duration = |field: &str| {
        serde_json::json!([rule(
            "self.matches('^([0-9]+(s|m|h))+$') && duration(self) >= duration('1m')",
            &format!("spec.token.{field} is a duration of at least 1m, like 10m, 24h or 1h30m"),
        )])
    };
    spec["properties"]["token"]["x-kubernetes-validations"] = serde_json::json!([rule(
        "!has(self.rotationInterval) || !has(self.gracePeriod) || !self.gracePeriod.matches('^([0-9]+(s|m|h))+$') || !self.rotationInterval.matches('^([0-9]+(s|m|h))+$') || duration(self.gracePeriod) < duration(self.rotationInterval)",
        "spec.token.gracePeriod must be shorter than spec.token.rotationInterval"
    )]);
    let token = &mut spec["properties"]["token"]["properties"];
    token["rotationInterval"]["x-kubernetes-validations"] = duration("rotationInterval");
    token["gracePeriod"]["x-kubernetes-validations"] = duration("gracePeriod");
    serde_json::from_value(crd).expect("the edited CRD is still a CRD")
}

/// The CRD as YAML, as `crdgen` writes it to `crds/`.
pub fn crd_yaml() -> String {
    format!(
        "# Generated by `cargo run -p sigil-operator --bin crdgen`; do not edit.\n{}",
        yaml_serde::to_string(&crd()).expect("a CRD serializes")
    )
}

/// The CRD's fields as Markdown (docs/reference/remotesigner.md): every field of `spec` and
/// `status` with its type, whether it is required, and its description, straight from the schema
/// (`crdgen --markdown`; a test keeps the file current).
pub fn crd_reference_markdown() -> String {
    let crd = serde_json::to_value(crd()).expect("a CRD serializes");
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"];
    let mut out = String::from(
        "# RemoteSigner reference\n\n\
         Generated from the CRD's schema by `cargo run -p sigil-operator --bin crdgen -- --markdown`;\n\
         do not edit. Group `sigil.dev`, version `v1alpha1`, kind `RemoteSigner` (short name `rsig`),\n\
         namespaced. Rules checked at admission (CEL) are listed after the fields.\n",
    );
    for part in ["spec", "status"] {
        out.push_str(&format!("\n## `{part}`\n\n| field | type | required | description |\n|---|---|---|---|\n"));
        reference_rows(part, &schema[part], &mut out);
    }
    out.push_str("\n## Admission rules\n\n");
    let rules = schema["spec"]["x-kubernetes-validations"].as_array().into_iter().flatten();
    for rule in rules {
        out.push_str(&format!(
            "- {} (`{}`)\n",
            rule["message"].as_str().unwrap_or(""),
            rule["rule"].as_str().unwrap_or("")
        ));
    }
    out
}

fn reference_rows(path: &str, schema: &serde_json::Value, out: &mut String) {
    let required: Vec<&str> = schema["required"].as_array().into_iter().flatten().filter_map(|r| r.as_str()).collect();
    let Some(properties) = schema["properties"].as_object() else { return };
    for (name, field) in properties {
        let field_path = format!("{path}.{name}");
        let items = &field["items"];
        let kind = match (field["type"].as_str(), items["type"].as_str()) {
            (Some("array"), Some(inner)) => format!("[]{inner}"),
            (Some(kind), _) => kind.to_string(),
            (None, _) if field.get("x-kubernetes-int-or-string").is_some() => "int or string".into(),
            (None, _) => "object".into(),
        };
        let kind = match field["enum"].as_array() {
            Some(values) => {
                let values: Vec<String> = values.iter().filter_map(|v| v.as_str()).map(|v| format!("`{v}`")).collect();
                format!("{kind}: {}", values.join(", "))
            }
            None => kind,
        };
        let description = field["description"].as_str().unwrap_or("").replace('\n', " ").replace('|', "\\|");
        let required = if required.contains(&name.as_str()) { "yes" } else { "" };
        out.push_str(&format!("| `{field_path}` | {kind} | {required} | {description} |\n"));
        reference_rows(&field_path, field, out);
        if items["type"].as_str() == Some("object") {
            reference_rows(&format!("{field_path}[]"), items, out);
        }
    }
}

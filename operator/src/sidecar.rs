//! The injected sidecar as both the renderer (`controller::desired`, the signer config) and the
//! webhook (`webhook::patch`, the pod) see it: its name, where it finds its files, its ports.

/// The injected container's name.
pub const CONTAINER: &str = "sigil-signer";

/// Where the injected sidecar finds things (the webhook mounts them there).
pub const KEY_DIR: &str = "/var/run/sigil/key";
/// The CometBFT SecretConnection identity key, when `spec.cometbft.identityKeySecretRef` names one.
pub const IDENTITY_DIR: &str = "/var/run/sigil/identity";
pub const IDENTITY_FILE: &str = "key";
/// Where the signer container alone finds its Kubernetes API credential (the standard path, so
/// the in-cluster client finds it).
pub const API_ACCESS_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
pub const KEY_FILE: &str = "secretKey";
/// The Tezos companion key (`spec.tezos.companionKeySecretRef`), in its own directory.
pub const COMPANION_KEY_DIR: &str = "/var/run/sigil/companion-key";
pub const PIN_FILE: &str = "pin";
pub const TOKEN_DIR: &str = "/var/run/sigil/token";
pub const CONFIG_DIR: &str = "/etc/sigil";
pub const CONFIG_FILE: &str = "signer.yaml";
pub const API_PORT: u16 = 9090;
pub const MANAGEMENT_PORT: u16 = 9091;
/// The Tezos API in the pod, octez's default port (bakers point at http://127.0.0.1:6732/<tz…>).
pub const TEZOS_PORT: u16 = 6732;

//! `SignerConfig`: what `sigil-signer --config FILE` reads, what the operator renders, and what
//! the upstream `ATTO_SIGNER_*` environment variables are translated into. One type, one parser.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::audit::AuditConfig;
use crate::backend::local::LocalKeyConfig;
use crate::backend::pkcs11::Pkcs11KeyConfig;
use crate::backend::{one_of, AwsKmsKeyConfig, AzureKeyVaultKeyConfig, Backend, BackendConfig, GcpKmsKeyConfig};
use crate::keys::Algorithm;
use crate::protocol::atto::config::AttoConfig;
use crate::protocol::cometbft::config::CometBftConfig;
use crate::protocol::tezos::config::TezosConfig;
use crate::protocol::ProtocolConfig;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignerConfig {
    /// Named keys, each in exactly one backend.
    pub keys: BTreeMap<String, KeyConfig>,
    /// Where high-water marks are kept. Defaults to memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratchet: Option<RatchetConfig>,
    /// The Atto signer REST API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub atto: Option<AttoConfig>,
    /// The Tezos remote-signer HTTP API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tezos: Option<TezosConfig>,
    /// CometBFT validators to dial (privval), one entry per node and chain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cometbft: Vec<CometBftConfig>,
    /// Health, readiness and metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management: Option<ManagementConfig>,
    /// The audit trail's file, besides the log (one JSON line per signature and refusal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditConfig>,
}

/// One key: set exactly one backend.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyConfig {
    /// A software key in process memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalKeyConfig>,
    /// A key in a PKCS#11 token (an HSM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs11: Option<Pkcs11KeyConfig>,
    /// A key in AWS KMS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_kms: Option<AwsKmsKeyConfig>,
    /// A key version in GCP Cloud KMS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp_kms: Option<GcpKmsKeyConfig>,
    /// A key in Azure Key Vault (ECDSA only: the service has no Ed25519).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_key_vault: Option<AzureKeyVaultKeyConfig>,
}

impl KeyConfig {
    pub fn local(config: LocalKeyConfig) -> Self {
        KeyConfig { local: Some(config), ..Default::default() }
    }

    /// The one backend set, or an error naming the key.
    pub fn backend(&self, name: &str) -> Result<&dyn BackendConfig, ConfigError> {
        let set: Vec<&dyn BackendConfig> = [
            self.local.as_ref().map(|c| c as &dyn BackendConfig),
            self.pkcs11.as_ref().map(|c| c as &dyn BackendConfig),
            self.aws_kms.as_ref().map(|c| c as &dyn BackendConfig),
            self.gcp_kms.as_ref().map(|c| c as &dyn BackendConfig),
            self.azure_key_vault.as_ref().map(|c| c as &dyn BackendConfig),
        ]
        .into_iter()
        .flatten()
        .collect();
        match <[_; 1]>::try_from(set) {
            Ok([one]) => Ok(one),
            Err(_) => {
                let fields: Vec<&str> = Backend::ALL.iter().map(|b| b.field()).collect();
                Err(ConfigError::Invalid(format!("keys.{name}: set exactly one backend: {}", one_of(&fields))))
            }
        }
    }

    /// When the backend rules out the Ed25519 key a protocol needs: why, as the end of a message.
    fn not_ed25519(&self, name: &str) -> Result<Option<String>, ConfigError> {
        let why = self.backend(name)?.rules_out_ed25519();
        Ok(why.map(|why| if why.is_empty() { String::new() } else { format!(" ({why})") }))
    }
}

/// Where high-water marks live: set exactly one store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RatchetConfig {
    /// In process memory: forgotten on restart. For tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryRatchetConfig>,
    /// Local files, fsynced before each signature is released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileRatchetConfig>,
    /// A Kubernetes ConfigMap shared by every replica, written with compare-and-swap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapRatchetConfig>,
}

/// The store a [`RatchetConfig`] selects.
pub enum RatchetStore<'a> {
    Memory,
    File(&'a FileRatchetConfig),
    ConfigMap(&'a ConfigMapRatchetConfig),
}

impl RatchetConfig {
    pub fn store(&self) -> Result<RatchetStore<'_>, ConfigError> {
        match (&self.memory, &self.file, &self.config_map) {
            (Some(_), None, None) => Ok(RatchetStore::Memory),
            (None, Some(file), None) => Ok(RatchetStore::File(file)),
            (None, None, Some(config_map)) => Ok(RatchetStore::ConfigMap(config_map)),
            _ => Err(ConfigError::Invalid("ratchet: set exactly one of memory, file or configMap".into())),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMapRatchetConfig {
    /// The ConfigMap (the operator's `<RemoteSigner>-ratchet`). It must exist and be sealed as a
    /// marks store (by sigil-operator, or `sigil-signer ratchet init`).
    pub name: String,
    pub namespace: String,
    /// Sign only with keys sigil-operator has checked no other RemoteSigner uses (it lists them
    /// in the ConfigMap). The operator renders this on; off for signers configured by hand.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait_for_key_check: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemoryRatchetConfig {}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileRatchetConfig {
    /// A directory only this signer uses (created mode 700), holding the journal of marks.
    pub dir: PathBuf,
    /// CometBFT: with each signature, reserve the node's next step (the precommit after a prevote,
    /// the next height after a precommit), so that the next request is answered without waiting
    /// for a flush of its own. After a stop that was not clean (a kill, a crash, a power loss) the
    /// reserved step is refused, whatever it signs: a validator that holds more than a third of
    /// the voting power then stalls its chain at that step until an operator lowers the mark. Off
    /// by default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reserve_next_step: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManagementConfig {
    /// Address of the management listener. Defaults to 127.0.0.1:9091.
    #[serde(default = "default_management_listen")]
    pub listen: SocketAddr,
}

impl Default for ManagementConfig {
    fn default() -> Self {
        ManagementConfig { listen: default_management_listen() }
    }
}

fn default_management_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9091))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config: {0}")]
    Parse(String),
    #[error("config: {0}")]
    Invalid(String),
    #[error("{0}")]
    Env(String),
}

impl SignerConfig {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = crate::files::read_bounded(path, crate::files::CONFIG_FILE_LIMIT)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let mut config = Self::from_yaml(&text)?;
        if let Some(tezos) = &mut config.tezos {
            tezos.config_file = Some(path.to_path_buf());
        }
        Ok(config)
    }

    /// Parses and validates. Errors name the field (`atto.capabilities[1]: ...`).
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        // yaml_serde's messages already carry the field path and the line.
        let config: SignerConfig = yaml_serde::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_yaml(&self) -> String {
        yaml_serde::to_string(self).expect("SignerConfig always serializes")
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        if self.keys.is_empty() {
            return invalid("keys: configure at least one key".into());
        }
        for (name, key) in &self.keys {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return invalid(format!("keys.{name}: key names use letters, digits, '-' and '_' only"));
            }
            let backend = key.backend(name)?;
            if let Err(invalid) = backend.validate() {
                let field = invalid.field.map(|f| format!(".{f}")).unwrap_or_default();
                return Err(ConfigError::Invalid(format!(
                    "keys.{name}.{}{field}: {invalid}",
                    backend.backend().field()
                )));
            }
        }
        let protocols = self.protocols();
        if protocols.is_empty() {
            return invalid("nothing to serve: add an `atto`, `tezos` or `cometbft` section".into());
        }
        // Every key a protocol names exists and serves no other protocol.
        let mut served: BTreeMap<&str, (String, &str)> = BTreeMap::new();
        for protocol in &protocols {
            for (path, key) in protocol.keys() {
                if !self.keys.contains_key(key) {
                    return invalid(format!("{path}: {}", self.unknown_key(key)));
                }
                match served.get(key) {
                    Some((other, name)) if *name != protocol.name() => {
                        return invalid(format!("{path}: the key is also {other}; give each protocol its own key"));
                    }
                    Some(_) => {}
                    None => {
                        served.insert(key, (path, protocol.name()));
                    }
                }
            }
            let algorithms = protocol.algorithms();
            if algorithms.contains(&Algorithm::Ed25519) && algorithms.len() < Algorithm::ALL.len() {
                for (path, key) in protocol.keys() {
                    // Only a local key can be BLS; one configured so is not ruled out by that.
                    let local_bls =
                        self.keys[key].local.as_ref().and_then(|l| l.algorithm) == Some(Algorithm::Bls12_381);
                    if local_bls && algorithms.contains(&Algorithm::Bls12_381) {
                        continue;
                    }
                    if let Some(why) = self.keys[key].not_ed25519(key)? {
                        let names: Vec<&str> = algorithms.iter().map(|a| a.name()).collect();
                        return invalid(format!(
                            "{path}: key {key:?} must be {} for {}{why}",
                            names.join(" or "),
                            protocol.name()
                        ));
                    }
                }
            }
            protocol.validate()?;
            if protocol.needs_marks() && self.ratchet.is_none() {
                return invalid(format!(
                    "ratchet: {} needs a durable high-water mark; set ratchet.file.dir \
                     (or ratchet.memory: {{}} for tests only)",
                    protocol.name()
                ));
            }
        }
        let management = ("management.listen", self.management.clone().unwrap_or_default().listen);
        let listeners: Vec<(&str, SocketAddr)> =
            std::iter::once(management).chain(protocols.iter().filter_map(|p| p.listen())).collect();
        for (i, (name, addr)) in listeners.iter().enumerate() {
            if let Some((other, _)) = listeners[..i].iter().find(|(_, a)| a == addr && addr.port() != 0) {
                return invalid(format!("{name}: {addr} is already {other}"));
            }
        }
        if let Some(ratchet) = &self.ratchet {
            if let RatchetStore::File(file) = ratchet.store()? {
                if !file.dir.is_absolute() {
                    return invalid(format!(
                        "ratchet.file.dir: {:?} is relative, so the marks would depend on the directory the signer \
                         is started from (another directory is an empty store, and an empty store signs again what \
                         was signed); give an absolute path",
                        file.dir
                    ));
                }
            }
        }
        Ok(())
    }

    fn unknown_key(&self, name: &str) -> String {
        let known: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        format!("no key named {name:?} (configured: {})", known.join(", "))
    }

    /// The protocol sections present, in the order they are checked and started.
    pub fn protocols(&self) -> Vec<&dyn ProtocolConfig> {
        let cometbft = (!self.cometbft.is_empty()).then_some(&self.cometbft as &dyn ProtocolConfig);
        [
            self.atto.as_ref().map(|c| c as &dyn ProtocolConfig),
            self.tezos.as_ref().map(|c| c as &dyn ProtocolConfig),
            cometbft,
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::atto::api::Capability;

    const EXAMPLE: &str = r#"
keys:
  voter: {local: {secretKeyFile: /run/sigil/key}}
atto:
  listen: 127.0.0.1:9090
  key: voter
  capabilities: [VOTE, challenge]
  tokenFile: /var/run/sigil/token/token
management: {listen: "0.0.0.0:9091"}
"#;

    #[test]
    fn parses_and_round_trips() {
        let config = SignerConfig::from_yaml(EXAMPLE).unwrap();
        let atto = config.atto.as_ref().unwrap();
        assert_eq!(atto.capabilities, vec![Capability::Vote, Capability::Challenge]);
        assert_eq!(config.management.as_ref().unwrap().listen.port(), 9091);
        assert_eq!(SignerConfig::from_yaml(&config.to_yaml()).unwrap(), config);
    }

    fn error_of(yaml: &str) -> String {
        SignerConfig::from_yaml(yaml).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (EXAMPLE.replace("tokenFile", "tokenFiel"), "atto: unknown field `tokenFiel`"),
            (
                EXAMPLE.replace("challenge", "send"),
                "atto.capabilities: unknown capability \"send\": expected CHALLENGE, BLOCK or VOTE at line 7",
            ),
            (EXAMPLE.replace("secretKeyFile", "secretKeyPath"), "keys.voter.local: unknown field `secretKeyPath`"),
            (EXAMPLE.replace("{local:", "{vault:"), "keys.voter: unknown field `vault`, expected one of `local`, `pkcs11`, `awsKms`, `gcpKms`, `azureKeyVault`"),
            (
                "keys: {a: {}}\natto: {key: a, capabilities: [VOTE], tokenEnv: T}\n".into(),
                "keys.a: set exactly one backend",
            ),
            (EXAMPLE.replace("key: voter", "key: baker"), "atto.key: no key named \"baker\" (configured: voter)"),
            (EXAMPLE.replace("127.0.0.1:9090", "localhost"), "atto.listen: invalid socket address"),
            (EXAMPLE.replace("[VOTE, challenge]", "[]"), "atto.capabilities: list at least one"),
            (
                EXAMPLE.replace("tokenFile: /var/run/sigil/token/token", "tokenEnv: T\n  tokenFile: /t"),
                "exactly one of tokenFile or tokenEnv",
            ),
            (EXAMPLE.replace("{secretKeyFile: /run/sigil/key}", "{}"), "keys.voter.local: set exactly one"),
            (EXAMPLE.replace("secretKeyFile: /run/sigil/key", "secretKeyFile: /k, algorithm: p256"), "must be ed25519"),
            (EXAMPLE.replace("0.0.0.0:9091", "127.0.0.1:9090"), "atto.listen: 127.0.0.1:9090 is already management.listen"),
            ("keys: {}\n".to_string(), "keys: configure at least one key"),
            ("keys: {a: {local: {secretKey: x}}}\n".to_string(), "nothing to serve"),
            (
                format!("{EXAMPLE}tezos: {{keys: {{voter: {{allow: [block]}}}}}}\nratchet: {{memory: {{}}}}\n"),
                "tezos.keys.voter: the key is also atto.key",
            ),
            (format!("{EXAMPLE}tezos: {{keys: {{baker: {{allow: [block]}}}}}}\n"), "tezos.keys.baker: no key named"),
            (format!("{EXAMPLE}ratchet: {{}}\n"), "ratchet: set exactly one of memory, file or configMap"),
            (
                format!("{EXAMPLE}ratchet: {{file: {{dir: ./marks}}}}\n"),
                "ratchet.file.dir: \"./marks\" is relative, so the marks would depend on the directory",
            ),
            (
                "keys: {v: {local: {secretKey: x}}}\ncometbft: [{connect: 'http://x:1', chainId: c, key: v}]\n".into(),
                "cometbft[0].connect: \"http://x:1\": expected tcp://host:port or unix:///path",
            ),
            (
                "keys: {v: {local: {secretKey: x}}}\ncometbft: [{connect: 'tcp://127.0.0.1:1', chainId: c, key: w}]\n".into(),
                "cometbft[0].key: no key named \"w\"",
            ),
            (
                "keys: {v: {local: {secretKey: x}}}\ncometbft: [{connect: 'tcp://127.0.0.1:1', chainId: c, key: v}]\n".into(),
                "CometBFT needs a durable high-water mark",
            ),
            (
                "keys: {v: {local: {secretKey: x}}}\nratchet: {memory: {}}\ncometbft: [{connect: 'tcp://127.0.0.1:1', chainId: c, key: v, version: v2}]\n".into(),
                "cometbft[0].version: unknown variant `v2`",
            ),
            (
                "keys: {v: {local: {secretKey: x}}}\nratchet: {memory: {}}\ncometbft: [{connect: 'tcp://127.0.0.1:1', chainId: c, key: v, nodeId: zz}]\n".into(),
                "cometbft[0].nodeId: nodeId \"zz\" is not hex",
            ),
            (
                "keys: {v: {local: {secretKey: x}}}\nratchet: {memory: {}}\ncometbft: [{connect: 'tcp://127.0.0.1:1', chainId: c, key: v, maxHeightJump: 0}]\n".into(),
                "cometbft[0].maxHeightJump: 0 would refuse every new height",
            ),
            (
                "keys: {v: {local: {secretKey: x}}}\nratchet: {memory: {}}\ncometbft: [{connect: 'tcp://127.0.0.1:1', chainId: c, key: v, maxHeightJump: -1}]\n".into(),
                "cometbft[0].maxHeightJump: invalid type: integer `-1`, expected u64",
            ),
            (
                "keys: {b: {local: {secretKey: x}}}\ntezos: {keys: {b: {allow: [block]}}}\n".to_string(),
                "Tezos needs a durable high-water mark",
            ),
            (
                "keys: {b: {local: {secretKey: x}}}\ntezos: {keys: {b: {allow: [blok]}}}\nratchet: {memory: {}}\n"
                    .to_string(),
                "tezos.keys.b.allow[0]: unknown kind",
            ),
            (
                "keys: {b: {local: {secretKey: x}}}\ntezos: {listen: '127.0.0.1:9091', keys: {b: {allow: [block]}}}\nratchet: {memory: {}}\n"
                    .to_string(),
                "tezos.listen: 127.0.0.1:9091 is already management.listen",
            ),
            ("keys: [\n".to_string(), "config: "),
        ];
        for (yaml, expected) in cases {
            let error = error_of(&yaml);
            assert!(error.contains(expected), "expected {expected:?} in {error:?}");
        }
    }

    #[test]
    fn azure_keys_cannot_serve_ed25519_protocols() {
        let azure = "{azureKeyVault: {vaultUrl: 'https://v.vault.azure.net', keyName: k}}";
        let yaml = EXAMPLE.replace("{local: {secretKeyFile: /run/sigil/key}}", azure);
        let error = SignerConfig::from_yaml(&yaml).unwrap_err().to_string();
        assert!(error.contains("must be ed25519 for Atto (Azure Key Vault has no Ed25519 keys"), "{error}");
        let plain = yaml.replace("https://", "http://");
        let error = SignerConfig::from_yaml(&plain).unwrap_err().to_string();
        assert!(error.contains("keys.voter.azureKeyVault.vaultUrl"), "{error}");
    }

    #[test]
    fn cometbft_max_height_jump_defaults_and_round_trips() {
        let yaml = "keys: {v: {local: {secretKey: x}}}\nratchet: {memory: {}}\n\
                    cometbft: [{connect: 'tcp://127.0.0.1:1', chainId: c, key: v}]\n";
        let config = SignerConfig::from_yaml(yaml).unwrap();
        assert_eq!(config.cometbft[0].max_height_jump, None);
        assert_eq!(config.cometbft[0].max_height_jump(), 1_000_000);
        let set = SignerConfig::from_yaml(&yaml.replace("key: v}", "key: v, maxHeightJump: 500}")).unwrap();
        assert_eq!(set.cometbft[0].max_height_jump(), 500);
        assert!(set.to_yaml().contains("maxHeightJump: 500"), "{}", set.to_yaml());
        assert_eq!(SignerConfig::from_yaml(&set.to_yaml()).unwrap(), set);
    }

    /// A relative marks directory depends on where the signer is started: started elsewhere, it
    /// would be an empty store, which signs again what was signed.
    #[test]
    fn a_relative_ratchet_dir_is_refused() {
        let yaml = |dir: &str| {
            format!("keys: {{b: {{local: {{secretKey: x}}}}}}\nratchet: {{file: {{dir: {dir}}}}}\ntezos: {{keys: {{b: {{allow: [block]}}}}}}\n")
        };
        for relative in ["marks", "./marks", "var/lib/sigil"] {
            let error = SignerConfig::from_yaml(&yaml(relative)).unwrap_err().to_string();
            assert!(error.contains("ratchet.file.dir") && error.contains("is relative"), "{relative}: {error}");
        }
        assert!(SignerConfig::from_yaml(&yaml("/var/lib/sigil")).is_ok());
    }

    /// Configs end up in logs and panic messages: `{:?}` must never show a secret.
    #[test]
    fn debug_never_prints_secrets() {
        const EDSK: &str = "edsk3qAQSJaDBSYN2PCMdv7BuJoBKeRyDFq5uPAwDfFRAhQdwHxPMN";
        const HEX: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
        const PIN: &str = "pin-4711-not-for-logs";
        std::env::set_var("SIGIL_TEST_DEBUG_PIN", PIN);
        let dir = tempfile::tempdir().unwrap();
        let pin_file = dir.path().join("pin");
        std::fs::write(&pin_file, PIN).unwrap();
        let yaml = format!(
            "keys:\n  baker: {{local: {{secretKey: {EDSK}}}}}\n  voter: {{local: {{secretKey: '{HEX}'}}}}\n  \
             hsm: {{pkcs11: {{module: /usr/lib/softhsm/libsofthsm2.so, tokenLabel: t, keyLabel: k, pinEnv: SIGIL_TEST_DEBUG_PIN}}}}\n  \
             hsm2: {{pkcs11: {{module: /usr/lib/softhsm/libsofthsm2.so, tokenLabel: t, keyLabel: k2, pinFile: {}}}}}\n\
             ratchet: {{memory: {{}}}}\n\
             tezos: {{keys: {{baker: {{allow: [block]}}}}}}\n\
             atto: {{key: voter, capabilities: [VOTE], tokenEnv: ATTO_TOKEN}}\n",
            pin_file.display()
        );
        let config = SignerConfig::from_yaml(&yaml).unwrap();
        assert_eq!(config.keys["baker"].local.as_ref().unwrap().secret_key.as_deref(), Some(EDSK));
        for text in [format!("{config:?}"), format!("{config:#?}")] {
            for secret in [EDSK, &EDSK[4..20], HEX, &HEX[..16], PIN] {
                assert!(!text.contains(secret), "{secret} in {text}");
            }
            assert_eq!(text.matches("<redacted>").count(), 2, "{text}");
            // Where secrets come from is not secret, and helps.
            assert!(text.contains("SIGIL_TEST_DEBUG_PIN") && text.contains("ATTO_TOKEN"), "{text}");
        }
        let (key, _) = config.keys["voter"].local.as_ref().unwrap().load().unwrap();
        assert!(!format!("{key:?}").contains(HEX), "{key:?}");
    }
}

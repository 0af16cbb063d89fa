//! The drop-in mode: sigil-signer configured by attocash/signer's environment variables instead
//! of a config file.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::api::Capability;
use super::config::AttoConfig;
use crate::backend::local::LocalKeyConfig;
use crate::backend::GcpKmsKeyConfig;
use crate::config::{ConfigError, KeyConfig, ManagementConfig, SignerConfig};
use crate::keys::Algorithm;

impl SignerConfig {
    /// The drop-in mode: attocash/signer's environment variables
    /// (<https://github.com/attocash/signer/blob/main/src/main/resources/application.yaml>). Every
    /// missing variable is named at once; there is no default key or token.
    pub fn from_atto_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let missing: Vec<&str> =
            ["ATTO_SIGNER_BACKEND", "ATTO_SIGNER_KEY", "ATTO_SIGNER_TOKEN", "ATTO_SIGNER_CAPABILITIES"]
                .into_iter()
                .filter(|name| get(name).is_none())
                .collect();
        if !missing.is_empty() {
            return Err(ConfigError::Env(format!(
                "missing environment variable{} {}: set them (see docs/atto.md) or pass --config FILE",
                if missing.len() > 1 { "s" } else { "" },
                missing.join(", ")
            )));
        }
        let backend = get("ATTO_SIGNER_BACKEND").unwrap_or_default();
        let key = match backend.trim().to_ascii_uppercase().as_str() {
            "LOCAL" => KeyConfig::local(LocalKeyConfig {
                secret_key_env: Some("ATTO_SIGNER_KEY".into()),
                algorithm: Some(Algorithm::Ed25519),
                ..Default::default()
            }),
            // Upstream's GCP backend: ATTO_SIGNER_KEY names the key version; credentials from ADC.
            "GCP" => KeyConfig {
                gcp_kms: Some(GcpKmsKeyConfig {
                    key_version: get("ATTO_SIGNER_KEY").unwrap_or_default().trim().to_string(),
                    endpoint: get("SIGIL_GCP_KMS_ENDPOINT"),
                }),
                ..Default::default()
            },
            _ => {
                return Err(ConfigError::Env(format!(
                    "ATTO_SIGNER_BACKEND={backend} is not supported in environment mode; use LOCAL or GCP, \
                     or a config file for other key backends"
                )))
            }
        };
        let capabilities = Capability::parse_list(&get("ATTO_SIGNER_CAPABILITIES").unwrap_or_default())
            .map_err(|e| ConfigError::Env(format!("ATTO_SIGNER_CAPABILITIES: {e}")))?;
        let port = |name: &str, default: u16| -> Result<u16, ConfigError> {
            match get(name) {
                None => Ok(default),
                Some(value) => value
                    .trim()
                    .parse()
                    .map_err(|_| ConfigError::Env(format!("{name}={value} is not a port number (0-65535)"))),
            }
        };
        // Like upstream, listen on every interface: Compose setups reach the signer by service name.
        let any = |port| SocketAddr::from(([0, 0, 0, 0], port));
        let config = SignerConfig {
            keys: BTreeMap::from([("atto".to_string(), key)]),
            ratchet: None,
            tezos: None,
            cometbft: Vec::new(),
            atto: Some(AttoConfig {
                listen: any(port("ATTO_SIGNER_PORT", 9090)?),
                key: "atto".into(),
                capabilities,
                token_file: None,
                token_env: Some("ATTO_SIGNER_TOKEN".into()),
            }),
            management: Some(ManagementConfig { listen: any(port("ATTO_SIGNER_MANAGEMENT_PORT", 9091)?) }),
            audit: None,
        };
        config.validate().map_err(|e| ConfigError::Env(format!("environment: {e}")))?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    const FULL_ENV: [(&str, &str); 4] = [
        ("ATTO_SIGNER_BACKEND", "LOCAL"),
        ("ATTO_SIGNER_KEY", "0000000000000000000000000000000000000000000000000000000000000000"),
        ("ATTO_SIGNER_TOKEN", "t"),
        ("ATTO_SIGNER_CAPABILITIES", "challenge, vote"),
    ];

    #[test]
    fn upstream_environment() {
        let config = SignerConfig::from_atto_env(env(&FULL_ENV)).unwrap();
        let atto = config.atto.unwrap();
        assert_eq!(atto.listen, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(config.management.unwrap().listen, "0.0.0.0:9091".parse().unwrap());
        assert_eq!(atto.capabilities, vec![Capability::Challenge, Capability::Vote]);
        assert_eq!(atto.token_env.as_deref(), Some("ATTO_SIGNER_TOKEN"));

        let mut ports = FULL_ENV.to_vec();
        ports.extend([("ATTO_SIGNER_PORT", "8080"), ("ATTO_SIGNER_MANAGEMENT_PORT", "8081")]);
        let config = SignerConfig::from_atto_env(env(&ports)).unwrap();
        assert_eq!(config.atto.unwrap().listen.port(), 8080);
    }

    #[test]
    fn environment_errors() {
        let error = SignerConfig::from_atto_env(env(&[])).unwrap_err().to_string();
        assert!(
            error.contains("ATTO_SIGNER_BACKEND, ATTO_SIGNER_KEY, ATTO_SIGNER_TOKEN, ATTO_SIGNER_CAPABILITIES"),
            "{error}"
        );
        let mut aws = FULL_ENV.to_vec();
        aws[0] = ("ATTO_SIGNER_BACKEND", "AWS");
        assert!(SignerConfig::from_atto_env(env(&aws)).unwrap_err().to_string().contains("AWS is not supported"));
        // GCP: the key is a key version's name, and a seed is not one.
        let mut gcp = FULL_ENV.to_vec();
        gcp[0] = ("ATTO_SIGNER_BACKEND", "GCP");
        let error = SignerConfig::from_atto_env(env(&gcp)).unwrap_err().to_string();
        assert!(error.contains("keys.atto.gcpKms.keyVersion") && error.contains("cryptoKeyVersions/V"), "{error}");
        gcp[1] = ("ATTO_SIGNER_KEY", "projects/p/locations/global/keyRings/r/cryptoKeys/voter/cryptoKeyVersions/1");
        let config = SignerConfig::from_atto_env(env(&gcp)).unwrap();
        assert_eq!(config.keys["atto"].gcp_kms.as_ref().unwrap().key_version, gcp[1].1);
        let mut bad = FULL_ENV.to_vec();
        bad[3] = ("ATTO_SIGNER_CAPABILITIES", "VOTE,SING");
        assert!(SignerConfig::from_atto_env(env(&bad)).unwrap_err().to_string().contains("\"SING\""));
        let mut port = FULL_ENV.to_vec();
        port.push(("ATTO_SIGNER_PORT", "90000"));
        assert!(SignerConfig::from_atto_env(env(&port)).unwrap_err().to_string().contains("ATTO_SIGNER_PORT=90000"));
    }
}

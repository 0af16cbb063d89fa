//! The webhook's own TLS, without cert-manager: a CA and a serving certificate made here, kept in a
//! Secret so every replica serves the same one, renewed well before expiry and swapped into the
//! running server without a restart. The CA goes into the webhook configuration's caBundle, which
//! the operator applies itself, so nothing in Git carries a caBundle that Argo CD would diff.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How long certificates are valid, and how early they are renewed.
pub const VALIDITY: SignedDuration = SignedDuration::from_hours(24 * 365);
pub const RENEW_BEFORE: SignedDuration = SignedDuration::from_hours(24 * 30);
const NOT_AFTER: &str = "sigil.dev/not-after";

/// PEM material: the CA (for caBundle), and the serving certificate and key.
#[derive(Clone, PartialEq, Eq)]
pub struct Material {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: Timestamp,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Material {{ not_after: {} }}", self.not_after)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating the webhook certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("loading the webhook certificate: {0}")]
    Load(String),
    #[error("storing the webhook certificate: {0}")]
    Kube(#[from] kube::Error),
}

/// A fresh CA and a serving certificate for `names` (DNS names or IP addresses).
pub fn generate(names: &[String], now: Timestamp) -> Result<Material, TlsError> {
    let not_after = now + VALIDITY;
    let date = not_after.to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC).date();
    let until = rcgen::date_time_ymd(i32::from(date.year()), date.month() as u8, date.day() as u8);
    let start = now.to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC).date();
    let from = rcgen::date_time_ymd(i32::from(start.year()), start.month() as u8, start.day() as u8);

    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "sigil-operator webhook CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    (ca_params.not_before, ca_params.not_after) = (from, until);
    let ca_key = rcgen::KeyPair::generate()?;
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;

    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "sigil-operator webhook");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    (params.not_before, params.not_after) = (from, until);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;
    Ok(Material { ca_pem: ca.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem(), not_after })
}

fn from_secret(secret: &Secret) -> Option<Material> {
    let data = secret.data.as_ref()?;
    let text = |k: &str| data.get(k).and_then(|ByteString(b)| String::from_utf8(b.clone()).ok());
    let not_after = secret.metadata.annotations.as_ref()?.get(NOT_AFTER)?.parse().ok()?;
    Some(Material { ca_pem: text("ca.crt")?, cert_pem: text("tls.crt")?, key_pem: text("tls.key")?, not_after })
}

fn to_secret(
    name: &str,
    material: &Material,
    resource_version: Option<String>,
    owner: Option<&OwnerReference>,
) -> Secret {
    let data = BTreeMap::from([
        ("ca.crt".to_string(), ByteString(material.ca_pem.clone().into_bytes())),
        ("tls.crt".to_string(), ByteString(material.cert_pem.clone().into_bytes())),
        ("tls.key".to_string(), ByteString(material.key_pem.clone().into_bytes())),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            annotations: Some(BTreeMap::from([(NOT_AFTER.to_string(), material.not_after.to_string())])),
            labels: Some(BTreeMap::from([("app.kubernetes.io/managed-by".to_string(), "sigil-operator".to_string())])),
            resource_version,
            owner_references: owner.map(|o| vec![o.clone()]),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Default::default()
    }
}

/// The shared certificate: the stored one while it is valid for long enough, else a new one.
/// Replicas race safely: create and replace are guarded, and a loser reads the winner's.
/// The certificate Secret carries `owner` when given (an existing one gets it added).
pub async fn ensure(
    client: &Client,
    namespace: &str,
    name: &str,
    names: &[String],
    owner: Option<&OwnerReference>,
) -> Result<Material, TlsError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for _ in 0..5 {
        let existing = secrets.get_opt(name).await?;
        let now = Timestamp::now();
        let valid = existing.as_ref().and_then(from_secret).filter(|m| now + RENEW_BEFORE < m.not_after);
        let owned = |secret: &Secret| {
            owner.is_none_or(|o| secret.metadata.owner_references.iter().flatten().any(|r| r.uid == o.uid))
        };
        if let (Some(material), Some(secret)) = (&valid, &existing) {
            if owned(secret) {
                return Ok(material.clone());
            }
        }
        let material = match valid {
            Some(material) => material,
            None => generate(names, now)?,
        };
        let result = match existing {
            None => secrets.create(&PostParams::default(), &to_secret(name, &material, None, owner)).await,
            Some(old) => {
                let version = old.metadata.resource_version.clone();
                secrets.replace(name, &PostParams::default(), &to_secret(name, &material, version, owner)).await
            }
        };
        match result {
            Ok(_) => {
                tracing::info!(secret = name, not_after = %material.not_after, "stored a new webhook certificate");
                return Ok(material);
            }
            Err(kube::Error::Api(status)) if status.code == 409 => continue, // another replica won
            Err(error) => return Err(error.into()),
        }
    }
    Err(TlsError::Load(format!("Secret {namespace}/{name} kept changing under us")))
}

/// The serving certificate, swappable while the server runs.
#[derive(Debug)]
pub struct Resolver(RwLock<Arc<CertifiedKey>>);

impl Resolver {
    pub fn new(material: &Material) -> Result<Arc<Resolver>, TlsError> {
        Ok(Arc::new(Resolver(RwLock::new(certified_key(material)?))))
    }

    pub fn replace(&self, material: &Material) -> Result<(), TlsError> {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = certified_key(material)?;
        Ok(())
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

fn certified_key(material: &Material) -> Result<Arc<CertifiedKey>, TlsError> {
    let load = |e: std::io::Error| TlsError::Load(e.to_string());
    let certs =
        rustls_pemfile::certs(&mut material.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(load)?;
    let key = rustls_pemfile::private_key(&mut material.key_pem.as_bytes())
        .map_err(load)?
        .ok_or_else(|| TlsError::Load("no private key".into()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| TlsError::Load(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(certs, signer)))
}

pub fn server_config(resolver: Arc<Resolver>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_a_ca_and_a_serving_cert_that_rustls_loads() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let material = generate(&["127.0.0.1".into(), "sigil-operator.sigil.svc".into()], now).unwrap();
        assert!(material.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(material.not_after, now + VALIDITY);
        assert!(format!("{material:?}").find("PRIVATE").is_none(), "Debug never prints the key");
        let resolver = Resolver::new(&material).unwrap();
        let again = generate(&["127.0.0.1".into()], now).unwrap();
        resolver.replace(&again).unwrap();
        let stored = to_secret("tls", &material, None, None);
        assert_eq!(from_secret(&stored), Some(material));
    }
}

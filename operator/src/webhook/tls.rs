//! The webhook's own TLS, without cert-manager. A long-lived CA (ten years) signs short-lived
//! serving certificates (90 days, renewed at two thirds of their life); both live in one Secret in
//! the operator's namespace, so every replica serves the same certificate, and each replica
//! watches that Secret and swaps a renewed certificate into its running server within seconds.
//! The CA goes into the webhook configuration's caBundle, which the operator applies itself, so
//! nothing in Git carries a caBundle that Argo CD would diff.
//!
//! Renewing the serving certificate never changes the caBundle. Changing the CA (it nears its
//! end, or an older Secret holds no CA key) happens in two steps so that no replica ever serves a
//! certificate the API server does not trust yet: the new CA is first added to the caBundle next
//! to the old one ("staged"), and signs a serving certificate only once it has been there for
//! [`Policy::stage`] (or at once when the current serving certificate is unusable anyway). The old
//! CA stays in the caBundle until it expires.
//!
//! The planning ([`plan`]) is a pure function of the stored material, the names and the time;
//! [`ensure`] is the thin I/O around it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use rcgen::PublicKeyData as _;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How long the CA is valid.
pub const CA_VALIDITY: SignedDuration = SignedDuration::from_hours(24 * 3650);
/// How long a serving certificate is valid (renewed at two thirds).
pub const LEAF_VALIDITY: SignedDuration = SignedDuration::from_hours(24 * 90);
/// How long a new CA sits in the caBundle before it signs the serving certificate: the API server
/// must have loaded the new caBundle first (it watches webhook configurations, so seconds).
pub const STAGE: SignedDuration = SignedDuration::from_mins(10);

const NOT_AFTER: &str = "sigil.dev/not-after";
const STAGED_AT: &str = "sigil.dev/next-issuer-staged-at";

/// Lifetimes. The defaults are the constants above; tests shorten the serving certificate's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub ca_validity: SignedDuration,
    pub leaf_validity: SignedDuration,
    pub stage: SignedDuration,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy { ca_validity: CA_VALIDITY, leaf_validity: LEAF_VALIDITY, stage: STAGE }
    }
}

/// A certificate and its private key (PEM).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for KeyedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        let serial = parse_first(&self.cert_pem).map(|c| c.serial).unwrap_or_default();
        write!(f, "KeyedCert {{ serial: {serial} }}")
    }
}

/// Everything the Secret holds.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Material {
    /// Every CA the API server must trust (the caBundle): one, or two while the CA changes.
    pub ca_pem: String,
    /// The serving certificate and its key.
    pub cert_pem: String,
    pub key_pem: String,
    /// The CA that signs serving certificates.
    pub issuer: Option<KeyedCert>,
    /// A CA already in the caBundle that will sign the next serving certificate, and since when.
    pub next: Option<(KeyedCert, Timestamp)>,
}

impl Material {
    /// When the serving certificate expires (None when it cannot be read).
    pub fn not_after(&self) -> Option<Timestamp> {
        parse_first(&self.cert_pem).map(|c| c.not_after)
    }

    /// The serving certificate's serial number (hex), to tell certificates apart in logs.
    pub fn serial(&self) -> String {
        parse_first(&self.cert_pem).map(|c| c.serial).unwrap_or_default()
    }

    /// How many CAs the caBundle holds.
    pub fn bundle_len(&self) -> usize {
        parse_all(&self.ca_pem).len()
    }
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("Material")
            .field("serial", &self.serial())
            .field("not_after", &self.not_after())
            .field("bundle", &self.bundle_len())
            .field("next_staged_at", &self.next.as_ref().map(|(_, at)| *at))
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating the webhook certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("loading the webhook certificate: {0}")]
    Load(String),
    #[error(
        "storing the webhook certificate in its Secret: {0}; check the operator's RBAC on Secrets in its namespace"
    )]
    Kube(#[from] kube::Error),
}

/// What [`plan`] decided, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Expired CAs left the caBundle.
    DroppedExpiredCa,
    /// A new CA joined the caBundle; it signs a later serving certificate.
    StagedCa,
    /// The staged CA now signs the serving certificate.
    PromotedCa,
    /// A new serving certificate, because the old one is due for renewal.
    RenewedLeaf,
    /// A new serving certificate, because the old one is missing, expired, not from a trusted CA,
    /// or does not carry the webhook's current names.
    ReplacedLeaf,
}

/// The decision: the material to store, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub material: Material,
    pub changes: Vec<Change>,
}

/// A certificate, read.
#[derive(Debug, Clone)]
struct Cert {
    der: Vec<u8>,
    spki: Vec<u8>,
    serial: String,
    not_before: Timestamp,
    not_after: Timestamp,
    is_ca: bool,
    dns: Vec<String>,
    ips: Vec<IpAddr>,
}

impl Cert {
    fn parse(der: &[u8]) -> Option<Cert> {
        let (_, x509) = x509_parser::parse_x509_certificate(der).ok()?;
        let validity = x509.validity();
        let (mut dns, mut ips) = (Vec::new(), Vec::new());
        if let Ok(Some(san)) = x509.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::DNSName(name) => dns.push(name.to_ascii_lowercase()),
                    x509_parser::extensions::GeneralName::IPAddress(bytes) => match bytes.len() {
                        4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*bytes).ok()?)),
                        16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*bytes).ok()?)),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        Some(Cert {
            der: der.to_vec(),
            spki: x509.public_key().raw.to_vec(),
            serial: x509.raw_serial_as_string().replace(':', ""),
            not_before: Timestamp::from_second(validity.not_before.timestamp()).ok()?,
            not_after: Timestamp::from_second(validity.not_after.timestamp()).ok()?,
            is_ca: x509.is_ca(),
            dns,
            ips,
        })
    }

    fn current(&self, now: Timestamp) -> bool {
        self.not_before <= now && now < self.not_after
    }

    fn lifetime(&self) -> SignedDuration {
        self.not_after.duration_since(self.not_before)
    }

    /// Two thirds into its life.
    fn renew_at(&self) -> Timestamp {
        self.not_before + self.lifetime() * 2 / 3
    }

    /// Whether `ca` signed this certificate.
    fn signed_by(&self, ca: &Cert) -> bool {
        let (Ok((_, me)), Ok((_, issuer))) =
            (x509_parser::parse_x509_certificate(&self.der), x509_parser::parse_x509_certificate(&ca.der))
        else {
            return false;
        };
        me.issuer() == issuer.subject() && me.verify_signature(Some(issuer.public_key())).is_ok()
    }

    /// Whether the certificate is valid for every name: IP addresses as IP SANs, others as DNS SANs.
    fn covers(&self, names: &[String]) -> bool {
        names.iter().all(|name| match name.parse::<IpAddr>() {
            Ok(ip) => self.ips.contains(&ip),
            Err(_) => self.dns.contains(&name.to_ascii_lowercase()),
        })
    }

    fn names(&self) -> Vec<String> {
        self.dns.iter().cloned().chain(self.ips.iter().map(IpAddr::to_string)).collect()
    }

    fn pem(&self) -> String {
        let body = base64::engine::general_purpose::STANDARD.encode(&self.der);
        let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
        format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
    }
}

fn parse_all(pem: &str) -> Vec<Cert> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .filter_map(Result::ok)
        .filter(|p| p.label == "CERTIFICATE")
        .filter_map(|p| Cert::parse(&p.contents))
        .collect()
}

fn parse_first(pem: &str) -> Option<Cert> {
    parse_all(pem).into_iter().next()
}

/// Whether the key is the certificate's.
fn key_matches(key_pem: &str, cert: &Cert) -> bool {
    rcgen::KeyPair::from_pem(key_pem).is_ok_and(|key| key.subject_public_key_info() == cert.spki)
}

/// A CA that can sign now: it parses, its key matches, it is a CA and it is current.
fn usable_ca(keyed: &KeyedCert, now: Timestamp) -> Option<Cert> {
    parse_first(&keyed.cert_pem).filter(|c| c.is_ca && c.current(now) && key_matches(&keyed.key_pem, c))
}

fn rcgen_time(at: Timestamp) -> Result<time::OffsetDateTime, TlsError> {
    time::OffsetDateTime::from_unix_timestamp(at.as_second())
        .map_err(|e| TlsError::Load(format!("time {at} out of range: {e}")))
}

/// Backdating, for API servers whose clock is a little behind ours.
fn backdate(validity: SignedDuration) -> SignedDuration {
    (validity / 10).min(SignedDuration::from_mins(5))
}

/// A new CA valid from `now` for `validity`.
pub fn new_ca(now: Timestamp, validity: SignedDuration) -> Result<KeyedCert, TlsError> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("sigil-operator webhook CA {}", now.as_second()));
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    params.not_before = rcgen_time(now - backdate(validity))?;
    params.not_after = rcgen_time(now + validity)?;
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(KeyedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// A serving certificate for `names` (DNS names, or IP addresses which become IP SANs), signed
/// by `ca`, valid for `validity` but never beyond the CA.
pub fn new_leaf(
    ca: &KeyedCert,
    names: &[String],
    now: Timestamp,
    validity: SignedDuration,
) -> Result<KeyedCert, TlsError> {
    let ca_cert =
        parse_first(&ca.cert_pem).ok_or_else(|| TlsError::Load("the CA certificate does not parse".into()))?;
    let ca_key = rcgen::KeyPair::from_pem(&ca.key_pem)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "sigil-operator webhook");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.not_before = rcgen_time((now - backdate(validity)).max(ca_cert.not_before))?;
    params.not_after = rcgen_time((now + validity).min(ca_cert.not_after))?;
    let key = rcgen::KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(KeyedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// What must change in `current` (None: nothing stored yet) for the webhook to serve `names` at
/// `now`; `None` when nothing must. Pure but for key generation.
pub fn plan(
    current: Option<&Material>,
    names: &[String],
    now: Timestamp,
    policy: &Policy,
) -> Result<Option<Plan>, TlsError> {
    let mut changes = Vec::new();
    let stored = current.cloned().unwrap_or_default();

    // The caBundle: CAs that have not expired.
    let before = parse_all(&stored.ca_pem);
    let mut bundle: Vec<Cert> = before.iter().filter(|c| c.is_ca && now < c.not_after).cloned().collect();
    if bundle.len() != before.len() && !before.is_empty() {
        changes.push(Change::DroppedExpiredCa);
    }
    let mut issuer = stored.issuer.clone().filter(|k| usable_ca(k, now).is_some());
    let mut next = stored.next.clone().filter(|(k, _)| usable_ca(k, now).is_some());

    // Stage the next CA when there is no usable one, or in the last fifth of its life.
    let ending = issuer.as_ref().and_then(|k| parse_first(&k.cert_pem)).is_none_or(|c| {
        let remaining = c.not_after.duration_since(now);
        remaining < c.lifetime() / 5
    });
    if next.is_none() && ending {
        next = Some((new_ca(now, policy.ca_validity)?, now));
        changes.push(Change::StagedCa);
    }
    // The caBundle always holds the issuer and the staged CA.
    for keyed in issuer.iter().chain(next.iter().map(|(k, _)| k)) {
        if let Some(cert) = parse_first(&keyed.cert_pem) {
            if !bundle.iter().any(|c| c.der == cert.der) {
                bundle.push(cert);
            }
        }
    }

    // The serving certificate.
    let leaf = parse_first(&stored.cert_pem).filter(|c| key_matches(&stored.key_pem, c));
    let trusted = leaf.filter(|c| !c.is_ca && c.current(now) && bundle.iter().any(|ca| c.signed_by(ca)));
    let usable = trusted.clone().filter(|c| c.covers(names));
    let (mut cert_pem, mut key_pem) = (stored.cert_pem.clone(), stored.key_pem.clone());
    let due = usable.as_ref().is_none_or(|c| now >= c.renew_at());
    if due {
        let staged_long_enough = next.as_ref().is_some_and(|(_, since)| now.duration_since(*since) >= policy.stage);
        // A serving certificate that still works is replaced only by one the API server already
        // trusts; one that does not work is replaced at once, preferably by the current issuer.
        let promote = if usable.is_some() { staged_long_enough } else { issuer.is_none() };
        let signer = if promote { next.as_ref().map(|(k, _)| k.clone()) } else { issuer.clone() };
        if let Some(signer) = signer {
            // A certificate that is only missing a name keeps its others: replicas that still
            // run with the old names (a rollout) keep being valid, instead of reissuing in turn.
            let mut leaf_names = names.to_vec();
            if usable.is_none() {
                for name in trusted.iter().flat_map(Cert::names) {
                    if !leaf_names.contains(&name) {
                        leaf_names.push(name);
                    }
                }
            }
            let leaf = new_leaf(&signer, &leaf_names, now, policy.leaf_validity)?;
            (cert_pem, key_pem) = (leaf.cert_pem, leaf.key_pem);
            changes.push(if usable.is_some() { Change::RenewedLeaf } else { Change::ReplacedLeaf });
            if promote {
                issuer = next.take().map(|(k, _)| k);
                changes.push(Change::PromotedCa);
            }
        }
    }
    let material = Material { ca_pem: bundle.iter().map(Cert::pem).collect(), cert_pem, key_pem, issuer, next };
    let changed = current.is_none_or(|current| *current != material);
    Ok(changed.then_some(Plan { material, changes }))
}

/// When [`plan`] would next change something in `material` (which it left unchanged at `now`):
/// the serving certificate's renewal, a staged CA's promotion, the issuer's last fifth, a CA's
/// expiry. At most an hour ahead, at least a second.
pub fn next_check(material: &Material, now: Timestamp, policy: &Policy) -> Timestamp {
    let mut candidates = Vec::new();
    if let Some(leaf) = parse_first(&material.cert_pem) {
        candidates.push(leaf.renew_at());
    }
    if let Some((_, since)) = &material.next {
        candidates.push(*since + policy.stage);
    } else if let Some(issuer) = material.issuer.as_ref().and_then(|k| parse_first(&k.cert_pem)) {
        candidates.push(issuer.not_after - issuer.lifetime() / 5);
    }
    candidates.extend(parse_all(&material.ca_pem).iter().map(|ca| ca.not_after));
    // Past ones are waits (a renewal due, waiting for a staged CA): the next event is later.
    let hour = now + SignedDuration::from_hours(1);
    let next = candidates.into_iter().filter(|at| *at > now).fold(hour, Timestamp::min);
    next.max(now + SignedDuration::from_secs(1))
}

pub fn from_secret(secret: &Secret) -> Material {
    let data = secret.data.clone().unwrap_or_default();
    let text = |k: &str| data.get(k).and_then(|ByteString(b)| String::from_utf8(b.clone()).ok()).unwrap_or_default();
    let keyed = |cert: &str, key: &str| {
        let (cert_pem, key_pem) = (text(cert), text(key));
        (!cert_pem.is_empty() && !key_pem.is_empty()).then_some(KeyedCert { cert_pem, key_pem })
    };
    let staged_at = secret.metadata.annotations.as_ref().and_then(|a| a.get(STAGED_AT)).and_then(|t| t.parse().ok());
    Material {
        ca_pem: text("ca.crt"),
        cert_pem: text("tls.crt"),
        key_pem: text("tls.key"),
        issuer: keyed("issuer.crt", "issuer.key"),
        next: keyed("next-issuer.crt", "next-issuer.key").zip(staged_at),
    }
}

fn to_secret(
    name: &str,
    material: &Material,
    resource_version: Option<String>,
    owner: Option<&OwnerReference>,
) -> Secret {
    let mut data = BTreeMap::from([
        ("ca.crt".to_string(), ByteString(material.ca_pem.clone().into_bytes())),
        ("tls.crt".to_string(), ByteString(material.cert_pem.clone().into_bytes())),
        ("tls.key".to_string(), ByteString(material.key_pem.clone().into_bytes())),
    ]);
    let mut annotations = BTreeMap::new();
    if let Some(not_after) = material.not_after() {
        annotations.insert(NOT_AFTER.to_string(), not_after.to_string());
    }
    if let Some(issuer) = &material.issuer {
        data.insert("issuer.crt".into(), ByteString(issuer.cert_pem.clone().into_bytes()));
        data.insert("issuer.key".into(), ByteString(issuer.key_pem.clone().into_bytes()));
    }
    if let Some((next, since)) = &material.next {
        data.insert("next-issuer.crt".into(), ByteString(next.cert_pem.clone().into_bytes()));
        data.insert("next-issuer.key".into(), ByteString(next.key_pem.clone().into_bytes()));
        annotations.insert(STAGED_AT.to_string(), since.to_string());
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            annotations: Some(annotations),
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

/// The shared material: the stored one when [`plan`] changes nothing, else the planned one,
/// stored. Replicas race safely: create and replace are guarded, and a loser reads the winner's.
/// The Secret carries `owner` when given (an existing one gets it added).
pub async fn ensure(
    client: &Client,
    namespace: &str,
    name: &str,
    names: &[String],
    owner: Option<&OwnerReference>,
    policy: &Policy,
) -> Result<Material, TlsError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for _ in 0..5 {
        let existing = secrets.get_opt(name).await?;
        let current = existing.as_ref().map(from_secret);
        let planned = plan(current.as_ref(), names, Timestamp::now(), policy)?;
        let owned = existing.as_ref().is_some_and(|secret| {
            owner.is_none_or(|o| secret.metadata.owner_references.iter().flatten().any(|r| r.uid == o.uid))
        });
        let (material, changes) = match (planned, current) {
            (None, Some(current)) if owned => return Ok(current),
            (None, Some(current)) => (current, Vec::new()),
            (Some(plan), _) => (plan.material, plan.changes),
            (None, None) => return Err(TlsError::Load("nothing planned for a missing Secret".into())),
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
                tracing::info!(
                    secret = name, ?changes, serial = %material.serial(), not_after = ?material.not_after(),
                    cas = material.bundle_len(), "stored webhook certificate"
                );
                return Ok(material);
            }
            // Another replica wrote first (409), or created it first (409 AlreadyExists).
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(TlsError::Load(format!("Secret {namespace}/{name} kept changing under us")))
}

/// The serving certificate, swappable while the server runs, and how many times it was swapped
/// (connections opened before a swap are told to close, so that clients re-handshake).
#[derive(Debug)]
pub struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
    generation: AtomicU64,
}

impl Resolver {
    pub fn new(material: &Material) -> Result<Arc<Resolver>, TlsError> {
        Ok(Arc::new(Resolver { current: RwLock::new(certified_key(material)?), generation: AtomicU64::new(0) }))
    }

    pub fn replace(&self, material: &Material) -> Result<(), TlsError> {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = certified_key(material)?;
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Changes with every [`Resolver::replace`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
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

    const DAY: SignedDuration = SignedDuration::from_hours(24);

    fn names() -> Vec<String> {
        ["sigil-operator.sigil.svc", "sigil-operator.sigil.svc.cluster.local", "sigil-operator.sigil"]
            .map(String::from)
            .to_vec()
    }

    fn t0() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn first(names: &[String], now: Timestamp) -> Material {
        plan(None, names, now, &Policy::default()).unwrap().unwrap().material
    }

    fn leaf(m: &Material) -> Cert {
        parse_first(&m.cert_pem).unwrap()
    }

    /// What a client that trusts exactly the caBundle (as the API server does) accepts for `name`.
    fn verifies(m: &Material, name: &str, now: Timestamp) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        for ca in parse_all(&m.ca_pem) {
            roots.add(ca.der.into()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
        let leaf = rustls::pki_types::CertificateDer::from(leaf(m).der);
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let at = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(now.as_second() as u64));
        rustls::client::danger::ServerCertVerifier::verify_server_cert(&*verifier, &leaf, &[], &name, &[], at).is_ok()
    }

    #[test]
    fn a_first_plan_makes_a_ca_and_a_serving_certificate_that_rustls_serves() {
        let now = t0();
        let plan = plan(None, &names(), now, &Policy::default()).unwrap().unwrap();
        let m = plan.material;
        assert_eq!(plan.changes, [Change::StagedCa, Change::ReplacedLeaf, Change::PromotedCa]);
        assert!(m.next.is_none() && m.issuer.is_some());
        assert_eq!(m.bundle_len(), 1);
        let ca = parse_first(&m.ca_pem).unwrap();
        assert_eq!(ca.not_after, now + CA_VALIDITY);
        assert_eq!(m.not_after(), Some(now + LEAF_VALIDITY));
        for name in names() {
            assert!(verifies(&m, &name, now), "{name}");
        }
        assert!(!verifies(&m, "other.sigil.svc", now));
        assert!(format!("{m:?}").find("PRIVATE").is_none(), "Debug never prints a key");
        let resolver = Resolver::new(&m).unwrap();
        resolver.replace(&first(&["127.0.0.1".into()], now)).unwrap();
        assert_eq!(resolver.generation(), 1);
        // Through the Secret and back, unchanged; and nothing to do a minute later.
        let stored = to_secret("tls", &m, None, None);
        assert_eq!(from_secret(&stored), m);
        assert_eq!(plan_at(&m, &names(), now + SignedDuration::from_mins(1)), None);
    }

    fn plan_at(m: &Material, names: &[String], now: Timestamp) -> Option<Plan> {
        plan(Some(m), names, now, &Policy::default()).unwrap()
    }

    #[test]
    fn an_ip_address_becomes_an_ip_san_and_new_names_get_a_new_certificate_from_the_same_ca() {
        let now = t0();
        let service = first(&names(), now);
        // Out of cluster now: the URL's host is an IP address; the Service-only certificate is
        // not valid for it (the API server says "doesn't contain any IP SANs").
        assert!(!verifies(&service, "127.0.0.1", now));
        let url = vec!["127.0.0.1".to_string()];
        let plan = plan_at(&service, &url, now + DAY).expect("a new certificate");
        assert_eq!(plan.changes, [Change::ReplacedLeaf]);
        let m = plan.material;
        assert_eq!(leaf(&m).ips, ["127.0.0.1".parse::<IpAddr>().unwrap()]);
        assert!(!leaf(&m).dns.contains(&"127.0.0.1".to_string()), "not as a DNS name");
        assert!(verifies(&m, "127.0.0.1", now + DAY));
        // The caBundle did not change; the Service names are kept, so both stay valid.
        assert_eq!(m.ca_pem, service.ca_pem);
        assert!(verifies(&m, "sigil-operator.sigil.svc", now + DAY));
        assert_eq!(plan_at(&m, &names(), now + DAY), None);
        assert_eq!(plan_at(&m, &url, now + DAY), None);
        // IPv6 too.
        let v6 = first(&["::1".to_string()], now);
        assert!(verifies(&v6, "::1", now));
    }

    #[test]
    fn the_serving_certificate_renews_at_two_thirds_without_touching_the_ca_bundle() {
        let now = t0();
        let m = first(&names(), now);
        assert_eq!(plan_at(&m, &names(), now + DAY * 55), None);
        let renewal = next_check(&m, now + DAY * 55, &Policy::default());
        assert_eq!(renewal, now + DAY * 55 + SignedDuration::from_hours(1), "hourly checks");
        let close = now + DAY * 60 - SignedDuration::from_mins(10);
        assert_eq!(next_check(&m, close, &Policy::default()), leaf(&m).renew_at());
        let plan = plan_at(&m, &names(), now + DAY * 60).expect("renewed at two thirds");
        assert_eq!(plan.changes, [Change::RenewedLeaf]);
        assert_eq!(plan.material.ca_pem, m.ca_pem);
        assert_eq!(plan.material.issuer, m.issuer);
        assert_ne!(leaf(&plan.material).serial, leaf(&m).serial);
        assert!(verifies(&plan.material, "sigil-operator.sigil.svc", now + DAY * 60));
    }

    #[test]
    fn a_new_ca_is_trusted_before_it_signs_and_the_old_one_stays_trusted() {
        let policy = Policy::default();
        let now = t0();
        let m = first(&names(), now);
        let old_ca = m.issuer.clone().unwrap();
        // Eight years on, just before the CA's last fifth: a fresh serving certificate from it.
        let late = now + DAY * (365 * 8 - 10);
        let fresh = Material { cert_pem: String::new(), ..m.clone() };
        let fresh = plan(Some(&fresh), &names(), late, &policy).unwrap().unwrap();
        assert_eq!(fresh.changes, [Change::ReplacedLeaf]);
        let fresh = fresh.material;
        // In its last fifth, the new CA is only staged: caBundle = old + new, same certificate.
        let staging = late + DAY * 20;
        assert_eq!(next_check(&fresh, late, &policy), late + SignedDuration::from_hours(1));
        let plan1 = plan(Some(&fresh), &names(), staging, &policy).unwrap().unwrap();
        assert_eq!(plan1.changes, [Change::StagedCa]);
        let staged = plan1.material;
        assert_eq!(staged.bundle_len(), 2);
        assert_eq!(staged.cert_pem, fresh.cert_pem, "the serving certificate stays");
        assert!(verifies(&staged, "sigil-operator.sigil.svc", staging));
        // Its renewal, later: signed by the new CA, which the caBundle already holds; the old CA
        // remains in the caBundle (a replica may still serve its certificate).
        let renewal = late + DAY * 61;
        let plan2 = plan(Some(&staged), &names(), renewal, &policy).unwrap().unwrap();
        assert_eq!(plan2.changes, [Change::RenewedLeaf, Change::PromotedCa]);
        let promoted = plan2.material;
        assert_eq!(promoted.ca_pem, staged.ca_pem, "promotion does not change the caBundle");
        assert_ne!(promoted.issuer.as_ref(), Some(&old_ca));
        assert!(promoted.next.is_none());
        assert!(verifies(&promoted, "sigil-operator.sigil.svc", renewal));
        assert!(verifies(&staged, "sigil-operator.sigil.svc", renewal), "the old certificate too");
        // Once the old CA expires, it leaves the caBundle, and the new one carries on.
        let expired = now + CA_VALIDITY + DAY;
        let last = plan(Some(&promoted), &names(), expired, &policy).unwrap().unwrap();
        assert_eq!(last.changes, [Change::DroppedExpiredCa, Change::ReplacedLeaf]);
        assert_eq!(last.material.bundle_len(), 1);
        assert!(verifies(&last.material, "sigil-operator.sigil.svc", expired));
    }

    #[test]
    fn a_staged_ca_waits_for_the_api_server_unless_the_certificate_is_unusable() {
        let policy = Policy::default();
        let now = t0();
        // An older Secret: CA and serving certificate, but no CA key (no issuer).
        let m = Material { issuer: None, ..first(&names(), now) };
        let staged = plan(Some(&m), &names(), now, &policy).unwrap().unwrap();
        assert_eq!(staged.changes, [Change::StagedCa]);
        // Due for renewal one minute after staging: it waits for the stage to end...
        let due = now + DAY * 61;
        let m = Material { next: staged.material.next.clone().map(|(k, _)| (k, due)), ..staged.material };
        assert_eq!(plan(Some(&m), &names(), due + SignedDuration::from_mins(1), &policy).unwrap(), None);
        assert_eq!(next_check(&m, due, &policy), due + STAGE);
        // ... and then the staged CA signs.
        let promoted = plan(Some(&m), &names(), due + STAGE, &policy).unwrap().unwrap();
        assert_eq!(promoted.changes, [Change::RenewedLeaf, Change::PromotedCa]);
        // With names the certificate lacks, there is nothing to protect: promoted at once.
        let at_once = plan(Some(&m), &["10.0.0.1".to_string()], due, &policy).unwrap().unwrap();
        assert_eq!(at_once.changes, [Change::ReplacedLeaf, Change::PromotedCa]);
        assert!(verifies(&at_once.material, "10.0.0.1", due));
    }

    #[test]
    fn garbage_is_replaced_and_a_foreign_certificate_is_not_trusted() {
        let now = t0();
        let garbage = Material { ca_pem: "x".into(), cert_pem: "y".into(), key_pem: "z".into(), ..Default::default() };
        let m = plan(Some(&garbage), &names(), now, &Policy::default()).unwrap().unwrap().material;
        assert!(verifies(&m, "sigil-operator.sigil.svc", now));
        // A serving certificate from another CA (not in the caBundle) is replaced.
        let other = first(&names(), now);
        let mixed = Material { cert_pem: other.cert_pem.clone(), key_pem: other.key_pem.clone(), ..m.clone() };
        let plan = plan(Some(&mixed), &names(), now, &Policy::default()).unwrap().unwrap();
        assert_eq!(plan.changes, [Change::ReplacedLeaf]);
        assert_eq!(plan.material.ca_pem, m.ca_pem);
    }

    #[test]
    fn short_lived_certificates_renew_at_two_thirds() {
        let policy = Policy { leaf_validity: SignedDuration::from_secs(30), ..Policy::default() };
        let now = t0();
        let m = plan(None, &names(), now, &policy).unwrap().unwrap().material;
        let leaf = leaf(&m);
        assert_eq!(leaf.not_before, now - SignedDuration::from_secs(3));
        assert_eq!(next_check(&m, now, &policy), now + SignedDuration::from_secs(19));
        assert_eq!(plan(Some(&m), &names(), now + SignedDuration::from_secs(18), &policy).unwrap(), None);
        assert!(plan(Some(&m), &names(), now + SignedDuration::from_secs(19), &policy).unwrap().is_some());
    }
}

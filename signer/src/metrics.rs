//! Prometheus metrics, all named `sigil_signer_*`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub protocol: &'static str,
    pub endpoint: &'static str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub protocol: &'static str,
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignatureLabels {
    pub key: String,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub protocol: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: &'static str,
    pub key: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendErrorLabels {
    pub backend: &'static str,
    pub key: String,
    /// `timeout`, `transient` (worth retrying) or `permanent` (needs a person).
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RatchetLabels {
    pub store: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChainLabels {
    pub chain: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignBytesLabels {
    pub chain: String,
    /// `signed`, or the reason it was refused.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    pub key: String,
}

fn latency_buckets() -> Histogram {
    // 10 µs .. ~5 s: local signing is tens of microseconds, a KMS call tens of milliseconds.
    Histogram::new(exponential_buckets(0.000_01, 2.0, 20))
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<EndpointLabels, Histogram>,
    pub signatures: Family<SignatureLabels, Counter>,
    pub refusals: Family<RefusalLabels, Counter>,
    pub backend_sign_duration: Family<BackendLabels, Histogram>,
    pub backend_errors: Family<BackendErrorLabels, Counter>,
    pub key_ready: Family<KeyLabels, Gauge>,
    pub ratchet_commit_duration: Family<RatchetLabels, Histogram>,
    pub cometbft_connected: Family<ChainLabels, Gauge>,
    pub cometbft_sign_bytes: Family<SignBytesLabels, Counter>,
    pub audit_write_errors: Counter,
    pub audit_records_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sigil_signer");
        let requests = Family::default();
        registry.register("requests", "API requests answered, by protocol, endpoint and HTTP status", requests.clone());
        let request_duration = Family::new_with_constructor(latency_buckets as fn() -> Histogram);
        registry.register(
            "request_duration_seconds",
            "Time from request received to response ready",
            request_duration.clone(),
        );
        let signatures = Family::default();
        registry.register("signatures", "Signatures produced, by key and kind", signatures.clone());
        let refusals = Family::default();
        registry.register("refusals", "Requests refused, by protocol and reason", refusals.clone());
        let backend_sign_duration = Family::new_with_constructor(latency_buckets as fn() -> Histogram);
        registry.register(
            "backend_sign_duration_seconds",
            "Time the key backend took to sign",
            backend_sign_duration.clone(),
        );
        let backend_errors = Family::default();
        registry.register(
            "backend_errors",
            "Key backend failures, by backend, key and kind (timeout, transient, permanent)",
            backend_errors.clone(),
        );
        let key_ready = Family::default();
        registry.register("key_ready", "1 while the key's backend answers", key_ready.clone());
        let ratchet_commit_duration = Family::new_with_constructor(latency_buckets as fn() -> Histogram);
        registry.register(
            "ratchet_commit_duration_seconds",
            "Time to make a new high-water mark durable, by store",
            ratchet_commit_duration.clone(),
        );
        let cometbft_connected = Family::default();
        registry.register(
            "cometbft_connected",
            "1 while connected to the CometBFT node of this chain",
            cometbft_connected.clone(),
        );
        let cometbft_sign_bytes = Family::default();
        registry.register(
            "cometbft_sign_bytes",
            "CometBFT v1 SignBytesRequests, by chain and outcome (signed or the refusal's reason)",
            cometbft_sign_bytes.clone(),
        );
        let audit_write_errors = Counter::default();
        registry.register(
            "audit_write_errors",
            "Audit records that could not be written to audit.file (the log still has them)",
            audit_write_errors.clone(),
        );
        let audit_records_dropped = Counter::default();
        registry.register(
            "audit_records_dropped",
            "Audit records not written: refusals past 10 a second, or the file's queue full",
            audit_records_dropped.clone(),
        );
        Metrics {
            registry,
            requests,
            request_duration,
            signatures,
            refusals,
            backend_sign_duration,
            backend_errors,
            key_ready,
            ratchet_commit_duration,
            cometbft_connected,
            cometbft_sign_bytes,
            audit_write_errors,
            audit_records_dropped,
        }
    }
}

impl Metrics {
    pub fn refuse(&self, protocol: &'static str, reason: &'static str) {
        self.refusals.get_or_create(&RefusalLabels { protocol, reason }).inc();
    }

    pub fn observe_request(&self, protocol: &'static str, endpoint: &'static str, code: u16, took: Duration) {
        self.requests.get_or_create(&RequestLabels { protocol, endpoint, code }).inc();
        self.request_duration.get_or_create(&EndpointLabels { protocol, endpoint }).observe(took.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

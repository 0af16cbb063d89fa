//! Prometheus metrics, all named `sigil_operator_*`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// `cache` (the webhook's watch of RemoteSigners) or `get` (an API call).
    pub source: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: Counter,
    pub reconcile_errors: Counter,
    pub reconcile_duration: Histogram,
    pub token_actions: Family<ActionLabels, Counter>,
    /// 1 while this replica holds the leader Lease.
    pub leader: Gauge,
    /// RemoteSigners the webhook looked up, by where from.
    pub admission_lookups: Family<SourceLabels, Counter>,
    /// From an admission request's headers to its answer, as the webhook served it.
    pub admission_duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sigil_operator");
        let reconciles = Counter::default();
        registry.register("reconciles", "RemoteSigner reconciles started", reconciles.clone());
        let reconcile_errors = Counter::default();
        registry.register("reconcile_errors", "Reconciles that failed and were retried", reconcile_errors.clone());
        // 1 ms .. ~30 s
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register("reconcile_duration_seconds", "Time one reconcile took", reconcile_duration.clone());
        let token_actions = Family::default();
        registry.register(
            "token_actions",
            "Token Secrets created, rotated, trimmed or restored",
            token_actions.clone(),
        );
        let leader = Gauge::default();
        registry.register("leader", "1 while this replica holds the leader Lease", leader.clone());
        let admission_lookups = Family::default();
        registry.register(
            "admission_lookups",
            "RemoteSigners the injection webhook looked up: from its watch cache, or with a GET",
            admission_lookups.clone(),
        );
        // 50 µs .. ~0.8 s
        let admission_duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 15));
        registry.register(
            "admission_duration_seconds",
            "Time the injection webhook took to answer an admission request, from its headers to the answer",
            admission_duration.clone(),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            token_actions,
            leader,
            admission_lookups,
            admission_duration,
        }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

//! Leader election through a `coordination.k8s.io` Lease, so that two operator replicas never
//! reconcile at once. Every write is a replace guarded by resourceVersion (compare-and-swap); a
//! replica that cannot renew before its lease expires stops acting.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Who we are: unique per replica.
    pub identity: String,
    /// How long a lease holds without renewal.
    pub duration: Duration,
}

impl LeaseConfig {
    /// Renew at a third of the duration: two renewals may fail before the lease lapses.
    pub fn renew_every(&self) -> Duration {
        self.duration / 3
    }
}

/// Tries once to become (or stay) the holder. `Ok(true)` when we hold the lease now.
pub async fn try_acquire(client: &Client, config: &LeaseConfig) -> Result<bool, kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    let now = Timestamp::now();
    let seconds = i32::try_from(config.duration.as_secs()).unwrap_or(i32::MAX).max(1);
    let Some(mut lease) = leases.get_opt(&config.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(config.name.clone()), ..Default::default() },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return conflict_means_no(leases.create(&PostParams::default(), &lease).await);
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let expires = spec.renew_time.as_ref().map(|t| t.0).unwrap_or(Timestamp::UNIX_EPOCH)
        + SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(seconds)));
    if holder != config.identity {
        if !holder.is_empty() && now < expires {
            return Ok(false);
        }
        spec.holder_identity = Some(config.identity.clone());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(seconds);
    // `lease` still carries the resourceVersion we read: a concurrent writer makes this a 409.
    conflict_means_no(leases.replace(&config.name, &PostParams::default(), &lease).await)
}

fn conflict_means_no(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

/// Waits until we hold the lease.
pub async fn acquire(client: &Client, config: &LeaseConfig) {
    loop {
        match try_acquire(client, config).await {
            Ok(true) => return,
            Ok(false) => tracing::debug!(lease = %config.name, "another replica leads; standing by"),
            Err(error) => tracing::warn!(%error, "cannot read or write the leader Lease"),
        }
        // Retry period between attempts, not synchronisation.
        tokio::time::sleep(config.renew_every()).await;
    }
}

/// Renews until a renewal fails for longer than the lease lasts; then returns (leadership lost).
pub async fn hold(client: &Client, config: &LeaseConfig) {
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(config.renew_every()).await;
        match try_acquire(client, config).await {
            Ok(true) => last_renewed = tokio::time::Instant::now(),
            Ok(false) => return,
            Err(error) => {
                tracing::warn!(%error, "cannot renew the leader Lease");
                // Stop before the lease can lapse and another replica take over.
                if last_renewed.elapsed() + config.renew_every() >= config.duration {
                    return;
                }
            }
        }
    }
}

/// Gives the lease up at shutdown, so a standby takes over without waiting for expiry.
pub async fn release(client: &Client, config: &LeaseConfig) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    if let Ok(Some(mut lease)) = leases.get_opt(&config.name).await {
        if let Some(spec) = lease.spec.as_mut().filter(|s| s.holder_identity.as_deref() == Some(&config.identity)) {
            spec.holder_identity = None;
            let _ = leases.replace(&config.name, &PostParams::default(), &lease).await;
        }
    }
}

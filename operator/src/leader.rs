//! Leader election through a `coordination.k8s.io` Lease, so that two operator replicas never
//! reconcile at once. Every write is a replace guarded by resourceVersion (compare-and-swap); a
//! replica that cannot renew before its lease expires stops acting.
//!
//! Expiry is judged on the standby's own monotonic clock, never by comparing its wall clock with
//! the holder's `renewTime`: a standby remembers the lease record it last saw and when (locally)
//! that record last changed, and takes over only once it has seen no change for
//! `leaseDurationSeconds`. Clock skew between replicas then cannot make a standby take over from a
//! live leader (nor wait forever for a leader whose clock runs ahead). This is client-go's
//! approach (kubernetes/client-go:tools/leaderelection/leaderelection.go, `observedRecord` and
//! `observedTime`).

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
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

/// The parts of a Lease a standby watches for change. Any write to the Lease changes its
/// resourceVersion; holder and renewTime are kept too, so that the comparison does not depend on
/// resourceVersion alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub holder: String,
    /// `renewTime` as written by the holder; compared for equality only, never with our clock.
    pub renew_time: Option<Timestamp>,
    pub resource_version: String,
    /// The holder's `leaseDurationSeconds`.
    pub duration: Duration,
}

impl Record {
    fn of(lease: &Lease, default_duration: Duration) -> Record {
        let spec = lease.spec.as_ref();
        let seconds = spec.and_then(|s| s.lease_duration_seconds).and_then(|s| u64::try_from(s).ok());
        Record {
            holder: spec.and_then(|s| s.holder_identity.clone()).unwrap_or_default(),
            renew_time: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
            resource_version: lease.metadata.resource_version.clone().unwrap_or_default(),
            duration: seconds.map(Duration::from_secs).unwrap_or(default_duration),
        }
    }
}

/// A record as this replica saw it, and the local instant at which it first saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub record: Record,
    pub since: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// We hold the lease: renew it.
    Renew,
    /// Nobody holds it, or its holder has not renewed for a whole lease duration as we observed
    /// it: take it over.
    TakeOver,
    /// Someone else holds it; look again later.
    Wait,
}

/// The election rule, pure: given what we observed before, the record read now, who we are and
/// the local monotonic `now`, what to do (and the observation to remember).
pub fn decide(previous: Option<&Observation>, current: Record, me: &str, now: Instant) -> (Observation, Decision) {
    let observation = match previous {
        Some(previous) if previous.record == current => previous.clone(),
        _ => Observation { record: current, since: now },
    };
    let record = &observation.record;
    let decision = if record.holder == me {
        Decision::Renew
    } else if record.holder.is_empty() || now.saturating_duration_since(observation.since) >= record.duration {
        Decision::TakeOver
    } else {
        Decision::Wait
    };
    (observation, decision)
}

/// One replica's side of the election: its configuration and what it last observed.
#[derive(Debug)]
pub struct Elector {
    pub config: LeaseConfig,
    observed: Option<Observation>,
}

impl Elector {
    pub fn new(config: LeaseConfig) -> Elector {
        Elector { config, observed: None }
    }

    /// Tries once to become (or stay) the holder. `Ok(true)` when we hold the lease now.
    pub async fn try_acquire(&mut self, client: &Client) -> Result<bool, kube::Error> {
        let config = &self.config;
        let leases: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
        let wall = Timestamp::now();
        let seconds = i32::try_from(config.duration.as_secs()).unwrap_or(i32::MAX).max(1);
        let Some(mut lease) = leases.get_opt(&config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(config.name.clone()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(config.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(wall)),
                    renew_time: Some(MicroTime(wall)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return conflict_means_no(leases.create(&PostParams::default(), &lease).await);
        };
        let (observation, decision) =
            decide(self.observed.as_ref(), Record::of(&lease, config.duration), &config.identity, Instant::now());
        self.observed = Some(observation);
        let spec = lease.spec.get_or_insert_with(Default::default);
        match decision {
            Decision::Wait => return Ok(false),
            Decision::Renew => {}
            Decision::TakeOver => {
                spec.holder_identity = Some(config.identity.clone());
                spec.acquire_time = Some(MicroTime(wall));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
        }
        // Our wall clock, for people reading the Lease; no replica compares it with its own.
        spec.renew_time = Some(MicroTime(wall));
        spec.lease_duration_seconds = Some(seconds);
        // `lease` still carries the resourceVersion we read: a concurrent writer makes this a 409.
        conflict_means_no(leases.replace(&config.name, &PostParams::default(), &lease).await)
    }

    /// Waits until we hold the lease.
    pub async fn acquire(&mut self, client: &Client) {
        loop {
            match self.try_acquire(client).await {
                Ok(true) => return,
                Ok(false) => tracing::debug!(lease = %self.config.name, "another replica leads; standing by"),
                Err(error) => tracing::warn!(%error, "cannot read or write the leader Lease"),
            }
            // Retry period between attempts, not synchronisation.
            tokio::time::sleep(self.config.renew_every()).await;
        }
    }

    /// Renews until a renewal fails for longer than the lease lasts; then returns (leadership lost).
    pub async fn hold(&mut self, client: &Client) {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.config.renew_every()).await;
            match self.try_acquire(client).await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => return,
                Err(error) => {
                    tracing::warn!(%error, "cannot renew the leader Lease");
                    // Stop before the lease can lapse and another replica take over.
                    if last_renewed.elapsed() + self.config.renew_every() >= self.config.duration {
                        return;
                    }
                }
            }
        }
    }

    /// Gives the lease up at shutdown, so a standby takes over without waiting for expiry.
    pub async fn release(&self, client: &Client) {
        let config = &self.config;
        let leases: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
        if let Ok(Some(mut lease)) = leases.get_opt(&config.name).await {
            if let Some(spec) = lease.spec.as_mut().filter(|s| s.holder_identity.as_deref() == Some(&config.identity)) {
                spec.holder_identity = None;
                let _ = leases.replace(&config.name, &PostParams::default(), &lease).await;
            }
        }
    }
}

fn conflict_means_no(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    fn record(holder: &str, renew_time: Timestamp, version: &str) -> Record {
        Record {
            holder: holder.into(),
            renew_time: Some(renew_time),
            resource_version: version.into(),
            duration: LEASE,
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    /// Feeds a sequence of (local offset, record read) to `decide`, like the polling loop does.
    fn run(steps: &[(u64, Record)]) -> Vec<Decision> {
        let start = Instant::now();
        let mut observed = None;
        steps
            .iter()
            .map(|(offset, record)| {
                let (observation, decision) =
                    decide(observed.as_ref(), record.clone(), "me", start + Duration::from_secs(*offset));
                observed = Some(observation);
                decision
            })
            .collect()
    }

    #[test]
    fn a_live_leader_whose_clock_is_far_behind_keeps_the_lease() {
        // The holder's renewTime is a year in the past by our clock, but it keeps changing: alive.
        let long_ago = 1_700_000_000;
        let steps: Vec<(u64, Record)> =
            (0..10).map(|i| (i * 5, record("other", at(long_ago + i as i64 * 5), &format!("{i}")))).collect();
        assert!(run(&steps).iter().all(|d| *d == Decision::Wait));
    }

    #[test]
    fn a_dead_leader_whose_clock_was_far_ahead_is_replaced_after_one_duration() {
        // renewTime a year in the future by our clock: irrelevant; it stopped changing at t=0.
        let future = at(2_100_000_000);
        let frozen = record("other", future, "7");
        let steps = [(0, frozen.clone()), (5, frozen.clone()), (14, frozen.clone()), (15, frozen.clone())];
        assert_eq!(run(&steps), [Decision::Wait, Decision::Wait, Decision::Wait, Decision::TakeOver]);
    }

    #[test]
    fn a_fresh_standby_waits_one_duration_even_for_a_lease_that_looks_expired() {
        // Timestamps say the lease expired long ago; we have not watched it for a duration yet.
        let stale = record("other", at(1_000_000_000), "3");
        assert_eq!(run(&[(0, stale.clone()), (10, stale.clone())]), [Decision::Wait, Decision::Wait]);
        assert_eq!(run(&[(0, stale.clone()), (16, stale)])[1], Decision::TakeOver);
    }

    #[test]
    fn any_change_restarts_the_countdown() {
        let first = record("other", at(1_800_000_000), "1");
        // Same renewTime (a holder with a stuck clock) but a new resourceVersion: it wrote again.
        let rewritten = Record { resource_version: "2".into(), ..first.clone() };
        let steps = [(0, first.clone()), (14, rewritten.clone()), (28, rewritten.clone()), (29, rewritten)];
        assert_eq!(run(&steps), [Decision::Wait, Decision::Wait, Decision::Wait, Decision::TakeOver]);
        // A new holder restarts it too.
        let handed_over = Record { holder: "third".into(), ..first.clone() };
        assert_eq!(run(&[(0, first), (14, handed_over.clone()), (20, handed_over)])[2], Decision::Wait);
    }

    #[test]
    fn the_holders_duration_counts_and_released_or_own_leases_are_immediate() {
        let short = Record { duration: Duration::from_secs(3), ..record("other", at(0), "1") };
        assert_eq!(run(&[(0, short.clone()), (3, short)])[1], Decision::TakeOver);
        assert_eq!(run(&[(0, record("", at(0), "1"))]), [Decision::TakeOver]);
        assert_eq!(run(&[(0, record("me", at(4_000_000_000), "1"))]), [Decision::Renew]);
    }
}

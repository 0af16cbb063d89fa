//! The API token's life: created once, replaced every rotation interval, the previous one kept
//! valid for the grace period so that no client holding it is locked out. Pure: the caller
//! supplies the time and a fresh random token.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::TokenSpec;

pub const DEFAULT_ROTATION_INTERVAL: SignedDuration = SignedDuration::from_hours(720);
pub const DEFAULT_GRACE_PERIOD: SignedDuration = SignedDuration::from_mins(10);
const MINIMUM: SignedDuration = SignedDuration::from_mins(1);

/// What the token Secret holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenState {
    pub token: String,
    pub previous: Option<String>,
    pub rotated_at: Timestamp,
    /// Until when `previous` is accepted.
    pub previous_until: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAction {
    Created,
    Rotated,
    PreviousDropped,
    Unchanged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub interval: SignedDuration,
    pub grace: SignedDuration,
}

/// Why `spec.token` gives no schedule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("spec.token.{field} {text:?} is not a duration of at least 1m (like 10m or 24h)")]
    Duration { field: &'static str, text: String },
    #[error("spec.token.gracePeriod ({grace:#}) must be shorter than spec.token.rotationInterval ({interval:#})")]
    GraceNotShorter { grace: SignedDuration, interval: SignedDuration },
}

/// Reads `spec.token`; the CRD already rejects malformed values, this re-checks for objects that
/// bypassed admission.
pub fn schedule(spec: Option<&TokenSpec>) -> Result<Schedule, ScheduleError> {
    let parse = |value: Option<&String>, default, field: &'static str| match value {
        None => Ok(default),
        Some(text) => match text.parse::<SignedDuration>() {
            Ok(duration) if duration >= MINIMUM => Ok(duration),
            _ => Err(ScheduleError::Duration { field, text: text.clone() }),
        },
    };
    let interval =
        parse(spec.and_then(|t| t.rotation_interval.as_ref()), DEFAULT_ROTATION_INTERVAL, "rotationInterval")?;
    let grace = parse(spec.and_then(|t| t.grace_period.as_ref()), DEFAULT_GRACE_PERIOD, "gracePeriod")?;
    // Otherwise the next rotation comes before the previous token is dropped, and a previous
    // token stays valid forever.
    if grace >= interval {
        return Err(ScheduleError::GraceNotShorter { grace, interval });
    }
    Ok(Schedule { interval, grace })
}

/// The next state, what changed, and how long until something is due. `hold_previous` keeps the
/// previous token past its grace period while clients that still use it are being restarted.
pub fn plan(
    now: Timestamp,
    current: Option<TokenState>,
    schedule: Schedule,
    hold_previous: bool,
    fresh: impl FnOnce() -> String,
) -> (TokenState, TokenAction, SignedDuration) {
    let (state, action) = match current {
        None => {
            (TokenState { token: fresh(), previous: None, rotated_at: now, previous_until: None }, TokenAction::Created)
        }
        // A rotation due while pods still use the previous token waits for them: rotating now
        // would drop that token while they run.
        Some(current)
            if now >= current.rotated_at + schedule.interval && !(hold_previous && current.previous.is_some()) =>
        {
            (
                TokenState {
                    token: fresh(),
                    previous: Some(current.token),
                    rotated_at: now,
                    previous_until: Some(now + schedule.grace),
                },
                TokenAction::Rotated,
            )
        }
        Some(current) if !hold_previous && current.previous_until.is_some_and(|until| now >= until) => {
            (TokenState { previous: None, previous_until: None, ..current }, TokenAction::PreviousDropped)
        }
        Some(current) => (current, TokenAction::Unchanged),
    };
    let mut next = state.rotated_at + schedule.interval;
    if let Some(until) = state.previous_until.filter(|_| !hold_previous) {
        next = next.min(until);
    }
    let wait = now.duration_until(next).max(SignedDuration::ZERO);
    (state, action, wait)
}

/// 256 random bits from the OS, hex-encoded.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    const HOUR: Schedule = Schedule { interval: SignedDuration::from_hours(1), grace: SignedDuration::from_mins(10) };

    #[test]
    fn create_rotate_drop() {
        let (state, action, wait) = plan(at(0), None, HOUR, false, || "a".into());
        assert_eq!((action, state.token.as_str(), wait), (TokenAction::Created, "a", SignedDuration::from_hours(1)));

        let (same, action, wait) = plan(at(600), Some(state.clone()), HOUR, false, || unreachable!());
        assert_eq!((action, &same), (TokenAction::Unchanged, &state));
        assert_eq!(wait, SignedDuration::from_mins(50));

        let (rotated, action, wait) = plan(at(3600), Some(state), HOUR, false, || "b".into());
        assert_eq!(action, TokenAction::Rotated);
        assert_eq!((rotated.token.as_str(), rotated.previous.as_deref()), ("b", Some("a")));
        assert_eq!(rotated.previous_until, Some(at(4200)));
        assert_eq!(wait, SignedDuration::from_mins(10), "next due: dropping the previous token");

        let (during, action, _) = plan(at(4199), Some(rotated.clone()), HOUR, false, || unreachable!());
        assert_eq!((action, during.previous.as_deref()), (TokenAction::Unchanged, Some("a")));

        let (held, action, _) = plan(at(4200), Some(rotated.clone()), HOUR, true, || unreachable!());
        assert_eq!((action, held.previous.as_deref()), (TokenAction::Unchanged, Some("a")), "clients still restarting");
        let (dropped, action, wait) = plan(at(4200), Some(rotated), HOUR, false, || unreachable!());
        assert_eq!(action, TokenAction::PreviousDropped);
        assert_eq!((dropped.token.as_str(), dropped.previous, dropped.previous_until), ("b", None, None));
        assert_eq!(wait, SignedDuration::from_mins(50));
    }

    #[test]
    fn a_rotation_waits_for_pods_still_using_the_previous_token() {
        let state = TokenState {
            token: "b".into(),
            previous: Some("a".into()),
            rotated_at: at(0),
            previous_until: Some(at(600)),
        };
        let (held, action, _) = plan(at(3600), Some(state.clone()), HOUR, true, || unreachable!());
        assert_eq!((action, held.token.as_str(), held.previous.as_deref()), (TokenAction::Unchanged, "b", Some("a")));
        let (rotated, action, _) = plan(at(3600), Some(state), HOUR, false, || "c".into());
        assert_eq!((action, rotated.previous.as_deref()), (TokenAction::Rotated, Some("b")));
    }

    #[test]
    fn a_late_reconcile_rotates_once_and_never_waits_negative() {
        let state = TokenState { token: "a".into(), previous: None, rotated_at: at(0), previous_until: None };
        let (rotated, action, wait) = plan(at(10 * 3600), Some(state), HOUR, false, || "b".into());
        assert_eq!((action, rotated.rotated_at), (TokenAction::Rotated, at(10 * 3600)));
        assert!(wait > SignedDuration::ZERO);
    }

    #[test]
    fn schedule_from_spec() {
        assert_eq!(
            schedule(None).unwrap(),
            Schedule { interval: DEFAULT_ROTATION_INTERVAL, grace: DEFAULT_GRACE_PERIOD }
        );
        let spec = TokenSpec { rotation_interval: Some("1h30m".into()), grace_period: Some("2m".into()) };
        assert_eq!(
            schedule(Some(&spec)).unwrap(),
            Schedule { interval: SignedDuration::from_mins(90), grace: SignedDuration::from_mins(2) }
        );
        let equal = TokenSpec { rotation_interval: Some("5m".into()), grace_period: None };
        assert!(schedule(Some(&equal)).unwrap_err().to_string().contains("must be shorter"), "default grace 10m > 5m");
        for bad in ["30s", "soon", "-1h", ""] {
            let spec = TokenSpec { grace_period: Some(bad.into()), ..Default::default() };
            assert!(schedule(Some(&spec)).unwrap_err().to_string().contains("spec.token.gracePeriod"), "{bad}");
        }
    }

    #[test]
    fn tokens_are_256_bit_and_distinct() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}

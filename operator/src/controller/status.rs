//! Conditions: each part of a RemoteSigner reports True with what it did, or False with a reason
//! and a message a person can act on; Ready is True only when all are.

use k8s_openapi::jiff::Timestamp;

use crate::api::Condition;

pub const READY: &str = "Ready";
pub const TOKEN_READY: &str = "TokenReady";
pub const CONFIG_READY: &str = "ConfigReady";
pub const IDENTITY_READY: &str = "IdentityReady";
pub const MARKS_READY: &str = "MarksReady";
/// Whether spec.ratchet.initialMarks are in the store (only when the spec names any).
pub const INITIAL_MARKS: &str = "InitialMarks";
pub const KEY_READY: &str = "KeyReady";
/// Whether the injected signers run. Reported, but not part of Ready (see [`conditions`]).
pub const SIGNERS_READY: &str = "SignersReady";
/// Whether a Tezos signer answers proofs of possession now (only when spec.tezos allows them).
pub const PROOF_OF_POSSESSION: &str = "ProofOfPossession";

/// One part's outcome: `(reason, message)`, good or bad.
pub type Outcome = Result<(String, String), (String, String)>;

pub fn ok(reason: &str, message: impl Into<String>) -> Outcome {
    Ok((reason.to_string(), message.into()))
}

pub fn failed(reason: &str, message: impl Into<String>) -> Outcome {
    Err((reason.to_string(), message.into()))
}

/// The conditions for this generation: Ready, `parts` (Ready is True when all are), then
/// `reported` (shown, but Ready does not wait for them: the webhook injects a pod only once its
/// RemoteSigner is Ready, so Ready cannot wait for injected pods). A condition whose status did not
/// change keeps its lastTransitionTime.
pub fn conditions(
    previous: &[Condition],
    now: Timestamp,
    generation: Option<i64>,
    parts: &[(&str, Outcome)],
    reported: &[(&str, Outcome)],
) -> Vec<Condition> {
    let build = |type_: &str, outcome: &Outcome| {
        let (status, (reason, message)) = match outcome {
            Ok(detail) => ("True", detail.clone()),
            Err(detail) => ("False", detail.clone()),
        };
        let since = previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.to_string());
        Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason,
            message,
            last_transition_time: since,
            observed_generation: generation,
        }
    };
    let ready = match parts.iter().find(|(_, outcome)| outcome.is_err()) {
        None => ok("Ready", "the signer's token, config, marks store, key and identity are in place"),
        Some((type_, Err((reason, message)))) => failed(reason, format!("{type_}: {message}")),
        Some(_) => unreachable!("found an Err"),
    };
    std::iter::once(build(READY, &ready)).chain(parts.iter().chain(reported).map(|(t, o)| build(t, o))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn ready_summarises_and_times_only_move_on_change() {
        let parts = [(TOKEN_READY, ok("TokenIssued", "t")), (CONFIG_READY, ok("Rendered", "c"))];
        let first = conditions(&[], at(0), Some(1), &parts, &[]);
        assert_eq!(first.len(), 3);
        assert_eq!((first[0].type_.as_str(), first[0].status.as_str()), (READY, "True"));

        let broken =
            [(TOKEN_READY, ok("TokenIssued", "t")), (CONFIG_READY, failed("KeySecretNotFound", "no Secret x"))];
        let second = conditions(&first, at(60), Some(2), &broken, &[]);
        assert_eq!((second[0].status.as_str(), second[0].reason.as_str()), ("False", "KeySecretNotFound"));
        assert_eq!(second[0].message, "ConfigReady: no Secret x");
        assert_eq!(second[0].last_transition_time, at(60).to_string());
        assert_eq!(second[1].last_transition_time, at(0).to_string(), "TokenReady did not change");
        assert!(second.iter().all(|c| c.observed_generation == Some(2)));
    }

    /// No injected pod is running yet, which must not keep the RemoteSigner from Ready: the
    /// webhook injects pods only into a Ready RemoteSigner.
    #[test]
    fn reported_conditions_do_not_hold_ready_back() {
        let parts = [(TOKEN_READY, ok("TokenIssued", "t"))];
        let reported = [(SIGNERS_READY, failed("NoInjectedPods", "0/0"))];
        let all = conditions(&[], at(0), Some(1), &parts, &reported);
        let types: Vec<&str> = all.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [READY, TOKEN_READY, SIGNERS_READY]);
        assert_eq!((all[0].status.as_str(), all[2].status.as_str()), ("True", "False"));
    }
}

//! Token rotation, the I/O around `token`'s decisions: the token Secret issued, rotated and its
//! previous token dropped on schedule, and Atto pods that read the rotated-out token from their
//! environment restarted one at a time through the Eviction API.

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{EvictParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

use super::desired;
use super::reconcile::{labelled_pods, Context, Error};
use super::status::{failed, ok, Outcome};
use super::token::{self, TokenAction};
use crate::api::RemoteSigner;

type TokenResult = (Outcome, k8s_openapi::jiff::SignedDuration, Option<token::TokenState>);

pub(super) async fn reconcile_token(
    rs: &RemoteSigner,
    ctx: &Context,
    namespace: &str,
    now: Timestamp,
    apply: &PatchParams,
) -> Result<TokenResult, Error> {
    let schedule = match token::schedule(rs.spec.token.as_ref()) {
        Ok(schedule) => schedule,
        Err(message) => {
            return Ok((
                failed("InvalidSchedule", message.to_string()),
                k8s_openapi::jiff::SignedDuration::from_secs(30),
                None,
            ))
        }
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let name = desired::token_secret_name(&rs.name_any());
    let current = secrets.get_opt(&name).await?.and_then(|s| desired::token_state(&s));
    let existed = current.is_some();
    // Pods whose node read the old token from its environment, still running.
    let stale = match current.as_ref().filter(|c| c.previous.is_some()) {
        Some(current) => stale_pods(rs, ctx, namespace, current.rotated_at).await?,
        None => Vec::new(),
    };
    let (state, action, mut wait) = token::plan(now, current, schedule, !stale.is_empty(), token::random_token);
    if action != TokenAction::Unchanged || !existed {
        secrets.patch(&name, apply, &Patch::Apply(&desired::token_secret(rs, &state))).await?;
        let note = match action {
            TokenAction::Created => format!("Created API token Secret {name}"),
            TokenAction::Rotated => format!(
                "Rotated the API token in Secret {name}; the previous token stays valid until {}",
                state.previous_until.map(|t| t.to_string()).unwrap_or_default()
            ),
            TokenAction::PreviousDropped => format!("Grace period over: dropped the previous token from Secret {name}"),
            TokenAction::Unchanged => format!("Restored Secret {name}"),
        };
        let reason = match action {
            TokenAction::Created => "TokenCreated",
            TokenAction::Rotated => "TokenRotated",
            TokenAction::PreviousDropped => "PreviousTokenDropped",
            TokenAction::Unchanged => "TokenRestored",
        };
        ctx.metrics.token_actions.get_or_create(&crate::metrics::ActionLabels { action: reason }).inc();
        ctx.event(rs, EventType::Normal, reason, note).await;
    }
    let stale = match action {
        TokenAction::Rotated => stale_pods(rs, ctx, namespace, state.rotated_at).await?,
        _ => stale,
    };
    if state.previous.is_some() && !stale.is_empty() {
        restart_one(rs, ctx, namespace, &stale).await?;
        wait = wait.min(k8s_openapi::jiff::SignedDuration::from_secs(2));
        let message = format!(
            "Secret {name} holds a new API token; restarting {} pod(s) that read the old one from their environment",
            stale.len()
        );
        return Ok((ok("TokenIssued", message), wait, Some(state)));
    }
    let next = now + wait;
    let message = format!("Secret {name} holds the API token; next change at {next}");
    Ok((ok("TokenIssued", message), wait, Some(state)))
}

/// Atto nodes read their token from an environment variable, fixed at pod start: pods created
/// before the rotation still use the old token. Other protocols read files and need no restart.
async fn stale_pods(
    rs: &RemoteSigner,
    ctx: &Context,
    namespace: &str,
    rotated_at: Timestamp,
) -> Result<Vec<Pod>, Error> {
    if rs.spec.protocol != crate::api::Protocol::Atto {
        return Ok(Vec::new());
    }
    Ok(labelled_pods(rs, ctx, namespace)
        .await?
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.metadata.creation_timestamp.as_ref().is_some_and(|t| t.0 < rotated_at))
        .collect())
}

/// Evicts one stale pod, but only while every other pod of this signer is Ready: one at a time,
/// through the Eviction API, so PodDisruptionBudgets are respected.
async fn restart_one(rs: &RemoteSigner, ctx: &Context, namespace: &str, stale: &[Pod]) -> Result<(), Error> {
    let all = labelled_pods(rs, ctx, namespace).await?;
    let ready = |p: &Pod| {
        p.metadata.deletion_timestamp.is_none()
            && p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    if !all.iter().all(ready) {
        return Ok(()); // the previous restart is still under way
    }
    let pod = stale[0].name_any();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    match pods.evict(&pod, &EvictParams::default()).await {
        Ok(_) => {
            let note = format!("Evicted pod {pod} so that its node picks up the rotated API token");
            ctx.event(rs, EventType::Normal, "PodRestarted", note).await;
        }
        Err(kube::Error::Api(status)) if status.code == 429 => {
            let note = format!("Eviction of pod {pod} is blocked by a PodDisruptionBudget; the previous token stays valid until it can proceed");
            ctx.event(rs, EventType::Warning, "EvictionBlocked", note).await;
        }
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => return Err(error.into()),
    }
    Ok(())
}

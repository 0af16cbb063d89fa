//! The I/O around the pure decisions: read what exists, apply what should exist (server-side apply,
//! field manager `sigil-operator`), record status and events, and say when to come back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use kube::runtime::reflector::ObjectRef;
use sigil_signer::ratchet::configmap::{
    cleared_keys, is_sealed, published_keys, seal_object, CLEARED_KEYS_ANNOTATION, SEAL_ANNOTATION,
};
use sigil_signer::ratchet::PublishedKey;

use super::desired::{self, FIELD_MANAGER, MANAGED_BY};
use super::initial_marks::{self, InitialMarks};
use super::rotation;
use super::status::{self, failed, ok, Outcome};
use crate::api::{KeySpec, MarksStatus, RemoteSigner, RemoteSignerStatus};
use crate::images::ImagePolicy;
use crate::metrics::Metrics;
use crate::sidecar::CONTAINER;
use crate::webhook::patch::SIGNER_LABEL;

/// Present while identity annotations we wrote exist on a ServiceAccount: they are outside what
/// ownerReferences clean up, so deletion waits until they are removed.
pub const IDENTITY_FINALIZER: &str = "sigil.dev/identity";
/// How soon a RemoteSigner that is not Ready is looked at again.
const RETRY: Duration = Duration::from_secs(30);
/// Events closer together than this make one reconcile.
const DEBOUNCE: Duration = Duration::from_millis(500);
/// How soon initial marks that do not exist yet are looked for again.
const MISSING_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Invalid(String),
}

fn invalid(error: impl std::fmt::Display) -> Error {
    Error::Invalid(error.to_string())
}

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub images: ImagePolicy,
    /// One key check at a time: whether a key is some other RemoteSigner's is decided and
    /// recorded (cleared) atomically, so two RemoteSigners on one key can never both be cleared.
    key_checks: tokio::sync::Mutex<()>,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, images: ImagePolicy) -> Arc<Self> {
        let recorder = Recorder::new(client.clone(), Reporter::from(FIELD_MANAGER));
        Arc::new(Context { client, recorder, metrics, images, key_checks: tokio::sync::Mutex::new(()) })
    }

    pub(super) async fn event(&self, rs: &RemoteSigner, type_: EventType, reason: &str, note: String) {
        let event =
            Event { type_, reason: reason.into(), note: Some(note), action: "Reconcile".into(), secondary: None };
        if let Err(error) = self.recorder.publish(&event, &rs.object_ref(&())).await {
            tracing::warn!(%error, "could not record an event");
        }
    }
}

/// Runs the controller until `shutdown` completes, over every namespace or just `namespace`.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        match namespace {
            Some(namespace) => Api::namespaced(client.clone(), namespace),
            None => Api::all(client.clone()),
        }
    }
    let client = ctx.client.clone();
    let ours = watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
    // ConfigMaps by label, not by owner: the marks store has no ownerReference (it outlives its
    // RemoteSigner), and its changes (a deletion, a public key the signer reported) matter.
    let config_maps = watcher::Config::default().labels(desired::OWNER_LABEL);
    Controller::new(api::<RemoteSigner>(&client, &namespace), watcher::Config::default())
        // A burst of events (a Deployment's pods created at once) makes one reconcile, not one
        // each: every reconcile is a dozen API calls, which the pods' own creation waits behind.
        .with_config(kube::runtime::controller::Config::default().debounce(DEBOUNCE))
        .owns(api::<Secret>(&client, &namespace), ours.clone())
        // The signer's access to its marks: a Role or RoleBinding deleted by hand comes back.
        .owns(api::<Role>(&client, &namespace), ours.clone())
        .owns(api::<RoleBinding>(&client, &namespace), ours)
        // The pods the signer is injected into, for SignersReady.
        .watches(api::<Pod>(&client, &namespace), watcher::Config::default().labels(SIGNER_LABEL), |pod| {
            let owner = pod.labels().get(SIGNER_LABEL)?;
            Some(ObjectRef::new(owner).within(&pod.namespace()?))
        })
        .watches(api::<ConfigMap>(&client, &namespace), config_maps, |cm| {
            let owner = cm.labels().get(desired::OWNER_LABEL)?;
            Some(ObjectRef::new(owner).within(&cm.namespace()?))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile did not complete");
            }
        })
        .await;
}

fn error_policy(rs: Arc<RemoteSigner>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_errors.inc();
    tracing::warn!(remote_signer = %rs.name_any(), namespace = ?rs.namespace(), %error, "reconcile failed; retrying");
    Action::requeue(RETRY)
}

pub async fn reconcile(rs: Arc<RemoteSigner>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    let result = reconcile_inner(&rs, &ctx).await;
    ctx.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
    result
}

async fn reconcile_inner(rs: &RemoteSigner, ctx: &Context) -> Result<Action, Error> {
    let namespace = rs.namespace().ok_or_else(|| Error::Invalid("RemoteSigner without a namespace".into()))?;
    let name = rs.name_any();
    let client = &ctx.client;
    let signers: Api<RemoteSigner> = Api::namespaced(client.clone(), &namespace);
    let annotations = desired::identity_annotations(rs.spec.workload_identity.as_ref());
    let has_finalizer = rs.finalizers().iter().any(|f| f == IDENTITY_FINALIZER);

    if rs.meta().deletion_timestamp.is_some() {
        if has_finalizer {
            release_identity(rs, ctx, &namespace).await?;
            remove_finalizer(&signers, rs).await?;
        }
        return Ok(Action::await_change());
    }
    if !annotations.is_empty() && !has_finalizer {
        // Finalizer first, so that nothing we write to the ServiceAccount can outlive us.
        let mut finalizers = rs.finalizers().to_vec();
        finalizers.push(IDENTITY_FINALIZER.into());
        set_finalizers(&signers, rs, &finalizers).await?;
        return Ok(Action::requeue(Duration::ZERO));
    }

    let now = Timestamp::now();
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let (token_outcome, token_wait, token_state) = rotation::reconcile_token(rs, ctx, &namespace, now, &apply).await?;
    let config_outcome = reconcile_config(rs, ctx, &namespace, &apply).await?;
    let (marks_outcome, marks, store) = reconcile_marks(rs, ctx, &namespace, &apply).await?;
    let initial = initial_marks::read(rs, &ctx.client, &namespace).await?;
    let (key_outcome, public_key, initial_outcome) =
        reconcile_key(rs, ctx, &namespace, store.as_ref(), initial).await?;
    let identity_outcome = reconcile_identity(rs, ctx, &namespace, &annotations).await?;
    let (signers_outcome, signers_ready) = injected_signers(rs, ctx, &namespace).await?;
    if annotations.is_empty() && has_finalizer {
        remove_finalizer(&signers, rs).await?;
    }

    let mut parts = vec![
        (status::TOKEN_READY, token_outcome),
        (status::CONFIG_READY, config_outcome),
        (status::MARKS_READY, marks_outcome),
    ];
    parts.extend(initial_outcome.map(|outcome| (status::INITIAL_MARKS, outcome)));
    parts.extend([(status::KEY_READY, key_outcome), (status::IDENTITY_READY, identity_outcome)]);
    let previous = rs.status.clone().unwrap_or_default();
    let mut reported = vec![(status::SIGNERS_READY, signers_outcome)];
    let (possession, possession_ends) = proof_of_possession(rs, now);
    reported.extend(possession.map(|outcome| (status::PROOF_OF_POSSESSION, outcome)));
    let conditions = status::conditions(&previous.conditions, now, rs.meta().generation, &parts, &reported);
    let new_status = RemoteSignerStatus {
        observed_generation: rs.meta().generation,
        conditions,
        signers: Some(signers_ready),
        key_backend: rs.spec.key.backend().map(|backend| KeySpec::field(backend).to_string()),
        public_key,
        token_rotated_at: token_state.as_ref().map(|s| s.rotated_at.to_string()),
        previous_token_expires_at: token_state.as_ref().and_then(|s| s.previous_until).map(|t| t.to_string()),
        identity_service_account: (!annotations.is_empty()).then(|| desired::service_account(rs)),
        marks,
    };
    let ready = new_status.condition(status::READY).expect("conditions() puts Ready first").clone();
    // A write to this very object: a RemoteSigner deleted and applied again under the same name
    // while this reconcile ran must not get the old one's status (it would say Ready before its
    // own config exists). The status subresource ignores a uid in an apply patch, so a JSON
    // patch tests it, and the API server refuses the patch when it differs.
    let patch: json_patch::Patch = serde_json::from_value(json!([
        { "op": "test", "path": "/metadata/uid", "value": rs.uid() },
        { "op": "add", "path": "/status", "value": new_status },
    ]))
    .map_err(invalid)?;
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    signers.patch_status(&name, &params, &Patch::<()>::Json(patch)).await?;
    let was_ready = previous.condition(status::READY).map(|c| c.status.as_str());
    if was_ready != Some(ready.status.as_str()) {
        let (type_, note) = match ready.status.as_str() {
            "True" => (EventType::Normal, "Ready".to_string()),
            _ => (EventType::Warning, format!("Not ready: {}", ready.message)),
        };
        ctx.event(rs, type_, &ready.reason, note).await;
    }
    let ready = ready.status == "True";
    let wait = Duration::try_from(token_wait).unwrap_or(RETRY);
    // A user's ConfigMap or Secret is not watched: look for initial marks still missing sooner.
    let missing = new_status.condition(status::INITIAL_MARKS).is_some_and(|c| c.reason == "InitialMarksNotFound");
    let wait = if missing { wait.min(MISSING_RETRY) } else { wait };
    // Back when a proof-of-possession window ends, to report it.
    let wait = possession_ends.map_or(wait, |ends| wait.min(ends));
    Ok(Action::requeue(if ready { wait } else { wait.min(RETRY) }))
}

/// The ProofOfPossession condition of a Tezos signer that allows proofs of possession (none
/// otherwise), and how long until its window ends. The signer ends the window by its own clock;
/// this only reports it.
fn proof_of_possession(rs: &RemoteSigner, now: Timestamp) -> (Option<Outcome>, Option<Duration>) {
    let Some(tezos) = rs.spec.tezos.as_ref().filter(|t| t.allow_proof_of_possession) else { return (None, None) };
    let Some(until) = &tezos.proof_of_possession_until else {
        return (Some(ok("Allowed", "the signer answers /bls_prove_possession, with no end set")), None);
    };
    match until.parse::<Timestamp>() {
        Ok(ends) if ends > now => {
            let left = Duration::try_from(ends.duration_since(now)).unwrap_or(Duration::ZERO);
            (Some(ok("Allowed", format!("the signer answers /bls_prove_possession until {until}"))), Some(left))
        }
        Ok(_) => {
            (Some(failed("Ended", format!("proofOfPossessionUntil {until} has passed: the signer refuses"))), None)
        }
        Err(_) => {
            (Some(failed("InvalidTime", format!("proofOfPossessionUntil {until:?} is not an RFC 3339 time"))), None)
        }
    }
}

/// The pods this RemoteSigner's signer was injected into, and how many of those signers are Ready:
/// whether anything can sign.
async fn injected_signers(rs: &RemoteSigner, ctx: &Context, namespace: &str) -> Result<(Outcome, String), Error> {
    let signer_ready = |pod: &Pod| -> Option<bool> {
        let spec = pod.spec.as_ref()?;
        let injected = spec.init_containers.iter().flatten().chain(&spec.containers).any(|c| c.name == CONTAINER);
        let status = pod.status.as_ref();
        let statuses = status.into_iter().flat_map(|s| s.init_container_statuses.iter().flatten());
        let statuses = statuses.chain(status.into_iter().flat_map(|s| s.container_statuses.iter().flatten()));
        injected.then(|| statuses.filter(|s| s.name == CONTAINER).any(|s| s.ready))
    };
    let pods = match labelled_pods(rs, ctx, namespace).await {
        Ok(pods) => pods,
        // Only a report: the rest of the status is still worth writing.
        Err(error) => return Ok((failed("PodsNotListed", format!("cannot list the pods: {error}")), "?".into())),
    };
    let running = |p: &&Pod| {
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        p.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
    };
    let injected: Vec<bool> = pods.iter().filter(running).filter_map(signer_ready).collect();
    let ready = injected.iter().filter(|r| **r).count();
    let count = format!("{ready}/{}", injected.len());
    let outcome = if injected.is_empty() {
        failed("NoInjectedPods", format!("no pod labelled {SIGNER_LABEL}={} runs yet", rs.name_any()))
    } else if ready < injected.len() {
        failed("SignersNotReady", format!("{count} injected signers are Ready"))
    } else {
        ok("SignersReady", format!("{count} injected signers are Ready"))
    };
    Ok((outcome, count))
}

/// The pods labelled for this RemoteSigner's signer.
pub(super) async fn labelled_pods(rs: &RemoteSigner, ctx: &Context, namespace: &str) -> Result<Vec<Pod>, Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = format!("{SIGNER_LABEL}={}", rs.name_any());
    Ok(pods.list(&ListParams::default().labels(&selector)).await?.items)
}

async fn reconcile_config(
    rs: &RemoteSigner,
    ctx: &Context,
    namespace: &str,
    apply: &PatchParams,
) -> Result<Outcome, Error> {
    if let Err(message) = ctx.images.image_for(rs.spec.sidecar.as_ref().and_then(|s| s.image.as_deref())) {
        return Ok(failed("ImageNotAllowed", message.to_string()));
    }
    let config = match desired::signer_config(rs) {
        Ok(config) => config,
        Err((reason, message)) => return Ok(failed(reason, message)),
    };
    let key_secret = match (&rs.spec.key.secret_ref, &rs.spec.key.pkcs11) {
        (Some(key), _) => Some((&key.name, "spec.key.secretRef")),
        (None, Some(pkcs11)) => Some((&pkcs11.pin_secret_ref.name, "spec.key.pkcs11.pinSecretRef")),
        _ => None,
    };
    let identity_secret = rs.spec.cometbft.as_ref().and_then(|c| c.identity_key_secret_ref.as_ref());
    let identity_secret = identity_secret.map(|s| (&s.name, "spec.cometbft.identityKeySecretRef"));
    let companion_secret = desired::companion_key_secret(rs).map(|s| (&s.name, "spec.tezos.companionKeySecretRef"));
    for (secret, field) in key_secret.into_iter().chain(identity_secret).chain(companion_secret) {
        // Metadata only: the operator never reads key material.
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
        if secrets.get_metadata_opt(secret).await?.is_none() {
            return Ok(failed(
                "KeySecretNotFound",
                format!("Secret {secret} ({field}) does not exist in namespace {namespace}"),
            ));
        }
    }
    let name = desired::config_map_name(&rs.name_any());
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    config_maps.patch(&name, apply, &Patch::Apply(&desired::config_map(rs, &config))).await?;
    Ok(ok("Rendered", format!("ConfigMap {name} holds the signer config")))
}

type MarksResult = (Outcome, Option<MarksStatus>, Option<ConfigMap>);

/// The marks store: created once, sealed, never recreated or deleted by the operator. Reports the
/// store as recorded in the status (its UID), and the ConfigMap as it is now.
async fn reconcile_marks(
    rs: &RemoteSigner,
    ctx: &Context,
    namespace: &str,
    apply: &PatchParams,
) -> Result<MarksResult, Error> {
    let name = desired::ratchet_name(&rs.name_any());
    let roles: Api<Role> = Api::namespaced(ctx.client.clone(), namespace);
    let bindings: Api<RoleBinding> = Api::namespaced(ctx.client.clone(), namespace);
    if !desired::uses_ratchet_config_map(rs) {
        // Access goes when it is no longer needed; the marks themselves stay (see the docs on
        // deleting marks on purpose).
        delete_orphans(&bindings, rs, &[]).await?;
        delete_orphans(&roles, rs, &[]).await?;
        let kept = rs.status.as_ref().and_then(|s| s.marks.clone());
        return Ok((ok("NotUsed", "spec.ratchet.store is not ConfigMap"), kept, None));
    }
    roles.patch(&name, apply, &Patch::Apply(&desired::ratchet_role(rs))).await?;
    bindings.patch(&name, apply, &Patch::Apply(&desired::ratchet_role_binding(rs))).await?;
    delete_orphans(&bindings, rs, &[&name]).await?;
    delete_orphans(&roles, rs, &[&name]).await?;

    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    let recorded = rs.status.as_ref().and_then(|s| s.marks.clone()).filter(|m| m.config_map == name);
    let Some(mut store) = config_maps.get_opt(&name).await? else {
        if let Some(recorded) = recorded {
            let message = format!(
                "ConfigMap {name} (UID {}), which held this signer's high-water marks, was deleted; the signers refuse \
                 to sign, and sigil will not put an empty store in its place (an empty store would sign again what \
                 was signed). Restore the marks into a new {name} with `sigil-signer ratchet import`, or, to start from \
                 zero on purpose, run `sigil-signer ratchet init` (docs/ratchet.md#a-lost-store)",
                recorded.uid
            );
            return Ok((failed("MarksStoreLost", message), Some(recorded), None));
        }
        // A new RemoteSigner: its store starts empty, sealed, from here.
        let object: ConfigMap = serde_json::from_value(desired::ratchet_config_map(rs)).map_err(invalid)?;
        let created = match config_maps.create(&PostParams::default(), &object).await {
            Ok(created) => created,
            // Created meanwhile (by a previous attempt): look again next time.
            Err(kube::Error::Api(status)) if status.code == 409 => return Err(Error::Invalid(status.message)),
            Err(error) => return Err(error.into()),
        };
        let sealed = seal_object(&config_maps, &name, &created).await?;
        let uid = sealed.metadata.uid.clone().unwrap_or_default();
        ctx.event(
            rs,
            EventType::Normal,
            "MarksStoreCreated",
            format!("Created ConfigMap {name} for the high-water marks (UID {uid})"),
        )
        .await;
        let marks = MarksStatus { config_map: name.clone(), uid };
        return Ok((
            ok("Created", format!("ConfigMap {name} holds the marks (new and empty)")),
            Some(marks),
            Some(sealed),
        ));
    };
    let uid = store.metadata.uid.clone().unwrap_or_default();
    let same = recorded.as_ref().is_some_and(|r| r.uid == uid);
    let created_for_us = store.annotations().get(desired::CREATED_FOR) == Some(&rs.uid().unwrap_or_default())
        || store.owner_references().iter().any(|o| Some(&o.uid) == rs.uid().as_ref());
    if !is_sealed(&store) {
        // Ours to seal: the object we recorded, or one we created (a previous version of the
        // operator created stores with an ownerReference and no seal).
        if !(same || (recorded.is_none() && created_for_us)) {
            let message = format!(
                "ConfigMap {name} was not set up as a marks store by sigil (it has no seal, annotation \
                 {SEAL_ANNOTATION}), so its marks cannot be trusted to be this key's: it may be empty, or a copy of an \
                 older store. If it holds the right marks, run `sigil-signer ratchet init` against it; otherwise \
                 delete it and restore the marks with `sigil-signer ratchet import` (docs/ratchet.md#a-lost-store)"
            );
            return Ok((failed("MarksStoreNotSealed", message), recorded, Some(store)));
        }
        store = seal_object(&config_maps, &name, &store).await?;
    }
    if store.labels().get(desired::OWNER_LABEL) != Some(&rs.name_any()) {
        // A store set up by hand (`ratchet init`): our labels, so that its changes (the key the
        // signer reports) reach this controller.
        let labels = json!({ desired::OWNER_LABEL: rs.name_any(), MANAGED_BY.0: MANAGED_BY.1 });
        let patch = json!({ "metadata": { "labels": labels, "resourceVersion": store.resource_version() } });
        store = config_maps.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    if store.owner_references().iter().any(|o| o.kind == "RemoteSigner") {
        // Marks must outlive the RemoteSigner: no garbage collection through an ownerReference.
        let patch = json!({ "metadata": { "ownerReferences": null, "resourceVersion": store.resource_version() } });
        store = config_maps.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    let (reason, message) = match &recorded {
        Some(recorded) if recorded.uid != uid => {
            let note = format!(
                "ConfigMap {name} was replaced (UID {} is now {uid}) by a store set up on purpose; signers started on \
                 the old one refuse to sign until they restart",
                recorded.uid
            );
            ctx.event(rs, EventType::Warning, "MarksStoreReplaced", note.clone()).await;
            ("Replaced", note)
        }
        Some(_) => ("Sealed", format!("ConfigMap {name} holds the marks")),
        None if store.data.as_ref().is_some_and(|d| !d.is_empty()) => {
            let note = format!("Continuing from the marks already in ConfigMap {name}");
            ctx.event(rs, EventType::Normal, "MarksStoreReused", note.clone()).await;
            ("Reused", note)
        }
        None => ("Sealed", format!("ConfigMap {name} holds the marks")),
    };
    Ok((ok(reason, message), Some(MarksStatus { config_map: name, uid }), Some(store)))
}

/// Whether the key is this RemoteSigner's alone in the namespace, and if so, clears it in its
/// store (the signer signs only with a cleared key). Another RemoteSigner naming the same key
/// source, or a store where a signer reported the same public key, is a conflict: the one already
/// cleared keeps the key, else the older RemoteSigner; a store left by a deleted RemoteSigner
/// keeps its marks' key until that ConfigMap is deleted or imported from. Returns the key's name on
/// its chain for the status.
async fn reconcile_key(
    rs: &RemoteSigner,
    ctx: &Context,
    namespace: &str,
    store: Option<&ConfigMap>,
    initial: Option<Result<InitialMarks, Outcome>>,
) -> Result<(Outcome, Option<String>, Option<Outcome>), Error> {
    let Some(store) = store else {
        let initial = initial.map(|checked| match checked {
            Err(outcome) => outcome,
            Ok(_) => failed("AwaitingStore", "imported once the marks store is usable (see MarksReady)"),
        });
        return Ok((ok("NotChecked", "no marks store to record the key check in"), None, initial));
    };
    let _one_at_a_time = ctx.key_checks.lock().await;
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    let signers: Api<RemoteSigner> = Api::namespaced(ctx.client.clone(), namespace);
    // Fresh reads, not the event that woke us: the decision must see every clearance so far.
    let store = config_maps.get(&store.name_any()).await?;
    let published = published_keys(&store);
    let ours = published.get(desired::SIGNER_KEY).cloned();
    let others = signers.list(&ListParams::default()).await?.items;
    let stores = config_maps.list(&ListParams::default().labels(desired::OWNER_LABEL)).await?.items;
    let source = desired::key_source(&rs.spec.key);
    let conflict = key_conflict(rs, &store, source, ours.as_ref(), &others, &stores);
    // A Tezos companion key is checked the same way, by its public key (it has no other source).
    let companion = published.get(desired::COMPANION_KEY).filter(|_| desired::companion_key_secret(rs).is_some());
    let conflict = conflict.or_else(|| {
        let companion = companion?;
        if ours.as_ref().is_some_and(|k| k.key == companion.key) {
            return Some("the companion key is the consensus key; give it a key of its own".to_string());
        }
        key_conflict(rs, &store, None, Some(companion), &others, &stores)
    });
    let keys: Vec<&PublishedKey> = ours.iter().chain(companion).collect();
    let (initial, withheld, record) =
        initial_marks_for_keys(rs, ctx, namespace, &store, initial, &keys, &conflict).await?;
    // An import wrote to the store: the clearance is written against what is there now.
    let store = if record.is_some() { config_maps.get(&store.name_any()).await? } else { store };
    let cleared: Vec<String> = cleared_keys(&store).iter().map(|k| k.to_string()).collect();
    let wanted: Vec<String> = match (&conflict, &withheld) {
        (None, None) => keys.iter().map(|k| k.key.clone()).collect(),
        _ => Vec::new(),
    };
    // Withdraw every clearance on a conflict; grant them when the signer has reported its keys
    // (and their initial marks are in), recording what was imported in the same write.
    let withdraw = conflict.is_some() || withheld.is_some();
    if (wanted != cleared && (withdraw || !wanted.is_empty())) || record.is_some() {
        let value = (!wanted.is_empty()).then(|| wanted.join(","));
        let mut annotations = json!({ CLEARED_KEYS_ANNOTATION: value });
        if let Some(digest) = record {
            annotations[initial_marks::INITIAL_MARKS_ANNOTATION] = digest.into();
        }
        let patch = json!({ "metadata": { "resourceVersion": store.resource_version(), "annotations": annotations } });
        config_maps.patch(&store.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        if let Some(conflict) = &conflict {
            ctx.event(rs, EventType::Warning, "KeyInUse", conflict.clone()).await;
        }
    }
    let display = ours.as_ref().map(|k| k.display.clone());
    Ok(match (conflict, withheld, ours) {
        (Some(conflict), _, _) => (failed("KeyInUse", conflict), display, initial),
        (None, Some(why), _) => (
            failed(
                "AwaitingInitialMarks",
                format!("the key is not cleared to sign until its initial marks are in: {why}"),
            ),
            display,
            initial,
        ),
        (None, None, None) => (
            ok(
                "AwaitingSigner",
                "no other RemoteSigner uses this key source; the key is cleared once a signer reports it",
            ),
            display,
            initial,
        ),
        (None, None, Some(key)) => (
            ok("Unique", format!("key {} is used by no other RemoteSigner in namespace {namespace}", key.display)),
            display,
            initial,
        ),
    })
}

/// The initial marks of the signer's `keys`, imported when they are not in the store yet (and no
/// other RemoteSigner holds the key). Returns the InitialMarks condition (when the spec names
/// any), why the keys may not sign yet, and what to record on the store.
async fn initial_marks_for_keys(
    rs: &RemoteSigner,
    ctx: &Context,
    namespace: &str,
    store: &ConfigMap,
    initial: Option<Result<InitialMarks, Outcome>>,
    keys: &[&PublishedKey],
    conflict: &Option<String>,
) -> Result<(Option<Outcome>, Option<String>, Option<String>), Error> {
    let Some(checked) = initial else { return Ok((None, None, None)) };
    let name = store.name_any();
    let recorded = store.annotations().get(initial_marks::INITIAL_MARKS_ANNOTATION);
    let marks = match checked {
        // Once imported, the marks are the store's: a source deleted since is no loss.
        Err(Err((reason, _))) if recorded.is_some() && reason == "InitialMarksNotFound" => {
            return Ok((Some(ok("Imported", format!("imported into ConfigMap {name} earlier"))), None, None));
        }
        // The key signs nothing before its marks are in; marks imported earlier keep protecting it.
        Err(outcome) => {
            let why = outcome.clone().err().map(|(_, message)| message);
            return Ok((Some(outcome), why.filter(|_| recorded.is_none()), None));
        }
        Ok(marks) => marks,
    };
    if keys.is_empty() || conflict.is_some() {
        let waiting = format!(
            "{} checked; imported into ConfigMap {name} when a signer reports its key, before the key may sign",
            marks.source
        );
        return Ok((Some(ok("AwaitingSigner", waiting)), None, None));
    }
    let digest = marks.digest(keys);
    if recorded == Some(&digest) {
        return Ok((Some(initial_marks::imported(&marks, &name, None)), None, None));
    }
    match marks.import(rs, &ctx.client, namespace, &name, keys).await? {
        Ok(changes) => {
            let outcome = initial_marks::imported(&marks, &name, Some(&changes));
            let note = outcome.clone().map(|(_, message)| message).unwrap_or_default();
            ctx.event(rs, EventType::Normal, "InitialMarksImported", note).await;
            Ok((Some(outcome), None, Some(digest)))
        }
        Err(why) => {
            let message = format!("{why}; nothing imported");
            ctx.event(rs, EventType::Warning, "InitialMarksRejected", message.clone()).await;
            Ok((Some(failed("InitialMarksRejected", message.clone())), Some(message), None))
        }
    }
}

/// Why `rs` may not use a key of its signer (`ours`, from `source` when it has one), if another
/// RemoteSigner (or a deleted one's store) holds it under any name.
fn key_conflict(
    rs: &RemoteSigner,
    store: &ConfigMap,
    source: Option<String>,
    ours: Option<&PublishedKey>,
    signers: &[RemoteSigner],
    stores: &[ConfigMap],
) -> Option<String> {
    let name = rs.name_any();
    let older =
        |other: &RemoteSigner| (other.creation_timestamp(), other.name_any()) < (rs.creation_timestamp(), name.clone());
    for other in signers.iter().filter(|o| o.name_any() != name && o.meta().deletion_timestamp.is_none()) {
        let other_store = stores.iter().find(|s| s.name_any() == desired::ratchet_name(&other.name_any()));
        let theirs = match (other_store, ours) {
            (Some(s), Some(ours)) => published_keys(s).into_values().find(|k| k.key == ours.key),
            (Some(s), None) => published_keys(s).remove(desired::SIGNER_KEY),
            _ => None,
        };
        let same_source = source.is_some() && source == desired::key_source(&other.spec.key);
        let same_key = ours.is_some() && theirs.as_ref().map(|k| &k.key) == ours.map(|k| &k.key);
        if !(same_source || same_key) {
            continue;
        }
        let theirs_cleared = match (other_store, &theirs) {
            (Some(s), Some(key)) => cleared_keys(s).contains(&key.key.as_str()),
            _ => false,
        };
        let ours_cleared = ours.is_some_and(|k| cleared_keys(store).contains(&k.key.as_str()));
        if theirs_cleared || (!ours_cleared && older(other)) {
            let what = if same_source { "the same key source" } else { "the same public key" };
            return Some(format!(
                "RemoteSigner {} already uses {what}{}; two signers on one key keep two sets of marks and could sign \
                 twice at one height. Delete one of them, or give this one another key",
                other.name_any(),
                theirs.map(|k| format!(" ({})", k.display)).unwrap_or_default()
            ));
        }
    }
    let ours = ours?;
    for other in stores.iter().filter(|s| s.name_any() != store.name_any()) {
        let owner = other.labels().get(desired::OWNER_LABEL).cloned().unwrap_or_default();
        if other.name_any() != desired::ratchet_name(&owner) {
            continue; // a signer config, not a store
        }
        let alive = signers.iter().any(|s| s.name_any() == owner && s.meta().deletion_timestamp.is_none());
        let has_marks = other.data.as_ref().is_some_and(|d| !d.is_empty());
        let same = published_keys(other).values().any(|k| k.key == ours.key);
        if same && !alive && has_marks {
            return Some(format!(
                "the marks of key {} are in ConfigMap {}, left by RemoteSigner {owner}, which was deleted; starting \
                 from an empty store could sign again what it signed. Import them (`sigil-signer ratchet import \
                 --from-sigil-configmap`) or, if they are obsolete, delete ConfigMap {}",
                ours.display,
                other.name_any(),
                other.name_any()
            ));
        }
    }
    None
}

/// Deletes this RemoteSigner's children of one kind (by label, and controlled by it) other than
/// `keep`: access that is no longer needed goes. Never used for ConfigMaps: the marks store
/// carries the label too, and the operator never deletes marks.
async fn delete_orphans<K>(api: &Api<K>, rs: &RemoteSigner, keep: &[&str]) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let selector = format!("{}={},{}={}", desired::OWNER_LABEL, rs.name_any(), MANAGED_BY.0, MANAGED_BY.1);
    for child in api.list(&ListParams::default().labels(&selector)).await? {
        let name = child.name_any();
        // Ours only: labels can be copied, the owner's UID cannot.
        let owned =
            child.owner_references().iter().any(|o| o.controller == Some(true) && Some(&o.uid) == rs.uid().as_ref());
        if keep.contains(&name.as_str()) || !owned {
            continue;
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

async fn reconcile_identity(
    rs: &RemoteSigner,
    ctx: &Context,
    namespace: &str,
    annotations: &BTreeMap<String, String>,
) -> Result<Outcome, Error> {
    let account = desired::service_account(rs);
    // A ServiceAccount annotated before, and no longer the one in the spec: release it.
    let previous = rs.status.as_ref().and_then(|s| s.identity_service_account.clone());
    if let Some(previous) = previous.filter(|p| *p != account || annotations.is_empty()) {
        release(ctx, namespace, &previous).await?;
    }
    if annotations.is_empty() {
        return Ok(ok("NotRequested", "spec.workloadIdentity is not set; nothing to annotate"));
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), namespace);
    if accounts.get_metadata_opt(&account).await?.is_none() {
        return Ok(failed(
            "ServiceAccountNotFound",
            format!(
                "ServiceAccount {account} (spec.serviceAccountName) does not exist in namespace {namespace}; create it"
            ),
        ));
    }
    // No force: an annotation the user manages themselves is a conflict to report, not to take over.
    let patch = desired::service_account_patch(&account, namespace, annotations);
    match accounts.patch(&account, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(&patch)).await {
        Ok(_) => Ok(ok(
            "Annotated",
            format!("ServiceAccount {account} carries {}", annotations.keys().cloned().collect::<Vec<_>>().join(", ")),
        )),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(failed(
            "AnnotationConflict",
            format!("another manager owns an identity annotation on ServiceAccount {account}: {}", status.message),
        )),
        Err(error) => Err(error.into()),
    }
}

/// Removes the identity annotations we applied (applying none releases them).
async fn release(ctx: &Context, namespace: &str, account: &str) -> Result<(), Error> {
    let accounts: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), namespace);
    if accounts.get_metadata_opt(account).await?.is_none() {
        return Ok(());
    }
    let patch = desired::service_account_patch(account, namespace, &BTreeMap::new());
    accounts.patch(account, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(&patch)).await?;
    Ok(())
}

async fn release_identity(rs: &RemoteSigner, ctx: &Context, namespace: &str) -> Result<(), Error> {
    let account = rs
        .status
        .as_ref()
        .and_then(|s| s.identity_service_account.clone())
        .unwrap_or_else(|| desired::service_account(rs));
    release(ctx, namespace, &account).await
}

async fn remove_finalizer(signers: &Api<RemoteSigner>, rs: &RemoteSigner) -> Result<(), Error> {
    let remaining: Vec<String> = rs.finalizers().iter().filter(|f| *f != IDENTITY_FINALIZER).cloned().collect();
    set_finalizers(signers, rs, &remaining).await
}

/// A merge patch guarded by resourceVersion: never overwrites someone else's concurrent change.
async fn set_finalizers(signers: &Api<RemoteSigner>, rs: &RemoteSigner, finalizers: &[String]) -> Result<(), Error> {
    let patch = json!({ "metadata": { "finalizers": finalizers, "resourceVersion": rs.resource_version() } });
    signers.patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Reconcile paths against an API server in memory ([`super::fake_api`]): what each leaves in the
/// cluster. The real-cluster tests (`operator/tests/`) cover the same paths end to end.
#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use base64::Engine as _;
    use serde_json::Value;

    use super::*;
    use crate::controller::fake_api::FakeApi;

    const NS: &str = "validators";

    fn context(api: &FakeApi) -> Arc<Context> {
        Context::new(api.client(), Arc::default(), ImagePolicy::new("ghcr.io/sigil-dev/sigil-signer:test", &[]))
    }

    /// A Tezos RemoteSigner `baker` with its key Secret, and `spec` merged into its spec.
    fn baker(api: &FakeApi, spec: Value) -> RemoteSigner {
        api.insert(json!({ "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": "baker-key", "namespace": NS }, "data": { "secret": "ZWRzaw==" } }));
        let mut object = json!({ "apiVersion": "sigil.dev/v1alpha1", "kind": "RemoteSigner",
            "metadata": { "name": "baker", "namespace": NS, "generation": 1 },
            "spec": { "protocol": "Tezos", "key": { "secretRef": { "name": "baker-key", "key": "secret" } },
                      "tezos": { "allow": ["block"] } } });
        if let (Some(base), Some(extra)) = (object["spec"].as_object_mut(), spec.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(api.insert(object)).unwrap()
    }

    /// The RemoteSigner as the store has it now (status, finalizers).
    fn current(api: &FakeApi, name: &str) -> RemoteSigner {
        serde_json::from_value(api.get("RemoteSigner", NS, name).expect("the RemoteSigner")).unwrap()
    }

    #[test]
    fn the_proof_of_possession_condition_follows_the_window() {
        let now: Timestamp = "2026-12-02T12:00:00Z".parse().unwrap();
        let mut rs = RemoteSigner::new("baker", crate::api::RemoteSignerSpec::atto("key", "seed", Vec::new()));
        assert_eq!(proof_of_possession(&rs, now), (None, None), "not asked for: no condition");
        rs.spec.tezos = Some(crate::api::TezosSpec { allow_proof_of_possession: true, ..Default::default() });
        assert!(matches!(proof_of_possession(&rs, now), (Some(Ok(_)), None)));
        rs.spec.tezos.as_mut().unwrap().proof_of_possession_until = Some("2026-12-02T12:30:00Z".into());
        let (outcome, ends) = proof_of_possession(&rs, now);
        assert_eq!(outcome.unwrap().unwrap().0, "Allowed");
        assert_eq!(ends, Some(Duration::from_secs(1800)), "back when the window ends");
        let later: Timestamp = "2026-12-02T12:30:00Z".parse().unwrap();
        let (outcome, ends) = proof_of_possession(&rs, later);
        assert_eq!((outcome.unwrap().unwrap_err().0, ends), ("Ended".to_string(), None));
    }

    fn condition(rs: &RemoteSigner, type_: &str) -> (String, String) {
        let condition = rs.status.as_ref().and_then(|s| s.condition(type_)).expect(type_);
        (condition.status.clone(), condition.reason.clone())
    }

    fn token(api: &FakeApi) -> BTreeMap<String, String> {
        let secret = api.get("Secret", NS, "baker-token").expect("the token Secret");
        let data = secret["data"].as_object().cloned().unwrap_or_default();
        let decode = |v: &Value| {
            let bytes = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default()).unwrap();
            String::from_utf8(bytes).unwrap()
        };
        data.iter().map(|(k, v)| (k.clone(), decode(v))).collect()
    }

    #[tokio::test]
    async fn a_new_remote_signer_gets_its_children_and_a_status() {
        let api = FakeApi::default();
        let rs = baker(&api, json!({}));
        reconcile_inner(&rs, &context(&api)).await.unwrap();

        assert_eq!(token(&api)["token"].len(), 64);
        let config = api.get("ConfigMap", NS, "baker-config").expect("the signer config");
        assert!(config["data"]["signer.yaml"].as_str().unwrap().contains("allow:\n      - block"), "{config}");
        let store = api.get("ConfigMap", NS, "baker-ratchet").expect("the marks store");
        assert!(store["metadata"]["ownerReferences"].is_null(), "the marks outlive the RemoteSigner");
        assert_eq!(store["metadata"]["annotations"][SEAL_ANNOTATION], store["metadata"]["uid"]);
        assert!(
            api.get("Role", NS, "baker-ratchet").is_some() && api.get("RoleBinding", NS, "baker-ratchet").is_some()
        );

        let rs = current(&api, "baker");
        let status = rs.status.clone().unwrap();
        assert_eq!(status.key_backend.as_deref(), Some("secretRef"));
        assert_eq!(status.signers.as_deref(), Some("0/0"));
        assert_eq!(status.marks.map(|m| m.uid), store["metadata"]["uid"].as_str().map(String::from));
        for type_ in [status::TOKEN_READY, status::CONFIG_READY, status::MARKS_READY, status::IDENTITY_READY] {
            assert_eq!(condition(&rs, type_).0, "True", "{type_}: {:?}", rs.status);
        }
        // No signer has reported its key yet (the webhook may inject pods meanwhile: their signer
        // waits for the key check), and no pod runs.
        assert_eq!(condition(&rs, status::KEY_READY), ("True".into(), "AwaitingSigner".into()));
        assert_eq!(condition(&rs, status::READY).0, "True");
        assert_eq!(condition(&rs, status::SIGNERS_READY), ("False".into(), "NoInjectedPods".into()));
    }

    #[tokio::test]
    async fn an_update_renders_the_config_again() {
        let api = FakeApi::default();
        let rs = baker(&api, json!({}));
        let ctx = context(&api);
        reconcile_inner(&rs, &ctx).await.unwrap();
        let token_before = token(&api);

        let mut changed = current(&api, "baker");
        changed.spec.tezos.as_mut().unwrap().allow = vec!["block".into(), "attestation".into()];
        changed.metadata.generation = Some(2);
        reconcile_inner(&changed, &ctx).await.unwrap();
        let config = api.get("ConfigMap", NS, "baker-config").unwrap();
        assert!(config["data"]["signer.yaml"].as_str().unwrap().contains("- attestation"), "{config}");
        assert_eq!(token(&api), token_before, "a spec change is no rotation");
        assert_eq!(current(&api, "baker").status.unwrap().observed_generation, Some(2));
    }

    #[tokio::test]
    async fn a_rotation_that_is_due_issues_a_new_token_and_keeps_the_previous() {
        let api = FakeApi::default();
        let rs = baker(&api, json!({ "token": { "rotationInterval": "24h", "gracePeriod": "10m" } }));
        let ctx = context(&api);
        reconcile_inner(&rs, &ctx).await.unwrap();
        let first = token(&api)["token"].clone();

        // Two days later, as far as the Secret tells.
        let mut secret = api.get("Secret", NS, "baker-token").unwrap();
        let long_ago = (Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_hours(48)).to_string();
        secret["metadata"]["annotations"][desired::ROTATED_AT] = long_ago.into();
        api.insert(secret);
        reconcile_inner(&current(&api, "baker"), &ctx).await.unwrap();

        let rotated = token(&api);
        assert_ne!(rotated["token"], first);
        assert_eq!(rotated["token.previous"], first, "the previous token stays valid through the grace period");
        let secret = api.get("Secret", NS, "baker-token").unwrap();
        assert!(!secret["metadata"]["annotations"][desired::PREVIOUS_UNTIL].is_null(), "{secret}");
    }

    #[tokio::test]
    async fn deletion_releases_the_identity_and_then_the_finalizer() {
        let api = FakeApi::default();
        api.insert(json!({ "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": { "name": "baker", "namespace": NS, "annotations": { "team": "validators" } } }));
        let identity = json!({ "serviceAccountName": "baker",
            "workloadIdentity": { "gcpServiceAccount": "baker@p.iam.gserviceaccount.com" } });
        let rs = baker(&api, identity);
        let ctx = context(&api);
        // The finalizer first, then the annotations.
        reconcile_inner(&rs, &ctx).await.unwrap();
        assert_eq!(current(&api, "baker").finalizers(), [IDENTITY_FINALIZER]);
        reconcile_inner(&current(&api, "baker"), &ctx).await.unwrap();
        let account = api.get("ServiceAccount", NS, "baker").unwrap();
        assert_eq!(
            account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"],
            "baker@p.iam.gserviceaccount.com"
        );

        let mut deleting = current(&api, "baker");
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()));
        reconcile_inner(&deleting, &ctx).await.unwrap();
        let account = api.get("ServiceAccount", NS, "baker").unwrap();
        assert!(account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].is_null(), "{account}");
        assert_eq!(account["metadata"]["annotations"]["team"], "validators", "not ours: kept");
        assert!(current(&api, "baker").finalizers().is_empty());
    }

    /// A pod labelled for `baker`: with the injected signer (Ready or not) or without, and a phase.
    fn pod(api: &FakeApi, name: &str, injected: Option<bool>, phase: &str) {
        let containers = match injected {
            Some(_) => json!([{ "name": CONTAINER, "restartPolicy": "Always" }]),
            None => json!([]),
        };
        let statuses = match injected {
            Some(ready) => {
                json!([{ "name": CONTAINER, "ready": ready, "restartCount": 0, "image": "i", "imageID": "" }])
            }
            None => json!([]),
        };
        api.insert(json!({ "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": name, "namespace": NS, "labels": { SIGNER_LABEL: "baker" } },
            "spec": { "initContainers": containers, "containers": [{ "name": "node" }] },
            "status": { "phase": phase, "initContainerStatuses": statuses } }));
    }

    #[tokio::test]
    async fn signers_ready_counts_the_running_injected_pods() {
        let api = FakeApi::default();
        let rs = baker(&api, json!({}));
        let ctx = context(&api);
        pod(&api, "ready", Some(true), "Running");
        pod(&api, "starting", Some(false), "Pending");
        pod(&api, "evicted", Some(false), "Failed");
        pod(&api, "not-injected", None, "Running");
        reconcile_inner(&rs, &ctx).await.unwrap();
        let rs = current(&api, "baker");
        assert_eq!(rs.status.as_ref().unwrap().signers.as_deref(), Some("1/2"));
        assert_eq!(condition(&rs, status::SIGNERS_READY), ("False".into(), "SignersNotReady".into()));

        pod(&api, "starting", Some(true), "Running");
        reconcile_inner(&rs, &ctx).await.unwrap();
        let rs = current(&api, "baker");
        assert_eq!(rs.status.as_ref().unwrap().signers.as_deref(), Some("2/2"));
        assert_eq!(condition(&rs, status::SIGNERS_READY), ("True".into(), "SignersReady".into()));
    }

    #[tokio::test]
    async fn access_to_the_marks_goes_when_the_store_is_no_longer_a_config_map() {
        let api = FakeApi::default();
        let rs = baker(&api, json!({}));
        let ctx = context(&api);
        reconcile_inner(&rs, &ctx).await.unwrap();
        assert!(api.get("Role", NS, "baker-ratchet").is_some());
        let mut file = current(&api, "baker");
        file.spec.ratchet = Some(serde_json::from_value(json!({ "store": "File" })).unwrap());
        reconcile_inner(&file, &ctx).await.unwrap();
        assert!(
            api.get("Role", NS, "baker-ratchet").is_none() && api.get("RoleBinding", NS, "baker-ratchet").is_none()
        );
        assert!(api.get("ConfigMap", NS, "baker-ratchet").is_some(), "the marks stay");
    }

    #[tokio::test]
    async fn children_deleted_by_hand_come_back_but_never_the_marks_store() {
        let api = FakeApi::default();
        let rs = baker(&api, json!({}));
        let ctx = context(&api);
        reconcile_inner(&rs, &ctx).await.unwrap();
        for (kind, name) in [("Role", "baker-ratchet"), ("RoleBinding", "baker-ratchet"), ("ConfigMap", "baker-config")]
        {
            api.remove(kind, NS, name).unwrap();
        }
        api.remove("Secret", NS, "baker-token").unwrap();
        reconcile_inner(&current(&api, "baker"), &ctx).await.unwrap();
        for (kind, name) in [("Role", "baker-ratchet"), ("RoleBinding", "baker-ratchet"), ("ConfigMap", "baker-config")]
        {
            assert!(api.get(kind, NS, name).is_some(), "{kind} {name} restored");
        }
        assert_eq!(token(&api)["token"].len(), 64, "a new token");

        // The marks are another matter: an empty store in place of a lost one would sign again
        // what was signed.
        api.remove("ConfigMap", NS, "baker-ratchet").unwrap();
        let before = api.requests().len();
        reconcile_inner(&current(&api, "baker"), &ctx).await.unwrap();
        assert!(api.get("ConfigMap", NS, "baker-ratchet").is_none());
        let creates = api.requests()[before..]
            .iter()
            .filter(|r| r.starts_with("POST /api/v1/namespaces/validators/configmaps"))
            .count();
        assert_eq!(creates, 0, "no store was created in place of the lost one");
        let rs = current(&api, "baker");
        assert_eq!(condition(&rs, status::MARKS_READY), ("False".into(), "MarksStoreLost".into()));
        assert_eq!(condition(&rs, status::READY).0, "False");
    }
}

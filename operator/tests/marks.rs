//! The marks and the key across a RemoteSigner's life, on a real API server, with signers started
//! from exactly what the operator rendered and running as the pods' ServiceAccount: the marks
//! outlive their RemoteSigner, a lost store stops signing and is not replaced by an empty one, and
//! a key is one RemoteSigner's.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use common::*;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use sigil_operator::api::{Protocol, RemoteSigner, RemoteSignerSpec, SecretKeyRef};
use sigil_signer::config::SignerConfig;
use sigil_signer::ratchet::configmap::{is_sealed, CLEARED_KEYS_ANNOTATION};
use sigil_tests::cluster::{impersonating_kubeconfig, wait_for, TestCluster};
use sigil_tests::process::Signer;
use sigil_tests::tezos::{consensus, sign, signature, MAINNET};

const BAKER: &str = "edsk3qAQSJaDBSYN2PCMdv7BuJoBKeRyDFq5uPAwDfFRAhQdwHxPMN";
const BAKER_PKH: &str = "tz1SodoUsWVe1Yey9eMFbqRUtNpBWfir5NRr";
/// A tz4 key for the companion (its own key: the companion key is never the consensus key).
const COMPANION: &str = "BLsk1XMDG3iepYGj15mBWc7dYjrkpVVM4VH3y5DyBCN9iAGrELwRbY";
const COMPANION_PKH: &str = "tz4XXtsYav3fZz2FSDa7hcx4F8sh8SaDWNME";

fn tezos_spec(secret: &str) -> RemoteSignerSpec {
    RemoteSignerSpec {
        protocol: Protocol::Tezos,
        atto: None,
        key: sigil_operator::api::KeySpec {
            secret_ref: Some(SecretKeyRef { name: secret.into(), key: "key".into() }),
            ..Default::default()
        },
        ..atto_spec()
    }
}

async fn setup(client: &Client, ns: &str, secrets: &[&str]) -> Result<()> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    accounts
        .create(&PostParams::default(), &serde_json::from_value(json!({ "metadata": { "name": "voter" } }))?)
        .await?;
    for secret in secrets {
        let object = json!({ "metadata": { "name": secret }, "stringData": { "key": BAKER } });
        Api::<Secret>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &serde_json::from_value(object)?)
            .await?;
    }
    Ok(())
}

/// A signer with the operator's rendered config (key, token and ports moved to this machine), as
/// ServiceAccount `voter`: what the sidecar does in the pod.
async fn rendered_signer(cluster: &TestCluster, ns: &str, name: &str, dir: &Path) -> Result<Signer> {
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), ns);
    let rendered = config_maps.get(&format!("{name}-config")).await?;
    let yaml = rendered.data.unwrap_or_default().remove("signer.yaml").context("signer.yaml")?;
    let mut config = SignerConfig::from_yaml(&yaml)?;
    for (key_name, entry) in config.keys.iter_mut() {
        if let Some(local) = entry.local.as_mut() {
            let key = dir.join(format!("{name}-{key_name}.key"));
            std::fs::write(&key, if key_name == "companion" { COMPANION } else { BAKER })?;
            local.secret_key_file = Some(key);
        }
    }
    if let Some(tezos) = config.tezos.as_mut() {
        tezos.listen.set_port(0);
    }
    config.management = Some(sigil_signer::config::ManagementConfig { listen: ([127, 0, 0, 1], 0).into() });
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, config.to_yaml())?;
    let kubeconfig = impersonating_kubeconfig(&cluster.kubeconfig, ns, "voter", dir)?;
    let kubeconfig = kubeconfig.to_str().context("a UTF-8 path")?.to_string();
    Ok(tokio::task::spawn_blocking(move || Signer::start(&path, &[("KUBECONFIG", &kubeconfig)])).await?)
}

async fn attest(addr: SocketAddr, level: u32, payload: u8) -> Result<(u16, String)> {
    tokio::task::spawn_blocking(move || sign(addr, BAKER_PKH, &consensus(0x13, MAINNET, level, 0, payload))).await?
}

/// A Tezos signer with a companion key: the operator clears both keys the signer reports, and
/// the signer, ready only then, signs with each.
#[tokio::test]
async fn a_companion_key_is_cleared_with_the_consensus_key() -> Result<()> {
    let cluster = cluster().await?;
    let namespace = cluster.namespace("marks-companion").await?;
    let (ns, client) = (namespace.name.as_str(), cluster.client.clone());
    setup(&client, ns, &["baker-key", "companion-key"]).await?;
    let _operator = Operator::start(&cluster.kubeconfig, ns, &[])?;
    let mut spec = tezos_spec("baker-key");
    spec.tezos = Some(sigil_operator::api::TezosSpec {
        companion_key_secret_ref: Some(SecretKeyRef { name: "companion-key".into(), key: "key".into() }),
        ..Default::default()
    });
    create(&client, ns, "baker", spec).await?;
    wait_ready(&client, ns, "baker", "True").await?;
    let dir = tempfile::tempdir()?;
    let signer = rendered_signer(&cluster, ns, "baker", dir.path()).await?;
    wait_signer_ready(&signer).await?;
    let store = Api::<ConfigMap>::namespaced(client.clone(), ns).get("baker-ratchet").await?;
    let cleared = store.annotations().get(CLEARED_KEYS_ANNOTATION).cloned().unwrap_or_default();
    assert_eq!(cleared.split(',').count(), 2, "both keys cleared: {cleared}");
    assert_eq!(attest(signer.tezos(), 3, 1).await?.0, 200);
    let tezos = signer.tezos();
    let bls = sigil_tests::tezos::bls_consensus(0x13, MAINNET, 3, 0, 1);
    let (status, body) = tokio::task::spawn_blocking(move || sign(tezos, COMPANION_PKH, &bls)).await??;
    assert_eq!(status, 200, "{body}");
    Ok(())
}

/// `/readyz`: status and reason.
async fn readyz(signer: &Signer) -> Result<(u16, String)> {
    let addr = signer.management;
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr)?;
        write!(stream, "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        anyhow::Ok((status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
    })
    .await?
}

async fn wait_signer_ready(signer: &Signer) -> Result<()> {
    wait_for("the signer's /readyz", DEADLINE, || async { Ok((readyz(signer).await?.0 == 200).then_some(())) }).await
}

/// The reason of one condition, once the status describes the current generation.
async fn wait_condition(client: &Client, ns: &str, name: &str, type_: &str, reason: &str) -> Result<RemoteSigner> {
    let api: Api<RemoteSigner> = Api::namespaced(client.clone(), ns);
    wait_for(&format!("RemoteSigner {name} {type_} {reason}"), DEADLINE, || async {
        let Some(rs) = api.get_opt(name).await? else { return Ok(None) };
        let found = rs.status.as_ref().is_some_and(|s| {
            s.observed_generation == rs.metadata.generation
                && s.conditions.iter().any(|c| c.type_ == type_ && c.reason == reason)
        });
        Ok(found.then_some(rs))
    })
    .await
}

/// Deleting and applying again a RemoteSigner (an Argo CD prune, `kubectl replace --force`) keeps
/// its marks: the re-created one continues from them, and the level signed before stays refused.
#[tokio::test]
async fn a_recreated_remote_signer_continues_from_its_marks() -> Result<()> {
    let cluster = cluster().await?;
    let namespace = cluster.namespace("marks-recreate").await?;
    let (ns, client) = (namespace.name.as_str(), cluster.client.clone());
    setup(&client, ns, &["baker-key"]).await?;
    let _operator = Operator::start(&cluster.kubeconfig, ns, &[])?;
    let signers: Api<RemoteSigner> = Api::namespaced(client.clone(), ns);
    create(&client, ns, "baker", tezos_spec("baker-key")).await?;
    let rs = wait_ready(&client, ns, "baker", "True").await?;
    let first_store = rs.status.and_then(|s| s.marks).context("status.marks")?;
    let dir = tempfile::tempdir()?;

    let signer = rendered_signer(&cluster, ns, "baker", dir.path()).await?;
    wait_signer_ready(&signer).await?;
    let (status, body) = attest(signer.tezos(), 10, 1).await?;
    assert_eq!(status, 200, "{body}");
    let signed = signature(&body).context("a signature")?;
    let rs = wait_condition(&client, ns, "baker", "KeyReady", "Unique").await?;
    assert_eq!(rs.status.unwrap().public_key.as_deref(), Some(BAKER_PKH), "status.publicKey");
    drop(signer);

    signers.delete("baker", &DeleteParams::default()).await?;
    wait_for("the RemoteSigner and its owned children to go", DEADLINE, || async {
        let gone = signers.get_opt("baker").await?.is_none()
            && Api::<ConfigMap>::namespaced(client.clone(), ns).get_opt("baker-config").await?.is_none();
        Ok(gone.then_some(()))
    })
    .await?;
    let store = Api::<ConfigMap>::namespaced(client.clone(), ns).get("baker-ratchet").await?;
    assert!(store.owner_references().is_empty(), "the marks are nobody's child");
    assert!(is_sealed(&store));

    create(&client, ns, "baker", tezos_spec("baker-key")).await?;
    let rs = wait_ready(&client, ns, "baker", "True").await?;
    assert_eq!(rs.status.and_then(|s| s.marks).map(|m| m.uid), Some(first_store.uid), "the same store");
    let signer = rendered_signer(&cluster, ns, "baker", dir.path()).await?;
    wait_signer_ready(&signer).await?;
    let (status, body) = attest(signer.tezos(), 10, 2).await?;
    assert_eq!(status, 409, "another attestation at level 10 must stay refused: {body}");
    let (status, body) = attest(signer.tezos(), 10, 1).await?;
    assert_eq!((status, signature(&body)), (200, Some(signed)), "the same one gets the same signature");
    assert_eq!(attest(signer.tezos(), 11, 2).await?.0, 200);
    Ok(())
}

/// The store deleted under a running signer: no signature, `/readyz` and the RemoteSigner say
/// why, and the operator does not put an empty store in its place. `ratchet init` is the
/// deliberate way back; the signer that lost its store stays stopped until it restarts.
#[tokio::test]
async fn a_deleted_store_stops_signing_and_is_not_replaced() -> Result<()> {
    let cluster = cluster().await?;
    let namespace = cluster.namespace("marks-lost").await?;
    let (ns, client) = (namespace.name.as_str(), cluster.client.clone());
    setup(&client, ns, &["baker-key"]).await?;
    let _operator = Operator::start(&cluster.kubeconfig, ns, &[])?;
    create(&client, ns, "baker", tezos_spec("baker-key")).await?;
    wait_ready(&client, ns, "baker", "True").await?;
    let dir = tempfile::tempdir()?;
    let signer = rendered_signer(&cluster, ns, "baker", dir.path()).await?;
    wait_signer_ready(&signer).await?;
    assert_eq!(attest(signer.tezos(), 5, 1).await?.0, 200);

    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    config_maps.delete("baker-ratchet", &DeleteParams::default()).await?;
    let rs = wait_condition(&client, ns, "baker", "MarksReady", "MarksStoreLost").await?;
    let ready = &rs.status.unwrap().conditions[0];
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "MarksStoreLost"));
    assert!(ready.message.contains("was deleted"), "{}", ready.message);
    wait_for("the signer to notice", DEADLINE, || async {
        let (status, body) = readyz(&signer).await?;
        Ok((status == 503 && body.contains("was deleted")).then_some(()))
    })
    .await?;
    let (status, body) = attest(signer.tezos(), 6, 1).await?;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("refusing to sign"), "{body}");
    assert!(config_maps.get_opt("baker-ratchet").await?.is_none(), "no empty store in its place");

    // The deliberate way back: an operator sets up a new store by hand.
    let admin = dir.path().join("admin.yaml");
    std::fs::write(&admin, format!("keys: {{validator: {{local: {{secretKey: {BAKER}}}}}}}\nratchet: {{configMap: {{name: baker-ratchet, namespace: {ns}}}}}\ntezos: {{keys: {{validator: {{allow: [block]}}}}}}\n"))?;
    let output = std::process::Command::new(sigil_tests::process::signer_binary()?)
        .args(["--config", admin.to_str().unwrap(), "ratchet", "init"])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .output()?;
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && said.contains("created and sealed"),
        "{said}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let replaced = config_maps.get("baker-ratchet").await?.uid();
    let signers: Api<RemoteSigner> = Api::namespaced(client.clone(), ns);
    wait_for("the operator to adopt the store set up by hand", DEADLINE, || async {
        let rs = signers.get("baker").await?;
        let ready = rs.status.as_ref().and_then(|s| s.conditions.first()).is_some_and(|c| c.status == "True");
        Ok((ready && rs.status.and_then(|s| s.marks).map(|m| m.uid) == replaced).then_some(()))
    })
    .await?;
    // The signer that lost its store does not adopt the new one.
    assert_eq!(attest(signer.tezos(), 7, 1).await?.0, 503);
    let restarted = rendered_signer(&cluster, ns, "baker", dir.path()).await?;
    wait_signer_ready(&restarted).await?;
    assert_eq!(attest(restarted.tezos(), 7, 1).await?.0, 200);
    Ok(())
}

/// Two RemoteSigners on one key: the second is refused whether it names the same Secret (seen
/// before any pod runs) or another Secret holding the same key (seen once its signer reports the
/// key, which it then may not use).
#[tokio::test]
async fn one_key_belongs_to_one_remote_signer() -> Result<()> {
    let cluster = cluster().await?;
    let namespace = cluster.namespace("marks-key").await?;
    let (ns, client) = (namespace.name.as_str(), cluster.client.clone());
    setup(&client, ns, &["key-a", "key-copy"]).await?;
    let _operator = Operator::start(&cluster.kubeconfig, ns, &[])?;
    create(&client, ns, "first", tezos_spec("key-a")).await?;
    wait_ready(&client, ns, "first", "True").await?;
    let dir = tempfile::tempdir()?;
    let first = rendered_signer(&cluster, ns, "first", dir.path()).await?;
    wait_signer_ready(&first).await?;
    assert_eq!(attest(first.tezos(), 20, 1).await?.0, 200);

    create(&client, ns, "same-secret", tezos_spec("key-a")).await?;
    let rs = wait_condition(&client, ns, "same-secret", "KeyReady", "KeyInUse").await?;
    let ready = &rs.status.unwrap().conditions[0];
    assert_eq!(ready.status, "False");
    assert!(ready.message.contains("RemoteSigner first already uses the same key source"), "{}", ready.message);

    create(&client, ns, "copy", tezos_spec("key-copy")).await?;
    wait_ready(&client, ns, "copy", "True").await?;
    let copy = rendered_signer(&cluster, ns, "copy", dir.path()).await?;
    let rs = wait_condition(&client, ns, "copy", "KeyReady", "KeyInUse").await?;
    let message = &rs.status.unwrap().conditions[0].message;
    assert!(message.contains("RemoteSigner first already uses the same public key"), "{message}");
    let (status, body) = attest(copy.tezos(), 20, 2).await?;
    assert_eq!(status, 503, "the copy's signer must not sign: {body}");
    assert!(body.contains("not cleared"), "{body}");
    let (status, body) = readyz(&copy).await?;
    assert!(status == 503 && body.contains("not yet cleared"), "{body}");
    let store = Api::<ConfigMap>::namespaced(client.clone(), ns).get("copy-ratchet").await?;
    assert!(!store.annotations().contains_key(CLEARED_KEYS_ANNOTATION), "{:?}", store.annotations());
    Ok(())
}

/// A marks interchange document (docs/ratchet.md) for `key_hash` on `chain`: attested and baked
/// at `level`.
fn marks_document(chain: &str, key_hash: &str, level: u64) -> String {
    let mark = |stream: &str| json!({ "stream": stream, "level": level, "round": 0 });
    json!({
        "interchangeFormatVersion": 1,
        "exporter": "converted from octez-signer",
        "chains": [{ "protocol": "tezos", "chainId": chain, "keys": [{
            "keyHash": key_hash, "marks": [mark("block"), mark("attestation")],
        }] }],
    })
    .to_string()
}

async fn put_document(client: &Client, ns: &str, document: &str) -> Result<()> {
    let object = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "old-marks" }, "data": { "marks.json": document } });
    let params = PatchParams::apply("test").force();
    Api::<ConfigMap>::namespaced(client.clone(), ns).patch("old-marks", &params, &Patch::Apply(&object)).await?;
    Ok(())
}

fn with_initial_marks(mut spec: RemoteSignerSpec, initial: serde_json::Value) -> Result<RemoteSignerSpec> {
    spec.ratchet = Some(serde_json::from_value(json!({ "initialMarks": initial }))?);
    Ok(spec)
}

/// A key that signed under another signer: its RemoteSigner names the old signer's marks. Until
/// the document exists the RemoteSigner is not Ready and a labelled pod is refused at admission
/// (through the real webhook), saying what is missing; then the marks are imported before the key
/// may sign, the signer signs only above them, and a lower document applied later changes nothing.
#[tokio::test]
async fn initial_marks_refuse_pods_until_imported_then_hold() -> Result<()> {
    let cluster = cluster().await?;
    let namespace = cluster.namespace("marks-initial").await?;
    let (ns, client) = (namespace.name.as_str(), cluster.client.clone());
    let _cleanup = WebhookCleanup(cluster.kubeconfig.clone(), ns.to_string());
    setup(&client, ns, &["baker-key"]).await?;
    let args = webhook_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _operator = Operator::start(&cluster.kubeconfig, ns, &args)?;
    let reference = json!({ "configMapKeyRef": { "name": "old-marks", "key": "marks.json" } });
    create(&client, ns, "baker", with_initial_marks(tezos_spec("baker-key"), reference)?).await?;
    let rs = wait_condition(&client, ns, "baker", "InitialMarks", "InitialMarksNotFound").await?;
    assert_eq!(rs.status.unwrap().conditions[0].status, "False", "not Ready without its marks");
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    webhook_active(&pods).await?;
    let refused = pods.create(&PostParams::default(), &pod("node", Some("baker"))).await.unwrap_err().to_string();
    assert!(
        refused.contains("ConfigMap old-marks key marks.json (spec.ratchet.initialMarks) does not exist"),
        "{refused}"
    );

    put_document(&client, ns, &marks_document("NetXdQprcVkpaWU", BAKER_PKH, 100)).await?;
    wait_condition(&client, ns, "baker", "InitialMarks", "AwaitingSigner").await?;
    wait_ready(&client, ns, "baker", "True").await?;
    pods.create(&PostParams::default(), &pod("node", Some("baker"))).await?;
    let dir = tempfile::tempdir()?;
    let signer = rendered_signer(&cluster, ns, "baker", dir.path()).await?;
    wait_signer_ready(&signer).await?;
    let rs = wait_condition(&client, ns, "baker", "InitialMarks", "Imported").await?;
    let message = &rs.status.unwrap().condition("InitialMarks").unwrap().message.clone();
    assert!(message.contains("attestation: set to level 100 round 0 step 0 (was empty)"), "{message}");
    let (status, body) = attest(signer.tezos(), 100, 1).await?;
    assert_eq!(status, 409, "level 100 was attested by the old signer: {body}");
    assert_eq!(attest(signer.tezos(), 101, 1).await?.0, 200);

    // An older document applied later (a stale Git revision) lowers nothing.
    put_document(&client, ns, &marks_document("NetXdQprcVkpaWU", BAKER_PKH, 50)).await?;
    wait_for("the older document to be read", DEADLINE, || async {
        let rs = wait_condition(&client, ns, "baker", "InitialMarks", "Imported").await?;
        let message = rs.status.unwrap().condition("InitialMarks").unwrap().message.clone();
        Ok(message.contains("already at or above every mark").then_some(()))
    })
    .await?;
    assert_eq!(attest(signer.tezos(), 101, 2).await?.0, 409, "101 stays signed");
    assert_eq!(attest(signer.tezos(), 102, 1).await?.0, 200);
    Ok(())
}

/// A document that does not fit: a wrong chain id is a clear condition before any signer runs,
/// and nothing is imported; a document for another key is refused when the signer reports its
/// key, which then stays uncleared (the signer signs nothing). A fence holds like marks.
#[tokio::test]
async fn initial_marks_that_do_not_fit_import_nothing() -> Result<()> {
    let cluster = cluster().await?;
    let namespace = cluster.namespace("marks-misfit").await?;
    let (ns, client) = (namespace.name.as_str(), cluster.client.clone());
    setup(&client, ns, &["baker-key"]).await?;
    let _operator = Operator::start(&cluster.kubeconfig, ns, &[])?;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let mut spec = tezos_spec("baker-key");
    spec.tezos = Some(sigil_operator::api::TezosSpec { chains: vec!["NetXdQprcVkpaWU".into()], ..Default::default() });
    let reference = json!({ "configMapKeyRef": { "name": "old-marks", "key": "marks.json" } });
    put_document(&client, ns, &marks_document("NetXnHfVqm9iesp", BAKER_PKH, 100)).await?;
    create(&client, ns, "baker", with_initial_marks(spec.clone(), reference)?).await?;
    let rs = wait_condition(&client, ns, "baker", "InitialMarks", "InitialMarksInvalid").await?;
    let ready = &rs.status.unwrap().conditions[0];
    assert_eq!(ready.status, "False");
    assert!(ready.message.contains("signs on NetXdQprcVkpaWU, not on NetXnHfVqm9iesp"), "{}", ready.message);
    let store = config_maps.get("baker-ratchet").await?;
    assert!(store.data.as_ref().is_none_or(|d| d.is_empty()), "nothing imported");

    // The right chain, another key: refused once the signer reports its key.
    put_document(&client, ns, &marks_document("NetXdQprcVkpaWU", COMPANION_PKH, 100)).await?;
    wait_ready(&client, ns, "baker", "True").await?;
    let dir = tempfile::tempdir()?;
    let signer = rendered_signer(&cluster, ns, "baker", dir.path()).await?;
    let rs = wait_condition(&client, ns, "baker", "InitialMarks", "InitialMarksRejected").await?;
    let message = rs.status.unwrap().condition("InitialMarks").unwrap().message.clone();
    assert!(message.contains(&format!("no configured key is {COMPANION_PKH}")), "{message}");
    let (status, body) = attest(signer.tezos(), 200, 1).await?;
    assert_eq!(status, 503, "the key is not cleared: {body}");
    let store = config_maps.get("baker-ratchet").await?;
    assert!(store.data.as_ref().is_none_or(|d| d.is_empty()), "nothing imported");
    assert!(!store.annotations().contains_key(CLEARED_KEYS_ANNOTATION), "{:?}", store.annotations());

    // A fence instead (its chain: the key's one chain): nothing below it, then signing.
    let signers: Api<RemoteSigner> = Api::namespaced(client.clone(), ns);
    let patch =
        json!({ "spec": { "ratchet": { "initialMarks": { "configMapKeyRef": null, "fence": { "level": 300 } } } } });
    signers.patch("baker", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    wait_condition(&client, ns, "baker", "InitialMarks", "Imported").await?;
    wait_signer_ready(&signer).await?;
    assert_eq!(attest(signer.tezos(), 299, 1).await?.0, 409, "below the fence");
    assert_eq!(attest(signer.tezos(), 300, 1).await?.0, 200);
    Ok(())
}

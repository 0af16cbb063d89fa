//! The product as users install it, in real pods: the chart with the images built here, on the
//! kind cluster assembled on this machine (tests/src/kind.rs). What kwok cannot show: containers
//! that run, the kubelet delivering Secrets, probes, native sidecars, the container runtime.
//!
//! These tests share one cluster and one chart installation, and run one at a time (the nextest
//! group `kind` in .config/nextest.toml).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use base64::Engine as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use sigil_signer::keys::tezos as encoding;
use sigil_signer::keys::{Algorithm, PublicKey, SecretKey};
use sigil_tests::cluster::wait_for;
use sigil_tests::kind::{run, Kind, PortForward, RELEASE, SYSTEM};

const BAKER: &str = "edsk3qAQSJaDBSYN2PCMdv7BuJoBKeRyDFq5uPAwDfFRAhQdwHxPMN";
const BAKER_PKH: &str = "tz1SodoUsWVe1Yey9eMFbqRUtNpBWfir5NRr";
const DEADLINE: Duration = Duration::from_secs(180);

/// `kubectl apply` of YAML documents in `namespace`.
fn apply(kind: &Kind, namespace: &str, yaml: &str) -> Result<()> {
    let mut child = kind
        .kubectl()
        .args(["-n", namespace, "apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(yaml.as_bytes())?;
    let output = child.wait_with_output()?;
    ensure!(output.status.success(), "kubectl apply: {}\n{yaml}", String::from_utf8_lossy(&output.stderr));
    Ok(())
}

/// Waits for a condition with `kubectl wait`, showing the object when it does not come.
fn wait(kind: &Kind, namespace: &str, object: &str, condition: &str) -> Result<()> {
    let timeout = format!("--timeout={}s", DEADLINE.as_secs());
    let waited = run(kind.kubectl().args(["-n", namespace, "wait", object, &format!("--for={condition}"), &timeout]));
    if let Err(error) = waited {
        let shown = run(kind.kubectl().args(["-n", namespace, "get", object, "-o", "yaml"])).unwrap_or_default();
        let pods = run(kind.kubectl().args(["-n", namespace, "get", "pods", "-o", "wide"])).unwrap_or_default();
        bail!("{error}\n{shown}\n{pods}");
    }
    Ok(())
}

/// The lines a Job's pod printed, parsed, once the Job is complete.
async fn job_output(kind: &Kind, namespace: &str, job: &str) -> Result<Vec<serde_json::Value>> {
    wait(kind, namespace, &format!("job/{job}"), "condition=Complete")?;
    let pod = kind.pods(namespace, &format!("job-name={job}")).await?.first().context("the Job's pod")?.name_any();
    let lines = kind.logs(namespace, &pod, "node").await?;
    Ok(lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

/// A Job whose one container runs pod-client with `args` beside the signer of `signer`.
fn client_job(name: &str, signer: &str, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: {name}}}\nspec:\n  backoffLimit: 0\n  template:\n    \
         metadata: {{labels: {{sigil.dev/signer: {signer}}}}}\n    spec:\n      serviceAccountName: validator\n      \
         restartPolicy: Never\n      containers:\n      - name: node\n        image: sigil-clients:dev\n        \
         imagePullPolicy: Never\n        args: [{}]\n",
        args.join(", ")
    )
}

fn statuses(lines: &[serde_json::Value]) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for line in lines {
        *counts.entry(line["status"].as_u64().unwrap_or(0)).or_default() += 1;
    }
    counts
}

/// A Tezos signature in a client's line, checked against the key (the attestation pod-client
/// sends: BLS mode for a tz4 key).
fn verify_tezos(public_key: &PublicKey, line: &serde_json::Value) -> Result<()> {
    use sigil_tests::tezos::{bls_consensus, consensus, MAINNET};
    let level = u32::try_from(line["level"].as_u64().context("level")?)?;
    let build = if public_key.algorithm() == Algorithm::Bls12_381 { bls_consensus } else { consensus };
    let data = build(0x13, MAINNET, level, 0, 1);
    let signature =
        encoding::parse_signature(line["signature"].as_str().context("signature")?, public_key.algorithm())?;
    encoding::verify(public_key, &data, &signature).map_err(|e| anyhow::anyhow!("level {level}: {e}"))
}

/// An Atto voter, a Tezos baker (a local key, and a key in SoftHSM loaded by the signer image's
/// glibc with dlopen) and a CometBFT v1.0 validator, each in a pod of its own with the signer the
/// webhook injected: every client signs through its pod's loopback, and the CometBFT node makes
/// blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_every_protocol_sign_through_their_injected_signers() -> Result<()> {
    let kind = Kind::get().await?;
    let namespace = kind.cluster.namespace("pods").await?;
    let ns = namespace.name.as_str();
    let work = tempfile::tempdir()?;

    // A SoftHSM token made on this machine, baked into a test image derived from the signer's.
    let module = sigil_tests::process::e2e_lib("softhsm")?;
    let conf = sigil_tests::softhsm::token(work.path());
    let hsm_keys = sigil_tests::softhsm::generate(&module, &conf);
    let (_, hsm_key) = hsm_keys.iter().find(|(label, _)| *label == "p256").context("a P-256 key")?;
    let context = work.path().join("image");
    std::fs::create_dir_all(&context)?;
    run(std::process::Command::new("cp").arg("-a").arg(work.path().join("tokens")).arg(&context))?;
    kind.image(
        "sigil-signer:test-hsm-token",
        &context,
        "FROM sigil-signer:test-softhsm\nCOPY --chown=65532:65532 tokens/ /var/lib/softhsm/tokens/\n",
    )?;

    // The baker attested up to level 104 under its previous signer: a marks interchange document.
    let old_marks = serde_json::json!({
        "interchangeFormatVersion": 1,
        "chains": [{ "protocol": "tezos", "chainId": "NetXdQprcVkpaWU", "keys": [{
            "keyHash": BAKER_PKH, "marks": [{ "stream": "attestation", "level": 104, "round": 0 }],
        }] }],
    });
    let atto_seed = "11".repeat(32);
    let cometbft_key = SecretKey::from_bytes(Algorithm::Ed25519, &[0x22; 32])?;
    let cometbft_seed = base64::engine::general_purpose::STANDARD.encode(cometbft_key.to_bytes().as_slice());
    apply(
        &kind,
        ns,
        &format!(
            r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: validator}}
---
apiVersion: v1
kind: Secret
metadata: {{name: keys}}
stringData: {{atto: "{atto_seed}", tezos: "{BAKER}", cometbft: "{cometbft_seed}", pin: "1234"}}
---
apiVersion: sigil.dev/v1alpha1
kind: RemoteSigner
metadata: {{name: atto}}
spec: {{protocol: Atto, key: {{secretRef: {{name: keys, key: atto}}}}, atto: {{capabilities: [CHALLENGE, VOTE]}}, serviceAccountName: validator}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: tezos-old-marks}}
data: {{marks.json: '{old_marks}'}}
---
apiVersion: sigil.dev/v1alpha1
kind: RemoteSigner
metadata: {{name: tezos}}
spec:
  protocol: Tezos
  key: {{secretRef: {{name: keys, key: tezos}}}}
  ratchet: {{initialMarks: {{configMapKeyRef: {{name: tezos-old-marks, key: marks.json}}}}}}
  serviceAccountName: validator
---
apiVersion: sigil.dev/v1alpha1
kind: RemoteSigner
metadata: {{name: hsm}}
spec:
  protocol: Tezos
  key: {{pkcs11: {{module: /usr/lib/softhsm/libsofthsm2.so, tokenLabel: sigil, keyLabel: p256, pinSecretRef: {{name: keys, key: pin}}}}}}
  sidecar: {{image: "sigil-signer:test-hsm-token"}}
  serviceAccountName: validator
---
apiVersion: sigil.dev/v1alpha1
kind: RemoteSigner
metadata: {{name: cometbft}}
spec: {{protocol: CometBFT, key: {{secretRef: {{name: keys, key: cometbft}}}}, cometbft: {{chainId: sigil-kind, version: v1}}, serviceAccountName: validator}}
"#
        ),
    )?;
    for signer in ["atto", "tezos", "hsm", "cometbft"] {
        wait(&kind, ns, &format!("remotesigner/{signer}"), "condition=Ready")?;
    }

    // The CometBFT node: its genesis names the signer's key as the one validator.
    let public = cometbft_key.public_key();
    let address = hex::encode_upper(sigil_signer::keys::cometbft::address(&public).context("ed25519")?);
    let genesis = serde_json::json!({
        "genesis_time": "2026-12-01T00:00:00Z",
        "chain_id": "sigil-kind",
        "initial_height": "1",
        "validators": [{
            "address": address,
            "pub_key": { "type": "tendermint/PubKeyEd25519", "value": base64::engine::general_purpose::STANDARD.encode(public.as_bytes()) },
            "power": "10",
            "name": "sigil",
        }],
        "app_hash": "",
    });
    let config_maps: Api<ConfigMap> = Api::namespaced(kind.cluster.client.clone(), ns);
    let genesis: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "genesis" }, "data": { "genesis.json": genesis.to_string() },
    }))?;
    config_maps.create(&PostParams::default(), &genesis).await?;
    apply(
        &kind,
        ns,
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: cometbft}
spec:
  selector: {matchLabels: {app: cometbft}}
  template:
    metadata: {labels: {app: cometbft, sigil.dev/signer: cometbft}}
    spec:
      serviceAccountName: validator
      initContainers:
      - {name: init, image: "sigil-clients:dev", imagePullPolicy: Never, command: [cometbft, init, --home, /data],
         env: [{name: CMT_GENESIS_FILE, value: /genesis/genesis.json}],
         volumeMounts: [{name: data, mountPath: /data}, {name: genesis, mountPath: /genesis}]}
      containers:
      - name: node
        image: "sigil-clients:dev"
        imagePullPolicy: Never
        command: [cometbft, start, --home, /data, --proxy_app, kvstore, --priv_validator_laddr, "tcp://127.0.0.1:26659", --rpc.laddr, "tcp://0.0.0.0:26657"]
        env: [{name: CMT_GENESIS_FILE, value: /genesis/genesis.json}]
        volumeMounts: [{name: data, mountPath: /data}, {name: genesis, mountPath: /genesis}]
      volumes:
      - {name: data, emptyDir: {}}
      - {name: genesis, configMap: {name: genesis}}
"#,
    )?;

    let hsm_pkh = encoding::pkh(hsm_key);
    for (job, signer, args) in [
        ("atto-client", "atto", vec!["atto", "--count", "20", "--interval-ms", "0"]),
        ("tezos-client", "tezos", vec!["tezos", "--pkh", BAKER_PKH, "--count", "10", "--start-level", "100"]),
        ("hsm-client", "hsm", vec!["tezos", "--pkh", hsm_pkh.as_str(), "--count", "10", "--start-level", "100"]),
    ] {
        apply(&kind, ns, &client_job(job, signer, &args))?;
    }
    let atto = job_output(&kind, ns, "atto-client").await?;
    let votes: Vec<&serde_json::Value> = atto.iter().filter(|l| l["what"] == "vote").collect();
    ensure!(votes.len() == 20 && votes.iter().all(|l| l["status"] == 200), "Atto votes: {atto:?}");

    let baker = SecretKey::from_bytes(Algorithm::Ed25519, encoding::parse_secret_key(BAKER)?.to_bytes().as_slice())?;
    // The local-key baker signs only above its initial marks (levels 105 to 109).
    for (job, key, expected) in [
        ("tezos-client", baker.public_key(), BTreeMap::from([(200, 5), (409, 5)])),
        ("hsm-client", hsm_key.clone(), BTreeMap::from([(200, 10)])),
    ] {
        let lines = job_output(&kind, ns, job).await?;
        ensure!(statuses(&lines) == expected, "{job}: {lines:?}");
        for line in lines.iter().filter(|l| l["status"] == 200) {
            ensure!(line["level"].as_u64() > Some(104) || job == "hsm-client", "{job} signed {line}");
            verify_tezos(&key, line)?;
        }
    }
    let initial = run(kind
        .cluster
        .tool("kubectl")
        .args(["-n", ns, "get", "remotesigner", "tezos"])
        .args(["-o", "jsonpath={.status.conditions[?(@.type==\"InitialMarks\")].reason}"]))?;
    ensure!(initial.trim() == "Imported", "InitialMarks of remotesigner/tezos: {initial:?}");
    // The same levels again, from a new pod: the marks in the ConfigMap refuse every one.
    apply(
        &kind,
        ns,
        &client_job("tezos-again", "tezos", &["tezos", "--pkh", BAKER_PKH, "--count", "3", "--start-level", "100"]),
    )?;
    let again = job_output(&kind, ns, "tezos-again").await?;
    ensure!(statuses(&again).keys().all(|s| *s != 200), "levels already signed were signed again: {again:?}");

    // CometBFT: blocks, each signed by the injected signer.
    wait(&kind, ns, "deployment/cometbft", "condition=Available")?;
    let pod = kind.pods(ns, "app=cometbft").await?.first().context("the node's pod")?.name_any();
    let rpc = PortForward::start(&kind, ns, &pod, 26657).await?;
    let height = wait_for("the CometBFT node to reach height 5", DEADLINE, || async {
        let (_, body) = sigil_tests::kind::get(rpc.addr, "/status").await.unwrap_or_default();
        let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let height: u64 = status["result"]["sync_info"]["latest_block_height"].as_str().unwrap_or("0").parse()?;
        Ok((height >= 5).then_some(height))
    })
    .await?;
    let metrics = PortForward::start(&kind, ns, &pod, 9091).await?;
    let (_, text) = sigil_tests::kind::get(metrics.addr, "/metrics").await?;
    let precommits = text
        .lines()
        .find(|l| l.starts_with("sigil_signer_signatures_total") && l.contains("cometbft_precommit"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    ensure!(precommits >= 4.0, "the node is at height {height} with {precommits} precommits signed by sigil");
    // The sidecar's log: the audit trail of those precommits, and the warning that the node is
    // not pinned (stock CometBFT makes a new privval identity at each start).
    let logs = run(kind.cluster.tool("kubectl").args(["-n", ns, "logs", &pod, "-c", "sigil-signer"]))?;
    let audited = logs
        .lines()
        .filter(|l| l.contains("sigil_signer::audit") && l.contains("cometbft_precommit") && l.contains("signed"))
        .count();
    ensure!(audited >= 4, "{audited} audit lines of precommits in the sidecar's log:\n{logs}");
    ensure!(logs.contains("not pinned"), "no warning about the unpinned node:\n{logs}");
    // The operator counts the running signer (it watches the labelled pods): SIGNERS 1/1.
    wait(&kind, ns, "remotesigner/cometbft", "condition=SignersReady")?;
    let signers = run(kind
        .cluster
        .tool("kubectl")
        .args(["-n", ns, "get", "remotesigner", "cometbft"])
        .args(["-o", "jsonpath={.status.signers}"]))?;
    ensure!(signers.trim() == "1/1", "status.signers of remotesigner/cometbft: {signers:?}");
    eprintln!(
        "real pods: 20 Atto votes, 5 Tezos attestations (local key, 5 at or below its initial marks refused) and 10 \
         (SoftHSM P-256) verified, 3 repeats refused; CometBFT v1 at height {height}, {precommits} precommits signed through the sidecar, {audited} in its audit log"
    );
    Ok(())
}

/// The kubelet delivers a rotated token Secret to running pods: an Atto node signing without
/// pause across two rotations gets no 401, while its pods are replaced one at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_rotations_reach_running_pods_without_a_refusal() -> Result<()> {
    let kind = Kind::get().await?;
    let namespace = kind.cluster.namespace("rotation").await?;
    let ns = namespace.name.as_str();
    // A token Secret rotated 100 s ago with a 2-minute interval: the first rotation comes soon.
    let rotated_at =
        (k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(100)).to_string();
    let seed = "33".repeat(32);
    apply(
        &kind,
        ns,
        &format!(
            r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: validator}}
---
apiVersion: v1
kind: Secret
metadata: {{name: voter-key}}
stringData: {{seed: "{seed}"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: voter-token, annotations: {{sigil.dev/rotated-at: "{rotated_at}"}}}}
stringData: {{token: "first-token-of-an-earlier-run-0123456789abcdef", token.previous: ""}}
---
apiVersion: sigil.dev/v1alpha1
kind: RemoteSigner
metadata: {{name: voter}}
spec:
  protocol: Atto
  key: {{secretRef: {{name: voter-key, key: seed}}}}
  atto: {{capabilities: [VOTE]}}
  serviceAccountName: validator
  token: {{rotationInterval: 2m, gracePeriod: 1m}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: voter}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: voter}}}}
  template:
    metadata: {{labels: {{app: voter, sigil.dev/signer: voter}}}}
    spec:
      serviceAccountName: validator
      containers:
      - {{name: node, image: "sigil-clients:dev", imagePullPolicy: Never, args: [atto, --count, "0", --interval-ms, "100"]}}
"#
        ),
    )?;
    wait(&kind, ns, "remotesigner/voter", "condition=Ready")?;
    wait(&kind, ns, "deployment/voter", "condition=Available")?;

    // Follow every pod's log until its end, from when it first appears.
    let client = kind.cluster.client.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let token = |secret: &Secret| secret.data.as_ref().and_then(|d| d.get("token")).map(|t| t.0.clone());
    let first = token(&secrets.get("voter-token").await?);
    let mut followed: BTreeMap<String, tokio::task::JoinHandle<Result<BTreeMap<u64, usize>>>> = BTreeMap::new();
    let mut rotations = 0;
    let mut seen_token = first.clone();
    let started = Instant::now();
    while rotations < 2 || started.elapsed() < Duration::from_secs(1) {
        ensure!(started.elapsed() < Duration::from_secs(600), "two rotations did not happen within 10 minutes");
        for pod in kind.pods(ns, "app=voter").await? {
            let name = pod.name_any();
            let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            if running && !followed.contains_key(&name) {
                let (pods, name2) = (pods.clone(), name.clone());
                followed.insert(
                    name,
                    tokio::spawn(async move {
                        use futures::{AsyncBufReadExt, TryStreamExt};
                        let params =
                            kube::api::LogParams { container: Some("node".into()), follow: true, ..Default::default() };
                        let mut lines = pods.log_stream(&name2, &params).await?.lines();
                        let mut counts = BTreeMap::new();
                        while let Some(line) = lines.try_next().await? {
                            let parsed: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                            let status = parsed["status"].as_u64().unwrap_or(0);
                            if status != 200 {
                                eprintln!("{name2}: {line}");
                            }
                            *counts.entry(status).or_default() += 1;
                        }
                        Ok(counts)
                    }),
                );
            }
        }
        let current = token(&secrets.get("voter-token").await?);
        if current != seen_token {
            rotations += 1;
            seen_token = current;
            eprintln!("rotation {rotations} after {:?}", started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Both rotations done and their pods replaced: wait until the previous token is dropped.
    wait_for("the previous token to be dropped", Duration::from_secs(300), || async {
        let previous = secrets.get("voter-token").await?.data.unwrap_or_default().remove("token.previous");
        Ok(previous.is_none_or(|p| p.0.is_empty()).then_some(()))
    })
    .await?;
    // The pods now running will go on; stop following them by deleting the Deployment.
    run(kind.kubectl().args(["-n", ns, "delete", "deployment", "voter", "--wait=true"]))?;
    let mut totals: BTreeMap<u64, usize> = BTreeMap::new();
    for (pod, follow) in followed {
        let counts = tokio::time::timeout(Duration::from_secs(60), follow)
            .await
            .with_context(|| format!("log of {pod}"))???;
        for (status, count) in counts {
            *totals.entry(status).or_default() += count;
        }
    }
    eprintln!("rotation: {rotations} rotations, answers by status over every pod: {totals:?}");
    ensure!(totals.get(&401).is_none_or(|n| *n == 0), "401s during rotation: {totals:?}");
    ensure!(totals.get(&200).copied().unwrap_or(0) > 100, "too few votes signed: {totals:?}");
    Ok(())
}

/// A Tezos RemoteSigner `baker` with the test key, and a Deployment `baker` whose pod holds a
/// do-nothing container beside the injected signer.
fn deploy_baker(kind: &Kind, ns: &str) -> Result<()> {
    apply(
        kind,
        ns,
        &format!(
            r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: validator}}
---
apiVersion: v1
kind: Secret
metadata: {{name: baker-key}}
stringData: {{key: "{BAKER}"}}
---
apiVersion: sigil.dev/v1alpha1
kind: RemoteSigner
metadata: {{name: baker}}
spec: {{protocol: Tezos, key: {{secretRef: {{name: baker-key, key: key}}}}, serviceAccountName: validator}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: baker}}
spec:
  selector: {{matchLabels: {{app: baker}}}}
  template:
    metadata: {{labels: {{app: baker, sigil.dev/signer: baker}}}}
    spec:
      serviceAccountName: validator
      containers: [{{name: node, image: "sigil-pause:dev", imagePullPolicy: Never}}]
"#
        ),
    )
}

/// The sidecar's process killed through the container runtime (crictl, as on the node): the
/// kubelet restarts it, and the level signed before still refuses another attestation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signer_killed_by_the_runtime_restarts_and_still_refuses_the_same_level() -> Result<()> {
    let kind = Kind::get().await?;
    let namespace = kind.cluster.namespace("restart").await?;
    let ns = namespace.name.as_str();
    deploy_baker(&kind, ns)?;
    wait(&kind, ns, "remotesigner/baker", "condition=Ready")?;
    wait(&kind, ns, "deployment/baker", "condition=Available")?;
    let pod = kind.pods(ns, "app=baker").await?.first().context("the baker's pod")?.name_any();
    let sign = |level: u32, payload: u8| {
        let forward_pod = pod.clone();
        let kind = &kind;
        async move {
            let forward = PortForward::start(kind, ns, &forward_pod, 6732).await?;
            let data = sigil_tests::tezos::consensus(0x13, sigil_tests::tezos::MAINNET, level, 0, payload);
            let addr = forward.addr;
            tokio::task::spawn_blocking(move || sigil_tests::tezos::sign(addr, BAKER_PKH, &data)).await?
        }
    };
    let (status, body) = sign(500, 1).await?;
    ensure!(status == 200, "{body}");

    let restarts = |pod: &Pod| -> i32 {
        pod.status
            .as_ref()
            .and_then(|s| s.init_container_statuses.as_ref())
            .and_then(|c| c.first())
            .map_or(0, |c| c.restart_count)
    };
    let pods: Api<Pod> = Api::namespaced(kind.cluster.client.clone(), ns);
    let before = restarts(&pods.get(&pod).await?);
    let id = kind.node(&[
        "crictl",
        "ps",
        "-q",
        "--name",
        "sigil-signer",
        "--label",
        &format!("io.kubernetes.pod.name={pod}"),
    ])?;
    let id = id.trim();
    ensure!(!id.is_empty(), "crictl found no sigil-signer container in {pod}");
    let killed = Instant::now();
    kind.node(&["crictl", "stop", "--timeout", "0", id])?;
    let ready_again = wait_for("the kubelet to restart the signer and see it Ready", DEADLINE, || async {
        let pod = pods.get(&pod).await?;
        let status =
            pod.status.as_ref().and_then(|s| s.init_container_statuses.as_ref()).and_then(|c| c.first().cloned());
        Ok(status.filter(|s| s.ready && s.restart_count > before).map(|_| killed.elapsed()))
    })
    .await?;
    let (status, body) = sign(500, 2).await?;
    ensure!(status == 409, "another attestation at level 500 after the restart: {status} {body}");
    let (status, _) = sign(501, 1).await?;
    ensure!(status == 200, "the next level signs");
    eprintln!("signer killed through crictl: Ready again after {ready_again:?}; level 500 still refused (409)");
    Ok(())
}

/// The operator's leader pod deleted while labelled pods are being created: every pod is admitted
/// and injected (the other replica serves the webhook), and the other replica takes the lead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_leader_while_pods_are_created_refuses_none() -> Result<()> {
    let kind = Kind::get().await?;
    let namespace = kind.cluster.namespace("leader").await?;
    let ns = namespace.name.as_str();
    apply(
        &kind,
        ns,
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {name: validator}
---
apiVersion: v1
kind: Secret
metadata: {name: voter-key}
stringData: {seed: "4444444444444444444444444444444444444444444444444444444444444444"}
---
apiVersion: sigil.dev/v1alpha1
kind: RemoteSigner
metadata: {name: voter}
spec: {protocol: Atto, key: {secretRef: {name: voter-key, key: seed}}, atto: {capabilities: [VOTE]}, serviceAccountName: validator}
"#,
    )?;
    wait(&kind, ns, "remotesigner/voter", "condition=Ready")?;
    let leases: Api<Lease> = Api::namespaced(kind.cluster.client.clone(), SYSTEM);
    let leader =
        leases.get(&format!("{RELEASE}-operator")).await?.spec.and_then(|s| s.holder_identity).context("a leader")?;

    let pods: Api<Pod> = Api::namespaced(kind.cluster.client.clone(), ns);
    let pod = |i: usize| -> Result<Pod> {
        Ok(serde_json::from_value(serde_json::json!({
            "metadata": { "name": format!("node-{i}"), "labels": { "sigil.dev/signer": "voter" } },
            "spec": { "serviceAccountName": "validator", "containers": [{ "name": "node", "image": "sigil-pause:dev", "imagePullPolicy": "Never" }] },
        }))?)
    };
    let (mut created, mut refused) = (0, Vec::new());
    let started = Instant::now();
    let mut deleted = false;
    for i in 0.. {
        if started.elapsed() > Duration::from_secs(30) {
            break;
        }
        if !deleted && started.elapsed() > Duration::from_secs(5) {
            let system: Api<Pod> = Api::namespaced(kind.cluster.client.clone(), SYSTEM);
            system.delete(&leader, &DeleteParams::default()).await?;
            deleted = true;
        }
        match pods.create(&PostParams::default(), &pod(i)?).await {
            Ok(pod) => {
                ensure!(
                    pod.spec
                        .as_ref()
                        .and_then(|s| s.init_containers.as_ref())
                        .is_some_and(|c| c[0].name == "sigil-signer"),
                    "pod node-{i} was admitted without its signer"
                );
                created += 1;
            }
            Err(error) => refused.push(format!("node-{i}: {error}")),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(
        refused.is_empty(),
        "{} of {} pods refused while the leader went: {refused:?}",
        refused.len(),
        created + refused.len()
    );
    let new_leader = wait_for("another replica to lead", DEADLINE, || async {
        let holder = leases.get(&format!("{RELEASE}-operator")).await?.spec.and_then(|s| s.holder_identity);
        Ok(holder.filter(|h| *h != leader))
    })
    .await?;
    kind.wait_operator(RELEASE, SYSTEM).await?;
    eprintln!(
        "leader {leader} deleted mid-way: {created} pods created, all injected, none refused; {new_leader} leads"
    );
    Ok(())
}

/// The signer's APIs listen on the pod's loopback: the node beside it reaches them, another pod
/// cannot, even knowing the pod's address (only the probes' management port is open to the pod
/// network, and it serves no key operation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signer_is_reachable_from_its_own_pod_only() -> Result<()> {
    let kind = Kind::get().await?;
    let namespace = kind.cluster.namespace("isolation").await?;
    let ns = namespace.name.as_str();
    deploy_baker(&kind, ns)?;
    wait(&kind, ns, "deployment/baker", "condition=Available")?;
    let pod = kind.pods(ns, "app=baker").await?.into_iter().next().context("the baker's pod")?;
    let ip = pod.status.and_then(|s| s.pod_ip).context("the pod's IP")?;
    // From the pod itself (a Job labelled for the same signer gets its own; the node container
    // of that pod reaches 127.0.0.1), and from a pod without a signer, at the baker pod's IP.
    apply(
        &kind,
        ns,
        &client_job("same-pod", "baker", &["tezos", "--pkh", BAKER_PKH, "--count", "1", "--start-level", "10"]),
    )?;
    let same = job_output(&kind, ns, "same-pod").await?;
    ensure!(statuses(&same) == BTreeMap::from([(200, 1)]), "{same:?}");
    let other = |name: &str, port: u16| {
        format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: {name}}}\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      \
             restartPolicy: Never\n      containers:\n      - {{name: node, image: \"sigil-clients:dev\", imagePullPolicy: Never, \
             args: [reach, --addr, \"{ip}:{port}\"]}}\n"
        )
    };
    apply(&kind, ns, &other("other-pod-api", 6732))?;
    apply(&kind, ns, &other("other-pod-management", 9091))?;
    let api = job_output(&kind, ns, "other-pod-api").await?;
    ensure!(api.first().is_some_and(|l| l["reachable"] == false), "another pod reached the signing API: {api:?}");
    let management = job_output(&kind, ns, "other-pod-management").await?;
    ensure!(management.first().is_some_and(|l| l["reachable"] == true), "the probes' port: {management:?}");
    eprintln!(
        "isolation: the API answered its own pod, refused {ip}:6732 from another; only the probes' port 9091 is open"
    );
    Ok(())
}

/// The chart as the kubelet runs it: both replicas pass their probes under the chart's security
/// context, the PodDisruptionBudget counts them, and `helm uninstall` of a release leaves only the
/// CRD (a release of its own, confined to one namespace, so the shared one stays).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_runs_under_the_kubelet_and_uninstalls_to_the_crd() -> Result<()> {
    let kind = Kind::get().await?;
    let system: Api<Pod> = Api::namespaced(kind.cluster.client.clone(), SYSTEM);
    let operators = system
        .list(
            &kube::api::ListParams::default()
                .labels("app.kubernetes.io/name=sigil-operator,app.kubernetes.io/instance=sigil"),
        )
        .await?
        .items;
    ensure!(operators.len() >= 2, "{} operator pods", operators.len());
    for pod in &operators {
        let spec = pod.spec.as_ref().context("spec")?;
        let security = spec.containers[0].security_context.as_ref().context("a security context")?;
        ensure!(security.read_only_root_filesystem == Some(true) && security.allow_privilege_escalation == Some(false));
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        ensure!(ready, "operator pod {} not Ready", pod.name_any());
    }
    let budget =
        run(kind.kubectl().args(["-n", SYSTEM, "get", "pdb", "-o", "jsonpath={.items[0].status.currentHealthy}"]))?;
    ensure!(budget.trim() == "2", "PodDisruptionBudget counts {budget} healthy pods");

    let namespace = kind.cluster.namespace("uninstall").await?;
    let ns = namespace.name.as_str();
    let release = "sigil-solo";
    let watch = format!("watchNamespace={ns}");
    kind.install_chart(release, ns, &[&watch, "replicaCount=1", "podDisruptionBudget.enabled=false"])?;
    run(kind.cluster.tool("helm").args(["uninstall", release, "-n", ns, "--wait"]))?;
    let pods: Api<Pod> = Api::namespaced(kind.cluster.client.clone(), ns);
    wait_for("the solo operator's pod to go", DEADLINE, || async {
        Ok(pods.list(&Default::default()).await?.items.is_empty().then_some(()))
    })
    .await?;
    let left = run(kind.kubectl().args([
        "get",
        "clusterroles,clusterrolebindings,mutatingwebhookconfigurations",
        "-o",
        "name",
        "-l",
        &format!("app.kubernetes.io/instance={release}"),
    ]))?;
    ensure!(left.trim().is_empty(), "left after helm uninstall: {left}");
    let webhook = run(kind.kubectl().args(["get", "mutatingwebhookconfigurations", "-o", "name"]))?;
    ensure!(!webhook.contains(&format!("sigil-operator-{ns}")), "the solo release's webhook stayed: {webhook}");
    let namespaced =
        run(kind.kubectl().args(["-n", ns, "get", "all,secrets,configmaps,roles,rolebindings,leases", "-o", "name"]))?;
    let ours: Vec<&str> =
        namespaced.lines().filter(|l| !l.ends_with("kube-root-ca.crt") && !l.ends_with("/default")).collect();
    ensure!(ours.is_empty(), "left in {ns}: {ours:?}");
    run(kind.kubectl().args(["get", "crd", "remotesigners.sigil.dev"]))?;
    eprintln!(
        "chart: 2 replicas Ready under its security context, PDB healthy 2; a confined release uninstalled to the CRD"
    );
    Ok(())
}

/// A tz4 baker's sidecar on kind: the consensus key and the companion key from two Secrets sign
/// BLS-mode attestations, and a proof of possession, refused while the RemoteSigner does not allow
/// it, comes once `spec.tezos.allowProofOfPossession` is switched on, from the same signer process
/// (the kubelet refreshes the mounted config; nothing restarts). The operator reports the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tz4_baker_proves_possession_once_allowed_without_a_restart() -> Result<()> {
    let kind = Kind::get().await?;
    let namespace = kind.cluster.namespace("tz4").await?;
    let ns = namespace.name.as_str();
    let consensus = encoding::parse_secret_key("BLsk1eGhiPQXKtvvkBeXzmtVVJs6KPhEF45drF7MLjoCDcSnTGuyjL")?.public_key();
    let companion = encoding::parse_secret_key("BLsk1XMDG3iepYGj15mBWc7dYjrkpVVM4VH3y5DyBCN9iAGrELwRbY")?.public_key();
    let (consensus_pkh, companion_pkh) = (encoding::pkh(&consensus), encoding::pkh(&companion));
    apply(
        &kind,
        ns,
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {name: validator}
---
apiVersion: v1
kind: Secret
metadata: {name: tz4-keys}
stringData: {consensus: BLsk1eGhiPQXKtvvkBeXzmtVVJs6KPhEF45drF7MLjoCDcSnTGuyjL, companion: BLsk1XMDG3iepYGj15mBWc7dYjrkpVVM4VH3y5DyBCN9iAGrELwRbY}
---
apiVersion: sigil.dev/v1alpha1
kind: RemoteSigner
metadata: {name: tz4}
spec:
  protocol: Tezos
  key: {secretRef: {name: tz4-keys, key: consensus}}
  serviceAccountName: validator
  tezos: {companionKeySecretRef: {name: tz4-keys, key: companion}}
"#,
    )?;
    wait(&kind, ns, "remotesigner/tz4", "condition=Ready")?;

    // The consensus key and the companion key attest in one pod each, one after the other.
    for (job, pkh, key) in [("consensus", &consensus_pkh, &consensus), ("companion", &companion_pkh, &companion)] {
        apply(&kind, ns, &client_job(job, "tz4", &["tezos", "--pkh", pkh, "--count", "5"]))?;
        let lines = job_output(&kind, ns, job).await?;
        ensure!(statuses(&lines) == BTreeMap::from([(200, 5)]), "{job}: {lines:?}");
        for line in &lines {
            verify_tezos(key, line)?;
        }
    }

    // A prover that keeps asking: refused first, then answered once the RemoteSigner allows it.
    apply(&kind, ns, &client_job("prove", "tz4", &["prove", "--pkh", &consensus_pkh, "--attempts", "600"]))?;
    let pod = wait_for("the prover's pod", DEADLINE, || async {
        Ok(kind.pods(ns, "job-name=prove").await?.first().map(|p| p.name_any()))
    })
    .await?;
    wait_for("a refused proof of possession", DEADLINE, || async {
        let lines = kind.logs(ns, &pod, "node").await.unwrap_or_default();
        Ok(lines.iter().any(|l| l.contains("\"status\":403")).then_some(()))
    })
    .await?;
    let until = k8s_openapi::jiff::Timestamp::from_second(k8s_openapi::jiff::Timestamp::now().as_second() + 3600)?;
    let patch =
        format!(r#"{{"spec":{{"tezos":{{"allowProofOfPossession":true,"proofOfPossessionUntil":"{until}"}}}}}}"#);
    run(kind.kubectl().args(["-n", ns, "patch", "remotesigner/tz4", "--type=merge", "-p", &patch]))?;
    let switched = Instant::now();
    let lines = job_output(&kind, ns, "prove").await?;
    let last = lines.last().context("the prover printed nothing")?;
    ensure!(last["status"] == 200, "no proof of possession after the switch: {lines:?}");
    let proof = encoding::parse_signature(last["proof"].as_str().context("proof")?, Algorithm::Bls12_381)?;
    consensus.verify_scheme(sigil_signer::keys::BlsScheme::ProvePossession, consensus.as_bytes(), &proof)?;
    println!("proof of possession answered {:?} after the RemoteSigner was patched", switched.elapsed());
    let pods: Api<Pod> = Api::namespaced(kind.cluster.client.clone(), ns);
    let statuses = pods.get(&pod).await?.status.and_then(|s| s.init_container_statuses).unwrap_or_default();
    let signer = statuses.iter().find(|s| s.name == "sigil-signer").context("the injected signer")?;
    ensure!(signer.restart_count == 0, "the signer restarted: {signer:?}");

    let condition = run(kind.kubectl().args([
        "-n",
        ns,
        "get",
        "remotesigner/tz4",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"ProofOfPossession\")].status}",
    ]))?;
    ensure!(condition.trim() == "True", "ProofOfPossession condition: {condition:?}");
    Ok(())
}

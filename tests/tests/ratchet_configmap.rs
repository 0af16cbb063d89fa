//! The ConfigMap ratchet on a real API server: several sigil-signer processes share one
//! ConfigMap and receive conflicting requests at once; etcd's compare-and-swap must leave at most
//! one signed payload per (key, chain, kind, level, round). One replica is killed with SIGKILL
//! mid-stream.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Result};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use kube::Api;
use sigil_tests::cluster::{marks_store, TestCluster};
use sigil_tests::process::Signer;
use sigil_tests::tezos::{consensus, MAINNET};

const BAKER: &str = "edsk3qAQSJaDBSYN2PCMdv7BuJoBKeRyDFq5uPAwDfFRAhQdwHxPMN";
const BAKER_PKH: &str = "tz1SodoUsWVe1Yey9eMFbqRUtNpBWfir5NRr";

fn start_replica(kubeconfig: &std::path::Path, dir: &std::path::Path, index: usize, ratchet: &str) -> Result<Signer> {
    let config = dir.join(format!("replica-{index}.yaml"));
    std::fs::write(
        &config,
        format!(
            "keys: {{baker: {{local: {{secretKey: {BAKER}}}}}}}\n\
             ratchet: {ratchet}\n\
             tezos: {{listen: 127.0.0.1:0, keys: {{baker: {{allow: [block, attestation]}}}}}}\n\
             management: {{listen: 127.0.0.1:0}}\n"
        ),
    )?;
    Ok(Signer::start(&config, &[("KUBECONFIG", kubeconfig.to_str().unwrap())]))
}

/// POST one sign request; `Some(signature)` on 200, `None` on a refusal or a dead replica.
fn sign(addr: SocketAddr, data: &[u8]) -> Option<String> {
    let body = format!("\"{}\"", hex::encode(data));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let request = format!(
        "POST /keys/{BAKER_PKH} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    if !response.starts_with("HTTP/1.1 200") {
        return None;
    }
    let json = response.split_once("\r\n\r\n")?.1;
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    value["signature"].as_str().map(str::to_string)
}

/// level → payload → the distinct signatures returned for it.
type SignedByLevel = BTreeMap<u32, BTreeMap<u8, BTreeSet<String>>>;

/// Levels at which two payloads were signed, after racing six clients through `LEVELS` levels
/// against `replicas`, killing the first one halfway. Prints the counts.
fn race(mut replicas: Vec<Signer>, label: &str) -> Result<Vec<u32>> {
    let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.api("tezos API")).collect::<Result<_>>()?;
    // Six clients race through the same levels; at each level every client picks a replica and a
    // payload (A or B) at random.
    const LEVELS: u32 = 300;
    let signed: Arc<Mutex<SignedByLevel>> = Arc::default();
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let replica_zero = Arc::new(Mutex::new(Some(replicas.remove(0))));
    let clients: Vec<_> = (0..6u64)
        .map(|client| {
            let (signed, sent, addrs, replica_zero) =
                (signed.clone(), sent.clone(), addrs.clone(), replica_zero.clone());
            std::thread::spawn(move || {
                let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ client.wrapping_mul(0xbf58_476d_1ce4_e5b9);
                let mut random = move || {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed
                };
                for level in 1..=LEVELS {
                    if level == LEVELS / 2 && client == 0 {
                        if let Some(replica) = replica_zero.lock().unwrap().take() {
                            replica.kill(); // SIGKILL
                        }
                    }
                    for _ in 0..2 {
                        let addr = addrs[(random() % addrs.len() as u64) as usize];
                        let payload = 1 + (random() % 2) as u8;
                        sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if let Some(signature) = sign(addr, &consensus(0x13, MAINNET, level, 0, payload)) {
                            signed
                                .lock()
                                .unwrap()
                                .entry(level)
                                .or_default()
                                .entry(payload)
                                .or_default()
                                .insert(signature);
                        }
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client thread");
    }
    let signed = signed.lock().unwrap();
    let mut doubles = Vec::new();
    let mut signatures = 0;
    for (level, payloads) in signed.iter() {
        signatures += payloads.values().map(BTreeSet::len).sum::<usize>();
        if payloads.len() > 1 {
            doubles.push(*level);
        }
        for (payload, distinct) in payloads {
            // Identical requests get the stored signature back: one signature per payload.
            if distinct.len() > 1 {
                bail!("{label}: level {level} payload {payload}: {} different signatures", distinct.len());
            }
        }
    }
    eprintln!(
        "{label}: 3 replicas (one killed at level {}), {} requests, {signatures} signatures, {} of {LEVELS} levels \
         signed, levels with two payloads signed: {}",
        LEVELS / 2,
        sent.load(std::sync::atomic::Ordering::Relaxed),
        signed.len(),
        doubles.len()
    );
    if signed.len() < LEVELS as usize * 9 / 10 {
        bail!("{label}: only {} levels got a signature", signed.len());
    }
    Ok(doubles)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_never_sign_two_payloads_at_one_level() -> Result<()> {
    let cluster = TestCluster::get().await?;
    let namespace = cluster.namespace("ratchet").await?;
    marks_store(&cluster.client, &namespace.name, "sigil-ratchet").await?;
    let dir = tempfile::tempdir()?;
    let shared = format!("{{configMap: {{name: sigil-ratchet, namespace: {}}}}}", namespace.name);
    let replicas =
        (0..3).map(|i| start_replica(&cluster.kubeconfig, dir.path(), i, &shared)).collect::<Result<Vec<_>>>()?;
    let doubles = tokio::task::spawn_blocking(move || race(replicas, "configMap ratchet")).await??;
    assert!(doubles.is_empty(), "double signs at levels {doubles:?}");

    // The control: the same race against replicas with a ratchet each (a file per replica) does
    // double-sign, so the count above means something.
    let separate = (0..3)
        .map(|i| {
            let ratchet = format!("{{file: {{dir: {}}}}}", dir.path().join(format!("own-{i}")).display());
            start_replica(&cluster.kubeconfig, dir.path(), 10 + i, &ratchet)
        })
        .collect::<Result<Vec<_>>>()?;
    let doubles = tokio::task::spawn_blocking(move || race(separate, "a file ratchet per replica")).await??;
    assert!(!doubles.is_empty(), "independent ratchets should have signed two payloads at some level");
    Ok(())
}

/// Moving from a file ratchet to the ConfigMap: `ratchet import --from-sigil-dir` carries every
/// mark over, `ratchet show` lists them from the ConfigMap, and the operator's labels stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marks_move_from_a_file_ratchet_into_the_config_map() -> Result<()> {
    let cluster = TestCluster::get().await?;
    let namespace = cluster.namespace("ratchet-import").await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &namespace.name);
    let labelled: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "sigil-ratchet", "labels": {"app.kubernetes.io/managed-by": "sigil-operator"}}
    }))?;
    config_maps.create(&PostParams::default(), &labelled).await?;
    let dir = tempfile::tempdir()?;
    let write = |name: &str, ratchet: String| -> Result<std::path::PathBuf> {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!("keys: {{baker: {{local: {{secretKey: {BAKER}}}}}}}\nratchet: {ratchet}\ntezos: {{keys: {{baker: {{allow: [block]}}}}}}\n"),
        )?;
        Ok(path)
    };
    let file_config = write("file.yaml", format!("{{file: {{dir: {}}}}}", dir.path().join("marks").display()))?;
    let map_config =
        write("map.yaml", format!("{{configMap: {{name: sigil-ratchet, namespace: {}}}}}", namespace.name))?;
    let run = |config: &std::path::Path, args: &[&str]| -> Result<String> {
        let output = std::process::Command::new(sigil_tests::process::signer_binary()?)
            .arg("--config")
            .arg(config)
            .args(args)
            .env_clear()
            .env("KUBECONFIG", &cluster.kubeconfig)
            .output()?;
        if !output.status.success() {
            bail!("{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8(output.stdout)?)
    };
    let stream = ["--key", "baker", "--chain", "NetXdQprcVkpaWU"];
    run(
        &file_config,
        &[&["ratchet", "set"][..], &stream, &["--stream", "block", "--level", "7000", "--round", "2"]].concat(),
    )?;
    run(&file_config, &[&["ratchet", "set"][..], &stream, &["--stream", "attestation", "--level", "6999"]].concat())?;
    let marks = dir.path().join("marks");
    let imported = run(
        &map_config,
        &[&["ratchet", "import"][..], &stream, &["--from-sigil-dir", marks.to_str().unwrap()]].concat(),
    )?;
    assert!(imported.contains("block: set to level 7000 round 2"), "{imported}");
    let shown = run(&map_config, &["ratchet", "show"])?;
    assert_eq!(
        shown,
        "baker NetXdQprcVkpaWU attestation: level 6999 round 0 step 0 (no signature)\n\
         baker NetXdQprcVkpaWU block: level 7000 round 2 step 0 (no signature)\n"
    );
    let object = config_maps.get("sigil-ratchet").await?;
    assert_eq!(
        object.metadata.labels.unwrap_or_default().get("app.kubernetes.io/managed-by").map(String::as_str),
        Some("sigil-operator")
    );
    Ok(())
}

/// The same race for CometBFT: three replicas, each dialed in by its own (scripted) node over
/// SecretConnection, all asked for prevotes for two different blocks at the same heights.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_cometbft_replicas_never_vote_for_two_blocks_at_one_height() -> Result<()> {
    use cometbft_p2p::{AsyncReadMsg, AsyncSecretConnection, AsyncWriteMsg, IdentitySecret};
    use sigil_signer::protocol::cometbft::proto::{self, BlockId, Message, PartSetHeader, Sum, Vote};

    let cluster = TestCluster::get().await?;
    let namespace = cluster.namespace("ratchet-cometbft").await?;
    marks_store(&cluster.client, &namespace.name, "sigil-ratchet").await?;
    let dir = tempfile::tempdir()?;

    let mut nodes = Vec::new();
    let mut replicas = Vec::new();
    for index in 0..3 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let config = dir.path().join(format!("cometbft-{index}.yaml"));
        std::fs::write(
            &config,
            format!(
                "keys: {{v: {{local: {{secretKey: '{}'}}}}}}\nratchet: {{configMap: {{name: sigil-ratchet, namespace: {}}}}}\n\
                 cometbft: [{{connect: 'tcp://{}', chainId: race, key: v}}]\nmanagement: {{listen: 127.0.0.1:0}}\n",
                "05".repeat(32),
                namespace.name,
                listener.local_addr()?
            ),
        )?;
        let kubeconfig = cluster.kubeconfig.clone();
        replicas.push(tokio::task::spawn_blocking(move || {
            Ok(Signer::start(&config, &[("KUBECONFIG", kubeconfig.to_str().unwrap())]))
        }));
        let (stream, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept()).await??;
        let identity = IdentitySecret::generate(&mut rand_core::OsRng);
        nodes.push(AsyncSecretConnection::new(stream, &identity).await?);
    }
    let _replicas: Vec<Signer> = futures::future::try_join_all(replicas).await?.into_iter().collect::<Result<_>>()?;

    // Each node asks its replica, height by height, for a prevote for block A or block B.
    const HEIGHTS: i64 = 150;
    let votes = nodes.into_iter().enumerate().map(|(index, mut node)| async move {
        let mut signed = Vec::new();
        for height in 1..=HEIGHTS {
            let block = 1 + ((height as usize * 7 + index * 3) % 2) as u8;
            let vote = Vote {
                r#type: proto::PREVOTE,
                height,
                round: 0,
                block_id: Some(BlockId {
                    hash: vec![block; 32],
                    part_set_header: Some(PartSetHeader { total: 1, hash: vec![block; 32] }),
                }),
                timestamp: Some(proto::Timestamp { seconds: 1_700_000_000 + height, nanos: 0 }),
                ..Default::default()
            };
            let request =
                proto::SignVoteRequest { vote: Some(vote), chain_id: "race".into(), skip_extension_signing: false };
            node.write_msg(Message { sum: Some(Sum::SignVoteRequest(request)) }).await?;
            let answer: Message = tokio::time::timeout(Duration::from_secs(20), node.read_msg()).await??;
            if let Some(Sum::SignedVoteResponse(proto::SignedVoteResponse { error: None, vote: Some(_) })) = answer.sum
            {
                signed.push((height, block));
            }
        }
        anyhow::Ok(signed)
    });
    let mut blocks: BTreeMap<i64, BTreeSet<u8>> = BTreeMap::new();
    let mut total = 0;
    for signed in futures::future::try_join_all(votes).await? {
        total += signed.len();
        for (height, block) in signed {
            blocks.entry(height).or_default().insert(block);
        }
    }
    let doubles: Vec<i64> = blocks.iter().filter(|(_, b)| b.len() > 1).map(|(h, _)| *h).collect();
    eprintln!(
        "configMap ratchet, 3 CometBFT replicas: {} prevote requests, {total} signed, {} of {HEIGHTS} heights, heights with two blocks signed: {}",
        3 * HEIGHTS,
        blocks.len(),
        doubles.len()
    );
    assert!(doubles.is_empty(), "two blocks prevoted at heights {doubles:?}");
    assert!(blocks.len() as i64 == HEIGHTS, "every height got a prevote");
    Ok(())
}

/// A block asked of two replicas gets one signature, even from an HSM whose ECDSA nonces are
/// random (two signatures over one block header would be two blocks). Replica B's cache is stale
/// on purpose: its ServiceAccount may get and update the store but not watch it, so it learns of
/// A's write only when its own write conflicts. It signs the block A already signed, loses the
/// compare-and-swap, and must answer with A's signature, not its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_on_a_stale_replica_gets_the_first_signature() -> Result<()> {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};

    let cluster = TestCluster::get().await?;
    let namespace = cluster.namespace("ratchet-retry").await?;
    let ns = namespace.name.clone();
    marks_store(&cluster.client, &ns, "sigil-ratchet").await?;
    let create = PostParams::default();
    Api::<ServiceAccount>::namespaced(cluster.client.clone(), &ns)
        .create(&create, &serde_json::from_value(serde_json::json!({ "metadata": { "name": "stale" } }))?)
        .await?;
    let rules = serde_json::json!([{ "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["sigil-ratchet"], "verbs": ["get", "update"] }]);
    Api::<Role>::namespaced(cluster.client.clone(), &ns)
        .create(
            &create,
            &serde_json::from_value(serde_json::json!({ "metadata": { "name": "no-watch" }, "rules": rules }))?,
        )
        .await?;
    let binding = serde_json::json!({
        "metadata": { "name": "no-watch" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "no-watch" },
        "subjects": [{ "kind": "ServiceAccount", "name": "stale", "namespace": ns }],
    });
    Api::<RoleBinding>::namespaced(cluster.client.clone(), &ns)
        .create(&create, &serde_json::from_value(binding)?)
        .await?;
    let dir = tempfile::tempdir()?;
    let stale_kubeconfig =
        sigil_tests::cluster::impersonating_kubeconfig(&cluster.kubeconfig, &ns, "stale", dir.path())?;

    // A secp256k1 key inside SoftHSM: every signature of the same bytes differs.
    let module = sigil_tests::process::e2e_lib("softhsm")?;
    let conf = sigil_tests::softhsm::token(dir.path());
    let keys = sigil_tests::softhsm::generate(&module, &conf);
    let public_key = &keys.iter().find(|(label, _)| *label == "k1").expect("a secp256k1 key").1;
    let pkh = sigil_signer::keys::tezos::pkh(public_key);
    std::fs::write(dir.path().join("pin"), "1234\n")?;
    let config = dir.path().join("signer.yaml");
    std::fs::write(
        &config,
        format!(
            "keys: {{baker: {{pkcs11: {{module: {module}, tokenLabel: sigil, keyLabel: k1, pinFile: {}}}}}}}\n\
             ratchet: {{configMap: {{name: sigil-ratchet, namespace: {ns}}}}}\n\
             tezos: {{listen: 127.0.0.1:0, keys: {{baker: {{allow: [block, attestation]}}}}}}\n\
             management: {{listen: 127.0.0.1:0}}\n",
            dir.path().join("pin").display()
        ),
    )?;
    let conf = conf.to_str().unwrap();
    let fresh =
        Signer::start(&config, &[("KUBECONFIG", cluster.kubeconfig.to_str().unwrap()), ("SOFTHSM2_CONF", conf)]);
    let stale = Signer::start(&config, &[("KUBECONFIG", stale_kubeconfig.to_str().unwrap()), ("SOFTHSM2_CONF", conf)]);
    let (fresh, stale) = (fresh.api("tezos API")?, stale.api("tezos API")?);
    let sign_at = |addr: SocketAddr, level: u32, payload: u8| {
        let pkh = pkh.clone();
        tokio::task::spawn_blocking(move || {
            sigil_tests::tezos::sign(addr, &pkh, &consensus(0x13, MAINNET, level, 0, payload))
        })
    };
    use sigil_tests::tezos::signature;

    // B reads the store (level 1), then A signs level 2; B has not seen it.
    let first = sign_at(stale, 1, 1).await??;
    assert_eq!(first.0, 200, "{first:?}");
    let from_fresh = sign_at(fresh, 2, 1).await??;
    let expected = signature(&from_fresh.1).expect("replica A signs level 2");
    // The same block again, this time at B, whose cache still says level 1.
    let from_stale = sign_at(stale, 2, 1).await??;
    assert_eq!(from_stale.0, 200, "{from_stale:?}");
    assert_eq!(signature(&from_stale.1).as_deref(), Some(expected.as_str()), "B answers with A's signature");
    let again = signature(&sign_at(fresh, 2, 1).await??.1).expect("an identical retry at A");
    assert_eq!(again, expected, "and A keeps answering with its first signature");
    // What makes this matter: the HSM signs the same bytes differently every time, so B's own
    // signature would have been a second one.
    std::env::set_var("SOFTHSM2_CONF", conf);
    let hsm = sigil_signer::backend::pkcs11::Pkcs11Backend::new(sigil_signer::backend::pkcs11::Pkcs11KeyConfig {
        module: module.clone().into(),
        token_label: "sigil".into(),
        key_label: "k1".into(),
        pin_file: Some(dir.path().join("pin")),
        pin_env: None,
    });
    use sigil_signer::backend::KeyBackend;
    let digest = [7u8; 32];
    assert_ne!(hsm.sign(&digest).await?, hsm.sign(&digest).await?, "SoftHSM's ECDSA nonces are random");
    // A different block at level 2 stays refused on both.
    for addr in [fresh, stale] {
        let other = sign_at(addr, 2, 2).await??;
        assert_eq!(other.0, 409, "{other:?}");
    }
    Ok(())
}

/// `/readyz` of a signer: status and body.
async fn readyz(signer: &Signer) -> Result<(u16, String)> {
    let addr = signer.management;
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        write!(stream, "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        anyhow::Ok((status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
    })
    .await?
}

/// An attestation at `level` (payload 1): the status and body.
async fn attest(addr: SocketAddr, level: u32) -> Result<(u16, String)> {
    tokio::task::spawn_blocking(move || {
        sigil_tests::tezos::sign(addr, BAKER_PKH, &consensus(0x13, MAINNET, level, 0, 1))
    })
    .await?
}

/// A signer bound to its store refuses for good, and `/readyz` says why, when the store under it
/// is rewritten with a lower mark (`kubectl replace` of older data), or deleted and put back
/// under the same name (a copy restored from a backup). A signer started on such a copy refuses
/// it: the copy carries the old object's seal, not its own UID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_or_replaced_store_stops_signing_for_good() -> Result<()> {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    use kube::api::DeleteParams;
    use sigil_tests::cluster::wait_for;

    let cluster = TestCluster::get().await?;
    let namespace = cluster.namespace("ratchet-lost").await?;
    let ns = namespace.name.clone();
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
    let dir = tempfile::tempdir()?;
    const DEADLINE: Duration = Duration::from_secs(30);

    // A mark lowered under a running signer (which watches its store).
    marks_store(&cluster.client, &ns, "lowered").await?;
    let signer = start_replica(
        &cluster.kubeconfig,
        dir.path(),
        0,
        &format!("{{configMap: {{name: lowered, namespace: {ns}}}}}"),
    )?;
    let addr = signer.api("tezos API")?;
    assert_eq!(attest(addr, 10).await?.0, 200);
    let mut store = config_maps.get("lowered").await?;
    let data = store.data.as_mut().expect("the mark");
    let (key, record) = data.iter_mut().find(|(key, _)| key.ends_with(".attestation")).expect("the attestation mark");
    let mut lowered: serde_json::Value = serde_json::from_str(record)?;
    lowered["level"] = 3.into();
    *record = lowered.to_string();
    let key = key.clone();
    config_maps.replace("lowered", &PostParams::default(), &store).await?;
    let (_, why) = wait_for("the signer to notice the lowered mark", DEADLINE, || async {
        let (status, body) = readyz(&signer).await?;
        Ok((status == 503 && body.contains("lowered")).then_some((status, body)))
    })
    .await?;
    assert!(why.contains(&format!("had its mark {key} lowered from")), "{why}");
    for level in [4, 11] {
        let (status, body) = attest(addr, level).await?;
        assert_eq!(status, 503, "level {level}: {body}");
        assert!(body.contains("refusing to sign until the signer restarts"), "{body}");
    }

    // A store deleted and restored from a backup under a signer that does not watch it (a
    // ServiceAccount with get and update only): its next write finds another object.
    marks_store(&cluster.client, &ns, "restored").await?;
    let create = PostParams::default();
    Api::<ServiceAccount>::namespaced(cluster.client.clone(), &ns)
        .create(&create, &serde_json::from_value(serde_json::json!({ "metadata": { "name": "no-watch" } }))?)
        .await?;
    let rules = serde_json::json!([{ "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["restored"], "verbs": ["get", "update"] }]);
    Api::<Role>::namespaced(cluster.client.clone(), &ns)
        .create(
            &create,
            &serde_json::from_value(serde_json::json!({ "metadata": { "name": "no-watch" }, "rules": rules }))?,
        )
        .await?;
    let binding = serde_json::json!({
        "metadata": { "name": "no-watch" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "no-watch" },
        "subjects": [{ "kind": "ServiceAccount", "name": "no-watch", "namespace": ns }],
    });
    Api::<RoleBinding>::namespaced(cluster.client.clone(), &ns)
        .create(&create, &serde_json::from_value(binding)?)
        .await?;
    let no_watch = sigil_tests::cluster::impersonating_kubeconfig(&cluster.kubeconfig, &ns, "no-watch", dir.path())?;
    let restored = format!("{{configMap: {{name: restored, namespace: {ns}}}}}");
    let signer = start_replica(&no_watch, dir.path(), 1, &restored)?;
    let addr = signer.api("tezos API")?;
    // RBAC is eventually consistent: the first signature once the Role applies.
    wait_for("a first signature", DEADLINE, || async { Ok((attest(addr, 20).await?.0 == 200).then_some(())) }).await?;
    let backup = config_maps.get("restored").await?;
    config_maps.delete("restored", &DeleteParams::default()).await?;
    let mut copy: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "restored", "labels": backup.metadata.labels, "annotations": backup.metadata.annotations },
    }))?;
    copy.data = backup.data.clone();
    config_maps.create(&create, &copy).await?;
    let (status, body) = attest(addr, 21).await?;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("was replaced by another object"), "{body}");
    let (status, body) = readyz(&signer).await?;
    assert!(status == 503 && body.contains("was replaced by another object"), "{status} {body}");
    assert_eq!(attest(addr, 22).await?.0, 503, "for good");

    // A signer started on the restored copy does not trust it.
    let fresh = start_replica(&cluster.kubeconfig, dir.path(), 2, &restored)?;
    // Until it has read the store it answers "not read yet" (503 too); then it names the reason.
    wait_for("the fresh signer to judge the store", DEADLINE, || async {
        let (status, body) = readyz(&fresh).await?;
        Ok((status == 503 && body.contains("is not set up as a marks store")).then_some(()))
    })
    .await?;
    let (status, body) = attest(fresh.api("tezos API")?, 21).await?;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("is not set up as a marks store"), "{body}");
    Ok(())
}

/// Sixteen streams committing at once share one conditional write (the first writer takes every
/// mark queued by then), each decided by the rule: a second payload at a committed level is
/// refused, the identical request gets its stored signature, and every mark is in the ConfigMap.
/// A single-threaded runtime queues all sixteen before the writer runs, so the count is exact.
/// A mark whose requester has gone still lands before anyone else may use its stream.
#[tokio::test]
async fn streams_that_commit_together_share_one_write() -> Result<()> {
    use futures::StreamExt;
    use kube::runtime::watcher;
    use sigil_signer::ratchet::configmap::{ConfigMapRatchet, Mode};
    use sigil_signer::ratchet::{Mark, Ratchet, RatchetError, State, StreamId};

    let cluster = TestCluster::get().await?;
    let namespace = cluster.namespace("ratchet-batch").await?;
    let ns = namespace.name.clone();
    marks_store(&cluster.client, &ns, "marks").await?;
    let ratchet =
        ConfigMapRatchet::with_client(cluster.client.clone(), "marks", &ns, Mode::Signer { await_key_check: false });
    let streams: Vec<StreamId> = (0..16)
        .map(|chain| StreamId { key: "baker".into(), chain: format!("chain-{chain}"), stream: "attestation" })
        .collect();
    let state = |level: u64, payload: u8| State {
        mark: Mark { level, round: 0, step: 0 },
        payload_digest: [payload; 32],
        signature: Some(
            sigil_signer::keys::Signature::from_slice(sigil_signer::keys::Algorithm::Ed25519, &[payload; 64]).unwrap(),
        ),
        context: None,
    };
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
    // Watch events after the initial list, each one write; `usize::MAX` until the list is done.
    let writes = Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
    let watch = {
        let (config_maps, writes) = (config_maps.clone(), writes.clone());
        let config = watcher::Config::default().fields("metadata.name=marks");
        tokio::spawn(async move {
            let mut events = std::pin::pin!(watcher(config_maps, config));
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => writes.store(0, std::sync::atomic::Ordering::SeqCst),
                    Ok(watcher::Event::Apply(_)) => {
                        writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    _ => {}
                }
            }
        })
    };
    let commit_all = |level: u64, payload: u8| {
        let (ratchet, streams) = (&ratchet, &streams);
        async move {
            let mut locks = Vec::new();
            for stream in streams {
                locks.push(ratchet.lock(stream).await?);
            }
            let commits = locks.iter_mut().map(|lock| lock.commit(state(level, payload)));
            Ok::<_, RatchetError>(futures::future::join_all(commits).await)
        }
    };
    let wait_for_writes = |count: usize| {
        let writes = writes.clone();
        sigil_tests::cluster::wait_for("the watch to see the writes", Duration::from_secs(10), move || {
            let writes = writes.clone();
            async move {
                let seen = writes.load(std::sync::atomic::Ordering::SeqCst);
                Ok((seen != usize::MAX && seen >= count).then_some(()))
            }
        })
    };

    // The watch lists first, so every write after this is an event.
    wait_for_writes(0).await?;
    ratchet.entries().await?;
    let first = commit_all(10, 1).await?;
    assert!(first.iter().all(|committed| committed.as_ref() == Ok(&state(10, 1))), "{first:?}");
    wait_for_writes(1).await?;
    let stored = config_maps.get("marks").await?.data.unwrap_or_default();
    assert_eq!(stored.len(), 16, "every stream's mark is in the ConfigMap: {stored:?}");

    // The identical request gets the stored signature without a write; another payload is refused.
    let again = commit_all(10, 1).await?;
    assert!(again.iter().all(|committed| committed.as_ref() == Ok(&state(10, 1))), "{again:?}");
    let other = commit_all(10, 2).await?;
    assert!(other.iter().all(|committed| matches!(committed, Err(RatchetError::Refused { .. }))), "{other:?}");
    let next = commit_all(11, 3).await?;
    assert!(next.iter().all(|committed| committed.as_ref() == Ok(&state(11, 3))), "{next:?}");
    wait_for_writes(2).await?;
    let entries = ratchet.entries().await?;
    assert_eq!(entries.len(), 16);
    assert!(entries.iter().all(|entry| entry.state == state(11, 3)), "{entries:?}");
    watch.abort();
    let writes = writes.load(std::sync::atomic::Ordering::SeqCst);
    println!("64 commits over 16 streams, 32 of them to write: {writes} ConfigMap writes");
    assert_eq!(writes, 2, "two batches of sixteen marks, one write each");

    // A requester gone after queueing its mark: the mark still lands, and the stream stays locked
    // until it has, so the next request on the stream is decided against it.
    let mut lock = ratchet.lock(&streams[0]).await?;
    {
        let commit = lock.commit(state(12, 4));
        futures::pin_mut!(commit);
        assert!(futures::poll!(commit).is_pending(), "queued, not written yet");
    }
    drop(lock);
    let lock = ratchet.lock(&streams[0]).await?;
    assert_eq!(lock.current(), Some(&state(12, 4)));
    Ok(())
}

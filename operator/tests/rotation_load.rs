//! Zero-downtime rotation under load: a client keeps signing Atto votes through a real signer
//! while the operator rotates the token twice. The signer reads token files kept in step with the
//! operator's Secret (as the kubelet does for a mounted Secret); the client uses whatever token the
//! files hold. No request may get a 401; after the grace period the old tokens are refused.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use common::*;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use sigil_operator::api::*;
use sigil_signer::backend::local::LocalKeyConfig;
use sigil_signer::config::{KeyConfig, ManagementConfig, SignerConfig};
use sigil_signer::protocol::atto::api::Capability;
use sigil_signer::protocol::atto::config::AttoConfig;
use sigil_tests::cluster::wait_for;

const SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const PUBLIC_KEY: &str = "D75A980182B10AB7D54BFED3C964073A0EE172F3DAA62325AF021A68F707511A";

/// Copies the Secret's two keys to files, replacing each atomically, like the kubelet.
async fn sync(secrets: &Api<Secret>, dir: &Path) -> Result<(String, String)> {
    let data = secrets.get("loaded-token").await?.data.unwrap_or_default();
    let text = |k: &str| data.get(k).map(|v| String::from_utf8_lossy(&v.0).to_string()).unwrap_or_default();
    let (token, previous) = (text("token"), text("token.previous"));
    for (name, value) in [("token", &token), ("token.previous", &previous)] {
        let temporary = dir.join(format!(".{name}.tmp"));
        std::fs::write(&temporary, value)?;
        std::fs::rename(&temporary, dir.join(name))?;
    }
    Ok((token, previous))
}

async fn vote(addr: std::net::SocketAddr, token: &str, n: u64) -> Result<u16> {
    let body = format!(
        r#"{{"target":{{"version":0,"algorithm":"V1","publicKey":"{PUBLIC_KEY}","blockAlgorithm":"V1","blockHash":"{:064X}","timestamp":{n}}}}}"#,
        n
    );
    let request = format!(
        "POST /votes HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let status = String::from_utf8_lossy(&response).split(' ').nth(1).unwrap_or("0").parse()?;
    Ok(status)
}

async fn backdate(secrets: &Api<Secret>, annotation: &str, ago: SignedDuration) -> Result<()> {
    let when = (Timestamp::now() - ago).to_string();
    let patch = json!({ "metadata": { "annotations": { annotation: when } } });
    secrets.patch("loaded-token", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rotations_under_load_without_a_single_401() -> Result<()> {
    let cluster = cluster().await?;
    let namespace = cluster.namespace("rotation-load").await?;
    let (client, ns) = (cluster.client.clone(), namespace.name.clone());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let key = json!({ "metadata": { "name": "voter-key" }, "stringData": { "seed": SEED } });
    secrets.create(&PostParams::default(), &serde_json::from_value(key)?).await?;
    // An existing token, due for rotation in a few seconds (adopted by the operator).
    let rotated_at = (Timestamp::now() - SignedDuration::from_secs(115)).to_string();
    let token = json!({
        "metadata": { "name": "loaded-token", "annotations": { "sigil.dev/rotated-at": rotated_at } },
        "stringData": { "token": "token-zero-0123456789abcdef0123456789", "token.previous": "" },
    });
    secrets.create(&PostParams::default(), &serde_json::from_value(token)?).await?;
    let spec = RemoteSignerSpec {
        token: Some(TokenSpec { rotation_interval: Some("2m".into()), grace_period: Some("1m".into()) }),
        ..RemoteSignerSpec::atto("voter-key", "seed", vec![AttoCapability::Vote])
    };
    create(&client, &ns, "loaded", spec).await?;
    let _operator = Operator::start(&cluster.kubeconfig, &ns, &[])?;

    // The signer, reading token files as the sidecar does.
    let dir = tempfile::tempdir()?;
    let (token_dir, key_file) = (dir.path().join("token"), dir.path().join("secretKey"));
    std::fs::create_dir(&token_dir)?;
    std::fs::write(&key_file, SEED)?;
    let (first, _) = sync(&secrets, &token_dir).await?;
    let config = SignerConfig {
        keys: [(
            "validator".to_string(),
            KeyConfig::local(LocalKeyConfig { secret_key_file: Some(key_file), ..Default::default() }),
        )]
        .into(),
        ratchet: None,
        tezos: None,
        cometbft: Vec::new(),
        atto: Some(AttoConfig {
            listen: "127.0.0.1:0".parse()?,
            key: "validator".into(),
            capabilities: vec![Capability::Vote],
            token_file: Some(token_dir.join("token")),
            token_env: None,
        }),
        management: Some(ManagementConfig { listen: "127.0.0.1:0".parse()? }),
        audit: None,
    };
    let app = sigil_signer::app::App::start(&config).await?;
    let addr = app.local_addr("atto API").expect("bound");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run(async move {
        let _ = stopped.await;
    }));

    // kubelet stand-in: keeps the files in step with the Secret.
    let done = Arc::new(AtomicBool::new(false));
    let syncer = {
        let (secrets, token_dir, done) = (secrets.clone(), token_dir.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let _ = sync(&secrets, &token_dir).await;
                tokio::time::sleep(Duration::from_millis(100)).await; // the sync period, not synchronisation
            }
        })
    };
    // The client: signs continuously with whatever token the files hold.
    let (ok, refused, other) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (token_dir, done, ok, refused, other) =
            (token_dir.clone(), done.clone(), ok.clone(), refused.clone(), other.clone());
        tokio::spawn(async move {
            let mut n = 1u64;
            while !done.load(Ordering::Relaxed) {
                let token = std::fs::read_to_string(token_dir.join("token")).unwrap_or_default();
                match vote(addr, token.trim(), n).await {
                    Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(401) => refused.fetch_add(1, Ordering::Relaxed),
                    _ => other.fetch_add(1, Ordering::Relaxed),
                };
                n += 1;
            }
        })
    };

    let current = |secrets: Api<Secret>| async move {
        let data = secrets.get("loaded-token").await?.data.unwrap_or_default();
        anyhow::Ok(data.get("token").map(|v| String::from_utf8_lossy(&v.0).to_string()).unwrap_or_default())
    };
    let second = wait_for("the first rotation", DEADLINE, || async {
        let token = current(secrets.clone()).await?;
        Ok((token != first).then_some(token))
    })
    .await?;
    wait_for("load on the new token", DEADLINE, || async { Ok((ok.load(Ordering::Relaxed) > 50).then_some(())) })
        .await?;
    // Second rotation: the interval has "passed" (the operator reads its schedule from the Secret).
    backdate(&secrets, "sigil.dev/rotated-at", SignedDuration::from_secs(121)).await?;
    let third = wait_for("the second rotation", DEADLINE, || async {
        let token = current(secrets.clone()).await?;
        Ok((token != second && token != first).then_some(token))
    })
    .await?;
    let before = ok.load(Ordering::Relaxed);
    wait_for("load after the second rotation", DEADLINE, || async {
        Ok((ok.load(Ordering::Relaxed) > before + 50).then_some(()))
    })
    .await?;
    // Grace over: the previous token is dropped, and the old tokens stop working.
    backdate(&secrets, "sigil.dev/previous-until", SignedDuration::from_secs(1)).await?;
    wait_for("the previous token to be dropped and synced", DEADLINE, || async {
        let (_, previous) = sync(&secrets, &token_dir).await?;
        Ok(previous.is_empty().then_some(()))
    })
    .await?;
    done.store(true, Ordering::Relaxed);
    let _ = tokio::join!(load, syncer);

    let (ok, refused, other) =
        (ok.load(Ordering::Relaxed), refused.load(Ordering::Relaxed), other.load(Ordering::Relaxed));
    assert_eq!((refused, other), (0, 0), "{ok} signed, {refused} refused (401), {other} other");
    assert!(ok > 100, "only {ok} signatures");
    wait_for("old tokens refused, the current one accepted", Duration::from_secs(10), || async {
        let old = [vote(addr, &first, 1).await?, vote(addr, &second, 2).await?];
        let new = vote(addr, &third, 3).await?;
        Ok((old == [401, 401] && new == 200).then_some(()))
    })
    .await?;
    let _ = stop.send(());
    Ok(())
}

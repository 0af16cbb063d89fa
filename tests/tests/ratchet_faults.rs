//! The ConfigMap ratchet under faults, on a real API server. The signer runs as a ServiceAccount
//! with exactly the operator's Role (impersonated), through a TCP proxy the test controls: the API
//! server goes away, answers too slowly, or the RoleBinding is deleted. Each fault ends in
//! refusals (never a signature the ConfigMap does not hold), and signing resumes when it ends.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, PostParams};
use kube::config::Kubeconfig;
use kube::Api;
use sigil_tests::cluster::{wait_for, TestCluster};
use sigil_tests::process::Signer;
use sigil_tests::tezos::{consensus, MAINNET};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

const BAKER: &str = "edsk3qAQSJaDBSYN2PCMdv7BuJoBKeRyDFq5uPAwDfFRAhQdwHxPMN";
const BAKER_PKH: &str = "tz1SodoUsWVe1Yey9eMFbqRUtNpBWfir5NRr";

const OPEN: u8 = 0;
const DOWN: u8 = 1;
const SLOW: u8 = 2;

/// A loopback TCP proxy in front of the API server: open, down (every connection cut), or slow.
struct Proxy {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mode = Arc::new(AtomicU8::new(OPEN));
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (accept_mode, accept_connections) = (mode.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if accept_mode.load(Ordering::SeqCst) == DOWN {
                    let _ = client.shutdown().await;
                    continue;
                }
                let (mode, upstream) = (accept_mode.clone(), upstream.clone());
                let task = tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else { return };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let upstream = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                    });
                    // Answers come back late in SLOW mode: the request reaches the API server and
                    // is carried out, but the reply misses the signer's 3 s deadline.
                    let mut buffer = vec![0u8; 16 * 1024];
                    while let Ok(n) = server_read.read(&mut buffer).await {
                        if n == 0 {
                            break;
                        }
                        if mode.load(Ordering::SeqCst) == SLOW {
                            tokio::time::sleep(Duration::from_secs(4)).await;
                        }
                        if client_write.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                    upstream.abort();
                });
                accept_connections.lock().unwrap().push(task.abort_handle());
            }
        });
        Ok(Proxy { addr, mode, connections })
    }

    /// Changes mode; going down cuts every open connection.
    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        if mode == DOWN {
            for connection in self.connections.lock().unwrap().drain(..) {
                connection.abort();
            }
        }
    }
}

/// (status, body) of one sign request.
async fn sign(addr: SocketAddr, level: u32, payload: u8) -> Result<(u16, String)> {
    let data = consensus(0x13, MAINNET, level, 0, payload);
    tokio::task::spawn_blocking(move || sigil_tests::tezos::sign(addr, BAKER_PKH, &data)).await?
}

async fn stored_level(config_maps: &Api<ConfigMap>) -> Result<u64> {
    let object = config_maps.get("sigil-ratchet").await?;
    let entry = object.data.unwrap_or_default().get("baker.NetXdQprcVkpaWU.attestation").cloned().unwrap_or_default();
    let record: serde_json::Value = serde_json::from_str(&entry).unwrap_or_default();
    Ok(record["level"].as_u64().unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_slowness_and_lost_rbac_refuse_then_recover() -> Result<()> {
    let cluster = TestCluster::get().await?;
    let namespace = cluster.namespace("faults").await?;
    let ns = namespace.name.clone();
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
    let create = PostParams::default();
    sigil_tests::cluster::marks_store(&cluster.client, &ns, "sigil-ratchet").await?;
    Api::<ServiceAccount>::namespaced(cluster.client.clone(), &ns)
        .create(&create, &serde_json::from_value(serde_json::json!({"metadata": {"name": "signer"}}))?)
        .await?;
    // Exactly the Role the operator renders for a RemoteSigner's ratchet.
    let rules = serde_json::json!([{ "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["sigil-ratchet"], "verbs": ["get", "update", "list", "watch"] }]);
    Api::<Role>::namespaced(cluster.client.clone(), &ns)
        .create(&create, &serde_json::from_value(serde_json::json!({"metadata": {"name": "ratchet"}, "rules": rules}))?)
        .await?;
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "ratchet"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ratchet"},
        "subjects": [{"kind": "ServiceAccount", "name": "signer", "namespace": ns}],
    }))?;
    let bindings: Api<RoleBinding> = Api::namespaced(cluster.client.clone(), &ns);
    bindings.create(&create, &binding).await?;

    // The signer's kubeconfig: through the proxy, as the ServiceAccount.
    let mut kubeconfig = Kubeconfig::read_from(&cluster.kubeconfig)?;
    let server = kubeconfig.clusters[0].cluster.as_ref().and_then(|c| c.server.clone()).context("server")?;
    let upstream = server.trim_start_matches("https://").trim_end_matches('/').to_string();
    let proxy = Proxy::start(upstream.clone()).await?;
    if let Some(cluster) = kubeconfig.clusters[0].cluster.as_mut() {
        cluster.server = Some(format!("https://{}", proxy.addr));
        cluster.tls_server_name = upstream.rsplit_once(':').map(|(host, _)| host.to_string());
    }
    if let Some(user) = kubeconfig.auth_infos[0].auth_info.as_mut() {
        user.impersonate = Some(format!("system:serviceaccount:{ns}:signer"));
    }
    let dir = tempfile::tempdir()?;
    let signer_kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&signer_kubeconfig, serde_json::to_string(&kubeconfig)?)?;
    let config = dir.path().join("signer.yaml");
    std::fs::write(
        &config,
        format!(
            "keys: {{baker: {{local: {{secretKey: {BAKER}}}}}}}\nratchet: {{configMap: {{name: sigil-ratchet, namespace: {ns}}}}}\n\
             tezos: {{listen: 127.0.0.1:0, keys: {{baker: {{allow: [attestation]}}}}}}\nmanagement: {{listen: 127.0.0.1:0}}\n"
        ),
    )?;
    let signer = Signer::start(&config, &[("KUBECONFIG", signer_kubeconfig.to_str().unwrap())]);
    let addr = signer.api("tezos API")?;

    assert_eq!(sign(addr, 1, 1).await?.0, 200);
    assert_eq!(stored_level(&config_maps).await?, 1);

    // The API server unreachable: refused as retryable, nothing stored, nothing released.
    proxy.set(DOWN);
    let (status, body) = sign(addr, 2, 1).await?;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("ratchet store unavailable"), "{body}");
    assert_eq!(stored_level(&config_maps).await?, 1);
    proxy.set(OPEN);
    assert_eq!(sign(addr, 2, 1).await?.0, 200, "signing resumes when the API server is back");

    // Answers slower than the 3 s deadline: refused. The write itself lands, so the mark holds a
    // signature that was never released, and a different payload at that level stays refused.
    proxy.set(SLOW);
    let (status, body) = sign(addr, 3, 1).await?;
    assert_eq!(status, 503, "{body}");
    proxy.set(OPEN);
    let stored = stored_level(&config_maps).await?;
    let other = sign(addr, 3, 2).await?;
    match stored {
        3 => assert_eq!(other.0, 409, "the slow write landed; another payload at level 3 must be refused"),
        2 => assert_eq!(other.0, 200, "the slow write never landed; level 3 is free"),
        level => panic!("unexpected stored level {level}"),
    }
    assert_eq!(sign(addr, 4, 1).await?.0, 200);

    // The RoleBinding deleted: the write is forbidden, refused with the reason.
    bindings.delete("ratchet", &DeleteParams::default()).await?;
    // RBAC changes reach the API server's authorizer within a moment; poll until they have.
    let forbidden = wait_for("a refusal naming RBAC", Duration::from_secs(30), || async {
        let (status, body) = sign(addr, 5, 1).await?;
        Ok((status == 503 && body.contains("forbidden")).then_some(body))
    })
    .await?;
    assert!(forbidden.contains("needs get, update, list and watch"), "{forbidden}");
    assert_eq!(stored_level(&config_maps).await?, 4);
    bindings.create(&create, &binding).await?;
    wait_for("signing after RBAC is restored", Duration::from_secs(30), || async {
        Ok((sign(addr, 6, 1).await?.0 == 200).then_some(()))
    })
    .await?;
    assert_eq!(stored_level(&config_maps).await?, 6);
    Ok(())
}

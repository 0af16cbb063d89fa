//! The webhook's certificate through the real API server: it always carries the names the
//! webhook is registered by, two replicas renew it without a single refused admission, and the
//! server answers what it cannot parse with a bare 400.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use common::*;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::PostParams;
use kube::{Api, Client};
use sigil_tests::cluster::wait_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

fn strings(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The caBundle the API server verifies the webhook with.
async fn ca_bundle(client: &Client, ns: &str) -> Result<Vec<u8>> {
    let registration =
        Api::<MutatingWebhookConfiguration>::all(client.clone()).get(&format!("sigil-operator-{ns}")).await?;
    let webhooks = registration.webhooks.unwrap_or_default();
    let bundle = webhooks.first().and_then(|w| w.client_config.ca_bundle.clone()).context("no caBundle")?;
    Ok(bundle.0)
}

/// The serving certificate in the shared Secret (DER).
async fn stored_leaf(client: &Client, ns: &str) -> Result<Option<Vec<u8>>> {
    let secret =
        Api::<Secret>::namespaced(client.clone(), ns).get_opt(&format!("sigil-operator-{ns}-webhook-tls")).await?;
    let Some(pem) = secret.and_then(|s| s.data).and_then(|d| d.get("tls.crt").cloned()) else { return Ok(None) };
    let first = rustls_pemfile::certs(&mut pem.0.as_slice()).next().transpose()?;
    Ok(first.map(|c| c.to_vec()))
}

fn tls_client(ca_bundle: &[u8]) -> Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut &ca_bundle[..]) {
        roots.add(ca?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The certificate a replica serves to a new connection, verified as the API server verifies it
/// (against the registered caBundle, for the IP address 127.0.0.1).
async fn served_leaf(addr: SocketAddr, ca_bundle: &[u8]) -> Result<Vec<u8>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let tls = tls_client(ca_bundle)?.connect(name, stream).await?;
    let (_, session) = tls.get_ref();
    Ok(session.peer_certificates().context("no certificate")?[0].to_vec())
}

/// One HTTP/1.1 request over TLS; the status code and body. `length` overrides Content-Length.
async fn request(
    addr: SocketAddr,
    ca_bundle: &[u8],
    head: &str,
    body: &[u8],
    length: Option<usize>,
) -> Result<(u16, String)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let mut tls = tls_client(ca_bundle)?.connect(name, stream).await?;
    let length = length.unwrap_or(body.len());
    tls.write_all(format!("{head}\r\nHost: x\r\nConnection: close\r\nContent-Length: {length}\r\n\r\n").as_bytes())
        .await?;
    tls.write_all(body).await?;
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).context("an HTTP status")?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    Ok((status, body))
}

fn ip_sans(der: &[u8]) -> Result<(Vec<String>, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)?;
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    for name in cert.subject_alternative_name()?.map(|s| s.value.general_names.clone()).unwrap_or_default() {
        match name {
            x509_parser::extensions::GeneralName::DNSName(n) => dns.push(n.to_string()),
            x509_parser::extensions::GeneralName::IPAddress(b) if b.len() == 4 => {
                ips.push(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(b)?).to_string())
            }
            _ => {}
        }
    }
    Ok((dns, ips))
}

/// An operator that served the Service (an in-cluster install, say) left a certificate for the
/// Service's names only. Started out of cluster with `--webhook-url https://127.0.0.1:PORT`, it
/// issues one that carries 127.0.0.1 as an IP SAN, from the same CA, and pods are admitted.
#[tokio::test]
async fn a_certificate_for_the_service_is_reissued_for_the_url_host() -> Result<()> {
    let cluster = cluster().await?;
    let namespace = cluster.namespace("tls-names").await?;
    let (client, ns) = (cluster.client.clone(), namespace.name.as_str());
    let _cleanup = WebhookCleanup(cluster.kubeconfig.clone(), ns.to_string());
    setup_key_and_account(&client, ns).await?;
    create(&client, ns, "voter", atto_spec()).await?;

    // Registered through the Service: the certificate names it.
    let port = free_port();
    let service = [
        "--webhook-addr".to_string(),
        format!("127.0.0.1:{port}"),
        "--signer-image".into(),
        "sigil-signer:test".into(),
    ];
    let mut operator = Operator::start(&cluster.kubeconfig, ns, &strings(&service))?;
    wait_ready(&client, ns, "voter", "True").await?;
    let first = wait_for("the Service certificate", DEADLINE, || async { stored_leaf(&client, ns).await }).await?;
    let (dns, ips) = ip_sans(&first)?;
    assert_eq!(
        dns,
        [
            format!("sigil-operator.{ns}.svc"),
            format!("sigil-operator.{ns}.svc.cluster.local"),
            format!("sigil-operator.{ns}")
        ]
    );
    assert!(ips.is_empty());
    let bundle = ca_bundle(&client, ns).await?;
    operator.kill();

    // Out of cluster now, by URL: a new certificate with the IP address, the same CA.
    let url = webhook_args();
    let _operator = Operator::start(&cluster.kubeconfig, ns, &strings(&url))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    webhook_active(&pods).await?;
    let injected = pods.create(&PostParams::default(), &pod("node", Some("voter"))).await?;
    assert!(injected.spec.unwrap().init_containers.is_some_and(|c| c[0].name == "sigil-signer"));
    let second = stored_leaf(&client, ns).await?.context("a certificate")?;
    let (dns, ips) = ip_sans(&second)?;
    assert_eq!(ips, ["127.0.0.1"], "an IP SAN");
    assert!(!dns.contains(&"127.0.0.1".to_string()), "not a DNS SAN");
    assert!(dns.contains(&format!("sigil-operator.{ns}.svc")), "the Service names stay valid");
    assert_eq!(ca_bundle(&client, ns).await?, bundle, "new names do not change the CA");
    Ok(())
}

/// A TCP forwarder that sends each new connection to the next replica in turn, so that two
/// out-of-cluster replicas share one registration (one URL), as Service endpoints would.
struct RoundRobin {
    addr: SocketAddr,
    connections: Arc<[AtomicUsize; 2]>,
    task: tokio::task::JoinHandle<()>,
}

impl RoundRobin {
    async fn start(upstreams: [SocketAddr; 2]) -> Result<RoundRobin> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let connections: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let counts = connections.clone();
        let task = tokio::spawn(async move {
            let mut next = 0;
            while let Ok((mut downstream, _)) = listener.accept().await {
                let i = next % 2;
                next += 1;
                counts[i].fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    if let Ok(mut upstream) = tokio::net::TcpStream::connect(upstreams[i]).await {
                        let _ = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await;
                    }
                });
            }
        });
        Ok(RoundRobin { addr, connections, task })
    }

    fn counts(&self) -> [usize; 2] {
        [0, 1].map(|i| self.connections[i].load(Ordering::Relaxed))
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Workers that create labelled pods without pause (dry-run creates: the webhook runs, nothing
/// piles up), counting admissions and keeping every refusal.
struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(pods: &Api<Pod>, admitted: &Arc<AtomicUsize>, refused: &Arc<Mutex<Vec<String>>>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..4)
            .map(|worker| {
                let (pods, stop, admitted, refused) = (pods.clone(), stop.clone(), admitted.clone(), refused.clone());
                tokio::spawn(async move {
                    let dry_run = PostParams { dry_run: true, ..Default::default() };
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        match pods.create(&dry_run, &pod(&format!("load-{worker}-{i}"), Some("voter"))).await {
                            Ok(pod) if pod.spec.as_ref().and_then(|s| s.init_containers.as_ref()).is_some() => {
                                admitted.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(_) => refused.lock().unwrap().push("admitted without the signer".into()),
                            Err(error) => refused.lock().unwrap().push(error.to_string()),
                        }
                    }
                })
            })
            .collect();
        Load { stop, workers }
    }

    /// Stops, and waits for the workers.
    async fn stop(self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.await?;
        }
        Ok(())
    }
}

/// Two replicas serve one namespace's webhook behind one URL. Their serving certificate lives 30
/// seconds (renewed at two thirds) while labelled pods are admitted without pause: every admission
/// succeeds, through two renewals; after each renewal both replicas serve the new certificate
/// within seconds, and the API server reconnects to both and accepts it.
#[tokio::test]
async fn two_replicas_renew_without_a_refused_admission() -> Result<()> {
    let cluster = cluster().await?;
    let namespace = cluster.namespace("tls-renew").await?;
    let (client, ns) = (cluster.client.clone(), namespace.name.clone());
    let _cleanup = WebhookCleanup(cluster.kubeconfig.clone(), ns.clone());
    setup_key_and_account(&client, &ns).await?;
    create(&client, &ns, "voter", atto_spec()).await?;

    let replicas: [SocketAddr; 2] = [free_port(), free_port()].map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    let proxy = RoundRobin::start(replicas).await?;
    let args = |addr: SocketAddr| {
        let args = [
            "--webhook-addr".to_string(),
            addr.to_string(),
            "--webhook-url".into(),
            format!("https://{}", proxy.addr),
            "--webhook-certificate-validity".into(),
            "30s".into(),
            "--signer-image".into(),
            "sigil-signer:test".into(),
        ];
        args.to_vec()
    };
    let _operators = [
        Operator::start(&cluster.kubeconfig, &ns, &strings(&args(replicas[0])))?,
        Operator::start(&cluster.kubeconfig, &ns, &strings(&args(replicas[1])))?,
    ];
    wait_ready(&client, &ns, "voter", "True").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    webhook_active(&pods).await?;

    let admitted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut leaf = stored_leaf(&client, &ns).await?.context("a certificate")?;
    let bundle = ca_bundle(&client, &ns).await?;
    let load = Load::start(&pods, &admitted, &refused);
    let result: Result<()> = async {
        for renewal in 1..=2 {
            let renewed = wait_for(&format!("renewal {renewal}"), DEADLINE, || async {
                Ok(stored_leaf(&client, &ns).await?.filter(|l| *l != leaf))
            })
            .await?;
            wait_for(&format!("both replicas to serve renewal {renewal}"), Duration::from_secs(10), || async {
                for replica in replicas {
                    if served_leaf(replica, &bundle).await? != renewed {
                        return Ok(None);
                    }
                }
                Ok(Some(()))
            })
            .await?;
            // Connections from before the renewal are closed after their next answer: the API
            // server dials new ones, to both replicas, and keeps admitting through them.
            let (before, through) = (proxy.counts(), admitted.load(Ordering::Relaxed) + 20);
            wait_for("new connections to both replicas", Duration::from_secs(20), || async {
                let now = proxy.counts();
                Ok((now[0] > before[0] && now[1] > before[1]).then_some(()))
            })
            .await?;
            wait_for("admissions over the new connections", DEADLINE, || async {
                Ok((admitted.load(Ordering::Relaxed) >= through).then_some(()))
            })
            .await?;
            leaf = renewed;
        }
        Ok(())
    }
    .await;
    load.stop().await?;
    result?;
    let refused = refused.lock().unwrap().clone();
    let admitted = admitted.load(Ordering::Relaxed);
    eprintln!("admitted {admitted} pods through two renewals; connections per replica: {:?}", proxy.counts());
    ensure!(
        refused.is_empty(),
        "{} of {} admissions refused, first: {}",
        refused.len(),
        admitted + refused.len(),
        refused[0]
    );
    assert_eq!(ca_bundle(&client, &ns).await?, bundle, "renewals never change the caBundle");
    Ok(())
}

/// What anyone who reaches the port can get: a bare 400 for what is not an admission review of a
/// Pod (no parser errors, no internals); /healthz.
#[tokio::test]
async fn unparseable_requests_get_a_bare_400() -> Result<()> {
    let cluster = cluster().await?;
    let namespace = cluster.namespace("tls-400").await?;
    let (client, ns) = (cluster.client.clone(), namespace.name.as_str());
    let _cleanup = WebhookCleanup(cluster.kubeconfig.clone(), ns.to_string());
    let args = webhook_args();
    let addr: SocketAddr = args[1].parse()?;
    let _operator = Operator::start(&cluster.kubeconfig, ns, &strings(&args))?;
    let bundle =
        wait_for("the webhook registration", DEADLINE, || async { Ok(ca_bundle(&client, ns).await.ok()) }).await?;
    // It listens before it registers, and serves right after.
    wait_for("the webhook to answer", DEADLINE, || async {
        Ok(request(addr, &bundle, "GET /healthz HTTP/1.1", b"", None).await.ok().filter(|(s, _)| *s == 200))
    })
    .await?;

    let json = "POST /mutate HTTP/1.1\r\nContent-Type: application/json";
    let secret_review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": { "uid": "1", "kind": { "group": "", "version": "v1", "kind": "Secret" },
                     "resource": { "group": "", "version": "v1", "resource": "secrets" },
                     "operation": "CREATE", "userInfo": {}, "object": { "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "s" } } }
    });
    let cases: Vec<(&str, Vec<u8>, Option<usize>)> = vec![
        (json, b"{not json".to_vec(), None),
        (json, b"{}".to_vec(), None),
        (json, serde_json::to_vec(&secret_review)?, None),
        ("POST /mutate HTTP/1.1\r\nContent-Type: text/plain", b"hello".to_vec(), None),
        ("POST /mutate HTTP/1.1", br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(), None),
        // Refused on its declared size, before a byte of it is read.
        (json, Vec::new(), Some(64 * 1024 * 1024)),
    ];
    for (head, body, length) in cases {
        let (status, text) = request(addr, &bundle, head, &body, length).await?;
        let shown = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
        if status != 400 || text != "bad request\n" {
            bail!("{head:?} {shown:?}: {status} {text:?}");
        }
    }
    let (status, _) = request(addr, &bundle, "GET /mutate HTTP/1.1", b"", None).await?;
    assert_eq!(status, 405);
    Ok(())
}

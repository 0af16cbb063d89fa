//! Limits on every input, with small values so the test is quick: a stalled body gets 408 (the
//! node retries), too many signs in flight get 429 with Retry-After (the node retries), a client
//! that never finishes its headers is disconnected.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use sigil_signer::backend::local::LocalBackend;
use sigil_signer::keys::{Algorithm, SecretKey};
use sigil_signer::policy::Policy;
use sigil_signer::protocol::atto::api::{router, Limits};
use sigil_signer::ratchet::memory::MemoryRatchet;
use sigil_signer::server::auth::{TokenAuth, TokenSource};
use sigil_signer::server::http::{serve, ConnectionLimits};
use sigil_signer::sign::{KeyEntry, Signer};

/// Serves one Atto router with `limits` on a loopback port, in a background runtime.
fn start(limits: Limits, connections: ConnectionLimits) -> (SocketAddr, String) {
    std::env::set_var("SIGIL_LIMITS_TEST_TOKEN", TOKEN);
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let key = SecretKey::from_hex(Algorithm::Ed25519, SEED_HEX).unwrap();
            let public_key = hex::encode_upper(key.public_key().as_bytes());
            let entry = KeyEntry::new(
                "k",
                Arc::new(LocalBackend::new(key)),
                Policy::allowing([sigil_signer::protocol::atto::api::VOTE]),
            );
            let signer = Arc::new(Signer::new(
                [entry],
                Arc::new(MemoryRatchet::default()),
                Arc::default(),
                Duration::from_secs(1),
            ));
            assert!(signer.probe_keys().await.is_empty());
            let (auth, _) = TokenAuth::load(TokenSource::Env("SIGIL_LIMITS_TEST_TOKEN".into())).unwrap();
            let app = router(signer, "k", Arc::new(auth), limits);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send((listener.local_addr().unwrap(), public_key)).unwrap();
            serve(listener, app, connections, std::future::pending()).await;
        });
    });
    addr_rx.recv_timeout(Duration::from_secs(10)).expect("server started")
}

fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    raw
}

#[test]
fn a_stalled_body_gets_408() {
    let limits = Limits { request_timeout: Duration::from_millis(300), ..Limits::ATTO };
    let (addr, _) = start(limits, ConnectionLimits::default());
    let mut stream = TcpStream::connect(addr).unwrap();
    // Promise 100 bytes, send 10, then stall.
    write!(
        stream,
        "POST /votes HTTP/1.1\r\nHost: x\r\nAuthorization: {TOKEN}\r\nContent-Length: 100\r\n\r\n{{\"target\":"
    )
    .unwrap();
    let response = parse_response(&read_all(&mut stream));
    assert_eq!(response.status, 408);
}

#[test]
fn too_many_in_flight_gets_429_with_retry_after() {
    let limits = Limits { max_in_flight: 0, ..Limits::ATTO };
    let (addr, public_key) = start(limits, ConnectionLimits::default());
    let response = http(addr, "POST", "/votes", Some(TOKEN), Some(&vote_body(&public_key, &"00".repeat(32), 1)));
    assert_eq!(response.status, 429);
    assert_eq!(response.header("retry-after"), Some("1"));
    assert!(response.json()["message"].as_str().unwrap().contains("retry"));
    // Reads are not sign requests and still answer.
    assert_eq!(http(addr, "GET", "/public-keys", Some(TOKEN), None).status, 200);
}

#[test]
fn unfinished_headers_are_cut_off() {
    let connections =
        ConnectionLimits { header_read_timeout: Duration::from_millis(300), ..ConnectionLimits::default() };
    let (addr, _) = start(Limits::ATTO, connections);
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(b"GET /public-keys HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = Instant::now();
    read_all(&mut stream); // returns when the server closes the connection
    assert!(started.elapsed() < Duration::from_secs(5), "slow client kept its socket");
}

#[test]
fn connections_beyond_the_limit_are_closed() {
    let connections = ConnectionLimits { max_connections: 1, ..ConnectionLimits::default() };
    let (addr, _) = start(Limits::ATTO, connections);
    // The first connection holds the only slot (keep-alive, idle).
    let mut first = TcpStream::connect(addr).unwrap();
    write!(first, "GET /public-keys HTTP/1.1\r\nHost: x\r\nAuthorization: {TOKEN}\r\n\r\n").unwrap();
    let mut buffer = [0u8; 512];
    first.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(first.read(&mut buffer).unwrap() > 0);
    // A second is accepted by the kernel and closed at once by the server.
    let mut second = TcpStream::connect(addr).unwrap();
    let _ = write!(second, "GET /public-keys HTTP/1.1\r\nHost: x\r\nAuthorization: {TOKEN}\r\n\r\n");
    assert!(read_all(&mut second).is_empty());
    // Once the first leaves, service resumes.
    drop(first);
    wait_until("a free connection slot", Duration::from_secs(10), || {
        std::panic::catch_unwind(|| http(addr, "GET", "/public-keys", Some(TOKEN), None).status).ok() == Some(200)
    });
}

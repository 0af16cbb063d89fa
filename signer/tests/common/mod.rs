//! Helpers shared by the signer's integration tests: run the real binary, talk HTTP to it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "test-token-0123456789abcdef0123456789abcdef";
pub const SEED_HEX: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

/// A running `sigil-signer` of this build (the one wrapper, shared with the cross-component tests).
#[allow(unused_imports)] // not every test binary starts a signer
pub use sigil_tests::process::Signer as SignerProcess;

/// Runs the binary to completion (for commands and startup errors), with a deadline.
pub fn run_to_end(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sigil-signer"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sigil-signer");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            let mut err = String::new();
            child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            return (status.code().unwrap_or(-1), out, err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sigil-signer {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20)); // polling a child's exit, bounded by the deadline
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), with a read deadline.
pub fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Response {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: {token}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> Response {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP response: {text:?}"));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect::<Vec<_>>();
    let chunked = headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_string() };
    Response { status, headers, body }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// Waits until `condition` holds, polling, or panics at the deadline.
pub fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !condition() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A vote body for `public_key` (uppercase hex) on a random-ish block hash.
pub fn vote_body(public_key: &str, block_hash: &str, timestamp: i64) -> String {
    format!(
        r#"{{"target":{{"version":0,"algorithm":"V1","publicKey":"{public_key}","blockAlgorithm":"V1","blockHash":"{block_hash}","timestamp":{timestamp}}}}}"#
    )
}

/// Runs `e2e/lib/<name>` (which installs what it names on first use) and returns what it prints.
pub fn script(name: &str) -> String {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../e2e/lib").join(name);
    let output = Command::new(&path).output().unwrap_or_else(|e| panic!("run {}: {e}", path.display()));
    assert!(output.status.success(), "{name}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// How many of `checks` (`[public key b58, signature b58, data hex]`) pytezos refuses to verify.
pub fn pytezos_rejects(python: &str, checks: &[serde_json::Value]) -> usize {
    let verify = "import json, sys\nfrom pytezos.crypto.key import Key\nbad = 0\n\
        for pk, sig, data in json.load(sys.stdin):\n    try:\n        Key.from_encoded_key(pk).verify(sig, bytes.fromhex(data))\n    except Exception as e:\n        bad += 1\n        print(pk, e, file=sys.stderr)\nprint(bad)\n";
    let mut child = Command::new(python)
        .args(["-c", verify])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    serde_json::to_writer(child.stdin.take().unwrap(), checks).unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout.trim().parse().unwrap_or_else(|_| panic!("pytezos: {stdout} {}", String::from_utf8_lossy(&output.stderr)))
}

/// The Atto library (@attocash/commons-core, installed into the cache by e2e/lib/atto-commons)
/// plays the node against the signer at `atto`, whose key must be [`SEED_HEX`]: 40 blocks, 40
/// votes and 20 challenges, each signature equal to the library's own and verified by Node.
pub fn atto_library_checks(atto: SocketAddr) {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let installed = Command::new(root.join("../e2e/lib/atto-commons")).output().expect("run e2e/lib/atto-commons");
    assert!(
        installed.status.success(),
        "installing @attocash/commons-core failed: {}",
        String::from_utf8_lossy(&installed.stderr)
    );
    let output = Command::new("node")
        .arg(root.join("tests/atto/interop.mjs"))
        .env("SIGNER_URL", format!("http://{atto}/"))
        .env("SIGNER_TOKEN", TOKEN)
        .env("SIGNER_SECRET", SEED_HEX)
        .env("ATTO_COMMONS", String::from_utf8(installed.stdout).unwrap().trim())
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "interop failed:\n{stdout}\n{stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON summary line");
    assert_eq!(summary["failures"], serde_json::json!([]));
    assert_eq!(
        (summary["blocks"].as_u64(), summary["votes"].as_u64(), summary["challenges"].as_u64()),
        (Some(40), Some(40), Some(20))
    );
}

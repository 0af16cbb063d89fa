//! A real CometBFT validator signs through sigil: a single-validator localnet (v0.38 over TCP with
//! SecretConnection, v1.0 over a Unix socket), built from the Go module proxy by e2e/lib/cometbft.
//! With one validator every block needs sigil's proposal, prevote and precommit, so blocks only
//! advance if every signature is right. Vote extensions are on from height 1.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

fn cometbft(version: &str) -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../e2e/lib/cometbft");
    let output = Command::new(&script).arg(version).output().expect("run e2e/lib/cometbft");
    assert!(output.status.success(), "building CometBFT failed: {}", String::from_utf8_lossy(&output.stderr));
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Node {
    child: Child,
    rpc: u16,
    log: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn status(&self) -> Option<serde_json::Value> {
        let addr = format!("127.0.0.1:{}", self.rpc).parse().unwrap();
        std::panic::catch_unwind(|| http(addr, "GET", "/status", None, None)).ok().map(|r| r.json())
    }

    fn height(&self) -> u64 {
        self.status()
            .and_then(|s| s["result"]["sync_info"]["latest_block_height"].as_str().map(str::to_string))
            .and_then(|h| h.parse().ok())
            .unwrap_or(0)
    }

    fn get(&self, path: &str) -> serde_json::Value {
        http(format!("127.0.0.1:{}", self.rpc).parse().unwrap(), "GET", path, None, None).json()
    }

    fn wait_for_height(&self, height: u64, deadline: Duration) {
        wait_until(&format!("height {height}"), deadline, || self.height() >= height);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `cometbft init`, vote extensions on from height 1, 200 ms between blocks. Returns the chain id.
fn init(binary: &Path, home: &Path, v1: bool) -> String {
    let status = Command::new(binary).args(["init", "--home"]).arg(home).stdout(Stdio::null()).status().unwrap();
    assert!(status.success());
    let genesis_path = home.join("config/genesis.json");
    let mut genesis: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&genesis_path).unwrap()).unwrap();
    let params = &mut genesis["consensus_params"];
    if v1 {
        params["feature"]["vote_extensions_enable_height"] = "1".into();
    } else {
        params["abci"]["vote_extensions_enable_height"] = "1".into();
    }
    std::fs::write(&genesis_path, genesis.to_string()).unwrap();
    let config_path = home.join("config/config.toml");
    let config =
        std::fs::read_to_string(&config_path).unwrap().replace("timeout_commit = \"1s\"", "timeout_commit = \"200ms\"");
    std::fs::write(&config_path, config).unwrap();
    genesis["chain_id"].as_str().unwrap().to_string()
}

fn start_node(binary: &Path, home: &Path, laddr: &str) -> Node {
    let (rpc, p2p) = (free_port(), free_port());
    let log = home.join("node.log");
    let child = Command::new(binary)
        .args(["start", "--proxy_app=kvstore", "--home"])
        .arg(home)
        .arg(format!("--priv_validator_laddr={laddr}"))
        .arg(format!("--rpc.laddr=tcp://127.0.0.1:{rpc}"))
        .arg(format!("--p2p.laddr=tcp://127.0.0.1:{p2p}"))
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Node { child, rpc, log }
}

fn start_signer(dir: &Path, laddr: &str, chain: &str, version: &str) -> SignerProcess {
    let config = format!(
        "keys: {{validator: {{local: {{secretKeyFile: {}}}}}}}\n\
         ratchet: {{file: {{dir: {}}}}}\n\
         cometbft: [{{connect: \"{laddr}\", chainId: \"{chain}\", key: validator, version: \"{version}\", identityKeyFile: {}}}]\n\
         management: {{listen: 127.0.0.1:0}}\n",
        dir.join("node/config/priv_validator_key.json").display(),
        dir.join("ratchet").display(),
        dir.join("identity.key").display(),
    );
    let path = dir.join("sigil.yaml");
    std::fs::write(&path, config).unwrap();
    SignerProcess::spawn(&["--config", path.to_str().unwrap()], &[])
}

/// The validator's address, from the key file the node was made with.
fn address(home: &Path) -> String {
    let key: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("config/priv_validator_key.json")).unwrap()).unwrap();
    key["address"].as_str().unwrap().to_string()
}

fn metric(signer: &SignerProcess, series: &str) -> u64 {
    let metrics = http(signer.management, "GET", "/metrics", None, None).body;
    metrics.lines().find_map(|l| l.strip_prefix(series)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

fn run_chain(version: &str, laddr_for: impl Fn(&Path) -> String, v1: bool) {
    let binary = cometbft(version);
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("node");
    let chain = init(&binary, &home, v1);
    let laddr = laddr_for(dir.path());
    let layout = if v1 { "v1.0" } else { "v0.38" };
    // The signer first, as in production: it redials until the node listens.
    let signer = start_signer(dir.path(), &laddr, &chain, layout);
    let node = start_node(&binary, &home, &laddr);
    node.wait_for_height(20, Duration::from_secs(90));

    // Every commit 2..=20 carries a precommit by this validator's key, whose address
    // `sigil-signer key show` prints from the same file.
    let validator = address(&home);
    let key_file = home.join("config/priv_validator_key.json");
    let (code, shown, _) = run_to_end(&["key", "show", "--file", key_file.to_str().unwrap()], &[], None);
    assert_eq!(code, 0);
    assert!(shown.contains(&format!("cometbft:   {validator}")), "{shown}");
    for height in 2..=20 {
        let commit = node.get(&format!("/commit?height={height}"));
        let signatures = &commit["result"]["signed_header"]["commit"]["signatures"];
        let ours = signatures
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["validator_address"] == validator.as_str() && s["signature"].is_string());
        assert!(ours, "height {height}: no precommit by {validator}: {commit}");
    }
    let extensions =
        metric(&signer, r#"sigil_signer_signatures_total{key="validator",kind="cometbft_vote_extension"}"#);
    assert!(extensions >= 19, "vote extensions signed: {extensions}");

    // kill -9 mid-run: the chain stops, then resumes on the same marks; nothing is signed twice.
    let before = node.height();
    signer.kill();
    let signer = start_signer(dir.path(), &laddr, &chain, layout);
    node.wait_for_height(before + 10, Duration::from_secs(90));
    let log = node.log();
    for bad in ["CONSENSUS FAILURE", "conflicting", "double sign", "panic"] {
        assert!(!log.contains(bad), "node log mentions {bad:?}:\n{log}");
    }
    assert_eq!(metric(&signer, r#"sigil_signer_refusals_total{protocol="cometbft",reason="ratchet"}"#), 0);
}

#[test]
fn cometbft_v0_38_over_tcp_with_secret_connection() {
    run_chain("v0.38.25", |_| format!("tcp://127.0.0.1:{}", free_port()), false);
}

#[test]
fn cometbft_v1_0_over_a_unix_socket() {
    run_chain("v1.0.1", |dir| format!("unix://{}", dir.join("pv.sock").display()), true);
}

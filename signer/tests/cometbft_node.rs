//! A real CometBFT validator signs through sigil: single-validator localnets of v0.38 (over TCP
//! with SecretConnection) and v1.0 (over a Unix socket), built from the Go module proxy by
//! e2e/lib/cometbft, with the validator key in a local file, in SoftHSM (PKCS#11) and in the AWS
//! KMS emulator. With one validator every block needs sigil's proposal, prevote and precommit, so
//! blocks only advance if every signature is right. Vote extensions are on from height 1. Each
//! run kills the signer with SIGKILL mid-run and restarts it on the same marks, and reads the
//! audit file back: every precommit in the chain is there, and no height was signed twice.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_kms::types::KeySpec;
use base64::Engine as _;
use common::*;
use sigil_signer::keys::{Algorithm, PublicKey};
use sigil_tests::ministack::{self, Ministack};
use sigil_tests::softhsm;

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

/// `cometbft init` (with a BLS12-381 validator key when `bls`), vote extensions on from height 1,
/// 200 ms between blocks. Returns the chain id.
fn init(binary: &Path, home: &Path, v1: bool, bls: bool) -> String {
    let key_type: &[&str] = if bls { &["--key-type", "bls12_381"] } else { &[] };
    let status =
        Command::new(binary).args(["init", "--home"]).arg(home).args(key_type).stdout(Stdio::null()).status().unwrap();
    assert!(status.success());
    let genesis_path = home.join("config/genesis.json");
    let mut genesis: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&genesis_path).unwrap()).unwrap();
    let params = &mut genesis["consensus_params"];
    if bls {
        params["validator"]["pub_key_types"] = serde_json::json!(["bls12_381"]);
    }
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

/// Where the validator key lives, and what the signer needs to reach it.
struct ValidatorKey {
    /// The `keys.validator` entry of the signer config.
    config: String,
    env: Vec<(String, String)>,
    public_key: PublicKey,
    /// Keeps an emulator running as long as the key is used.
    _service: Option<Ministack>,
}

enum Backend {
    /// The key file `cometbft init` wrote.
    Local,
    SoftHsm,
    AwsKms,
}

impl Backend {
    fn key(&self, dir: &Path, home: &Path) -> ValidatorKey {
        match self {
            Backend::Local => {
                let file = home.join("config/priv_validator_key.json");
                let text = std::fs::read_to_string(&file).unwrap();
                ValidatorKey {
                    config: format!("{{local: {{secretKeyFile: {}}}}}", file.display()),
                    env: Vec::new(),
                    public_key: sigil_signer::keys::cometbft::parse_secret_key(&text).unwrap().public_key(),
                    _service: None,
                }
            }
            Backend::SoftHsm => {
                let module = script("softhsm");
                let conf = softhsm::token(dir);
                let (_, public_key) = softhsm::generate(&module, &conf).into_iter().find(|(l, _)| *l == "ed").unwrap();
                let pin = dir.join("pin");
                std::fs::write(&pin, "1234\n").unwrap();
                ValidatorKey {
                    config: format!(
                        "{{pkcs11: {{module: {module}, tokenLabel: sigil, keyLabel: ed, pinFile: {}}}}}",
                        pin.display()
                    ),
                    env: vec![("SOFTHSM2_CONF".into(), conf.display().to_string())],
                    public_key,
                    _service: None,
                }
            }
            Backend::AwsKms => {
                let emulator = Ministack::start();
                let runtime = tokio::runtime::Runtime::new().unwrap();
                let key_id = runtime.block_on(emulator.create_key(KeySpec::EccNistEdwards25519));
                let kms = runtime.block_on(emulator.client());
                let der = runtime.block_on(kms.get_public_key().key_id(&key_id).send()).unwrap();
                // SubjectPublicKeyInfo of Ed25519: the key is the last 32 bytes.
                let der = der.public_key().unwrap().as_ref().to_vec();
                ValidatorKey {
                    config: emulator.key_config(&key_id),
                    env: ministack::ENV.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                    public_key: PublicKey::from_bytes(Algorithm::Ed25519, &der[der.len() - 32..]).unwrap(),
                    _service: Some(emulator),
                }
            }
        }
    }
}

/// Makes `key` the genesis's one validator.
fn make_validator(home: &Path, key: &PublicKey) {
    let path = home.join("config/genesis.json");
    let mut genesis: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let address = hex::encode_upper(sigil_signer::keys::cometbft::address(key).unwrap());
    let value = base64::engine::general_purpose::STANDARD.encode(key.as_bytes());
    genesis["validators"] = serde_json::json!([{
        "address": address,
        "pub_key": {"type": "tendermint/PubKeyEd25519", "value": value},
        "power": "10",
        "name": "sigil"
    }]);
    std::fs::write(&path, genesis.to_string()).unwrap();
}

fn start_signer(
    dir: &Path,
    laddr: &str,
    chain: &str,
    version: Option<&str>,
    key: &ValidatorKey,
    reserve: bool,
) -> SignerProcess {
    let version = version.map(|v| format!(", version: \"{v}\"")).unwrap_or_default();
    let config = format!(
        "keys: {{validator: {}}}\n\
         ratchet: {{file: {{dir: {}, reserveNextStep: {reserve}}}}}\n\
         cometbft: [{{connect: \"{laddr}\", chainId: \"{chain}\", key: validator{version}, identityKeyFile: {}}}]\n\
         management: {{listen: 127.0.0.1:0}}\n\
         audit: {{file: {}}}\n",
        key.config,
        dir.join("ratchet").display(),
        dir.join("identity.key").display(),
        dir.join("audit.jsonl").display(),
    );
    let path = dir.join("sigil.yaml");
    std::fs::write(&path, config).unwrap();
    let env: Vec<(&str, &str)> = key.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    SignerProcess::spawn(&["--config", path.to_str().unwrap()], &env)
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

/// Runs a localnet whose validator key is in `backend`, through a signer told `layout` (or
/// nothing: it then answers every version), kills the signer mid-run, and checks the chain and
/// the audit trail. Returns the chain's height at the end. With `reserve` (`reserveNextStep`)
/// the signer is stopped as Kubernetes stops it (SIGTERM) instead: after a kill the reserved step
/// is refused, which stalls a chain whose only validator it is.
fn run_chain(
    version: &str,
    laddr_for: impl Fn(&Path) -> String,
    backend: Backend,
    layout: Option<&str>,
    reserve: bool,
) -> u64 {
    let (v1, bls) = (version.starts_with("v1"), version.ends_with("-bls12381"));
    let binary = cometbft(version);
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("node");
    let chain = init(&binary, &home, v1, bls);
    let key = backend.key(dir.path(), &home);
    if !matches!(backend, Backend::Local) {
        make_validator(&home, &key.public_key);
    }
    let laddr = laddr_for(dir.path());
    // The signer first, as in production: it redials until the node listens.
    let signer = start_signer(dir.path(), &laddr, &chain, layout, &key, reserve);
    let node = start_node(&binary, &home, &laddr);
    node.wait_for_height(20, Duration::from_secs(90));

    // Every commit 2..=20 carries a precommit by this validator's key.
    let validator = hex::encode_upper(sigil_signer::keys::cometbft::address(&key.public_key).unwrap());
    if matches!(backend, Backend::Local) {
        assert_eq!(address(&home), validator);
        // `sigil-signer key show` prints the same address from the same file.
        let key_file = home.join("config/priv_validator_key.json");
        let (code, shown, _) = run_to_end(&["key", "show", "--file", key_file.to_str().unwrap()], &[], None);
        assert_eq!(code, 0);
        assert!(shown.contains(&format!("cometbft:   {validator}")), "{shown}");
    }
    let precommits = |to: u64| -> Vec<(u64, String)> {
        (2..=to)
            .map(|height| {
                let commit = node.get(&format!("/commit?height={height}"));
                let signatures = &commit["result"]["signed_header"]["commit"]["signatures"];
                let ours = signatures.as_array().unwrap().iter().find(|s| s["validator_address"] == validator.as_str());
                let signature = ours.and_then(|s| s["signature"].as_str());
                let signature = signature.unwrap_or_else(|| panic!("height {height}: no precommit by {validator}"));
                (height, hex::encode(base64::engine::general_purpose::STANDARD.decode(signature).unwrap()))
            })
            .collect()
    };
    precommits(20);
    let extensions =
        metric(&signer, r#"sigil_signer_signatures_total{key="validator",kind="cometbft_vote_extension"}"#);
    assert!(extensions >= 19, "vote extensions signed: {extensions}");

    // kill -9 (or a stop) mid-run: the chain stops, then resumes on the same marks; nothing is
    // signed twice.
    let before = node.height();
    if reserve {
        signer.terminate();
    } else {
        signer.kill();
    }
    let signer = start_signer(dir.path(), &laddr, &chain, layout, &key, reserve);
    node.wait_for_height(before + 10, Duration::from_secs(90));
    let log = node.log();
    for bad in ["CONSENSUS FAILURE", "conflicting", "double sign", "panic"] {
        assert!(!log.contains(bad), "node log mentions {bad:?}:\n{log}");
    }
    assert_eq!(metric(&signer, r#"sigil_signer_refusals_total{protocol="cometbft",reason="ratchet"}"#), 0);

    // The audit file, across both signer processes: every precommit the chain holds was signed at
    // its height with that very signature; no height/round/step has two signatures.
    let height = node.height();
    // The file is written by its own thread, just after each answer: read until the last height's
    // records are in, within a deadline.
    let read_audit = || -> Vec<serde_json::Value> {
        let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
        audit.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    };
    wait_until("the audit file to reach the chain's height", Duration::from_secs(10), || {
        read_audit().iter().any(|r| r["kind"] == "cometbft_precommit" && r["height"].as_u64() >= Some(height))
    });
    let records = read_audit();
    let mut signed = std::collections::BTreeMap::<(String, u64, u64), std::collections::BTreeSet<String>>::new();
    for record in records.iter().filter(|r| r["outcome"] != "refused") {
        assert_eq!(record["keyHash"], validator.as_str(), "{record}");
        let kind = record["kind"].as_str().unwrap().to_string();
        let at = (kind, record["height"].as_u64().unwrap(), record["round"].as_u64().unwrap());
        signed.entry(at).or_default().insert(record["signature"].as_str().unwrap().to_string());
    }
    for (at, signature) in precommits(height) {
        // In whichever round: the signer's restart may have cost a round.
        let mut precommits = signed.iter().filter(|((kind, h, _), _)| kind == "cometbft_precommit" && *h == at);
        let found = precommits.any(|(_, signatures)| signatures.contains(&signature));
        assert!(found, "the precommit at height {at} is not in the audit file");
    }
    let double_signs = signed.iter().filter(|((kind, ..), s)| !kind.ends_with("extension") && s.len() > 1).count();
    assert_eq!(double_signs, 0, "{signed:?}");
    println!(
        "CometBFT {version}, {} key, layout {}: height {height}, {} signatures in the audit file, 0 double signs",
        match backend {
            Backend::Local => "local",
            Backend::SoftHsm => "SoftHSM",
            Backend::AwsKms => "AWS KMS emulator",
        },
        layout.unwrap_or("unset (every version)"),
        records.iter().filter(|r| r["outcome"] == "signed").count()
    );
    height
}

fn tcp(_: &Path) -> String {
    format!("tcp://127.0.0.1:{}", free_port())
}

fn unix(dir: &Path) -> String {
    format!("unix://{}", dir.join("pv.sock").display())
}

#[test]
fn cometbft_v0_38_over_tcp_with_secret_connection() {
    run_chain("v0.38.25", tcp, Backend::Local, Some("v0.38"), false);
}

/// With `reserveNextStep`: every answer covered by a flushed reservation, a stop and a restart
/// mid-run, the chain going on with nothing refused.
#[test]
fn cometbft_v0_38_reserving_the_next_step() {
    run_chain("v0.38.25", tcp, Backend::Local, Some("v0.38"), true);
}

#[test]
fn cometbft_v1_0_over_a_unix_socket() {
    run_chain("v1.0.1", unix, Backend::Local, Some("v1"), false);
}

/// A BLS12-381 validator key, as `cometbft init --key-type bls12_381` writes it, on a node built
/// with the `bls12381` tag: blocks only advance if sigil's public key, address and basic-scheme
/// signatures are CometBFT's.
#[test]
fn cometbft_v1_0_with_a_bls12_381_key() {
    run_chain("v1.0.1-bls12381", unix, Backend::Local, None, false);
}

#[test]
fn cometbft_v0_38_with_a_softhsm_key() {
    run_chain("v0.38.25", tcp, Backend::SoftHsm, None, false);
}

#[test]
fn cometbft_v1_0_with_a_softhsm_key() {
    run_chain("v1.0.1", unix, Backend::SoftHsm, None, false);
}

#[test]
fn cometbft_v0_38_with_an_aws_kms_key() {
    run_chain("v0.38.25", tcp, Backend::AwsKms, None, false);
}

#[test]
fn cometbft_v1_0_with_an_aws_kms_key() {
    run_chain("v1.0.1", unix, Backend::AwsKms, None, false);
}

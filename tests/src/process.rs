//! A sigil-signer process of this build, for tests: started with arguments and an environment
//! (nothing inherited), waited for until it listens, killed on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// The signer binary next to the running test binary (cargo and nextest build every workspace
/// binary before running tests).
pub fn signer_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().and_then(|deps| deps.parent()).context("target/<profile>")?;
    let binary = dir.join("sigil-signer");
    anyhow::ensure!(binary.is_file(), "{} is missing: cargo build -p sigil-signer", binary.display());
    Ok(binary)
}

/// Runs `e2e/lib/<name>` (each installs its tool on first use) and returns what it printed: the
/// tool's path.
pub fn e2e_lib(name: &str) -> Result<String> {
    let path = crate::cluster::repo_root().join("e2e/lib").join(name);
    let output = std::process::Command::new(&path).output().with_context(|| format!("run {}", path.display()))?;
    anyhow::ensure!(output.status.success(), "{name}: {}", String::from_utf8_lossy(&output.stderr));
    Ok(String::from_utf8(output.stdout)?.trim().to_string())
}

/// A child's stderr as lines, read on a thread so the child never blocks on a full pipe.
pub fn lines(stderr: ChildStderr) -> mpsc::Receiver<String> {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                return;
            }
        }
    });
    receive
}

pub struct Signer {
    child: Child,
    /// The API listeners by name ("atto API", "tezos API").
    apis: Vec<(String, SocketAddr)>,
    pub management: SocketAddr,
    logs: mpsc::Receiver<String>,
    /// What it logged until it listened.
    startup: Vec<String>,
}

impl Signer {
    /// Starts the binary with JSON logs and waits (with a deadline) until every listener is up
    /// (the management listener is announced last). Panics with its output if it does not.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Signer {
        let mut child = Command::new(signer_binary().expect("the signer binary"))
            .args(args)
            .args(["--log-format", "json"])
            .env_clear()
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sigil-signer");
        let logs = lines(child.stderr.take().expect("stderr is piped"));
        let (mut apis, mut management) = (Vec::new(), None);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        while management.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = logs
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("sigil-signer did not start listening; its output:\n{}", seen.join("\n")));
            seen.push(line.clone());
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let addr = event["addr"].as_str().and_then(|a| a.parse::<SocketAddr>().ok());
            match (event["message"].as_str().and_then(|m| m.strip_suffix(" listening")), addr) {
                (Some("management"), Some(addr)) => management = Some(loopback(addr)),
                (Some(api), Some(addr)) => apis.push((api.to_string(), loopback(addr))),
                _ => {}
            }
        }
        Signer { child, apis, management: management.unwrap(), logs, startup: seen }
    }

    /// `sigil-signer --config <config>`.
    pub fn start(config: &Path, env: &[(&str, &str)]) -> Signer {
        Signer::spawn(&["--config", config.to_str().expect("a UTF-8 path")], env)
    }

    /// A listener's address: "tezos API", "atto API".
    pub fn api(&self, name: &str) -> Result<SocketAddr> {
        self.apis.iter().find(|(n, _)| n == name).map(|(_, a)| *a).with_context(|| format!("no {name} listener"))
    }

    pub fn atto(&self) -> SocketAddr {
        self.api("atto API").unwrap()
    }

    pub fn tezos(&self) -> SocketAddr {
        self.api("tezos API").unwrap()
    }

    /// The log lines it wrote while starting, up to and including the last listener's.
    pub fn startup_logs(&self) -> &[String] {
        &self.startup
    }

    /// Every log line since the last call (or since it started listening).
    pub fn drain_logs(&self) -> Vec<String> {
        self.logs.try_iter().collect()
    }

    /// Kills the process at once (SIGKILL): no drain, no cleanup.
    pub fn kill(mut self) {
        self.stop();
    }

    /// Stops the process as Kubernetes does (SIGTERM) and waits until it has exited.
    pub fn terminate(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A listener bound to 0.0.0.0 is reached over loopback.
fn loopback(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        self.stop();
    }
}

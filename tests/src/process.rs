//! A sigil-signer process of this build, for cross-component tests: started with a config and an
//! environment, killed on drop.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The signer binary next to the running test binary (cargo and nextest build every workspace
/// binary before running tests).
pub fn signer_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().and_then(|deps| deps.parent()).context("target/<profile>")?;
    let binary = dir.join("sigil-signer");
    if !binary.is_file() {
        bail!("{} is missing: cargo build -p sigil-signer", binary.display());
    }
    Ok(binary)
}

pub struct Signer {
    pub child: Child,
    listeners: Vec<(String, SocketAddr)>,
}

impl Signer {
    /// Starts `sigil-signer --config <config>` with only `env` set, and waits (with a deadline)
    /// until it has announced every listener (management comes last).
    pub fn start(config: &Path, env: &[(&str, &OsStr)]) -> Result<Signer> {
        let mut child = Command::new(signer_binary()?)
            .arg("--config")
            .arg(config)
            .args(["--log-format", "json", "--log", "warn,sigil_signer::app=info"])
            .env_clear()
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().context("stderr")?;
        let (send, receive) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut listeners = Vec::new();
        let mut seen = Vec::new();
        loop {
            let Ok(line) = receive.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
                let _ = child.kill();
                bail!("sigil-signer did not start; its output:\n{}", seen.join("\n"));
            };
            seen.push(line.clone());
            let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            let (Some(message), Some(addr)) = (event["message"].as_str(), event["addr"].as_str()) else { continue };
            let Some(name) = message.strip_suffix(" listening") else { continue };
            listeners.push((name.to_string(), addr.parse()?));
            if name == "management" {
                // Keep draining its log so it never blocks on a full pipe.
                std::thread::spawn(move || while receive.recv().is_ok() {});
                return Ok(Signer { child, listeners });
            }
        }
    }

    /// A listener's address: "tezos API", "atto API", "management".
    pub fn api(&self, name: &str) -> Result<SocketAddr> {
        self.listeners.iter().find(|(n, _)| n == name).map(|(_, a)| *a).with_context(|| format!("no {name} listener"))
    }

    /// SIGKILL, now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        self.kill();
    }
}

//! The signer config the operator rendered for the sidecar, made to run on this machine instead
//! (`e2e/demo`, where kwok's pods run no containers): the sidecar's directories moved under
//! `--dir`, its API and management listeners at the given addresses. Reads the config on stdin,
//! writes it on stdout.
//!
//! `kubectl get configmap baker-config -o jsonpath='{.data.signer\.yaml}' |
//!   local-signer-config --dir /tmp/baker --api 127.0.0.1:7000 --management 127.0.0.1:7001`

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Parser;
use sigil_operator::sidecar::{IDENTITY_DIR, KEY_DIR, TOKEN_DIR};
use sigil_signer::config::{ManagementConfig, SignerConfig};

#[derive(Parser)]
struct Args {
    /// Where the key, token and identity directories are (`key/`, `token/`, `identity/`).
    #[arg(long)]
    dir: PathBuf,
    /// The address of the protocol's API (Atto or Tezos).
    #[arg(long)]
    api: SocketAddr,
    /// The address of the management listener.
    #[arg(long)]
    management: SocketAddr,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    let mut config = SignerConfig::from_yaml(&text)?;
    let local = |path: &mut PathBuf| {
        let moved = [(KEY_DIR, "key"), (TOKEN_DIR, "token"), (IDENTITY_DIR, "identity")]
            .into_iter()
            .find_map(|(dir, here)| path.strip_prefix(Path::new(dir)).ok().map(|rest| args.dir.join(here).join(rest)));
        if let Some(moved) = moved {
            *path = moved;
        }
    };
    for key in config.keys.values_mut() {
        key.local.iter_mut().flat_map(|l| l.secret_key_file.as_mut()).for_each(local);
        key.pkcs11.iter_mut().flat_map(|p| p.pin_file.as_mut()).for_each(local);
    }
    if let Some(atto) = config.atto.as_mut() {
        atto.listen = args.api;
        atto.token_file.iter_mut().for_each(local);
    }
    if let Some(tezos) = config.tezos.as_mut() {
        tezos.listen = args.api;
    }
    config.cometbft.iter_mut().flat_map(|node| node.identity_key_file.as_mut()).for_each(local);
    config.management = Some(ManagementConfig { listen: args.management });
    print!("{}", config.to_yaml());
    Ok(())
}

//! Commits rising marks on several streams of a file ratchet at once, printing `<stream> <level>`
//! once each commit has returned (a signer would release the signature then), until it is killed.
//! `tests/tests/journal_crash.rs` kills it with SIGKILL at random moments and checks that no
//! printed mark is missing after the restart. The journal is compacted every 64 KiB, so kills also
//! land inside compactions.
//!
//!   journal-crash <dir> <streams>

use std::io::Write;
use std::sync::Arc;

use sigil_signer::ratchet::file::FileRatchet;
use sigil_signer::ratchet::{Mark, Ratchet, State, StreamId};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(streams)) = (args.get(1), args.get(2).and_then(|n| n.parse::<usize>().ok())) else {
        anyhow::bail!("usage: journal-crash <dir> <streams>");
    };
    let ratchet = Arc::new(FileRatchet::open_compacting_at(std::path::Path::new(dir), 64 * 1024)?);
    let mut tasks = Vec::new();
    for index in 0..streams {
        let ratchet = ratchet.clone();
        tasks.push(tokio::spawn(async move {
            let id = StreamId { key: "baker".into(), chain: format!("chain-{index}"), stream: "attestation" };
            loop {
                let mut lock = ratchet.lock(&id).await?;
                let level = lock.current().map_or(1, |s| s.mark.level + 1);
                let state = State {
                    mark: Mark { level, round: 0, step: 0 },
                    payload_digest: [1; 32],
                    signature: None,
                    context: None,
                };
                lock.commit(state).await?;
                drop(lock);
                // Released: one write(2) per line, so a kill never leaves half a line.
                std::io::stdout().lock().write_all(format!("{index} {level}\n").as_bytes())?;
            }
            #[allow(unreachable_code)]
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

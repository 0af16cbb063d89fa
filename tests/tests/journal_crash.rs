//! The file ratchet's journal under SIGKILL: a process commits marks on several streams at once
//! (sharing flushes) and prints each mark once its commit returned, which is when a signer releases
//! the signature; it is killed at a random moment, again and again. After every kill the journal
//! opened anew holds, on every stream, at least the highest mark printed: no released signature's
//! mark is ever missing, whether the kill landed in a write, a shared flush or a compaction.
//!
//! Half the kills land at a random moment from the start (opening and recovering the journal
//! included), half at a random moment after the first mark was released (under load, however
//! busy the machine is). `SIGIL_CRASH_ROUNDS` sets the number of kills (default 1000).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use rand_core::RngCore;
use sigil_signer::ratchet::file::FileRatchet;
use sigil_signer::ratchet::Ratchet;

const STREAMS: usize = 8;

#[tokio::test]
async fn no_released_mark_is_lost_to_a_kill() {
    let rounds: usize = std::env::var("SIGIL_CRASH_ROUNDS").ok().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    let mut released: BTreeMap<String, u64> = BTreeMap::new();
    let mut printed = 0usize;
    for round in 0..rounds {
        let mut child = Command::new(env!("CARGO_BIN_EXE_journal-crash"))
            .args([dir.path().to_str().unwrap(), &STREAMS.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines_sent, lines_received) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines_sent.send(line);
            }
        });
        let mut lines = Vec::new();
        if round % 2 == 1 {
            match lines_received.recv_timeout(Duration::from_secs(30)) {
                Ok(first) => lines.push(first),
                Err(e) => {
                    child.kill().unwrap();
                    let mut error = String::new();
                    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut error).unwrap();
                    panic!("round {round}: no mark released within 30 s ({e}): {error}");
                }
            }
        }
        // The fault: SIGKILL after a random 0 to 40 ms.
        let delay = rand_core::OsRng.next_u64() % 40_000;
        std::thread::sleep(Duration::from_micros(delay));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        reader.join().unwrap();
        lines.extend(lines_received.try_iter());
        if status.code().is_some() {
            let mut error = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut error).unwrap();
            panic!("round {round}: journal-crash exited by itself ({status}): {error}");
        }
        for line in &lines {
            let (stream, level) = line.split_once(' ').expect("<stream> <level>");
            let level: u64 = level.parse().unwrap();
            let highest = released.entry(format!("chain-{stream}")).or_default();
            *highest = (*highest).max(level);
        }
        printed += lines.len();

        let ratchet = FileRatchet::open(dir.path()).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let marks: BTreeMap<String, u64> =
            ratchet.entries().await.unwrap().into_iter().map(|e| (e.chain, e.state.mark.level)).collect();
        for (stream, highest) in &released {
            let mark = marks.get(stream).copied().unwrap_or(0);
            assert!(mark >= *highest, "round {round}: {stream} released level {highest}, the journal holds {mark}");
        }
    }
    assert!(printed > rounds / 2, "the kills must land under load: {printed} marks released in {rounds} rounds");
    eprintln!("{rounds} kills, {printed} marks released, every one found after the restart");
}

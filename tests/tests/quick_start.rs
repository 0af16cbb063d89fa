//! docs/quick-start.md, run as written: every ```sh block, in order, in one bash session from the
//! repository root, as a newcomer would paste them. Only the binaries are handed over
//! (SIGIL_BIN_DIR), so the demo does not rebuild what other tests are running.

use std::process::Command;

use sigil_tests::cluster::repo_root;
use sigil_tests::docs::code_blocks;
use sigil_tests::process::signer_binary;

#[test]
fn the_quick_start_works_as_written() {
    let root = repo_root();
    let doc = std::fs::read_to_string(root.join("docs/quick-start.md")).unwrap();
    let blocks = code_blocks(&doc, "sh");
    assert_eq!(blocks.len(), 3, "the tour, the look around, the clean-up");
    let script = format!("set -euo pipefail\n{}", blocks.join("\n"));
    let bin_dir = signer_binary().unwrap().parent().unwrap().to_path_buf();
    for binary in ["sigil-signer", "sigil-operator", "local-signer-config"] {
        assert!(bin_dir.join(binary).is_file(), "the workspace build has {binary}");
    }
    // Our own deadline, inside nextest's, so that a slow step still shows what it printed.
    let output = Command::new("timeout")
        .args(["--kill-after=10", "540", "bash", "-c", &script])
        .current_dir(&root)
        .env("SIGIL_BIN_DIR", &bin_dir)
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let outcome = if output.status.code() == Some(124) { "took over 9 minutes" } else { "failed" };
    assert!(output.status.success(), "the quick start {outcome}:\n{stdout}\n{stderr}");
    for expected in [
        "initContainer sigil-signer",
        "POST /votes -> {\"signature\":",
        "without the token -> HTTP 401",
        "pytezos: the signature verifies",
        "-> HTTP 409 (a double sign refused)",
        "kind=\"cometbft_precommit\"",
        "old token -> HTTP 200",
        "release \"sigil\" uninstalled",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}\n{stderr}");
    }
}

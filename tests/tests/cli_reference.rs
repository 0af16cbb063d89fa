//! docs/reference/cli.md is the `--help` of every command of both binaries, as this build prints
//! it. When a flag changes, regenerate it:
//! `SIGIL_WRITE_REFERENCE=1 cargo test -p sigil-tests --test cli_reference`.

use std::process::Command;

use sigil_tests::cluster::repo_root;
use sigil_tests::process::signer_binary;

const SIGNER_COMMANDS: &[&[&str]] = &[
    &[],
    &["run"],
    &["key"],
    &["key", "generate"],
    &["key", "import"],
    &["key", "show"],
    &["ratchet"],
    &["ratchet", "show"],
    &["ratchet", "set"],
    &["ratchet", "import"],
    &["ratchet", "export"],
    &["ratchet", "convert"],
    &["ratchet", "init"],
];

fn help(binary: &std::path::Path, command: &[&str]) -> String {
    let output = Command::new(binary).args(command).arg("--help").env_clear().output().expect("the binary runs");
    assert!(output.status.success(), "{} {command:?} --help failed", binary.display());
    String::from_utf8(output.stdout).unwrap()
}

fn reference() -> String {
    let signer = signer_binary().unwrap();
    let operator = signer.with_file_name("sigil-operator");
    let mut out = String::from(
        "# Command-line reference\n\n\
         The `--help` of every command, as this version prints it (kept current by\n\
         `tests/tests/cli_reference.rs`). Configuration files: [configuration.md](../configuration.md);\n\
         RemoteSigner fields: [remotesigner.md](remotesigner.md); metrics: [operations.md](../operations.md#metrics).\n",
    );
    let sections = SIGNER_COMMANDS.iter().map(|command| (&signer, "sigil-signer", *command)).chain(std::iter::once((
        &operator,
        "sigil-operator",
        &[][..],
    )));
    for (binary, name, command) in sections {
        let title = std::iter::once(name).chain(command.iter().copied()).collect::<Vec<_>>().join(" ");
        out.push_str(&format!("\n## `{title}`\n\n```text\n{}```\n", help(binary, command)));
    }
    out
}

#[test]
fn the_cli_reference_is_current() {
    let path = repo_root().join("docs/reference/cli.md");
    let generated = reference();
    if std::env::var_os("SIGIL_WRITE_REFERENCE").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/reference/cli.md is stale: SIGIL_WRITE_REFERENCE=1 cargo test -p sigil-tests --test cli_reference"
    );
}

/// Every subcommand the binary lists has its section: a new one cannot be left out.
#[test]
fn the_cli_reference_covers_every_command() {
    let signer = signer_binary().unwrap();
    for parent in SIGNER_COMMANDS {
        let text = help(&signer, parent);
        let Some((_, listed)) = text.split_once("Commands:\n") else { continue };
        for line in listed.lines().take_while(|l| l.starts_with("  ")) {
            let name = line.split_whitespace().next().unwrap();
            if name == "help" {
                continue;
            }
            let command: Vec<&str> = parent.iter().copied().chain([name]).collect();
            assert!(SIGNER_COMMANDS.contains(&command.as_slice()), "sigil-signer {command:?} has no section");
        }
    }
}

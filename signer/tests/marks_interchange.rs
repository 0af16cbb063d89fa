//! Marks that travel: `ratchet export` from one signer's store, `ratchet import --interchange` into
//! another's, and the second signer refuses everything the first signed and signs the next level.

mod common;

use common::*;
use sigil_tests::tezos::{consensus, MAINNET};

const BAKER: &str = "edsk3qAQSJaDBSYN2PCMdv7BuJoBKeRyDFq5uPAwDfFRAhQdwHxPMN";
const PKH: &str = "tz1SodoUsWVe1Yey9eMFbqRUtNpBWfir5NRr";

fn config(dir: &std::path::Path, name: &str) -> String {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "keys: {{baker: {{local: {{secretKey: {BAKER}}}}}}}\nratchet: {{file: {{dir: {}}}}}\n\
             tezos: {{listen: 127.0.0.1:0, keys: {{baker: {{allow: [block, preattestation, attestation]}}}}}}\n\
             management: {{listen: 127.0.0.1:0}}\n",
            dir.join(format!("{name}-marks")).display()
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

fn attest(signer: &SignerProcess, level: u32, payload: u8) -> Response {
    let body = format!("\"{}\"", hex::encode(consensus(0x13, MAINNET, level, 0, payload)));
    http(signer.tezos(), "POST", &format!("/keys/{PKH}"), None, Some(&body))
}

fn ratchet(config: &str, args: &[&str]) -> (i32, String, String) {
    let args = [&["--config", config, "ratchet"], args].concat();
    run_to_end(&args, &[], None)
}

/// What Python's jsonschema says about `document` against the repository's schema ("" if valid).
fn schema_errors(document: &str) -> String {
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas/marks-interchange.v1.json");
    let check = "import json, sys, jsonschema\n\
        schema, document = (json.load(open(p)) for p in sys.argv[1:])\n\
        jsonschema.Draft202012Validator.check_schema(schema)\n\
        for e in jsonschema.Draft202012Validator(schema).iter_errors(document):\n    print(list(e.path), e.message)\n";
    let output = std::process::Command::new(script("pytezos")).args(["-c", check, schema, document]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn exported_marks_hold_in_another_store_and_never_go_down() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (config(dir.path(), "old"), config(dir.path(), "new"));

    // The old signer attests levels 1..=5.
    let signer = SignerProcess::spawn(&["--config", &old], &[]);
    let mut signatures = Vec::new();
    for level in 1..=5 {
        let answer = attest(&signer, level, 1);
        assert_eq!(answer.status, 200, "{answer:?}");
        signatures.push(answer.json()["signature"].as_str().unwrap().to_string());
    }
    drop(signer);

    let (code, exported, err) = ratchet(&old, &["export"]);
    assert_eq!(code, 0, "{err}");
    let document: serde_json::Value = serde_json::from_str(&exported).unwrap();
    assert_eq!(document["interchangeFormatVersion"], 1);
    let chain = &document["chains"][0];
    assert_eq!((chain["protocol"].as_str(), chain["chainId"].as_str()), (Some("tezos"), Some("NetXdQprcVkpaWU")));
    assert_eq!(chain["keys"][0]["keyHash"], PKH);
    assert_eq!(chain["keys"][0]["marks"][0]["level"], 5);
    let file = dir.path().join("marks.json");
    std::fs::write(&file, &exported).unwrap();
    let file = file.to_str().unwrap();
    // The document is what schemas/marks-interchange.v1.json describes, by an independent
    // validator (Python's jsonschema), which also refuses a wrong version.
    assert_eq!(schema_errors(file), "");
    let wrong = dir.path().join("wrong.json");
    std::fs::write(&wrong, exported.replace("\"interchangeFormatVersion\": 1", "\"interchangeFormatVersion\": 2"))
        .unwrap();
    assert!(schema_errors(wrong.to_str().unwrap()).contains("interchangeFormatVersion"));

    // A dry run says what would change and writes nothing.
    let (code, out, err) = ratchet(&new, &["import", "--interchange", file, "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("would be: key baker chain NetXdQprcVkpaWU attestation: set to level 5"), "{out}");
    assert_eq!(ratchet(&new, &["show"]).1, "");
    let (code, out, err) = ratchet(&new, &["import", "--interchange", file]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("attestation: set to level 5 round 0 step 0 (was empty)"), "{out}");

    // The new signer: the same attestation again gets the same signature, another one at an
    // exported level is refused, the next level is signed.
    let signer = SignerProcess::spawn(&["--config", &new], &[]);
    let again = attest(&signer, 5, 1);
    assert_eq!((again.status, again.json()["signature"].as_str()), (200, Some(signatures[4].as_str())));
    for level in 1..=5 {
        assert_eq!(attest(&signer, level, 2).status, 409, "level {level} with other content");
    }
    assert_eq!(attest(&signer, 6, 1).status, 200);
    drop(signer);

    // The older document again: nothing changes; a document naming a key this config lacks is
    // refused whole.
    let (code, out, err) = ratchet(&new, &["import", "--interchange", file]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("attestation: unchanged at level 6"), "{out}");
    let foreign = dir.path().join("foreign.json");
    std::fs::write(&foreign, exported.replace(PKH, "tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx")).unwrap();
    let (code, _, err) = ratchet(&new, &["import", "--interchange", foreign.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no configured key is tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx") && err.contains("nothing written"),
        "{err}"
    );
}

/// Every converter, on a fixture laid out as its signer stores marks (signer/tests/marks): converted
/// to a document, imported, and the store holds exactly the old signer's positions.
#[test]
fn every_old_signers_marks_convert_and_import() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/marks");
    let fixture = |name: &str| fixtures.join(name).to_str().unwrap().to_string();
    let validator =
        sigil_signer::keys::SecretKey::from_bytes(sigil_signer::keys::Algorithm::Ed25519, &[1; 32]).unwrap();
    let address = hex::encode_upper(sigil_signer::keys::cometbft::address(&validator.public_key()).unwrap());
    let tezos = "block: level 9123456 round 1 step 0";
    let attested = "attestation: level 9123457 round 0 step 0";
    let preattested = "preattestation: level 9123457 round 0 step 0";
    let consensus = "consensus: level 21500123 round 0 step 3";
    let octez_dir = tempfile::tempdir().unwrap();
    for name in ["block_high_watermarks", "attestation_high_watermarks"] {
        std::fs::copy(fixtures.join(name), octez_dir.path().join(name)).unwrap();
    }
    let octez = octez_dir.path().to_str().unwrap().to_string();
    let horcrux_dir = tempfile::tempdir().unwrap();
    let horcrux = horcrux_dir.path().join("cosmoshub-4_priv_validator_state.json");
    std::fs::copy(fixtures.join("horcrux_priv_validator_state.json"), &horcrux).unwrap();
    let horcrux = horcrux.to_str().unwrap().to_string();
    let chain = ["--chain", "NetXdQprcVkpaWU", "--key-hash", PKH];
    let cosmos = ["--chain", "cosmoshub-4", "--key-hash", &address];
    let signatory_file = fixture("signatory-watermark-NetXdQprcVkpaWU.json");
    // The flag, the fixture, and what else the source needs.
    let with = |flag: &str, file: String, more: &[&str]| -> Vec<String> {
        [flag, file.as_str()].iter().chain(more).map(|a| a.to_string()).collect()
    };
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (with("--from-octez", octez.clone(), &[]), vec![tezos, attested]),
        (
            with("--from-signatory", signatory_file.clone(), &["--chain", "NetXdQprcVkpaWU"]),
            vec![tezos, "attestation: level 9123458 round 0 step 0"],
        ),
        (with("--from-signatory-dynamodb", fixture("signatory-dynamodb.json"), &[]), vec![tezos, preattested]),
        (with("--from-signatory-firestore", fixture("signatory-firestore.json"), &[]), vec![tezos, attested]),
        (with("--from-tacoinfra", fixture("tacoinfra-dynamodb.json"), &[]), vec![tezos, attested, preattested]),
        (with("--from-tezio", fixture("tezio-config.yaml"), &chain), vec![tezos, attested, preattested]),
        (with("--from-tmkms", fixture("tmkms-state.json"), &cosmos), vec![consensus]),
        (with("--from-cometbft", fixture("priv_validator_state.json"), &cosmos), vec![consensus]),
        (with("--from-horcrux", horcrux.clone(), &["--key-hash", &address]), vec![consensus]),
    ];
    for (args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("signer.yaml");
        std::fs::write(
            &config,
            format!(
                "keys: {{baker: {{local: {{secretKey: {BAKER}}}}}, validator: {{local: {{secretKey: '{}'}}}}}}\n\
                 ratchet: {{file: {{dir: {}}}}}\n\
                 tezos: {{keys: {{baker: {{allow: [block, preattestation, attestation]}}}}}}\n\
                 cometbft: [{{connect: 'tcp://127.0.0.1:26659', chainId: cosmoshub-4, key: validator}}]\n",
                "01".repeat(32),
                dir.path().join("marks").display()
            ),
        )
        .unwrap();
        let config = config.to_str().unwrap();
        let (code, document, err) = run_to_end(&[&["ratchet", "convert"][..], &args].concat(), &[], None);
        assert_eq!(code, 0, "{args:?}: {err}");
        let file = dir.path().join("converted.json");
        std::fs::write(&file, &document).unwrap();
        assert_eq!(schema_errors(file.to_str().unwrap()), "", "{args:?}");
        let (code, _, err) = ratchet(config, &["import", "--interchange", file.to_str().unwrap()]);
        assert_eq!(code, 0, "{args:?}: {err}");
        let (_, shown, _) = ratchet(config, &["show"]);
        for line in &expected {
            assert!(shown.contains(line), "{args:?}: {line:?} in {shown}");
        }
        assert_eq!(shown.lines().count(), expected.len(), "{args:?}: {shown}");
    }
}

/// The cutover check: converting the stopped old signer's marks again and comparing them with the
/// export passes while nothing moved, and fails, naming the stream, once the old signer signed
/// after the export (it was still running).
#[test]
fn a_cutover_refuses_when_the_old_signer_signed_after_the_export() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/marks");
    let octez = tempfile::tempdir().unwrap();
    for name in ["block_high_watermarks", "attestation_high_watermarks"] {
        std::fs::copy(fixtures.join(name), octez.path().join(name)).unwrap();
    }
    let octez_dir = octez.path().to_str().unwrap();
    let (code, exported, err) = run_to_end(&["ratchet", "convert", "--from-octez", octez_dir], &[], None);
    assert_eq!(code, 0, "{err}");
    let file = octez.path().join("exported.json");
    std::fs::write(&file, &exported).unwrap();
    let check = ["ratchet", "convert", "--from-octez", octez_dir, "--unchanged-since", file.to_str().unwrap()];
    let (code, out, err) = run_to_end(&check, &[], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("unchanged since"), "{out}");

    // The old signer bakes one more level after the export.
    let block = octez.path().join("block_high_watermarks");
    let text = std::fs::read_to_string(&block).unwrap().replace("9123456", "9123460");
    std::fs::write(&block, text).unwrap();
    let (code, out, err) = run_to_end(&check, &[], None);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("the old signer signed after"), "{err}");
    assert!(
        err.contains(&format!("tezos NetXdQprcVkpaWU {PKH} block: now 9123460/1/0, exported 9123456/1/0")),
        "{err}"
    );
    assert!(!err.contains("attestation"), "only the stream that moved: {err}");
}

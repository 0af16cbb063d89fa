//! The key commands of the binary.

mod common;

use common::*;

const ZERO_SEED: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const ZERO_PUBLIC: &str = "3B6A27BCCEB6A42D62A3A8D02A6F0D73653215771DE243A63AC048A18B59DA29";
const ZERO_ADDRESS: &str = "atto://aa5wuj54z23killcuounaktpbvzwkmqvo4o6eq5ghlaerimllhnctwl5g2ekm";

#[test]
fn generate_writes_a_private_file_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("voter.key");
    let path = path.to_str().unwrap();
    for algorithm in ["ed25519", "secp256k1", "p256"] {
        let file = format!("{path}.{algorithm}");
        let (code, out, err) = run_to_end(&["key", "generate", "--algorithm", algorithm, "--out", &file], &[], None);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&format!("algorithm:  {algorithm}")), "{out}");
        assert_eq!(out.contains("atto://"), algorithm == "ed25519", "{out}");
        let secret = std::fs::read_to_string(&file).unwrap();
        assert_eq!(secret.trim().len(), 64);
        assert!(!out.contains(secret.trim()) && !err.contains(secret.trim()), "secret printed");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        }
        // show reads it back to the same public key.
        let (code, shown, _) = run_to_end(&["key", "show", "--algorithm", algorithm, "--file", &file], &[], None);
        assert_eq!(code, 0);
        assert_eq!(shown, out);
        // A second generate to the same path is refused and the key is untouched.
        let (code, _, err) = run_to_end(&["key", "generate", "--algorithm", algorithm, "--out", &file], &[], None);
        assert_eq!(code, 1);
        assert!(err.contains("must not exist yet"), "{err}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), secret);
    }
}

#[test]
fn generate_to_stdout_keeps_public_facts_on_stderr() {
    let (code, out, err) = run_to_end(&["key", "generate", "--out", "-"], &[], None);
    assert_eq!(code, 0);
    assert_eq!(out.trim().len(), 64, "stdout is the secret alone: {out:?}");
    assert!(err.contains("public key:"), "{err}");
}

#[test]
fn import_from_stdin_and_show_by_config_name() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("imported.key");
    let key = key.to_str().unwrap();
    let (code, out, err) = run_to_end(&["key", "import", "--out", key], &[], Some(&format!("{ZERO_SEED}\n")));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(ZERO_PUBLIC) && out.contains(ZERO_ADDRESS), "{out}");

    let (code, _, err) = run_to_end(&["key", "import", "--out", &format!("{key}.bad")], &[], Some("xyz"));
    assert_eq!(code, 1);
    assert!(err.contains("64 hex"), "{err}");
    assert!(!std::path::Path::new(&format!("{key}.bad")).exists(), "nothing written for a bad key");

    let config = dir.path().join("signer.yaml");
    std::fs::write(
        &config,
        format!("keys: {{voter: {{local: {{secretKeyFile: {key}}}}}}}\natto: {{key: voter, capabilities: [VOTE], tokenEnv: T}}\n"),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let (code, out, err) = run_to_end(&["--config", config, "key", "show", "--key", "voter"], &[], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(ZERO_PUBLIC), "{out}");
    let (code, _, err) = run_to_end(&["--config", config, "key", "show", "--key", "baker"], &[], None);
    assert_eq!(code, 1);
    assert!(err.contains("no key named \"baker\""), "{err}");

    let (code, out, _) = run_to_end(&["key", "show"], &[], Some(ZERO_SEED));
    assert_eq!(code, 0);
    assert!(out.contains(ZERO_ADDRESS));
}

#[test]
fn help_and_version() {
    let (code, out, _) = run_to_end(&["--help"], &[], None);
    assert_eq!(code, 0);
    for expected in ["ATTO_SIGNER_", "--config", "key generate", "docs/atto.md"] {
        assert!(out.contains(expected), "--help lacks {expected}:\n{out}");
    }
    let (code, out, _) = run_to_end(&["--version"], &[], None);
    assert_eq!(code, 0);
    assert!(out.starts_with("sigil-signer "), "{out}");
}

/// Vectors from octez's key_encoding_vectors.ml
/// (<https://github.com/tezos/tezos-mirror/blob/master/src/lib_crypto/test/key_encoding_vectors.ml>):
/// import takes octez's secret forms and show prints the Tezos address and public key.
#[test]
fn tezos_keys_import_and_show() {
    let dir = tempfile::tempdir().unwrap();
    let vectors = [
        (
            "edsk3qAQSJaDBSYN2PCMdv7BuJoBKeRyDFq5uPAwDfFRAhQdwHxPMN",
            "tz1SodoUsWVe1Yey9eMFbqRUtNpBWfir5NRr",
            "edpkufnz668CdgnVC4X5KRvJoXCMgicr29Tjmr5vxGzvMdipwkTZmM",
        ),
        (
            "spsk2oCGdj7yZFmAWr1wqopU512kDtCfWfs7N4FoRH6bkHhgXk5Tu5",
            "tz2SSuN7FRcAurZPSAQS1swNWE8xxf71MTjt",
            "sppk7aFpmJLm3ZxMd3F4osvGBq77R1NeSpiJVnof3Wiv4mt84EBE9aX",
        ),
        (
            "p2sk2g5Btw8MK7fnhQg9d7DaE8QYX8A89BLWaqWTQcHuATYY3ABjD9",
            "tz3ZxowXGSjiVq227GQcwKdz87rKhq62rY4t",
            "p2pk66Y3178eHvgWFA4CDsgGPhbkWtwrYCVUKJnsAi41eGP7MbHKv24",
        ),
        (
            "BLsk1eGhiPQXKtvvkBeXzmtVVJs6KPhEF45drF7MLjoCDcSnTGuyjL",
            "tz4TFJdv9Jd44FtBMAxi3KQT7AtazhVyaPa6",
            "BLpk1ur5XXicWYMMzCVZZWyLZhybtyX8Zot2uCzDCZW8KcC5BdZiLVXRZvZzi4GuZYL9SarUvKpE",
        ),
    ];
    for (i, (secret, address, public)) in vectors.iter().enumerate() {
        let file = dir.path().join(format!("k{i}"));
        let file = file.to_str().unwrap();
        let (code, out, err) = run_to_end(&["key", "import", "--out", file], &[], Some(secret));
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&format!("tezos:      {address} ({public})")), "{out}");
        assert!(!out.contains(secret) && !err.contains(secret), "secret printed");
        let (code, shown, _) = run_to_end(&["key", "show"], &[], Some(secret));
        assert_eq!((code, shown), (0, out));
    }
    let (code, _, err) = run_to_end(&["key", "show"], &[], Some("edesk1fakeencryptedkey"));
    assert_eq!(code, 1);
    assert!(err.contains("decrypt it with octez-client first"), "{err}");
    // A new tz4 key is written in its Tezos form, which names its curve and byte order.
    let file = dir.path().join("tz4");
    let (code, _, err) =
        run_to_end(&["key", "generate", "--algorithm", "bls12-381", "--out", file.to_str().unwrap()], &[], None);
    assert_eq!(code, 0, "{err}");
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(written.starts_with("BLsk"), "{written}");
    let (code, shown, err) = run_to_end(&["key", "show", "--file", file.to_str().unwrap()], &[], None);
    assert_eq!(code, 0, "{err}");
    assert!(shown.contains("algorithm:  bls12-381") && shown.contains("tezos:      tz4"), "{shown}");
}

/// A CometBFT migration starts from the old signer's mark (docs/cometbft.md, "Migrating from
/// tmkms"): import from priv_validator_state.json or tmkms's state file; never lower.
#[test]
fn ratchet_import_carries_a_cometbft_mark_over() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("signer.yaml");
    std::fs::write(
        &config,
        format!(
            "keys: {{v: {{local: {{secretKey: '{}'}}}}}}\nratchet: {{file: {{dir: {}}}}}\n\
             cometbft: [{{connect: 'tcp://127.0.0.1:26659', chainId: c1, key: v}}]\n",
            "01".repeat(32),
            dir.path().join("ratchet").display()
        ),
    )
    .unwrap();
    let cometbft = dir.path().join("priv_validator_state.json");
    std::fs::write(&cometbft, r#"{"height":"361402","round":0,"step":3}"#).unwrap();
    let tmkms = dir.path().join("tmkms.json");
    std::fs::write(&tmkms, r#"{"height":"361402","round":"0","step":1,"block_id":null}"#).unwrap();
    let config = config.to_str().unwrap();
    let import = |flag: &str, file: &std::path::Path| {
        run_to_end(
            &["--config", config, "ratchet", "import", "--key", "v", "--chain", "c1", flag, file.to_str().unwrap()],
            &[],
            None,
        )
    };
    let (code, out, err) = import("--from-cometbft", &cometbft);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("key v chain c1 consensus: set to level 361402 round 0 step 3 (was empty)"), "{out}");
    // tmkms's prevote step (1) is sigil's 2: below the mark now, so nothing changes.
    let (code, out, _) = import("--from-tmkms", &tmkms);
    assert_eq!(code, 0);
    assert!(out.contains("already at level 361402 round 0 step 3, not below the requested mark; unchanged"), "{out}");
    assert!(dir.path().join("ratchet/marks.journal").is_file());

    let (_, shown, _) = run_to_end(&["--config", config, "ratchet", "show"], &[], None);
    assert_eq!(shown, "v c1 consensus: level 361402 round 0 step 3 (no signature)\n");
    // Lowering needs --force, and says why it is dangerous.
    let set = |force: bool| {
        let mut args =
            vec!["--config", config, "ratchet", "set", "--key", "v", "--chain", "c1", "--stream", "consensus"];
        args.extend(["--level", "100", "--step", "1"]);
        if force {
            args.push("--force");
        }
        run_to_end(&args, &[], None)
    };
    let (code, out, _) = set(false);
    assert_eq!(code, 0);
    assert!(out.contains("unchanged"), "{out}");
    let (code, out, err) = set(true);
    assert_eq!(code, 0);
    assert!(out.contains("LOWERED from level 361402 round 0 step 3 to level 100 round 0 step 1"), "{out}");
    assert!(err.contains("WARNING") && err.contains("double sign"), "{err}");
}

/// `ratchet import --chain` must name a chain the key signs for: a typo would write marks that
/// protect nothing. Refusals list what would be valid and write nothing, not even the store.
#[test]
fn ratchet_import_refuses_a_chain_the_key_does_not_sign_for() {
    let dir = tempfile::tempdir().unwrap();
    let ratchet = dir.path().join("ratchet");
    let config = dir.path().join("signer.yaml");
    std::fs::write(
        &config,
        format!(
            "keys: {{v: {{local: {{secretKey: '{}'}}}}, baker: {{local: {{secretKey: edsk3qAQSJaDBSYN2PCMdv7BuJoBKeRyDFq5uPAwDfFRAhQdwHxPMN}}}}}}\n\
             ratchet: {{file: {{dir: {}}}}}\n\
             cometbft: [{{connect: 'tcp://127.0.0.1:26659', chainId: c1, key: v}}]\n\
             tezos: {{keys: {{baker: {{allow: [block], chains: [NetXdQprcVkpaWU]}}}}}}\n",
            "01".repeat(32),
            ratchet.display()
        ),
    )
    .unwrap();
    let cometbft = dir.path().join("priv_validator_state.json");
    std::fs::write(&cometbft, r#"{"height":"100","round":0,"step":3}"#).unwrap();
    let signatory = dir.path().join("NetXdQprcVkpaWU.json");
    std::fs::write(&signatory, r#"{"tz1SodoUsWVe1Yey9eMFbqRUtNpBWfir5NRr": {"block": {"level": 70, "round": 1}}}"#)
        .unwrap();
    let config = config.to_str().unwrap();
    let import = |key: &str, chain: &str, flag: &str, file: &std::path::Path| {
        let args = ["--config", config, "ratchet", "import", "--key", key, "--chain", chain, flag];
        let mut args = args.to_vec();
        args.push(file.to_str().unwrap());
        run_to_end(&args, &[], None)
    };
    let refusals = [
        ("v", "c2", "--from-cometbft", &cometbft, "key v signs CometBFT for chain c1, not \"c2\""),
        ("v", "c2", "--from-cometbft", &cometbft, "pass --chain c1"),
        ("baker", "mainnet", "--from-signatory", &signatory, "\"mainnet\" is not a Tezos chain id"),
        ("baker", "NetXnHfVqm9iesp", "--from-signatory", &signatory, "valid: NetXdQprcVkpaWU"),
        ("nobody", "c1", "--from-cometbft", &cometbft, "no key named \"nobody\" in the config (configured: baker, v)"),
    ];
    for (key, chain, flag, file, expected) in refusals {
        let (code, out, err) = import(key, chain, flag, file);
        assert_eq!(code, 1, "{key} {chain}: {out}");
        assert!(err.contains(expected) && err.contains("nothing written"), "{key} {chain}: {err}");
        assert!(!ratchet.exists(), "nothing may be written for {key} {chain}");
    }
    let (code, out, err) = import("v", "c1", "--from-cometbft", &cometbft);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("key v chain c1 consensus: set to level 100 round 0 step 3"), "{out}");
    let (code, out, err) = import("baker", "NetXdQprcVkpaWU", "--from-signatory", &signatory);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("key baker chain NetXdQprcVkpaWU block: set to level 70 round 1 step 0"), "{out}");
}

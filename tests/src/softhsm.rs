//! SoftHSM2 tokens for tests and benchmarks: a fresh token in a directory, and key pairs
//! generated inside it through PKCS#11 (the private halves never leave the token).

use std::path::{Path, PathBuf};
use std::process::Command;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use sigil_signer::keys::{Algorithm, PublicKey};

/// A fresh SoftHSM2 token labelled `sigil` (user PIN 1234) in `dir`; returns SOFTHSM2_CONF.
pub fn token(dir: &Path) -> PathBuf {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display()),
    )
    .unwrap();
    let status = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "sigil", "--pin", "1234", "--so-pin", "5678"])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    conf
}

/// A logged-in read-write session on the `sigil` token (user PIN 1234).
fn user_session(module: &str, conf: &Path) -> Session {
    // SoftHSM reads its config from the environment when the module initialises.
    std::env::set_var("SOFTHSM2_CONF", conf);
    let pkcs11 = Pkcs11::new(module).unwrap();
    pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)).unwrap();
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).unwrap().label() == "sigil")
        .unwrap();
    let session = pkcs11.open_rw_session(slot).unwrap();
    session.login(UserType::User, Some(&AuthPin::new("1234".into()))).unwrap();
    session
}

/// Generates the three key pairs in the token; returns their public keys.
pub fn generate(module: &str, conf: &Path) -> Vec<(&'static str, PublicKey)> {
    let session = user_session(module, conf);
    let keys = [
        ("ed", Mechanism::EccEdwardsKeyPairGen, vec![0x06, 0x03, 0x2b, 0x65, 0x70], Algorithm::Ed25519),
        ("k1", Mechanism::EccKeyPairGen, vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a], Algorithm::Secp256k1),
        (
            "p256",
            Mechanism::EccKeyPairGen,
            vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            Algorithm::P256,
        ),
    ];
    let mut public_keys = Vec::new();
    for (label, mechanism, params, algorithm) in keys {
        let label_attr = Attribute::Label(label.as_bytes().to_vec());
        let public = [Attribute::Token(true), Attribute::Verify(true), Attribute::EcParams(params), label_attr.clone()];
        let private = [Attribute::Token(true), Attribute::Sign(true), Attribute::Sensitive(true), label_attr];
        let (public, _) = session.generate_key_pair(&mechanism, &public, &private).unwrap();
        let Attribute::EcPoint(point) = session.get_attributes(public, &[AttributeType::EcPoint]).unwrap().remove(0)
        else {
            panic!("no EC point")
        };
        public_keys.push((label, PublicKey::from_bytes(algorithm, &point[2..]).unwrap()));
    }
    public_keys
}

/// Imports an Ed25519 key pair with a known seed into the token (as `label`), so a test can
/// compare the token's signatures with a library's own for the same key (Ed25519 is
/// deterministic). Real keys should be generated inside the token instead.
pub fn import_ed25519(module: &str, conf: &Path, label: &str, seed: &[u8; 32]) {
    let session = user_session(module, conf);
    let public = ed25519_dalek::SigningKey::from_bytes(seed).verifying_key().to_bytes();
    // CKA_EC_PARAMS: the printable-string curve name SoftHSM accepts for Ed25519.
    let params = [&[0x13, 0x0c][..], b"edwards25519"].concat();
    let common = |class| {
        vec![
            Attribute::Class(class),
            Attribute::KeyType(cryptoki::object::KeyType::EC_EDWARDS),
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::EcParams(params.clone()),
        ]
    };
    let mut private = common(cryptoki::object::ObjectClass::PRIVATE_KEY);
    private.extend([Attribute::Sign(true), Attribute::Sensitive(true), Attribute::Value(seed.to_vec())]);
    let mut public_key = common(cryptoki::object::ObjectClass::PUBLIC_KEY);
    public_key.extend([Attribute::Verify(true), Attribute::EcPoint([&[0x04, 0x20][..], &public].concat())]);
    session.create_object(&private).unwrap();
    session.create_object(&public_key).unwrap();
}

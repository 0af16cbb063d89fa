//! A secp256k1 (tz2) key in each backend, for benchmarks: a local key, SoftHSM2, AWS KMS (MiniStack),
//! and the GCP KMS and Azure Key Vault fakes. Prints one JSON line: the `keys.<name>` config for
//! sigil-signer (flow YAML), the environment the signer needs, and the key's `tz2` address. The
//! fakes then serve until this process is killed; the others exit.
//!
//!   kms-fixture local
//!   kms-fixture pkcs11 --dir D --module /usr/lib/softhsm/libsofthsm2.so
//!   kms-fixture aws --endpoint http://127.0.0.1:PORT
//!   kms-fixture gcp | azure --dir D

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serde_json::json;
use sigil_signer::keys::tezos as encoding;
use sigil_signer::keys::{Algorithm, PublicKey, SecretKey};
use sigil_tests::fake_kms::{azure, gcp};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    backend: Backend,
}

#[derive(Subcommand)]
enum Backend {
    /// A software key: the baseline.
    Local,
    Pkcs11 {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        module: String,
    },
    Aws {
        #[arg(long)]
        endpoint: String,
    },
    Gcp,
    Azure {
        #[arg(long)]
        dir: PathBuf,
    },
}

fn print(key: String, env: serde_json::Value, public_key: &PublicKey) {
    println!("{}", json!({ "key": key, "env": env, "pkh": encoding::pkh(public_key) }));
}

#[tokio::main]
async fn main() -> Result<()> {
    sigil_signer::install_crypto_provider();
    match Args::parse().backend {
        Backend::Local => {
            let secret = SecretKey::generate(Algorithm::Secp256k1);
            let key = format!("{{local: {{secretKey: {}, algorithm: secp256k1}}}}", hex::encode(*secret.to_bytes()));
            print(key, json!({}), &secret.public_key());
        }
        Backend::Pkcs11 { dir, module } => {
            let conf = sigil_tests::softhsm::token(&dir);
            let keys = sigil_tests::softhsm::generate(&module, &conf);
            let (_, public_key) = keys.iter().find(|(label, _)| *label == "k1").context("a k1 key")?;
            std::fs::write(dir.join("pin"), "1234\n")?;
            let key = format!(
                "{{pkcs11: {{module: {module}, tokenLabel: sigil, keyLabel: k1, pinFile: {}}}}}",
                dir.join("pin").display()
            );
            print(key, json!({ "SOFTHSM2_CONF": conf }), public_key);
        }
        Backend::Aws { endpoint } => {
            std::env::set_var("AWS_ACCESS_KEY_ID", "test");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
            let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new("us-east-1"))
                .endpoint_url(&endpoint)
                .load()
                .await;
            let kms = aws_sdk_kms::Client::new(&config);
            let created = kms
                .create_key()
                .key_spec(aws_sdk_kms::types::KeySpec::EccSecgP256K1)
                .key_usage(aws_sdk_kms::types::KeyUsageType::SignVerify)
                .send()
                .await?;
            let key_id = created.key_metadata().context("key metadata")?.key_id().to_string();
            let der = kms.get_public_key().key_id(&key_id).send().await?.public_key().context("a key")?.clone();
            let public_key = sigil_signer::backend::public_key_from_spki(Algorithm::Secp256k1, der.as_ref())
                .map_err(anyhow::Error::msg)?;
            let key = format!("{{awsKms: {{keyId: {key_id}, region: us-east-1, endpoint: '{endpoint}'}}}}");
            print(key, json!({ "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test" }), &public_key);
        }
        Backend::Gcp => {
            let fake = gcp::FakeGcpKms::start(vec![("k1", SecretKey::generate(Algorithm::Secp256k1))], &[]).await;
            let key =
                format!("{{gcpKms: {{keyVersion: '{}', endpoint: '{}'}}}}", gcp::key_version("k1"), fake.endpoint);
            print(key, json!({}), &fake.public_key("k1"));
            std::future::pending::<()>().await;
        }
        Backend::Azure { dir } => {
            let fake = azure::FakeKeyVault::start(vec![("k1", SecretKey::generate(Algorithm::Secp256k1))], &dir).await;
            let key =
                format!("{{azureKeyVault: {{vaultUrl: '{}', keyName: k1, verifyChallengeResource: false}}}}", fake.url);
            let env: serde_json::Map<String, serde_json::Value> =
                fake.pod_env().into_iter().map(|(k, v)| (k, v.into())).collect();
            print(key, env.into(), &fake.public_key("k1"));
            std::future::pending::<()>().await;
        }
    }
    Ok(())
}

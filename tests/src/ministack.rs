//! MiniStack (PyPI), an AWS emulator, on a loopback port: the AWS KMS the tests and benchmarks
//! talk to through the real `aws-sdk-kms` client.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_kms::types::{KeySpec, KeyUsageType};

/// The credentials the emulator accepts (any; these are what the tests pass).
pub const ENV: [(&str, &str); 2] = [("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test")];
pub const REGION: &str = "us-east-1";

/// A running emulator, stopped on drop.
pub struct Ministack {
    child: Child,
    pub endpoint: String,
}

impl Drop for Ministack {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Ministack {
    /// Installs MiniStack if needed (e2e/lib/ministack) and starts it with KMS only.
    pub fn start() -> Ministack {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../e2e/lib/ministack");
        let output = Command::new(&script).output().expect("run e2e/lib/ministack");
        assert!(output.status.success(), "ministack: {}", String::from_utf8_lossy(&output.stderr));
        let binary = String::from_utf8(output.stdout).expect("a path").trim().to_string();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(binary)
            .env("GATEWAY_PORT", port.to_string())
            .env("BIND_HOST", "127.0.0.1")
            .env("SERVICES", "kms")
            .env("IOT_MTLS_ENABLED", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ministack");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "MiniStack did not listen within 30 s");
            // Polling a port that is not open yet, with a deadline.
            std::thread::sleep(Duration::from_millis(100));
        }
        Ministack { child, endpoint: format!("http://127.0.0.1:{port}") }
    }

    /// A client of this emulator (setting the test credentials in the environment).
    pub async fn client(&self) -> aws_sdk_kms::Client {
        for (name, value) in ENV {
            std::env::set_var(name, value);
        }
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(&self.endpoint)
            .load()
            .await;
        aws_sdk_kms::Client::new(&config)
    }

    /// A new signing key of `spec`; returns its key id.
    pub async fn create_key(&self, spec: KeySpec) -> String {
        let created = self.client().await.create_key().key_spec(spec).key_usage(KeyUsageType::SignVerify).send().await;
        created.expect("CreateKey").key_metadata().expect("metadata").key_id().to_string()
    }

    /// The signer's config for key `key_id`.
    pub fn key_config(&self, key_id: &str) -> String {
        format!("{{awsKms: {{keyId: {key_id}, region: {REGION}, endpoint: '{}'}}}}", self.endpoint)
    }
}

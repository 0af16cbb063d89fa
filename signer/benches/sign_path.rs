//! The sign path layer by layer, against the raw Ed25519 sign as the floor:
//! raw sign → Signer::sign (policy + backend + metrics) → with a ratchet mark → Atto vote decode +
//! hash + sign (everything but HTTP). `e2e/bench/atto.sh` adds HTTP on top.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use sigil_signer::backend::local::LocalBackend;
use sigil_signer::keys::{Algorithm, SecretKey};
use sigil_signer::policy::Policy;
use sigil_signer::protocol::atto::model::{TargetRequest, Vote};
use sigil_signer::ratchet::memory::MemoryRatchet;
use sigil_signer::ratchet::Mark;
use sigil_signer::sign::{KeyEntry, SignRequest, Signer};

fn request(payload: &[u8]) -> SignRequest<'_> {
    SignRequest::new("k", "bench", sigil_signer::protocol::atto::api::VOTE, None, payload)
}

fn bench(c: &mut Criterion) {
    let seed = [7u8; 32];
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let digest = [42u8; 32];

    let raw = SecretKey::from_bytes(Algorithm::Ed25519, &seed).unwrap();
    c.bench_function("raw_ed25519_sign", |b| b.iter(|| raw.sign(black_box(&digest)).unwrap()));
    for algorithm in [Algorithm::Secp256k1, Algorithm::P256] {
        let key = SecretKey::from_bytes(algorithm, &seed).unwrap();
        c.bench_function(&format!("raw_{algorithm}_sign"), |b| b.iter(|| key.sign(black_box(&digest)).unwrap()));
    }

    let key = SecretKey::from_bytes(Algorithm::Ed25519, &seed).unwrap();
    let public_key = hex::encode_upper(key.public_key().as_bytes());
    let entry = KeyEntry::new(
        "k",
        Arc::new(LocalBackend::new(key)),
        Policy::allowing([sigil_signer::protocol::atto::api::VOTE]),
    );
    let signer = Signer::new([entry], Arc::new(MemoryRatchet::default()), Arc::default(), Duration::from_secs(1));
    runtime.block_on(signer.probe_keys());

    c.bench_function("sign_path_local", |b| {
        b.iter(|| runtime.block_on(signer.sign(request(black_box(&digest)))).unwrap())
    });

    let level = AtomicU64::new(0);
    c.bench_function("sign_path_local_with_memory_ratchet", |b| {
        b.iter(|| {
            let mark = Mark { level: level.fetch_add(1, Ordering::Relaxed), round: 0, step: 0 };
            let request = SignRequest { mark: Some((mark, "bench")), ..request(black_box(&digest)) };
            runtime.block_on(signer.sign(request)).unwrap()
        })
    });

    let body = format!(
        r#"{{"target":{{"version":0,"algorithm":"V1","publicKey":"{public_key}","blockAlgorithm":"V1","blockHash":"{}","timestamp":1704616010000}}}}"#,
        "AB".repeat(32)
    );
    c.bench_function("atto_vote_decode_hash", |b| {
        b.iter(|| serde_json::from_slice::<TargetRequest<Vote>>(black_box(body.as_bytes())).unwrap().target.hash())
    });
    c.bench_function("atto_vote_decode_hash_sign", |b| {
        b.iter(|| {
            let vote = serde_json::from_slice::<TargetRequest<Vote>>(black_box(body.as_bytes())).unwrap().target;
            let hash = vote.hash();
            runtime.block_on(signer.sign(request(&hash))).unwrap()
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);

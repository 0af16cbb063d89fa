//! Signing on each curve: what sigil's local keys use (`SecretKey::sign`, the row named `sigil`)
//! against the other maintained constant-time Rust signers, one row each. ECDSA signs a 32-byte
//! digest as it is (no hashing inside), as the chains need; ring has no such API, so its P-256 row
//! hashes a 32-byte message with SHA-256 first (a lower bound for ring, not a usable signer here).
//!
//!   cargo bench -p sigil-signer --bench curves

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use sigil_signer::keys::{Algorithm, BlsScheme, SecretKey};

const SEED: [u8; 32] = [7; 32];
const DIGEST: [u8; 32] = [42; 32];

fn ed25519(c: &mut Criterion) {
    let mut group = c.benchmark_group("ed25519");
    let sigil = SecretKey::from_bytes(Algorithm::Ed25519, &SEED).unwrap();
    group.bench_function("sigil (aws-lc-rs)", |b| b.iter(|| sigil.sign(black_box(&DIGEST)).unwrap()));
    let dalek = ed25519_dalek::SigningKey::from_bytes(&SEED);
    group.bench_function("ed25519-dalek", |b| b.iter(|| ed25519_dalek::Signer::sign(&dalek, black_box(&DIGEST))));
    let ring = ring::signature::Ed25519KeyPair::from_seed_unchecked(&SEED).unwrap();
    group.bench_function("ring", |b| b.iter(|| ring.sign(black_box(&DIGEST))));
    group.finish();
}

fn p256(c: &mut Criterion) {
    use p256::ecdsa::signature::hazmat::PrehashSigner;
    let mut group = c.benchmark_group("p256");
    let sigil = SecretKey::from_bytes(Algorithm::P256, &SEED).unwrap();
    group.bench_function("sigil (aws-lc-rs)", |b| b.iter(|| sigil.sign(black_box(&DIGEST)).unwrap()));
    let rust_crypto = p256::ecdsa::SigningKey::from_slice(&SEED).unwrap();
    group.bench_function("p256 (RustCrypto)", |b| {
        b.iter(|| -> p256::ecdsa::Signature { rust_crypto.sign_prehash(black_box(&DIGEST)).unwrap() })
    });
    let random = ring::rand::SystemRandom::new();
    let public = rust_crypto.verifying_key().to_encoded_point(false);
    let ring = ring::signature::EcdsaKeyPair::from_private_key_and_public_key(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &SEED,
        public.as_bytes(),
        &random,
    )
    .unwrap();
    group.bench_function("ring (SHA-256 of the message first)", |b| {
        b.iter(|| ring.sign(&random, black_box(&DIGEST)).unwrap())
    });
    group.finish();
}

fn secp256k1(c: &mut Criterion) {
    let mut group = c.benchmark_group("secp256k1");
    let sigil = SecretKey::from_bytes(Algorithm::Secp256k1, &SEED).unwrap();
    group.bench_function("sigil (k256, RustCrypto)", |b| b.iter(|| sigil.sign(black_box(&DIGEST)).unwrap()));
    let context = secp256k1::Secp256k1::signing_only();
    let key = secp256k1::SecretKey::from_byte_array(&SEED).unwrap();
    group.bench_function("libsecp256k1 (Bitcoin Core)", |b| {
        b.iter(|| context.sign_ecdsa(&secp256k1::Message::from_digest(*black_box(&DIGEST)), &key))
    });
    group.finish();
}

fn bls12_381(c: &mut Criterion) {
    // blst is the fastest constant-time BLS12-381 library there is; no other row.
    let mut group = c.benchmark_group("bls12-381");
    let sigil = SecretKey::from_bytes(Algorithm::Bls12_381, &SEED).unwrap();
    group.bench_function("sigil (blst)", |b| b.iter(|| sigil.sign_scheme(BlsScheme::Pop, black_box(&DIGEST)).unwrap()));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = ed25519, p256, secp256k1, bls12_381
}
criterion_main!(benches);

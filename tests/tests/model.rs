//! The ConfigMap ratchet's protocol, model-checked with spin (e2e/model/ratchet.pml): in every
//! interleaving of three replicas with stale caches, check-then-compare-and-swap never releases two
//! payloads at one mark; the same model without the resourceVersion precondition does.

use sigil_tests::cluster::repo_root;

#[test]
fn spin_finds_no_double_sign_and_catches_the_unsafe_variant() {
    let output = std::process::Command::new(repo_root().join("e2e/model/check")).output().expect("run e2e/model/check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("errors: 0"), "{stdout}");
    assert!(stdout.contains("model: ok"), "{stdout}");
}

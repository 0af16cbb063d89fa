//! crds/ is what crdgen prints: a stale CRD in Git fails here, not in a user's cluster.

#[test]
fn committed_crd_is_current() {
    // The CRD as kubectl users apply it, and the copy the Helm chart installs.
    for file in ["crds/remotesigner.yaml", "charts/sigil/crds/remotesigner.yaml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == sigil_operator::api::crd_yaml(),
            "{file} is stale: run `cargo run -p sigil-operator --bin crdgen | tee crds/remotesigner.yaml \
             charts/sigil/crds/remotesigner.yaml`"
        );
    }
}

#[test]
fn the_field_reference_is_current_and_complete() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/reference/remotesigner.md");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = sigil_operator::api::crd_reference_markdown();
    assert!(
        committed == generated,
        "docs/reference/remotesigner.md is stale: run `cargo run -p sigil-operator --bin crdgen -- --markdown > \
         docs/reference/remotesigner.md`"
    );
    for field in ["spec.key.gcpKms.keyVersion", "spec.token.rotationInterval", "status.conditions[].reason"] {
        assert!(generated.contains(&format!("| `{field}` |")), "{field} missing");
    }
}

#[test]
fn crd_has_no_schema_defaults_and_stays_small() {
    let yaml = sigil_operator::api::crd_yaml();
    // Defaults in the schema are written into stored objects: Argo CD drift.
    assert!(!yaml.contains("default:"), "the CRD schema must carry no defaults");
    // Client-side kubectl apply stores the object in an annotation capped at 256 KiB.
    assert!(yaml.len() < 128 * 1024, "CRD is {} bytes", yaml.len());
}

//! Prints the RemoteSigner CRD:
//! `cargo run -p sigil-operator --bin crdgen | tee crds/remotesigner.yaml charts/sigil/crds/remotesigner.yaml`
//! With `--markdown`, its field reference instead:
//! `cargo run -p sigil-operator --bin crdgen -- --markdown > docs/reference/remotesigner.md`
fn main() {
    if std::env::args().any(|a| a == "--markdown") {
        print!("{}", sigil_operator::api::crd_reference_markdown());
    } else {
        print!("{}", sigil_operator::api::crd_yaml());
    }
}

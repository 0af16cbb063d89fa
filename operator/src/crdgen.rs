//! Prints the RemoteSigner CRD:
//! `cargo run -p sigil-operator --bin crdgen | tee crds/remotesigner.yaml charts/sigil/crds/remotesigner.yaml`
fn main() {
    print!("{}", sigil_operator::api::crd_yaml());
}

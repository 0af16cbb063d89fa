//! docs/security.md backs each property it states with a link to the test that would fail
//! without it, written ``[`test_name`](../path/to/file.rs)``. Every such link must point at a file
//! that exists and defines that test, so renaming or deleting a test breaks this, not silently
//! the claim.

use sigil_tests::cluster::repo_root;
use sigil_tests::docs::{defines_test, test_links};

#[test]
fn docs_security_links_resolve() {
    let docs = repo_root().join("docs");
    let page = std::fs::read_to_string(docs.join("security.md")).expect("docs/security.md");
    let links = test_links(&page);
    assert!(links.len() >= 40, "only {} test links found: has the link format changed?", links.len());
    let mut broken = Vec::new();
    for (name, path) in &links {
        let file = docs.join(path);
        match std::fs::read_to_string(&file) {
            Err(error) => broken.push(format!("{name} → {path}: {error}")),
            Ok(source) if !defines_test(&source, name) => broken.push(format!("{name} → {path}: no test fn {name}")),
            Ok(_) => {}
        }
    }
    assert!(broken.is_empty(), "docs/security.md links to tests that do not exist:\n{}", broken.join("\n"));
}

/// The checks above, on text made for them: a missing or renamed test is caught.
#[test]
fn test_links_and_definitions_are_read_as_written() {
    let page = "A claim ([`a_test`](../x/y.rs)), another ([`b`](z.rs#L3)); [not code](a.rs), [`docs`](a.md).";
    assert_eq!(
        test_links(page),
        [("a_test".to_string(), "../x/y.rs".to_string()), ("b".to_string(), "z.rs".to_string())]
    );
    let source = "#[test]\nfn a_test() {}\n/// Doc.\n#[tokio::test(flavor = \"multi_thread\")]\nasync fn b() {}\nfn helper() {}\n";
    assert!(defines_test(source, "a_test") && defines_test(source, "b"));
    assert!(!defines_test(source, "helper"), "not a test");
    assert!(!defines_test(source, "a_tes"), "a prefix is not the name");
    assert!(!defines_test(source, "missing"));
}

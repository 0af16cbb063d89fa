//! The Argo CD health check for RemoteSigner (argocd/sigil.dev/RemoteSigner/health.lua) run the
//! way Argo CD runs it: Lua 5.1 with only the base and table libraries open (Argo opens no
//! `string`, unlike its own unit tests), against Argo's own test format (health_test.yaml with
//! full manifests in testdata/). A script that used `string.*` would pass upstream-style tests and
//! fail in production; here it fails.

use std::path::PathBuf;

use mlua::{Lua, LuaOptions, LuaSerdeExt, StdLib, Value};

fn check_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../argocd/sigil.dev/RemoteSigner")
}

/// Runs health.lua on one manifest: (status, message).
fn health(script: &str, manifest: &serde_json::Value) -> (String, String) {
    let lua = Lua::new_with(StdLib::TABLE, LuaOptions::default()).unwrap();
    lua.globals().set("obj", lua.to_value(manifest).unwrap()).unwrap();
    let result: mlua::Table = lua.load(script).eval().unwrap();
    let text = |key: &str| match result.get::<Value>(key).unwrap() {
        Value::String(s) => s.to_str().unwrap().to_string(),
        other => panic!("{key} is {other:?}"),
    };
    (text("status"), text("message"))
}

#[test]
fn every_case_in_health_test_yaml_passes_in_argo_cds_sandbox() {
    let dir = check_dir();
    let script = std::fs::read_to_string(dir.join("health.lua")).unwrap();
    let tests: serde_json::Value =
        yaml_serde::from_str(&std::fs::read_to_string(dir.join("health_test.yaml")).unwrap()).unwrap();
    let cases = tests["tests"].as_array().unwrap();
    assert!(cases.len() >= 4);
    for case in cases {
        let path = dir.join(case["inputPath"].as_str().unwrap());
        let manifest: serde_json::Value = yaml_serde::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let expected = (
            case["healthStatus"]["status"].as_str().unwrap().to_string(),
            case["healthStatus"]["message"].as_str().unwrap().to_string(),
        );
        assert_eq!(health(&script, &manifest), expected, "{}", path.display());
    }
}

#[test]
fn the_sandbox_has_no_string_library() {
    // What makes the test above meaningful: Argo's runtime refuses string.* too.
    let lua = Lua::new_with(StdLib::TABLE, LuaOptions::default()).unwrap();
    assert!(lua.load("return string.format('%d', 1)").eval::<String>().is_err());
}

#[test]
fn the_documented_argocd_cm_snippet_carries_the_same_script() {
    // docs/argocd.md shows the argocd-cm entry; it must be this script, line for line.
    let docs = std::fs::read_to_string(check_dir().join("../../../docs/argocd.md")).unwrap();
    let script = std::fs::read_to_string(check_dir().join("health.lua")).unwrap();
    for line in script.lines().filter(|l| !l.trim().is_empty()) {
        assert!(docs.contains(&format!("    {line}")), "docs/argocd.md lacks: {line}");
    }
}

//! The shipped alert rules and Grafana dashboard (deploy/monitoring/) only use metrics that sigil
//! exports, with the names the exporters give them (counters end in `_total`, histograms have
//! `_bucket`, `_sum`, `_count`). A renamed metric fails here, not silently in production.

use std::collections::BTreeSet;

/// The metric families each exporter declares (`# TYPE name kind`), with the sample names they
/// produce.
fn exported() -> BTreeSet<String> {
    let text =
        sigil_signer::metrics::Metrics::default().encode() + &sigil_operator::metrics::Metrics::default().encode();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            let samples: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(samples.iter().map(|suffix| format!("{name}{suffix}")));
        }
    }
    names
}

/// The `sigil_signer_…` and `sigil_operator_…` names a text mentions.
fn used(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("sigil_signer_") || word.starts_with("sigil_operator_"))
        .map(str::to_string)
        .collect()
}

#[test]
fn alerts_and_dashboard_use_only_exported_metrics() {
    let exported = exported();
    assert!(exported.contains("sigil_signer_backend_errors_total"), "{exported:?}");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/monitoring");
    for file in ["alerts.yaml", "grafana-dashboard.json"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let used = used(&text);
        assert!(used.len() >= 7, "{file}: {used:?}");
        let unknown: Vec<&String> = used.difference(&exported).collect();
        assert!(unknown.is_empty(), "{file} uses metrics sigil does not export: {unknown:?}");
    }
    // The alerts file is a valid PrometheusRule whose alerts each name a runbook that exists.
    let rule: serde_json::Value =
        yaml_serde::from_str(&std::fs::read_to_string(root.join("alerts.yaml")).unwrap()).unwrap();
    let operations = std::fs::read_to_string(root.join("../../docs/operations.md")).unwrap();
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for alert in group["rules"].as_array().unwrap() {
            let runbook = alert["annotations"]["runbook"].as_str().unwrap();
            let anchor = runbook.split('#').nth(1).unwrap();
            let heading = format!("### {}", anchor.replace('-', " "));
            assert!(operations.to_lowercase().contains(&heading), "{}: no runbook {runbook}", alert["alert"]);
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("grafana-dashboard.json")).unwrap()).unwrap();
    assert_eq!(dashboard["uid"], "sigil");
}

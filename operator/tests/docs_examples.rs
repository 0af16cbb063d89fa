//! Every Kubernetes manifest shown in the docs (```yaml blocks in README.md and docs/**/*.md) is
//! accepted by the real API server with the RemoteSigner CRD installed: a server-side dry run of
//! each RemoteSigner, Deployment, Secret, ServiceAccount and ConfigMap, so that no example drifts
//! from the schema and its admission rules; and every sigil-signer config shown loads.
//! (examples/ is run by the signer's own tests.)

mod common;

use anyhow::{Context, Result};
use common::*;
use kube::api::PostParams;
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use kube::Api;
use sigil_signer::config::SignerConfig;
use sigil_tests::docs::code_blocks;

fn markdown_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            markdown_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
}

#[tokio::test]
async fn every_manifest_in_the_docs_is_accepted_by_the_api_server() -> Result<()> {
    let cluster = cluster().await?;
    let namespace = cluster.namespace("docs").await?;
    let mut files = vec![repo_path("README.md")];
    markdown_files(&repo_path("docs"), &mut files);
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file)?;
        for block in code_blocks(&text, "yaml") {
            // A sigil-signer config: a whole one must load and validate; a `keys:` excerpt must
            // have the config's shape and one backend per key (no `...` placeholders either way).
            if block.starts_with("keys:") || block.contains("\nkeys:") {
                let whole = ["\natto:", "\ntezos:", "\ncometbft:"].iter().any(|s| block.contains(s));
                let loaded = if whole {
                    SignerConfig::from_yaml(&block).map(drop).map_err(|e| e.to_string())
                } else {
                    yaml_serde::from_str::<SignerConfig>(&block).map_err(|e| e.to_string()).and_then(|config| {
                        config
                            .keys
                            .iter()
                            .try_for_each(|(name, key)| key.backend(name).map(drop).map_err(|e| e.to_string()))
                    })
                };
                loaded.map_err(|e| {
                    anyhow::anyhow!("{}: this signer config does not load: {e}\n{block}", file.display())
                })?;
                checked += 1;
                continue;
            }
            for document in yaml_serde::Deserializer::from_str(&block) {
                let value: serde_json::Value = serde::Deserialize::deserialize(document)
                    .with_context(|| format!("{}: a YAML block does not parse", file.display()))?;
                let kind = value["kind"].as_str().unwrap_or_default();
                let (group, version, plural) = match kind {
                    "RemoteSigner" => ("sigil.dev", "v1alpha1", "remotesigners"),
                    "Deployment" => ("apps", "v1", "deployments"),
                    "Secret" => ("", "v1", "secrets"),
                    "ServiceAccount" => ("", "v1", "serviceaccounts"),
                    "ConfigMap" => ("", "v1", "configmaps"),
                    _ => continue,
                };
                let mut object: DynamicObject = serde_json::from_value(value.clone())?;
                object.metadata.namespace = None;
                let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
                let api: Api<DynamicObject> = Api::namespaced_with(cluster.client.clone(), &namespace.name, &resource);
                api.create(&PostParams { dry_run: true, ..Default::default() }, &object).await.with_context(|| {
                    format!(
                        "{}: the API server refuses this {kind}:\n{}",
                        file.display(),
                        yaml_serde::to_string(&value).unwrap()
                    )
                })?;
                checked += 1;
            }
        }
    }
    assert!(checked >= 9, "only {checked} manifests found");
    Ok(())
}

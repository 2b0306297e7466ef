//! Holds the dependency arrows of ARCHITECTURE.md against `cargo metadata`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

fn workspace_deps() -> BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata json");
    let mut map = BTreeMap::new();
    for pkg in meta["packages"].as_array().expect("packages") {
        let name = pkg["name"].as_str().expect("name").to_string();
        let mut normal = BTreeSet::new();
        let mut all = BTreeSet::new();
        for dep in pkg["dependencies"].as_array().expect("deps") {
            let dep_name = dep["name"].as_str().expect("dep name").to_string();
            if dep["kind"].is_null() {
                normal.insert(dep_name.clone());
            }
            all.insert(dep_name);
        }
        map.insert(name, (normal, all));
    }
    map
}

fn workspace_only(deps: &BTreeSet<String>) -> BTreeSet<String> {
    deps.iter().filter(|d| d.starts_with("tidemark-")).cloned().collect()
}

#[test]
fn dependency_arrows_point_one_way() {
    let map = workspace_deps();
    let set = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(workspace_only(&map["tidemark-format"].0), set(&[]), "format depends on no workspace crate");
    assert_eq!(workspace_only(&map["tidemark-storage"].0), set(&[]), "storage depends on no workspace crate");
    for backend in ["tidemark-storage-s3", "tidemark-storage-http"] {
        assert_eq!(workspace_only(&map[backend].0), set(&["tidemark-storage"]), "{backend} sees only the trait");
    }
    assert_eq!(
        workspace_only(&map["tidemark-repo"].0),
        set(&["tidemark-format", "tidemark-storage"]),
        "repo sees only format and the storage trait"
    );
    assert_eq!(workspace_only(&map["tidemark-service-core"].0), set(&[]), "service-core is pure");
    for layer in ["tidemark-service-state", "tidemark-service-http"] {
        assert_eq!(
            workspace_only(&map[layer].0),
            set(&["tidemark-service-core"]),
            "{layer} meets the daemon only through service-core's traits"
        );
    }
    for (name, (normal, all)) in &map {
        assert!(!all.contains("tidemark-cli"), "{name} depends on the cli");
        if name != "tidemark-cli" {
            assert!(!normal.contains("tidemark-testkit"), "{name} depends on testkit outside dev-dependencies");
        }
    }
}

#[test]
fn engine_names_no_vendor() {
    let map = workspace_deps();
    for vendor in ["opendal", "tokio", "clap", "anyhow", "axum", "tokio-postgres", "indicatif"] {
        assert!(!map["tidemark-repo"].0.contains(vendor), "repo must not depend on {vendor}");
        assert!(!map["tidemark-format"].0.contains(vendor), "format must not depend on {vendor}");
    }
}

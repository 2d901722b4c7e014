//! The Helm chart (`charts/sluice`), rendered offline by Helm's own library for each
//! values set under tests/chart/: every set renders, lints clean and passes
//! kubernetes-validate (strict, the newest Kubernetes it ships) and checkov; the CRD in
//! the chart is the generated one. The parts beside this file assert on the parsed
//! objects: pods locked down (`pods.rs`), the roles' configuration read by the real config
//! code (`config.rs`), Services and NetworkPolicies (`network.rs`), the operator's RBAC
//! (`rbac.rs`) and the calls the real operator makes (`operator_calls.rs`), autoscaling and disruption budgets (`scaling.rs`), what the values
//! schema refuses (`schema.rs`), and the ingress's signing keys (`signing.rs`).

mod common;

use common::chart::{
    self, KUBERNETES_VERSION, Rendered, kubernetes_validate, lint, render, repo_path,
};
use serde_json::Value;
use std::collections::BTreeSet;

#[path = "chart/config.rs"]
mod config;
#[path = "chart/network.rs"]
mod network;
#[path = "chart/operator_calls.rs"]
mod operator_calls;
#[path = "chart/pods.rs"]
mod pods;
#[path = "chart/rbac.rs"]
mod rbac;
#[path = "chart/scaling.rs"]
mod scaling;
#[path = "chart/schema.rs"]
mod schema;
#[path = "chart/signing.rs"]
mod signing;

/// The values sets under tests/chart/, each a way the chart is meant to be installed.
pub const SETS: [&str; 5] = [
    "defaults",
    "existing-nats",
    "autoscaling",
    "clusterip-proxy",
    "cert-manager",
];

/// Kinds from CRDs that kubernetes-validate has no schema for: cert-manager's
/// Certificate, KEDA's ScaledObject, the Prometheus Operator's ServiceMonitor.
const UNVALIDATED_KINDS: [&str; 3] = ["Certificate", "ScaledObject", "ServiceMonitor"];

/// The text of the values set `name`.
pub fn values(name: &str) -> String {
    std::fs::read_to_string(repo_path(&format!("tests/chart/{name}.yaml")))
        .unwrap_or_else(|e| panic!("tests/chart/{name}.yaml: {e}"))
}

pub fn render_set(name: &str) -> Rendered {
    render(&values(name))
}

/// Every values set rendered, with its name.
pub fn all_sets() -> Vec<(&'static str, Rendered)> {
    SETS.iter().map(|name| (*name, render_set(name))).collect()
}

pub fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or("?")
}

#[test]
fn every_values_set_lints_clean() {
    for name in SETS {
        let problems = lint(&values(name));
        assert!(problems.is_empty(), "{name}: {problems:#?}");
    }
}

#[test]
fn every_rendered_object_and_the_crd_pass_kubernetes_validate_strict() {
    for (name, rendered) in all_sets() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = rendered.write_to(dir.path());
        for (i, crd) in rendered.crds.iter().enumerate() {
            let path = dir.path().join(format!("crd-{i}.yaml"));
            std::fs::write(&path, serde_saphyr::to_string(crd).unwrap()).unwrap();
            files.push(path);
        }
        let text = kubernetes_validate(name, &files);
        // Each file is either validated, or an object of a CRD it cannot know.
        let mut unvalidated = BTreeSet::new();
        for file in &files {
            let file = file.display().to_string();
            let line = text
                .lines()
                .find(|l| l.contains(&format!("{file} ")))
                .unwrap_or_else(|| panic!("{name}: nothing said about {file}:\n{text}"));
            if !line.contains("passed for resource")
                || !line.contains(&format!("against version {}", &KUBERNETES_VERSION[..4]))
            {
                let kind = UNVALIDATED_KINDS
                    .iter()
                    .find(|k| line.contains(&format!("Couldn't find schema for kind {k} ")))
                    .unwrap_or_else(|| panic!("{name}: {line}"));
                unvalidated.insert(*kind);
            }
        }
        let expected: BTreeSet<&str> = UNVALIDATED_KINDS
            .into_iter()
            .filter(|k| !rendered.of_kind(k).is_empty())
            .collect();
        assert_eq!(unvalidated, expected, "{name}");
    }
}

#[test]
fn the_chart_crd_is_the_generated_one_byte_for_byte() {
    let chart = std::fs::read(repo_path(
        "charts/sluice/crds/relaypolicies.sluice.dev.yaml",
    ));
    let top = std::fs::read(repo_path("crds/relaypolicies.sluice.dev.yaml")).unwrap();
    assert!(
        chart.unwrap() == top,
        "charts/sluice/crds/ differs from crds/: cp crds/relaypolicies.sluice.dev.yaml charts/sluice/crds/"
    );
    let crds = render_set("defaults").crds;
    assert_eq!(
        crds.len(),
        1,
        "the chart installs exactly the RelayPolicy CRD"
    );
    assert_eq!(crds[0]["metadata"]["name"], "relaypolicies.sluice.dev");
    assert!(
        render_set("defaults")
            .of_kind("CustomResourceDefinition")
            .is_empty(),
        "the CRD is only in crds/ (installed once, never templated)"
    );
}

/// checkov's verdict on one values set (`common::chart::checkov`), which runs more
/// than a hundred checks on the Sluice objects.
fn checkov(name: &str) {
    let report = chart::checkov(name, &render_set(name));
    let summary = &report["summary"];
    assert!(
        summary["passed"].as_u64().unwrap() > 100,
        "{name}: {summary}"
    );
}

#[test]
fn checkov_passes_the_defaults() {
    checkov("defaults");
}

#[test]
fn checkov_passes_cert_manager_with_more_policy_namespaces() {
    checkov("cert-manager");
}

#[test]
fn checkov_passes_autoscaling_and_proxy_protocol() {
    checkov("autoscaling");
    checkov("clusterip-proxy");
}

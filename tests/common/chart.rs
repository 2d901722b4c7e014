//! The Helm chart (`charts/sluice`) rendered offline by Helm's own Go library, through
//! `tests/chart/render.py` (PyPI helm-python-sdk, installed by scripts/install-test-deps),
//! as parsed Kubernetes objects for tests to assert on, plus the offline checkers the
//! chart's tests run on them: kubernetes-validate and checkov.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

pub fn chart_dir() -> PathBuf {
    repo_path("charts/sluice")
}

/// What `helm template` would print for one values file.
pub struct Rendered {
    pub objects: Vec<Value>,
    /// NOTES.txt as rendered.
    pub notes: String,
    /// The chart's `crds/` as parsed objects.
    pub crds: Vec<Value>,
}

fn run(mode: &str, values: &str) -> std::process::Output {
    let file = tempfile::NamedTempFile::new().expect("temporary values file");
    std::fs::write(file.path(), values).expect("writing values");
    let out = Command::new("python3")
        .arg(repo_path("tests/chart/render.py"))
        .arg(mode)
        .arg(chart_dir())
        .arg(file.path())
        .output()
        .expect("python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named"),
        "helm-python-sdk or PyYAML is missing: run scripts/install-test-deps\n{stderr}"
    );
    out
}

/// Renders the chart with `values` (YAML; "" for the defaults), as release `mail` in
/// namespace `mail`. Panics with Helm's message when rendering or the schema fails.
pub fn render(values: &str) -> Rendered {
    let out = run("render", values);
    assert!(
        out.status.success(),
        "helm template failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut json: Value = serde_json::from_slice(&out.stdout).expect("render.py prints JSON");
    let take = |v: &mut Value, key: &str| v[key].take();
    Rendered {
        objects: serde_json::from_value(take(&mut json, "objects")).unwrap(),
        notes: take(&mut json, "notes")
            .as_str()
            .unwrap_or_default()
            .to_string(),
        crds: serde_json::from_value(take(&mut json, "crds")).unwrap(),
    }
}

/// Helm's error for values the chart must refuse (schema or a template's `fail`);
/// panics if they render.
pub fn refused(values: &str) -> String {
    let out = run("render", values);
    assert!(!out.status.success(), "these values rendered:\n{values}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `helm lint --strict` with `values`: the messages of severity warning or error.
pub fn lint(values: &str) -> Vec<String> {
    let out = run("lint", values);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    report["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["severity"].as_u64().unwrap_or(0) >= 2)
        .map(|m| format!("{}: {}", m["path"], m["error"]))
        .collect()
}

impl Rendered {
    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    /// The one object of `kind` whose name ends with `suffix`; panics if there is not
    /// exactly one.
    pub fn one(&self, kind: &str, suffix: &str) -> &Value {
        let found: Vec<_> = self
            .of_kind(kind)
            .into_iter()
            .filter(|o| {
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .ends_with(suffix)
            })
            .collect();
        assert_eq!(found.len(), 1, "{kind} *{suffix}: {} found", found.len());
        found[0]
    }

    /// Every pod template (Deployments, StatefulSets, …) with its owner's name.
    pub fn pod_specs(&self) -> Vec<(String, &Value)> {
        self.objects
            .iter()
            .filter(|o| !o["spec"]["template"]["spec"].is_null())
            .map(|o| {
                let name = format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                );
                (name, &o["spec"]["template"]["spec"])
            })
            .collect()
    }

    /// Writes every object as one YAML file each into `dir` (for the offline checkers),
    /// without the test's bookkeeping annotation.
    pub fn write_to(&self, dir: &Path) -> Vec<PathBuf> {
        self.objects
            .iter()
            .enumerate()
            .map(|(i, object)| {
                let mut object = object.clone();
                if let Some(annotations) = object["metadata"]["annotations"].as_object_mut() {
                    annotations.remove("sluice.test/template");
                    if annotations.is_empty() {
                        object["metadata"]
                            .as_object_mut()
                            .unwrap()
                            .remove("annotations");
                    }
                }
                let path = dir.join(format!(
                    "{i:03}-{}-{}.yaml",
                    object["kind"].as_str().unwrap_or("unknown").to_lowercase(),
                    object["metadata"]["name"].as_str().unwrap_or("unnamed")
                ));
                std::fs::write(&path, serde_saphyr::to_string(&object).unwrap()).unwrap();
                path
            })
            .collect()
    }
}

/// Which template an object came from (for messages).
pub fn template_of(object: &Value) -> &str {
    object["metadata"]["annotations"]["sluice.test/template"]
        .as_str()
        .unwrap_or("?")
}

/// checkov, from the virtual environment scripts/install-test-deps keeps (or
/// `SLUICE_CHECKOV`).
pub fn checkov_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_CHECKOV") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    let path = cache.join("sluice-tests/checkov-3.3.30/bin/checkov");
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-test-deps",
        path.display()
    );
    path
}

/// The Kubernetes version rendered objects are validated against: the newest that
/// kubernetes-validate 1.37.0 ships schemas for.
pub const KUBERNETES_VERSION: &str = "1.37.0";

/// `kubernetes-validate --strict` on `files`; panics, naming `label`, unless every file
/// passes (or is an object of a CRD it has no schema for, which it does not count as an
/// error). Returns what it printed, for callers that look at each file's line.
pub fn kubernetes_validate(label: &str, files: &[PathBuf]) -> String {
    let out = Command::new("python3")
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "-k",
            KUBERNETES_VERSION,
        ])
        .args(files)
        .output()
        .expect("python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("No module named kubernetes_validate"),
        "kubernetes-validate is missing: run scripts/install-test-deps"
    );
    assert!(
        out.status.success() && !text.contains("ERROR"),
        "{label}:\n{text}"
    );
    text
}

/// checkov's verdict on the objects of `rendered`: it parsed and saw all of them, no
/// check failed, and every skipped check was skipped by an annotation of the chart that
/// gives its reason. Returns the report.
pub fn checkov(label: &str, rendered: &Rendered) -> Value {
    // Not tempdir()'s ".tmp…": checkov passes over hidden directories.
    let dir = tempfile::Builder::new().prefix("chart-").tempdir().unwrap();
    let files = rendered.write_to(dir.path());
    let out = Command::new(checkov_binary())
        .arg("-d")
        .arg(dir.path())
        .args([
            "--framework",
            "kubernetes",
            "--skip-download",
            "--quiet",
            "--compact",
        ])
        .args(["-o", "json"])
        .env("BC_SKIP_MAPPING", "TRUE")
        .output()
        .expect("checkov");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{label}: checkov printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    // One framework gives one report; some versions wrap it in a list.
    let report = if report.is_array() {
        report[0].clone()
    } else {
        report
    };
    let summary = &report["summary"];
    assert_eq!(summary["parsing_errors"], 0, "{label}: {summary}");
    // It counts each container as a resource too.
    assert!(
        summary["resource_count"].as_u64().unwrap() >= files.len() as u64,
        "{label}: checkov saw {} of {} objects",
        summary["resource_count"],
        files.len()
    );
    let failed: Vec<String> = report["results"]["failed_checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| format!("{} {} on {}", c["check_id"], c["check_name"], c["resource"]))
        .collect();
    assert!(failed.is_empty(), "{label}: {failed:#?}");
    for skipped in report["results"]["skipped_checks"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let reason = skipped["suppress_comment"].as_str().unwrap_or("");
        assert!(
            reason.len() > 20,
            "{label}: {} skipped on {} without a reason",
            skipped["check_id"],
            skipped["resource"]
        );
    }
    report
}

//! The RelayPolicy CRD and the Kubernetes samples. The committed
//! `crds/relaypolicies.sluice.dev.yaml` is exactly what `sluice crd` prints; it is a CRD
//! the API server accepts, as far as can be checked offline (kubernetes-validate for the
//! object, `structural.rs` for the schema); and the samples in examples/kubernetes/ fit
//! its schema (`json_schema.rs`), pass its CEL rules (`cel.rs`) and compile with the
//! policy compiler (`compile.rs`).

use std::process::Command;

use fixtures::{CRD_FILE, SAMPLES_DIR, read, repo_path};

// The test binary's parts live beside it in tests/crd/.
#[path = "crd/cel.rs"]
mod cel;
#[path = "crd/compile.rs"]
mod compile;
#[path = "crd/fixtures.rs"]
mod fixtures;
#[path = "crd/json_schema.rs"]
mod json_schema;
#[path = "crd/structural.rs"]
mod structural;

const REGENERATE: &str = "cargo run -- crd > crds/relaypolicies.sluice.dev.yaml";

/// Where two texts, each `(label, text)`, first differ, as a message that says how to
/// bring them together; `None` when they are equal.
fn drift(expected: (&str, &str), actual: (&str, &str)) -> Option<String> {
    let ((e_label, e_text), (a_label, a_text)) = (expected, actual);
    if e_text == a_text {
        return None;
    }
    let (e, a): (Vec<&str>, Vec<&str>) = (e_text.lines().collect(), a_text.lines().collect());
    let line = e.iter().zip(&a).take_while(|(x, y)| x == y).count();
    let show = |lines: &[&str]| {
        lines
            .get(line)
            .copied()
            .unwrap_or("<end of text>")
            .to_string()
    };
    Some(format!(
        "{a_label} differs from {e_label}, first at line {}:\n  {e_label}: {}\n  {a_label}: {}\n\
         Regenerate the file with: {REGENERATE}",
        line + 1,
        show(&e),
        show(&a),
    ))
}

#[test]
fn the_committed_crd_is_the_generated_one() {
    let generated = sluice::operator::crd::yaml();
    let generated = (
        "the CRD generated from src/policy/model.rs",
        generated.as_str(),
    );
    if let Some(message) = drift(generated, (CRD_FILE, &read(CRD_FILE))) {
        panic!("{message}");
    }
}

#[test]
fn drift_messages_point_at_the_line_and_the_fix() {
    let message = drift(("generated", "a\nb\nc\n"), ("f.yaml", "a\nB\nc\n")).unwrap();
    assert!(
        message.starts_with("f.yaml differs from generated, first at line 2:"),
        "{message}"
    );
    assert!(
        message.contains("\n  generated: b\n  f.yaml: B\n"),
        "{message}"
    );
    assert!(message.ends_with(REGENERATE), "{message}");
    assert!(drift(("generated", "a\n"), ("f.yaml", "a\n")).is_none());
    let shorter = drift(("generated", "a\nb\n"), ("f.yaml", "a\n")).unwrap();
    assert!(shorter.contains("f.yaml: <end of text>"), "{shorter}");
}

/// Two runs of the binary print the same bytes, and those are the committed file.
#[test]
fn sluice_crd_prints_the_committed_file_every_time() {
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("crd")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let (first, second) = (run(), run());
    assert_eq!(first, second, "two runs of `sluice crd` differ");
    if let Some(message) = drift((CRD_FILE, &read(CRD_FILE)), ("`sluice crd`", &first)) {
        panic!("{message}");
    }
}

/// The Kubernetes version whose API the CRD is checked against: the one k8s-openapi is
/// built for (its `v1_33` feature in Cargo.toml).
const KUBERNETES_VERSION: &str = "1.33.0";

/// kubernetes-validate (PyPI, pinned in scripts/install-test-deps) checks an object
/// against the JSON schemas of the Kubernetes API that it ships, so it runs offline.
fn kubernetes_validate(relative: &str) {
    let out = Command::new("python3")
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "-k",
            KUBERNETES_VERSION,
        ])
        .arg(repo_path(relative))
        .output()
        .unwrap_or_else(|e| panic!("python3: {e}"));
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
        "{relative}:\n{text}"
    );
}

#[test]
fn the_crd_object_is_a_valid_custom_resource_definition() {
    kubernetes_validate(CRD_FILE);
}

/// The Namespaces and Secrets of the samples against the Kubernetes API; the
/// RelayPolicies, which it has no schema for, are checked in `json_schema.rs`.
#[test]
fn the_samples_are_valid_kubernetes_objects() {
    for (file, _) in fixtures::sample_files() {
        kubernetes_validate(&format!("{SAMPLES_DIR}/{file}"));
    }
}

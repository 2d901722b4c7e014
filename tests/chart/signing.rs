//! DKIM signing keys in the chart: `ingress.signingSecrets` mounts each Secret
//! read-only at /run/sluice/secrets/<name> in the ingress pods only, and gives the
//! ingress `--secrets-dir /run/sluice/secrets`; the objects stay valid and checkov-clean.

use crate::common::chart::{self, kubernetes_validate, render};
use serde_json::Value;

#[test]
fn signing_secrets_are_mounted_in_the_ingress_alone() {
    let values = format!(
        "{}\ningress:\n  signingSecrets: [dkim-example-com, arc-relay]\n",
        crate::values("defaults")
    );
    let rendered = render(&values);
    let ingress = rendered.one("Deployment", "-ingress");
    let pod = &ingress["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        args,
        [
            "ingress",
            "--config",
            "/etc/sluice/sluice.yaml",
            "--secrets-dir",
            "/run/sluice/secrets"
        ]
    );
    for name in ["dkim-example-com", "arc-relay"] {
        let mount = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == format!("/run/sluice/secrets/{name}"))
            .unwrap_or_else(|| panic!("{name} mounted: {container}"));
        assert_eq!(mount["readOnly"], true);
        assert!(
            mount["subPath"].is_null(),
            "the whole Secret: updates reach the pod"
        );
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        assert_eq!(volume["secret"]["secretName"], name);
        assert_eq!(volume["secret"]["defaultMode"], 288, "0440");
    }
    let worker = rendered.one("Deployment", "-worker");
    assert!(
        !worker.to_string().contains("dkim-example-com"),
        "the worker does not get the keys"
    );
    let dir = tempfile::tempdir().unwrap();
    let files = rendered.write_to(dir.path());
    kubernetes_validate("signing", &files);
    let checkov = chart::checkov("signing", &rendered);
    assert!(
        checkov["summary"]["passed"].as_u64().unwrap() > 100,
        "{}",
        checkov["summary"]
    );

    // Without any, the ingress takes no secrets directory.
    let plain = render(&crate::values("defaults"));
    let args =
        plain.one("Deployment", "-ingress")["spec"]["template"]["spec"]["containers"][0]["args"]
            .to_string();
    assert!(!args.contains("--secrets-dir"), "{args}");
}

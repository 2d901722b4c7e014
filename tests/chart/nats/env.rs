//! What `sluice.nats.env`, `sluice.nats.volumes` and `sluice.nats.volumeMounts` give a
//! role, rendered by Helm through a probe template added to a copy of the chart (the
//! Deployments that include them belong to another part of the chart): the text each
//! renders must be a YAML list once indented, and name the right Secret keys and files.

use crate::common::chart::{chart_dir, repo_path};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const PROBE: &str = r#"{{- range $role := list "ingress" "worker" "operator" }}
---
apiVersion: v1
kind: ConfigMap
metadata: { name: {{ printf "probe-%s" $role }} }
data:
  env: |
    {{- include "sluice.nats.env" (dict "root" $ "role" $role) | nindent 4 }}
  volumes: |
    {{- include "sluice.nats.volumes" (dict "root" $ "role" $role) | nindent 4 }}
  volumeMounts: |
    {{- include "sluice.nats.volumeMounts" (dict "root" $ "role" $role) | nindent 4 }}
{{- end }}
"#;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// One role's (env, volumes, volumeMounts), each a list (empty when nothing rendered).
pub struct RoleNats {
    pub env: Vec<Value>,
    pub volumes: Vec<Value>,
    pub mounts: Vec<Value>,
}

impl RoleNats {
    /// The variable `name`: its `value` or its `valueFrom`.
    pub fn var(&self, name: &str) -> Option<&Value> {
        self.env.iter().find(|v| v["name"] == name).map(|v| {
            if v["value"].is_null() {
                &v["valueFrom"]
            } else {
                &v["value"]
            }
        })
    }
}

/// Renders the probe with `values` and returns each role's part.
pub fn probe(values: &str) -> Vec<(String, RoleNats)> {
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("sluice");
    copy_dir(&chart_dir(), &chart);
    std::fs::write(chart.join("templates/zz-nats-probe.yaml"), PROBE).unwrap();
    let values_file = dir.path().join("values.yaml");
    std::fs::write(&values_file, values).unwrap();
    let out = Command::new("python3")
        .arg(repo_path("tests/chart/render.py"))
        .arg("render")
        .arg(&chart)
        .arg(&values_file)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = |text: &Value| -> Vec<Value> {
        let parsed: Option<Vec<Value>> =
            serde_yaml::from_str(text.as_str().unwrap()).expect("a YAML list");
        parsed.unwrap_or_default()
    };
    json["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| {
            let role = o["metadata"]["name"].as_str()?.strip_prefix("probe-")?;
            Some((
                role.to_string(),
                RoleNats {
                    env: list(&o["data"]["env"]),
                    volumes: list(&o["data"]["volumes"]),
                    mounts: list(&o["data"]["volumeMounts"]),
                },
            ))
        })
        .collect()
}

#[test]
fn each_role_gets_its_own_user_and_the_replica_count() {
    let roles = probe("");
    assert_eq!(roles.len(), 3);
    for (role, nats) in &roles {
        assert_eq!(
            nats.var("SLUICE_NATS_URL").unwrap(),
            "nats://mail-sluice-nats:4222"
        );
        assert_eq!(nats.var("SLUICE_NATS_USER").unwrap(), role.as_str());
        let password = &nats.var("SLUICE_NATS_PASSWORD").unwrap()["secretKeyRef"];
        assert_eq!(password["name"], "mail-sluice-nats-auth");
        assert_eq!(password["key"], format!("{role}-password"));
        assert_eq!(nats.var("SLUICE_NATS_REPLICAS").unwrap(), "3");
        // Its own reply subjects, the only ones its user may subscribe to.
        assert_eq!(
            nats.var("SLUICE_NATS_INBOX_PREFIX").unwrap(),
            format!("_INBOX_{role}").as_str()
        );
        assert!(nats.volumes.is_empty() && nats.mounts.is_empty());
    }
    for (_, nats) in probe("nats: { replicas: 1 }") {
        assert_eq!(nats.var("SLUICE_NATS_REPLICAS").unwrap(), "1");
    }
}

#[test]
fn an_existing_nats_gets_each_roles_credentials_and_tls_files() {
    let values = r#"
nats:
  url: "tls://nats.example:4222"
  streamReplicas: 5
  existing:
    credentials:
      ingress: { secretName: nats-in, user: relay-in, passwordKey: pw }
      worker: { secretName: nats-wk, credsKey: worker.creds }
      operator: { secretName: nats-op, tokenKey: token }
    tls:
      required: true
      ca: { secretName: nats-ca, key: ca.pem }
      clientCertSecretName: nats-client
"#;
    let roles = probe(values);
    let role = |name: &str| &roles.iter().find(|(r, _)| r == name).unwrap().1;
    for (_, nats) in &roles {
        assert_eq!(
            nats.var("SLUICE_NATS_URL").unwrap(),
            "tls://nats.example:4222"
        );
        assert_eq!(nats.var("SLUICE_NATS_REPLICAS").unwrap(), "5");
        // An existing NATS's users are given the same per-role inbox in values.yaml.
        assert!(nats.var("SLUICE_NATS_INBOX_PREFIX").is_some());
        assert_eq!(nats.var("SLUICE_NATS_TLS_REQUIRED").unwrap(), "true");
        // Every file a variable names is in a mounted volume of the right Secret.
        for (var, volume_secret) in [
            ("SLUICE_NATS_CA_FILE", "nats-ca"),
            ("SLUICE_NATS_CERT_FILE", "nats-client"),
            ("SLUICE_NATS_KEY_FILE", "nats-client"),
            ("SLUICE_NATS_CREDS_FILE", "nats-wk"),
        ] {
            let Some(path) = nats.var(var).and_then(Value::as_str) else {
                continue;
            };
            let (dir, file) = path.rsplit_once('/').unwrap();
            let mount = nats
                .mounts
                .iter()
                .find(|m| m["mountPath"] == dir)
                .unwrap_or_else(|| panic!("{var}: nothing mounted at {dir}"));
            let volume = nats
                .volumes
                .iter()
                .find(|v| v["name"] == mount["name"])
                .expect("the mount's volume");
            assert_eq!(volume["secret"]["secretName"], volume_secret, "{var}");
            assert!(
                volume["secret"]["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|i| i["path"] == file),
                "{var}: {file} not in {volume}"
            );
        }
    }
    let ingress = role("ingress");
    assert_eq!(ingress.var("SLUICE_NATS_USER").unwrap(), "relay-in");
    let password = &ingress.var("SLUICE_NATS_PASSWORD").unwrap()["secretKeyRef"];
    assert_eq!(password["name"], "nats-in");
    assert_eq!(password["key"], "pw");
    let worker = role("worker");
    assert!(worker.var("SLUICE_NATS_CREDS_FILE").is_some());
    assert!(worker.var("SLUICE_NATS_PASSWORD").is_none());
    let operator = role("operator");
    assert_eq!(
        operator.var("SLUICE_NATS_TOKEN").unwrap()["secretKeyRef"]["key"],
        "token"
    );
    assert!(operator.var("SLUICE_NATS_USER").is_none());
}

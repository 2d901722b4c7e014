//! What `sluice.nats.env`, `sluice.nats.volumes` and `sluice.nats.volumeMounts` give
//! each role, read off the rendered Deployments that include them: the right user,
//! Secret keys, inbox and replica count, and every file a variable names mounted from the
//! right Secret.

use crate::common::chart::render;
use serde_json::Value;

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

/// Renders the chart with `values` and returns each role's container environment,
/// pod volumes and container mounts.
pub fn probe(values: &str) -> Vec<(String, RoleNats)> {
    let rendered = render(values);
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    ["ingress", "worker", "operator"]
        .into_iter()
        .map(|role| {
            let pod = &rendered.one("Deployment", &format!("-{role}"))["spec"]["template"]["spec"];
            let container = &pod["containers"][0];
            (
                role.to_string(),
                RoleNats {
                    env: list(&container["env"]),
                    volumes: list(&pod["volumes"]),
                    mounts: list(&container["volumeMounts"]),
                },
            )
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
        // Passwords come from the Secret as variables: no NATS files to mount.
        assert!(
            !nats.mounts.iter().any(|m| m["mountPath"]
                .as_str()
                .unwrap()
                .starts_with("/etc/sluice/nats")),
            "{role}"
        );
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

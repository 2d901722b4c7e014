//! The pods the chart runs: every container locked down, probes and ports on the admin
//! listener, no Kubernetes API token where none is needed, the secrets key only where it
//! is used, and enough time after SIGTERM for the drain.

use super::{all_sets, name_of, render_set};
use crate::common::chart::{Rendered, template_of};
use serde_json::Value;
use std::time::Duration;

fn deployment<'a>(rendered: &'a Rendered, role: &str) -> &'a Value {
    rendered.one("Deployment", &format!("-{role}"))
}

fn pod<'a>(rendered: &'a Rendered, role: &str) -> &'a Value {
    &deployment(rendered, role)["spec"]["template"]["spec"]
}

fn container<'a>(rendered: &'a Rendered, role: &str) -> &'a Value {
    let containers = pod(rendered, role)["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "{role}: one container");
    &containers[0]
}

/// Every container of every pod spec rendered (init containers too), with where it is.
fn containers(pod: &Value) -> Vec<&Value> {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|k| pod[k].as_array().into_iter().flatten())
        .collect()
}

#[test]
fn every_pod_and_container_runs_as_non_root_read_only_without_capabilities() {
    for (set, rendered) in all_sets() {
        let pods = rendered.pod_specs();
        assert!(pods.len() >= 3, "{set}: {} pod specs", pods.len());
        for (owner, pod) in pods {
            let p = &pod["securityContext"];
            assert_eq!(p["runAsNonRoot"], true, "{set} {owner}");
            assert_eq!(p["runAsUser"], 65532, "{set} {owner}");
            assert_eq!(p["runAsGroup"], 65532, "{set} {owner}");
            assert_eq!(
                p["seccompProfile"]["type"], "RuntimeDefault",
                "{set} {owner}"
            );
            assert!(
                pod["hostNetwork"].is_null() && pod["hostPID"].is_null(),
                "{set} {owner}"
            );
            for c in containers(pod) {
                let at = format!("{set} {owner} {}", c["name"]);
                let s = &c["securityContext"];
                assert_eq!(s["runAsNonRoot"], true, "{at}");
                assert!(s["runAsUser"].as_u64().is_some_and(|u| u == 65532), "{at}");
                assert!(s["runAsGroup"].as_u64().is_some_and(|g| g == 65532), "{at}");
                assert_eq!(s["readOnlyRootFilesystem"], true, "{at}");
                assert_eq!(s["allowPrivilegeEscalation"], false, "{at}");
                assert_eq!(
                    s["capabilities"]["drop"],
                    serde_json::json!(["ALL"]),
                    "{at}"
                );
                assert!(s["capabilities"]["add"].is_null(), "{at}");
                assert_ne!(s["privileged"], true, "{at}");
                assert_eq!(s["seccompProfile"]["type"], "RuntimeDefault", "{at}");
                for kind in ["requests", "limits"] {
                    for resource in ["cpu", "memory"] {
                        assert!(
                            !c["resources"][kind][resource].is_null(),
                            "{at}: no {kind}.{resource}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn the_three_roles_run_one_image_with_their_role_and_config_and_spread() {
    let rendered = render_set("defaults");
    let image = container(&rendered, "ingress")["image"].clone();
    assert_eq!(
        image, "ghcr.io/sluice-relay/sluice:0.1.0",
        "tag: appVersion"
    );
    for role in ["ingress", "worker", "operator"] {
        let c = container(&rendered, role);
        assert_eq!(c["image"], image, "{role}");
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            args[..3],
            [role, "--config", "/etc/sluice/sluice.yaml"],
            "{role}"
        );
        let spread = pod(&rendered, role)["topologySpreadConstraints"]
            .as_array()
            .unwrap();
        let keys: Vec<&Value> = spread.iter().map(|s| &s["topologyKey"]).collect();
        assert_eq!(
            keys,
            ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
        );
        for s in spread {
            assert_eq!(s["whenUnsatisfiable"], "ScheduleAnyway");
            assert_eq!(
                s["labelSelector"]["matchLabels"],
                deployment(&rendered, role)["spec"]["selector"]["matchLabels"]
            );
        }
        let nats = c["env"].as_array().unwrap();
        assert!(
            nats.iter().any(|e| e["name"] == "SLUICE_NATS_URL"),
            "{role}: the NATS interface's env is included"
        );
    }
    let operator = container(&rendered, "operator");
    let env = |name: &str| {
        operator["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("operator env {name}"))["valueFrom"]["fieldRef"]["fieldPath"]
            .clone()
    };
    assert_eq!(env("POD_NAMESPACE"), "metadata.namespace");
    assert_eq!(env("POD_NAME"), "metadata.name");
    let args = operator["args"].to_string();
    assert!(
        args.contains("\"--secrets-key-file\",\"/run/sluice/secrets-key/key\""),
        "{args}"
    );
    let with_namespaces = render_set("cert-manager");
    let args = container(&with_namespaces, "operator")["args"].to_string();
    assert!(
        args.contains("\"--policy-namespaces\",\"mail,helpdesk,billing\"")
            && args.contains("\"--privileged-namespaces\",\"mail\""),
        "{args}"
    );
    let pinned =
        crate::common::chart::render(&format!("image: {{digest: 'sha256:{}'}}", "ab".repeat(32)));
    let image = container(&pinned, "worker")["image"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        image.ends_with(&format!("@sha256:{}", "ab".repeat(32))),
        "{image}"
    );
    assert!(
        deployment(&pinned, "worker")["metadata"]["annotations"]
            .as_object()
            .unwrap()
            .values()
            .all(|v| !v.as_str().unwrap().starts_with("CKV_K8S_43")),
        "a digest needs no checkov skip"
    );
}

#[test]
fn probes_ask_the_admin_listener_and_ports_are_the_listeners() {
    for (set, rendered) in all_sets() {
        for role in ["ingress", "worker", "operator"] {
            let c = container(&rendered, role);
            let ports = c["ports"].as_array().unwrap();
            let admin = ports.iter().find(|p| p["name"] == "admin").unwrap();
            assert_eq!(admin["containerPort"], 9090, "{set} {role}");
            for (probe, path) in [
                ("livenessProbe", "/healthz"),
                ("readinessProbe", "/readyz"),
                ("startupProbe", "/healthz"),
            ] {
                assert_eq!(c[probe]["httpGet"]["path"], path, "{set} {role} {probe}");
                assert_eq!(c[probe]["httpGet"]["port"], "admin", "{set} {role} {probe}");
            }
            if role != "ingress" {
                assert_eq!(ports.len(), 1, "{set} {role}: the admin port only");
            }
        }
        let names: Vec<(String, u64)> = container(&rendered, "ingress")["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["containerPort"].as_u64().unwrap(),
                )
            })
            .collect();
        let tls = !pod(&rendered, "ingress")["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["name"] != "tls");
        let mut expected = vec![("smtp".to_string(), 2525)];
        if tls {
            expected.push(("submission".into(), 2587));
            expected.push(("submissions".into(), 2465));
        }
        expected.push(("admin".into(), 9090));
        assert_eq!(names, expected, "{set}");
    }
}

#[test]
fn ingress_and_worker_pods_carry_no_service_account_token() {
    for (set, rendered) in all_sets() {
        for role in ["ingress", "worker"] {
            let p = pod(&rendered, role);
            assert_eq!(p["automountServiceAccountToken"], false, "{set} {role}");
            assert!(
                p["serviceAccountName"].is_null() && p["serviceAccount"].is_null(),
                "{set} {role}: the namespace's default account, bound to nothing"
            );
        }
        let operator = pod(&rendered, "operator");
        let account = operator["serviceAccountName"].as_str().unwrap();
        assert_eq!(operator["automountServiceAccountToken"], true, "{set}");
        let accounts = rendered.of_kind("ServiceAccount");
        assert!(
            accounts.iter().any(|a| name_of(a) == account),
            "{set}: {account} is rendered"
        );
        for a in accounts {
            let component = &a["metadata"]["labels"]["app.kubernetes.io/component"];
            assert!(
                component != "ingress" && component != "worker",
                "{set}: {} is an account for {component}",
                name_of(a)
            );
        }
    }
}

/// Volume names mounted by a container, by mount path.
fn mounts(c: &Value) -> Vec<(String, String)> {
    c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["mountPath"].as_str().unwrap().to_string(),
                m["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn worker_and_operator_share_the_secrets_key_and_the_ingress_never_sees_it() {
    for (set, rendered) in all_sets() {
        let secret_of = |role: &str| -> Option<String> {
            let p = pod(&rendered, role);
            let mount = mounts(container(&rendered, role))
                .into_iter()
                .find(|(path, _)| path == "/run/sluice/secrets-key")?;
            let volume = p["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == mount.1.as_str())
                .unwrap();
            Some(volume["secret"]["secretName"].as_str().unwrap().to_string())
        };
        let worker = secret_of("worker").expect("the worker mounts the key");
        assert_eq!(secret_of("operator"), Some(worker.clone()), "{set}");
        assert_eq!(secret_of("ingress"), None, "{set}");
        let text = serde_json::to_string(pod(&rendered, "ingress")).unwrap();
        assert!(
            !text.contains(&worker),
            "{set}: the ingress pod names {worker}"
        );
        let secret = rendered.one("Secret", "-secrets-key");
        assert_eq!(name_of(secret), worker, "{set}");
        let key = secret["data"]["key"].as_str().unwrap();
        let key = base64_len(key);
        assert!(key >= 48, "{set}: a key of {key} bytes");
        assert_eq!(
            secret["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
    }
    let own = crate::common::chart::render("secretsKey: {existingSecret: my-key}");
    assert!(own.of_kind("Secret").iter().all(|s| name_of(s) != "my-key"));
    assert!(
        own.of_kind("Secret")
            .iter()
            .all(|s| !name_of(s).ends_with("-secrets-key"))
    );
    assert!(
        serde_json::to_string(pod(&own, "worker"))
            .unwrap()
            .contains("\"my-key\"")
    );
}

fn base64_len(text: &str) -> usize {
    let padding = text.chars().rev().take_while(|c| *c == '=').count();
    text.len() / 4 * 3 - padding
}

/// drainDelay and shutdownGrace from a role's rendered configuration.
fn drain_and_grace(rendered: &Rendered, role: &str) -> (Duration, Duration) {
    let config = rendered.one("ConfigMap", &format!("-{role}"));
    let yaml: serde_json::Value =
        serde_saphyr::from_str(config["data"]["sluice.yaml"].as_str().unwrap()).unwrap();
    let duration = |key: &str| {
        yaml["limits"][key]
            .as_str()
            .map(|t| sluice::units::parse_duration(t).unwrap())
    };
    (
        duration("drainDelay").unwrap_or_default(),
        // The default of src/config.rs when the chart leaves it out.
        duration("shutdownGrace").unwrap_or(sluice::config::Limits::default().shutdown_grace),
    )
}

#[test]
fn termination_grace_outlasts_the_drain_delay_and_the_shutdown_grace() {
    for values in [
        "",
        "limits: {shutdownGraceSeconds: 120, drainDelaySeconds: 20}",
        "limits: {drainDelaySeconds: 0, terminationMarginSeconds: 1}",
    ] {
        let rendered = crate::common::chart::render(values);
        for role in ["ingress", "worker", "operator"] {
            let (drain, grace) = drain_and_grace(&rendered, role);
            let kubelet = pod(&rendered, role)["terminationGracePeriodSeconds"]
                .as_u64()
                .unwrap();
            assert!(
                Duration::from_secs(kubelet) > drain + grace,
                "{values:?} {role}: {kubelet}s <= {drain:?} + {grace:?}"
            );
            if role != "operator" {
                assert!(!drain.is_zero() || values.contains("drainDelaySeconds: 0"));
            }
        }
    }
    let (drain, _) = drain_and_grace(&render_set("defaults"), "ingress");
    assert_eq!(drain, Duration::from_secs(5), "the default drain delay");
}

#[test]
fn every_path_in_a_roles_configuration_is_on_a_volume_it_mounts() {
    for (set, rendered) in all_sets() {
        for role in ["ingress", "worker", "operator"] {
            let config = rendered.one("ConfigMap", &format!("-{role}"));
            let text = config["data"]["sluice.yaml"].as_str().unwrap();
            let yaml: serde_json::Value = serde_saphyr::from_str(text).unwrap();
            let c = container(&rendered, role);
            let mounts = mounts(c);
            let mut paths = vec![yaml["adminTokenFile"].as_str().unwrap().to_string()];
            for key in [
                &yaml["tls"]["certFile"],
                &yaml["tls"]["keyFile"],
                &yaml["limits"]["spillDirectory"],
                &yaml["delivery"]["secretsKeyFile"],
            ] {
                paths.extend(key.as_str().map(str::to_string));
            }
            for path in paths {
                assert!(
                    mounts
                        .iter()
                        .any(|(at, _)| path.starts_with(&format!("{at}/")) || &path == at),
                    "{set} {role}: {path} is on no volume ({})",
                    template_of(config)
                );
            }
            // No mount inside another: a read-only volume cannot hold a mount point.
            for (a, _) in &mounts {
                for (b, _) in &mounts {
                    assert!(
                        a == b || !b.starts_with(&format!("{a}/")),
                        "{set} {role}: {b} in {a}"
                    );
                }
            }
        }
        // The spill directory is an emptyDir (the root filesystem is read-only), and TLS
        // is the whole Secret's directory, never a subPath (atomic updates reach it).
        let ingress = container(&rendered, "ingress");
        for m in ingress["volumeMounts"].as_array().unwrap() {
            assert!(m["subPath"].is_null(), "{set}: {m}");
        }
        let volumes = pod(&rendered, "ingress")["volumes"].as_array().unwrap();
        let spill = volumes.iter().find(|v| v["name"] == "spill").unwrap();
        assert_eq!(spill["emptyDir"]["sizeLimit"], "4Gi", "{set}");
    }
}

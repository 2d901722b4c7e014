//! The chart's NATS part (templates/nats/, templates/_nats.tpl): what it renders in both
//! modes, that nats-server accepts every configuration it renders, that the rendered
//! three-server cluster carries mail between the real `sluice` roles, each logged in as
//! its own user, and that those users are least-privileged: only the operator's may write
//! the policy, and only the worker's may take queued messages.

#[path = "chart/nats/cluster.rs"]
mod cluster;
mod common;
// The env the roles get, through a probe template (env.rs), and the rendered cluster
// carrying mail between the real roles (roles.rs).
#[path = "chart/nats/env.rs"]
mod env;
#[path = "chart/nats/quarantine.rs"]
mod quarantine;
#[path = "chart/nats/roles.rs"]
mod roles;

use cluster::{config_text, secret_values};
use common::chart::{self, Rendered};
use serde_json::Value;
use std::process::Command;

fn nats_path() -> String {
    let scripts = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .expect("python3");
    let scripts = String::from_utf8_lossy(&scripts.stdout).trim().to_string();
    format!("{}:{scripts}", std::env::var("PATH").unwrap_or_default())
}

/// The version of the nats-server the tests run (`v2.15.1` → `2.15.1`).
fn nats_server_version() -> String {
    let out = Command::new("nats-server")
        .arg("--version")
        .env("PATH", nats_path())
        .output()
        .expect("nats-server on PATH");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .rsplit(" v")
        .next()
        .expect("nats-server: vX.Y.Z")
        .to_string()
}

fn container(rendered: &Rendered) -> &Value {
    &rendered.one("StatefulSet", "-nats")["spec"]["template"]["spec"]["containers"][0]
}

#[test]
fn the_default_is_a_three_server_jetstream_cluster_on_volumes() {
    let rendered = chart::render("");
    let sts = rendered.one("StatefulSet", "-nats");
    assert_eq!(sts["metadata"]["name"], "mail-sluice-nats");
    assert_eq!(sts["spec"]["replicas"], 3);
    assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
    assert_eq!(sts["spec"]["serviceName"], "mail-sluice-nats-headless");
    let c = container(&rendered);
    assert_eq!(c["image"], format!("nats:{}", nats_server_version()));
    let claim = &sts["spec"]["volumeClaimTemplates"][0];
    assert_eq!(claim["metadata"]["name"], "data");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "10Gi");
    assert!(
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "data" && m["mountPath"] == "/data")
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], "monitor", "{probe}");
    }
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"],
        "/healthz?js-enabled-only=true"
    );
    assert_eq!(
        c["lifecycle"]["preStop"]["exec"]["command"][2],
        "ldm=/var/run/nats/nats.pid"
    );

    let client = rendered.one("Service", "-nats");
    let ports: Vec<(&str, u64)> = client["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["port"].as_u64().unwrap()))
        .collect();
    assert_eq!(ports, [("client", 4222), ("monitor", 8222)]);
    let headless = rendered.one("Service", "-nats-headless");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(
        rendered.one("PodDisruptionBudget", "-nats")["spec"]["maxUnavailable"],
        1
    );

    let config = config_text(&rendered);
    for line in [
        "server_name: $POD_NAME",
        "lame_duck_duration: \"30s\"",
        "max_file_store: 8G",
        "max_memory_store: 256M",
        "$NATS_ROUTE_2",
    ] {
        assert!(config.contains(line), "{line} missing in\n{config}");
    }
}

#[test]
fn passwords_live_in_the_secret_only() {
    let rendered = chart::render("");
    let secret = secret_values(&rendered);
    let mut keys: Vec<&str> = secret.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "ingress-password",
            "operator-password",
            "route-password",
            "worker-password"
        ]
    );
    let config = config_text(&rendered);
    for (key, value) in &secret {
        assert_eq!(value.len(), 32, "{key}");
        assert!(value.chars().all(|c| c.is_ascii_alphanumeric()), "{key}");
        for object in &rendered.objects {
            if object["kind"] != "Secret" {
                let text = object.to_string();
                assert!(!text.contains(value.as_str()), "{key} in {text}");
            }
        }
    }
    // Every password in the configuration is a reference the server expands.
    for line in config.lines().filter(|l| l.trim().starts_with("password:")) {
        assert!(line.trim().starts_with("password: $"), "{line}");
    }
    // An existing Secret replaces the generated one.
    let rendered = chart::render("nats: { auth: { existingSecret: nats-passwords } }");
    assert!(nats_objects(&rendered, "Secret").is_empty());
    let env = container(&rendered)["env"].to_string();
    assert!(env.contains("nats-passwords"), "{env}");
}

/// The objects of `kind` that the NATS part of the chart renders (the rest of the chart
/// has Secrets, PDBs and NetworkPolicies of its own).
fn nats_objects<'a>(rendered: &'a chart::Rendered, kind: &str) -> Vec<&'a serde_json::Value> {
    rendered
        .of_kind(kind)
        .into_iter()
        .filter(|o| chart::template_of(o).contains("/nats/"))
        .collect()
}

#[test]
fn one_server_has_no_cluster_and_an_existing_nats_no_server_at_all() {
    let rendered = chart::render("nats: { replicas: 1 }");
    let config = config_text(&rendered);
    assert!(!config.contains("cluster {"), "{config}");
    assert!(nats_objects(&rendered, "PodDisruptionBudget").is_empty());
    let env = container(&rendered)["env"].to_string();
    assert!(!env.contains("NATS_ROUTE_0"), "{env}");

    let rendered = chart::render("nats: { url: \"nats://nats.example:4222\" }");
    for kind in [
        "StatefulSet",
        "ConfigMap",
        "Secret",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
    ] {
        assert!(
            nats_objects(&rendered, kind).is_empty(),
            "{kind} rendered for an existing NATS"
        );
    }
}

#[test]
fn values_the_schema_refuses() {
    for values in [
        "nats: { replicas: 2 }",
        "nats: { replicas: 0 }",
        "nats: { podAntiAffinity: always }",
        // nats-server refuses a lame duck duration under 30 s.
        "nats: { lameDuckDuration: 10s }",
        "nats: { jetstream: { maxFile: lots } }",
        "nats: { existing: { credentials: { ingress: { passwordKey: p, user: i } } } }",
        "nats: { existing: { credentials: { ingress: { secretName: s, userKey: u } } } }",
        "nats: { existing: { credentials: { spammer: {} } } }",
        "nats: { tyop: 1 }",
    ] {
        let error = chart::refused(values);
        assert!(!error.is_empty(), "{values}");
    }
}

#[test]
fn the_network_policy_admits_clients_routes_and_monitoring_from_whom_it_should() {
    let rendered = chart::render(
        "nats: { networkPolicy: { monitorFrom: [ { namespaceSelector: { matchLabels: { kubernetes.io/metadata.name: keda } } } ] } }",
    );
    let policy = rendered.one("NetworkPolicy", "-nats");
    let rules = policy["spec"]["ingress"].as_array().unwrap();
    let by_port = |port: u64| {
        rules
            .iter()
            .find(|r| r["ports"][0]["port"] == port)
            .unwrap_or_else(|| panic!("no rule for {port}"))
    };
    let sluice = &by_port(4222)["from"];
    assert_eq!(sluice.as_array().unwrap().len(), 1);
    let selector = &sluice[0]["podSelector"];
    assert_eq!(
        selector["matchLabels"]["app.kubernetes.io/part-of"],
        "sluice"
    );
    assert_eq!(
        selector["matchLabels"]["app.kubernetes.io/instance"],
        "mail"
    );
    assert_eq!(
        selector["matchExpressions"][0]["values"],
        serde_json::json!(["ingress", "worker", "operator"])
    );
    let routes = &by_port(6222)["from"][0]["podSelector"]["matchLabels"];
    assert_eq!(routes["app.kubernetes.io/component"], "nats");
    let monitor = by_port(8222)["from"].as_array().unwrap();
    assert_eq!(monitor.len(), 2);
    assert_eq!(monitor[0], sluice[0]);
    assert_eq!(
        monitor[1]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "keda"
    );
    assert!(
        nats_objects(
            &chart::render("nats: { networkPolicy: { enabled: false } }"),
            "NetworkPolicy"
        )
        .is_empty()
    );
}

/// Values that change the rendered nats-server configuration.
const CONFIG_VARIANTS: [&str; 4] = [
    "",
    "nats: { replicas: 1 }",
    "nats: { replicas: 5, lameDuckDuration: 2m, lameDuckGracePeriod: 2s }",
    "nats: { jetstream: { maxFile: 1G, maxMemory: 64M } }",
];

#[test]
fn nats_server_accepts_every_rendered_configuration() {
    for values in CONFIG_VARIANTS {
        let rendered = chart::render(values);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nats.conf");
        std::fs::write(&file, config_text(&rendered)).unwrap();
        let mut check = Command::new("nats-server");
        check
            .arg("-t")
            .arg("-c")
            .arg(&file)
            .env("PATH", nats_path());
        // The references resolve from the pod's environment; without it the check fails,
        // which shows the server does read them.
        let bare = check.output().expect("nats-server");
        assert!(
            !bare.status.success(),
            "{values}: unresolved references accepted"
        );
        for var in container(&rendered)["env"].as_array().unwrap() {
            let name = var["name"].as_str().unwrap();
            // Routes must differ: nats-server refuses a route listed twice.
            check.env(name, format!("nats://route:x@{}:6222", name.to_lowercase()));
        }
        let out = check.output().expect("nats-server");
        assert!(
            out.status.success(),
            "{values}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn helm_lint_is_clean_in_both_modes() {
    for values in [
        "",
        "nats: { replicas: 1 }",
        "nats: { url: \"nats://nats.example:4222\", existing: { credentials: { worker: { secretName: s, credsKey: c } } } }",
    ] {
        let messages = chart::lint(values);
        assert!(messages.is_empty(), "{values}: {messages:#?}");
    }
}

#[test]
fn checkov_and_kubernetes_validate_pass_the_nats_objects() {
    for values in ["", "nats: { replicas: 1, podAntiAffinity: hard }"] {
        let rendered = chart::render(values);
        let dir = tempfile::tempdir().unwrap();
        chart::kubernetes_validate(values, &rendered.write_to(dir.path()));
        let report = chart::checkov(values, &rendered);
        assert!(report["summary"]["passed"].as_u64().unwrap() > 50);
    }
}

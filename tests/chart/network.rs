//! The Services and NetworkPolicies: SMTP on the public Service and nowhere the admin
//! port; the admin Service inside the cluster only; each NetworkPolicy selects exactly
//! its role's pods and opens only their ports to the peers the values name.

use super::{all_sets, name_of, render_set};
use crate::common::chart::{Rendered, render};
use serde_json::{Value, json};

/// Whether `labels` satisfy a `matchLabels` selector.
fn selects(selector: &Value, labels: &Value) -> bool {
    let wanted = selector["matchLabels"].as_object().unwrap();
    assert!(!wanted.is_empty(), "an empty selector selects everything");
    assert!(selector["matchExpressions"].is_null());
    wanted.iter().all(|(k, v)| &labels[k] == v)
}

fn pod_labels(rendered: &Rendered) -> Vec<(String, &Value)> {
    rendered
        .objects
        .iter()
        .filter(|o| !o["spec"]["template"]["metadata"].is_null())
        .map(|o| {
            (
                name_of(o).to_string(),
                &o["spec"]["template"]["metadata"]["labels"],
            )
        })
        .collect()
}

#[test]
fn the_public_service_carries_smtp_only_and_the_admin_service_stays_inside() {
    for (set, rendered) in all_sets() {
        let public = rendered.one("Service", "-ingress");
        let ports = public["spec"]["ports"].as_array().unwrap();
        let deployment = rendered.one("Deployment", "-ingress");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        for p in ports {
            assert_ne!(p["port"], 9090, "{set}");
            assert_ne!(p["targetPort"], "admin", "{set}");
            assert_ne!(p["targetPort"], 9090, "{set}");
            let target = container["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == p["targetPort"])
                .unwrap_or_else(|| panic!("{set}: {p} names no container port"));
            let expected = match target["containerPort"].as_u64().unwrap() {
                2525 => 25,
                2587 => 587,
                2465 => 465,
                other => panic!("{set}: port {other}"),
            };
            assert_eq!(p["port"], expected, "{set}");
        }
        assert!(selects(
            &json!({"matchLabels": public["spec"]["selector"]}),
            &deployment["spec"]["template"]["metadata"]["labels"]
        ));
        let admin = rendered.one("Service", "-admin");
        assert_eq!(admin["spec"]["type"], "ClusterIP", "{set}");
        assert_eq!(
            admin["spec"]["ports"],
            json!([{"name": "admin", "port": 9090, "targetPort": "admin", "protocol": "TCP"}])
        );
        let selector = json!({"matchLabels": admin["spec"]["selector"]});
        let selected: Vec<String> = pod_labels(&rendered)
            .into_iter()
            .filter(|(_, labels)| selects(&selector, labels))
            .map(|(name, _)| name)
            .collect();
        assert_eq!(
            selected,
            [
                "mail-sluice-ingress",
                "mail-sluice-operator",
                "mail-sluice-worker"
            ],
            "{set}: the admin Service reaches the three roles and nothing else"
        );
        for service in rendered.of_kind("Service") {
            if name_of(service) != name_of(public) {
                // No type is ClusterIP, Kubernetes' default (the NATS Services).
                assert_eq!(
                    service["spec"]["type"].as_str().unwrap_or("ClusterIP"),
                    "ClusterIP",
                    "{set} {}",
                    name_of(service)
                );
            }
        }
    }
}

#[test]
fn the_public_service_follows_the_values() {
    let defaults = render_set("defaults");
    let spec = &defaults.one("Service", "-ingress")["spec"];
    assert_eq!(spec["type"], "LoadBalancer");
    assert_eq!(spec["externalTrafficPolicy"], "Cluster");
    let ports: Vec<&Value> = spec["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["port"])
        .collect();
    assert_eq!(ports, [25, 587, 465], "with the self-signed certificate");
    let plain = render("tls: {selfSigned: false}");
    let ports: Vec<&Value> = plain.one("Service", "-ingress")["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["port"])
        .collect();
    assert_eq!(ports, [25], "no submission ports without TLS");
    let local = render_set("cert-manager");
    let service = local.one("Service", "-ingress");
    assert_eq!(service["spec"]["externalTrafficPolicy"], "Local");
    assert_eq!(
        service["spec"]["loadBalancerSourceRanges"],
        json!(["0.0.0.0/0"])
    );
    assert_eq!(
        service["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-type"],
        "nlb"
    );
    let ports: Vec<&Value> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["port"])
        .collect();
    assert_eq!(ports, [25, 587, 465]);
    let cluster_ip = render_set("clusterip-proxy");
    let spec = &cluster_ip.one("Service", "-ingress")["spec"];
    assert_eq!(spec["type"], "ClusterIP");
    assert!(
        spec["externalTrafficPolicy"].is_null(),
        "only for external Services"
    );
    let moved = render(
        "tls: {secretName: t}\ningress: {listeners: {submissions: {enabled: false}, smtp: {port: 2500}}}",
    );
    let ports: Vec<&Value> = moved.one("Service", "-ingress")["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["port"])
        .collect();
    assert_eq!(ports, [2500, 587]);
}

#[test]
fn each_network_policy_selects_its_roles_pods_and_opens_only_their_ports() {
    for (set, rendered) in all_sets() {
        let policies = rendered.of_kind("NetworkPolicy");
        let ours: Vec<&&Value> = policies
            .iter()
            .filter(|p| {
                ["ingress", "worker", "operator"]
                    .iter()
                    .any(|r| name_of(p).ends_with(&format!("-{r}")))
            })
            .collect();
        assert_eq!(ours.len(), 3, "{set}");
        let admin_from = if set == "clusterip-proxy" {
            json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}])
        } else {
            json!([{"podSelector": {"matchLabels": {"sluice.dev/admin-access": "true"}}}])
        };
        for policy in ours {
            let role = name_of(policy).rsplit('-').next().unwrap();
            let selected: Vec<String> = pod_labels(&rendered)
                .into_iter()
                .filter(|(_, labels)| selects(&policy["spec"]["podSelector"], labels))
                .map(|(name, _)| name)
                .collect();
            assert_eq!(selected, [format!("mail-sluice-{role}")], "{set} {role}");
            assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
            let rules = policy["spec"]["ingress"].as_array().unwrap();
            let admin = rules.last().unwrap();
            assert_eq!(
                admin["ports"],
                json!([{"port": 9090, "protocol": "TCP"}]),
                "{set} {role}"
            );
            assert_eq!(admin["from"], admin_from, "{set} {role}");
            if role == "ingress" {
                assert_eq!(rules.len(), 2, "{set}");
                let smtp = &rules[0];
                let container = &rendered.one("Deployment", "-ingress")["spec"]["template"]["spec"]
                    ["containers"][0];
                let listening: Vec<Value> = container["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|p| p["name"] != "admin")
                    .map(|p| json!({"port": p["containerPort"], "protocol": "TCP"}))
                    .collect();
                assert_eq!(smtp["ports"], json!(listening), "{set}");
                if set == "clusterip-proxy" {
                    assert_eq!(smtp["from"], json!([{"ipBlock": {"cidr": "10.0.0.0/8"}}]));
                } else {
                    assert!(smtp["from"].is_null(), "{set}: SMTP from anywhere");
                }
            } else {
                assert_eq!(rules.len(), 1, "{set} {role}: the admin port only");
            }
        }
    }
    let off = render("networkPolicy: {enabled: false}");
    assert!(
        off.of_kind("NetworkPolicy")
            .iter()
            .all(|p| name_of(p).contains("nats"))
    );
}

#[test]
fn the_service_monitor_scrapes_the_admin_service_of_every_role() {
    let rendered = render_set("autoscaling");
    let monitor = rendered.one("ServiceMonitor", "-admin");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    let admin = rendered.one("Service", "-admin");
    assert!(selects(
        &monitor["spec"]["selector"],
        &admin["metadata"]["labels"]
    ));
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "admin");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    assert!(render_set("defaults").of_kind("ServiceMonitor").is_empty());
}

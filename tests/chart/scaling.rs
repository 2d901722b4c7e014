//! Autoscaling and disruption: HPAs for ingress and worker when asked, KEDA on the
//! JetStream consumer's backlog for workers, never both, and PodDisruptionBudgets that
//! never block a drain.

use super::{all_sets, name_of, render_set};
use crate::common::chart::render;
use serde_json::json;

#[test]
fn nothing_autoscales_by_default_and_replicas_come_from_values() {
    let rendered = render_set("defaults");
    assert!(rendered.of_kind("HorizontalPodAutoscaler").is_empty());
    assert!(rendered.of_kind("ScaledObject").is_empty());
    for role in ["ingress", "worker", "operator"] {
        assert_eq!(
            rendered.one("Deployment", &format!("-{role}"))["spec"]["replicas"],
            2,
            "{role}"
        );
    }
    let hpa = render(
        "worker: {autoscaling: {enabled: true, minReplicas: 3, maxReplicas: 9, targetCPUUtilizationPercentage: 60}}",
    );
    let scaler = hpa.one("HorizontalPodAutoscaler", "-worker");
    assert_eq!(scaler["apiVersion"], "autoscaling/v2");
    assert_eq!(
        scaler["spec"]["scaleTargetRef"],
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "mail-sluice-worker"})
    );
    assert_eq!(
        (
            scaler["spec"]["minReplicas"].clone(),
            scaler["spec"]["maxReplicas"].clone()
        ),
        (json!(3), json!(9))
    );
    assert_eq!(scaler["spec"]["metrics"][0]["resource"]["name"], "cpu");
    assert_eq!(
        scaler["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        60
    );
    assert!(
        hpa.one("Deployment", "-worker")["spec"]["replicas"].is_null(),
        "the HPA owns replicas"
    );
    assert_eq!(hpa.one("Deployment", "-ingress")["spec"]["replicas"], 2);
}

#[test]
fn keda_scales_workers_on_the_consumers_pending_messages() {
    let rendered = render_set("autoscaling");
    let scaled = rendered.one("ScaledObject", "-worker");
    assert_eq!(scaled["apiVersion"], "keda.sh/v1alpha1");
    assert_eq!(
        scaled["spec"]["scaleTargetRef"]["name"],
        "mail-sluice-worker"
    );
    let trigger = &scaled["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "nats-jetstream");
    assert_eq!(
        trigger["metadata"],
        json!({
            "natsServerMonitoringEndpoint": "mail-sluice-nats-headless.mail.svc.cluster.local:8222",
            "account": "$G",
            "stream": "SLUICE_MESSAGES",
            "consumer": "sluice-workers",
            "lagThreshold": "50",
        })
    );
    assert!(
        rendered.one("Deployment", "-worker")["spec"]["replicas"].is_null(),
        "KEDA owns replicas"
    );
    assert!(
        rendered
            .of_kind("HorizontalPodAutoscaler")
            .iter()
            .all(|h| name_of(h) == "mail-sluice-ingress")
    );
    assert!(rendered.one("Deployment", "-ingress")["spec"]["replicas"].is_null());
    // The same names the code uses (src/queue/jetstream/mod.rs).
    let source = std::fs::read_to_string(crate::common::chart::repo_path(
        "src/queue/jetstream/mod.rs",
    ))
    .unwrap();
    assert!(
        source.contains("stream: \"SLUICE_MESSAGES\"")
            && source.contains("consumer: \"sluice-workers\"")
    );
    let elsewhere =
        render("worker: {keda: {enabled: true, monitorEndpoint: 'nats.infra:8222', account: APP}}");
    let metadata = &elsewhere.one("ScaledObject", "-worker")["spec"]["triggers"][0]["metadata"];
    assert_eq!(metadata["natsServerMonitoringEndpoint"], "nats.infra:8222");
    assert_eq!(metadata["account"], "APP");
}

#[test]
fn every_role_has_a_disruption_budget_that_lets_one_pod_go() {
    for (set, rendered) in all_sets() {
        for role in ["ingress", "worker", "operator"] {
            let pdb = rendered.one("PodDisruptionBudget", &format!("-{role}"));
            assert_eq!(pdb["spec"]["maxUnavailable"], 1, "{set} {role}");
            assert!(pdb["spec"]["minAvailable"].is_null());
            let deployment = rendered.one("Deployment", &format!("-{role}"));
            assert_eq!(
                pdb["spec"]["selector"], deployment["spec"]["selector"],
                "{set} {role}"
            );
        }
    }
    let single = render("operator: {replicas: 1}");
    assert_eq!(
        single.one("PodDisruptionBudget", "-operator")["spec"]["maxUnavailable"],
        1
    );
}

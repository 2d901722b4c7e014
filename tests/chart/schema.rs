//! What values.schema.json (and the templates' own checks) refuse: a typo'd key at any
//! depth, a wrong type, an unknown Service type, KEDA with an HPA, a way to expose the
//! admin port, PROXY protocol without trusted proxies.

use crate::common::chart::{refused, render};

#[test]
fn the_schema_refuses_typos_wrong_types_and_contradictions() {
    for (values, needle) in [
        ("ingres: {replicas: 3}", "additional properties 'ingres'"),
        (
            "ingress: {replcias: 3}",
            "'/ingress': additional properties 'replcias'",
        ),
        (
            "worker: {keda: {enabeld: true}}",
            "additional properties 'enabeld'",
        ),
        (
            "networkPolicy: {adminFrom: [{podSelektor: {}}]}",
            "additional properties 'podSelektor'",
        ),
        (
            "ingress: {replicas: three}",
            "'/ingress/replicas': got string, want integer",
        ),
        (
            "ingress: {replicas: '3'}",
            "'/ingress/replicas': got string",
        ),
        (
            "limits: {maxRecipients: 0}",
            "'/limits/maxRecipients': minimum",
        ),
        (
            "ingress: {service: {type: ExternalName}}",
            "'/ingress/service/type': value must be one of",
        ),
        (
            "ingress: {service: {externalTrafficPolicy: local}}",
            "'/ingress/service/externalTrafficPolicy'",
        ),
        (
            "worker: {keda: {enabled: true}, autoscaling: {enabled: true}}",
            "'/worker/autoscaling/enabled': value must be false",
        ),
        (
            "admin: {service: {type: LoadBalancer}}",
            "'/admin': additional properties 'service'",
        ),
        (
            "admin: {type: NodePort}",
            "'/admin': additional properties 'type'",
        ),
        (
            "ingress: {proxyProtocol: {enabled: true}}",
            "'/ingress/proxyProtocol/trustedProxies': minItems",
        ),
        (
            "ingress: {proxyProtocol: {enabled: true, trustedProxies: [not-a-cidr]}}",
            "'/ingress/proxyProtocol/trustedProxies/0'",
        ),
        (
            "tls: {certManager: {enabled: true, issuerRef: {name: i}}}",
            "'/tls/certManager/dnsNames': minItems",
        ),
        ("log: yaml", "'/log'"),
        ("hostname: 'mx example'", "'/hostname'"),
    ] {
        let error = refused(values);
        assert!(error.contains(needle), "{values}: {error}");
    }
    // The same values, corrected, render: the refusals above are for the reason given.
    for values in [
        "ingress: {replicas: 3}",
        "worker: {keda: {enabled: true}}",
        "worker: {autoscaling: {enabled: true}}",
        "ingress: {service: {type: NodePort, externalTrafficPolicy: Local}}",
        "ingress: {proxyProtocol: {enabled: true, trustedProxies: [192.0.2.0/24]}}",
        "tls: {certManager: {enabled: true, issuerRef: {name: i}, dnsNames: [mx.example.com]}}",
    ] {
        render(values);
    }
}

#[test]
fn the_templates_refuse_what_the_schema_cannot_see() {
    // Only submission listeners, without a certificate: nothing would listen.
    let error = refused("tls: {selfSigned: false}\ningress: {listeners: {smtp: {enabled: false}}}");
    assert!(error.contains("no listener"), "{error}");
    // KEDA with an existing NATS but the chart's monitoring endpoint: there is none.
    let error = refused("nats: {url: 'nats://nats.infra:4222'}\nworker: {keda: {enabled: true}}");
    assert!(error.contains("worker.keda.monitorEndpoint"), "{error}");
    render(
        "nats: {url: 'nats://nats.infra:4222'}\nworker: {keda: {enabled: true, monitorEndpoint: 'nats.infra:8222'}}",
    );
}

#[test]
fn every_key_of_values_yaml_has_a_comment_above_it() {
    let text =
        std::fs::read_to_string(crate::common::chart::repo_path("charts/sluice/values.yaml"))
            .unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // The `nats:` block at the end is the NATS part's (templates/nats/); this covers the rest.
    let end = lines
        .iter()
        .position(|l| l.starts_with("# NATS:"))
        .expect("the NATS banner");
    let mut keys = 0;
    for (i, line) in lines[..end].iter().enumerate() {
        let trimmed = line.trim_start().trim_start_matches("- ");
        let is_key = trimmed.split_once(':').is_some_and(|(k, _)| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c))
        });
        if line.trim_start().starts_with('#') || !is_key {
            continue;
        }
        keys += 1;
        assert!(
            lines[i - 1].trim_start().starts_with('#'),
            "values.yaml line {}: {line:?} has no comment above it",
            i + 1
        );
    }
    assert!(keys > 80, "{keys} keys");
}

//! What values.schema.json (and the templates' own checks) refuse: a typo'd key at any
//! depth, a wrong type, an unknown Service type, KEDA with an HPA, a way to expose the
//! admin port, PROXY protocol without trusted proxies.

use crate::common::chart::{refused, render};

#[test]
fn the_schema_refuses_typos_wrong_types_and_contradictions() {
    for (values, needle) in [
        ("ingres: {replicas: 3}", "ingres"),
        ("ingress: {replcias: 3}", "replcias"),
        ("worker: {keda: {enabeld: true}}", "enabeld"),
        (
            "networkPolicy: {adminFrom: [{podSelektor: {}}]}",
            "podSelektor",
        ),
        ("ingress: {replicas: three}", "replicas"),
        ("ingress: {replicas: '3'}", "replicas"),
        ("limits: {maxRecipients: 0}", "maxRecipients"),
        ("ingress: {service: {type: ExternalName}}", "type"),
        (
            "ingress: {service: {externalTrafficPolicy: local}}",
            "externalTrafficPolicy",
        ),
        (
            "worker: {keda: {enabled: true}, autoscaling: {enabled: true}}",
            "enabled",
        ),
        ("admin: {service: {type: LoadBalancer}}", "service"),
        ("admin: {type: NodePort}", "type"),
        (
            "ingress: {proxyProtocol: {enabled: true}}",
            "trustedProxies",
        ),
        (
            "ingress: {proxyProtocol: {enabled: true, trustedProxies: [not-a-cidr]}}",
            "trustedProxies",
        ),
        (
            "tls: {certManager: {enabled: true, issuerRef: {name: i}}}",
            "dnsNames",
        ),
        ("log: yaml", "log"),
        ("hostname: 'mx example'", "hostname"),
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
    let error = refused("ingress: {listeners: {smtp: {enabled: false}}}");
    assert!(error.contains("no listener"), "{error}");
}

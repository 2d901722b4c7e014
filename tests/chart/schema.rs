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
    let error = refused("ingress: {listeners: {smtp: {enabled: false}}}");
    assert!(error.contains("no listener"), "{error}");
}

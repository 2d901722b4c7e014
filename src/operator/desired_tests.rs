use super::*;
use crate::policy::NoSecrets;

fn resource(id: &str, spec: &str) -> Arc<RelayPolicyResource> {
    let (ns, name) = id.split_once('/').unwrap();
    let mut p = RelayPolicyResource::new(name, serde_saphyr::from_str(spec).unwrap());
    p.metadata.namespace = Some(ns.into());
    Arc::new(p)
}

fn scope() -> Scope {
    Scope {
        policy_namespaces: ["mail".to_string(), "team".to_string()].into(),
        privileged_namespaces: ["mail".to_string()].into(),
    }
}

#[test]
fn delegated_namespaces_may_add_users_with_senders_and_local_domains_only() {
    let hash = crate::policy::hash_password("app-password");
    let ok = resource(
        "team/app",
        &format!(
            "users: [{{name: app, passwordHash: '{hash}', allowedSenders: ['@app.example']}}]\nlocalDomains: [{{domain: app.example, delivery: {{maildir: {{path: /m}}}}}}]"
        ),
    );
    let wide = [
        "mode: open",
        "relayDomains: [r.example]",
        "routes: [{domains: ['*'], smarthost: {host: s.example, port: 25}}]",
        "limits: {maxRecipients: 1}",
        "retry: {maxLifetime: 1h}",
        "users: [{name: any, passwordHash: '$2b$04$x'}]",
    ];
    let d = desired(std::slice::from_ref(&ok), &scope(), &NoSecrets);
    assert_eq!(d.verdicts["team/app"].refused, None, "{:?}", d.verdicts);
    for spec in wide {
        let d = desired(&[resource("team/x", spec)], &scope(), &NoSecrets);
        let (refusal, message) = d.verdicts["team/x"].refused.clone().unwrap();
        assert_eq!(refusal, Refusal::NotPermitted, "{spec}: {message}");
        assert!(message.contains("privileged namespaces (mail"), "{message}");
        assert!(d.snapshot.is_none());
    }
    // The same fields are fine in a privileged namespace.
    let d = desired(&[resource("mail/x", "mode: open")], &scope(), &NoSecrets);
    assert_eq!(d.verdicts["mail/x"].refused, None);
}

#[test]
fn a_policy_outside_the_allowed_namespaces_changes_nothing() {
    let d = desired(
        &[resource(
            "default/open",
            "mode: open\ntrustedNetworks: ['0.0.0.0/0']",
        )],
        &scope(),
        &NoSecrets,
    );
    assert!(d.snapshot.is_none());
    let v = &d.verdicts["default/open"];
    assert_eq!(v.refused.as_ref().unwrap().0, Refusal::NamespaceNotAllowed);
    assert_eq!((v.users, v.domains), (0, 0));
}

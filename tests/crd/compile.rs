//! The samples through the policy compiler, with their Secrets resolved the way the
//! operator resolves them, and every Secret reference of the samples pointing at a key
//! the sample Secrets hold.

use serde_json::Value;
use sluice::policy::{Delivery, PolicyError, PolicySnapshot};

use crate::fixtures::{Sample, SampleSecrets, sample_files, samples, samples_of_kind};

/// The sample files that hold RelayPolicies, as compiler sources. A file holds one kind
/// of resource, so these hold nothing else.
fn policy_sources() -> Vec<(String, String)> {
    let policies: Vec<String> = samples_of_kind("RelayPolicy")
        .into_iter()
        .map(|s| s.file)
        .collect();
    sample_files()
        .into_iter()
        .filter(|(file, _)| policies.contains(file))
        .collect()
}

/// The kinds of the policy samples, one kind per file; the operator's manifests
/// (`50-operator.yaml`: RBAC and a Deployment) sit together in one file.
const POLICY_KINDS: [&str; 3] = ["Namespace", "Secret", "RelayPolicy"];

#[test]
fn each_sample_file_holds_one_kind_and_secrets_use_string_data() {
    let all = samples();
    for sample in all.iter().filter(|s| POLICY_KINDS.contains(&s.kind())) {
        let same_file = all.iter().filter(|s| s.file == sample.file);
        assert!(
            same_file.clone().all(|s| s.kind() == sample.kind()),
            "{}",
            sample.label()
        );
        if sample.kind() == "Secret" {
            assert!(sample.value["stringData"].is_object(), "{}", sample.label());
            assert!(sample.value.get("data").is_none(), "{}", sample.label());
        }
    }
    let namespaces: Vec<&str> = all
        .iter()
        .filter(|s| s.kind() == "Namespace")
        .map(|s| s.name())
        .collect();
    // Cluster-scoped objects (the operator's ClusterRole and its binding) have none.
    let namespaced =
        |s: &&Sample| !matches!(s.kind(), "Namespace" | "ClusterRole" | "ClusterRoleBinding");
    for sample in all.iter().filter(namespaced) {
        assert!(
            namespaces.contains(&sample.namespace()),
            "{}: namespace not in the samples",
            sample.label()
        );
    }
}

#[test]
fn the_samples_compile_with_their_secrets() {
    let secrets = SampleSecrets::load();
    let snapshot = PolicySnapshot::from_yaml_with_secrets(&policy_sources(), &secrets)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(snapshot.policies(), ["mail/platform", "helpdesk/helpdesk"]);
    for (namespace, secret, key, user) in [
        ("mail", "relay-users", "billing-app", "billing-app"),
        ("mail", "relay-users", "monitoring", "monitoring"),
        (
            "helpdesk",
            "helpdesk-relay-user",
            "password",
            "helpdesk-app",
        ),
    ] {
        let password = secrets.value(namespace, secret, key).unwrap();
        assert!(snapshot.verify_password(user, password), "{user}");
        assert!(!snapshot.verify_password(user, "wrong"), "{user}");
    }
    assert!(matches!(
        snapshot.local_delivery("corp.example"),
        Some(Delivery::Lmtp { .. })
    ));
    assert!(matches!(
        snapshot.local_delivery("tickets.corp.example"),
        Some(Delivery::Webhook {
            signing_secret_ref: Some(_),
            ..
        })
    ));
    assert!(snapshot.is_relay_domain("partner.example"));
    let route = |domain: &str| snapshot.route_for(domain).map(|r| r.smarthost.host.clone());
    assert_eq!(
        route("partner.example").as_deref(),
        Some("mx.partner.example")
    );
    assert_eq!(
        route("elsewhere.example").as_deref(),
        Some("smtp.provider.example")
    );
    assert_eq!(snapshot.max_message_size(), Some(25 * 1024 * 1024));
}

/// Without Secrets (a file on disk), `passwordSecretRef` cannot be resolved; and a
/// reference to a key that is not there names it.
#[test]
fn secret_references_fail_clearly_when_unresolved() {
    match PolicySnapshot::from_yaml(&policy_sources()) {
        Err(PolicyError::UnresolvableSecret { secret, .. }) => {
            assert_eq!(secret, "relay-users/billing-app")
        }
        other => panic!("expected an unresolvable Secret, got {other:?}"),
    }
    let sources: Vec<(String, String)> = policy_sources()
        .into_iter()
        .map(|(name, text)| (name, text.replace("key: monitoring", "key: monitor")))
        .collect();
    let err = PolicySnapshot::from_yaml_with_secrets(&sources, &SampleSecrets::load())
        .expect_err("a missing key")
        .to_string();
    assert!(
        err.contains("Secret mail/relay-users has no key monitor"),
        "{err}"
    );
}

/// Every `(name, key)` a Secret reference in `value` names, wherever it sits.
fn references(value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (field, child) in map {
                let name = child["name"].as_str().unwrap_or("").to_string();
                match field.as_str() {
                    "passwordSecretRef" | "signingSecretRef" => {
                        out.push((name, child["key"].as_str().unwrap_or("").into()));
                    }
                    "credentialsSecretRef" => {
                        for key in ["usernameKey", "passwordKey"] {
                            out.push((name.clone(), child[key].as_str().unwrap_or("").into()));
                        }
                    }
                    _ => references(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| references(i, out)),
        _ => {}
    }
}

/// The compiler resolves only `passwordSecretRef`; smarthost credentials and webhook keys
/// are read later, so this checks that the samples' Secrets hold them too.
#[test]
fn every_secret_reference_of_the_samples_resolves() {
    let secrets = SampleSecrets::load();
    let mut checked = 0;
    for policy in samples_of_kind("RelayPolicy") {
        let mut found = Vec::new();
        references(&policy.value["spec"], &mut found);
        for (name, key) in found {
            let value = secrets.value(policy.namespace(), &name, &key);
            assert!(
                value.as_ref().is_ok_and(|v| !v.is_empty()),
                "{}: {name}/{key}: {value:?}",
                policy.label()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 6, "the samples reference six Secret keys");
}

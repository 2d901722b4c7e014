//! The operator's RBAC equals what it uses. The one statement of that is
//! examples/kubernetes/50-operator.yaml, which README "### RBAC" calls exactly the calls
//! the operator makes; the chart's rules are compared with the rules read from it, per
//! scope (cluster, the operator's namespace, each other policy namespace), not with a
//! copy typed again here.

use super::{all_sets, name_of, render_set};
use crate::common::chart::{Rendered, repo_path};
use serde_json::Value;
use std::collections::BTreeSet;

/// (scope, API group, resource, verb), scope being "cluster", "own" or "other".
type Grant = (String, String, String, String);

fn grants(scope: &str, role: &Value) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        assert!(rule["resourceNames"].is_null() && rule["nonResourceURLs"].is_null());
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                for verb in rule["verbs"].as_array().unwrap() {
                    let s = |v: &Value| v.as_str().unwrap().to_string();
                    assert_ne!(s(verb), "*");
                    assert_ne!(s(resource), "*");
                    out.insert((scope.into(), s(group), s(resource), s(verb)));
                }
            }
        }
    }
    out
}

/// The grants of Roles and ClusterRoles among `objects`, each Role's namespace taken as
/// "own" when it is `own_namespace`, else "other"; with the namespaces of the others.
fn all_grants(objects: &[Value], own_namespace: &str) -> (BTreeSet<Grant>, BTreeSet<String>) {
    let mut out = BTreeSet::new();
    let mut others = BTreeSet::new();
    for o in objects {
        match o["kind"].as_str() {
            Some("ClusterRole") => out.extend(grants("cluster", o)),
            Some("Role") => {
                let ns = o["metadata"]["namespace"].as_str().unwrap();
                if ns == own_namespace {
                    out.extend(grants("own", o));
                } else {
                    others.insert(ns.to_string());
                    out.extend(grants("other", o));
                }
            }
            _ => {}
        }
    }
    (out, others)
}

fn example() -> Vec<Value> {
    let text = std::fs::read_to_string(repo_path("examples/kubernetes/50-operator.yaml")).unwrap();
    serde_saphyr::from_multiple(&text).unwrap()
}

/// Every binding among `objects` binds its role to the operator's ServiceAccount only.
fn bindings_name_the_operator(rendered: &Rendered, set: &str) {
    let account = rendered.one("ServiceAccount", "-operator");
    let roles: BTreeSet<(String, String)> = rendered
        .objects
        .iter()
        .filter(|o| o["kind"] == "Role" || o["kind"] == "ClusterRole")
        .map(|o| {
            (
                o["kind"].as_str().unwrap().to_string(),
                name_of(o).to_string(),
            )
        })
        .collect();
    let mut bound = BTreeSet::new();
    for binding in rendered
        .of_kind("ClusterRoleBinding")
        .into_iter()
        .chain(rendered.of_kind("RoleBinding"))
    {
        assert_eq!(
            binding["subjects"],
            serde_json::json!([{"kind": "ServiceAccount", "name": name_of(account), "namespace": "mail"}]),
            "{set} {}",
            name_of(binding)
        );
        let kind = binding["roleRef"]["kind"].as_str().unwrap().to_string();
        bound.insert((
            kind,
            binding["roleRef"]["name"].as_str().unwrap().to_string(),
        ));
    }
    assert_eq!(bound, roles, "{set}: every role bound, nothing else bound");
}

#[test]
fn the_operators_rbac_is_exactly_the_documented_calls_per_namespace() {
    let (expected, example_others) = all_grants(&example(), "mail");
    assert_eq!(example_others, BTreeSet::from(["helpdesk".to_string()]));
    for (set, rendered) in all_sets() {
        let (granted, others) = all_grants(&rendered.objects, "mail");
        let policy_namespaces: BTreeSet<String> = if set == "cert-manager" {
            ["helpdesk".into(), "billing".into()].into()
        } else {
            BTreeSet::new()
        };
        assert_eq!(
            others, policy_namespaces,
            "{set}: a Secrets Role in each other policy namespace"
        );
        let mut expected = expected.clone();
        if policy_namespaces.is_empty() {
            expected.retain(|(scope, ..)| scope != "other");
        }
        assert_eq!(granted, expected, "{set}");
        bindings_name_the_operator(&rendered, set);
    }
}

#[test]
fn cluster_scoped_rbac_names_carry_the_namespace() {
    let rendered = render_set("defaults");
    for kind in ["ClusterRole", "ClusterRoleBinding"] {
        let objects = rendered.of_kind(kind);
        assert_eq!(objects.len(), 1);
        assert_eq!(name_of(objects[0]), "mail-sluice-operator-mail");
        assert!(objects[0]["metadata"]["namespace"].is_null());
    }
}

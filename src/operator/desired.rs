//! What the RelayPolicies in the cluster add up to: the snapshot to put in force, and a
//! verdict for each policy (accepted, or refused and why). Pure: it reads objects and
//! Secrets and touches no API.
//!
//! Before compiling, two Kubernetes rules apply. Only policies in the allowed namespaces
//! count (`--policy-namespaces`): anyone who may create a RelayPolicy could otherwise
//! open the relay. And only the privileged namespaces (`--privileged-namespaces`) may
//! say who may relay at all or where mail goes: `mode`, `trustedNetworks`,
//! `relayDomains`, `routes`, `limits` and `retry`; other allowed namespaces may add
//! users, each limited to its `allowedSenders`, and local domains.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kube::ResourceExt;

use crate::policy::model::{self, Mode, RelayPolicy, RelayPolicyResource, RelayPolicySpec};
use crate::policy::{
    Document, EachOutcome, Location, PolicyError, PolicySnapshot, SecretSource, compile_each,
};

/// Which namespaces count, and which of them may set the relay-wide rules.
#[derive(Debug, Clone)]
pub struct Scope {
    pub policy_namespaces: BTreeSet<String>,
    pub privileged_namespaces: BTreeSet<String>,
}

/// Why a policy is not in force: the `reason` of its Ready condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NamespaceNotAllowed,
    NotPermitted,
    Invalid,
    SecretUnavailable,
    Conflict,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NamespaceNotAllowed => "NamespaceNotAllowed",
            Refusal::NotPermitted => "NotPermitted",
            Refusal::Invalid => "Invalid",
            Refusal::SecretUnavailable => "SecretUnavailable",
            Refusal::Conflict => "Conflict",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `None`: in the snapshot.
    pub refused: Option<(Refusal, String)>,
    pub users: u32,
    pub domains: u32,
    /// Conflicts later policies had with this one (they were refused).
    pub conflicts: Vec<String>,
}

#[derive(Debug)]
pub struct Desired {
    /// `None` when no policy is accepted: the snapshot in force stays.
    pub snapshot: Option<PolicySnapshot>,
    /// By `namespace/name`.
    pub verdicts: BTreeMap<String, Verdict>,
}

/// Compiles the policies that count, oldest first (the older policy wins a conflict).
pub fn desired(
    policies: &[Arc<RelayPolicyResource>],
    scope: &Scope,
    secrets: &dyn SecretSource,
) -> Desired {
    let mut ordered: Vec<&RelayPolicyResource> = policies.iter().map(|p| p.as_ref()).collect();
    ordered.sort_by_key(|p| {
        (
            p.metadata.creation_timestamp.clone().map(|t| t.0),
            p.namespace(),
            p.name_any(),
        )
    });
    let mut verdicts = BTreeMap::new();
    let mut documents = Vec::new();
    for p in ordered {
        let id = id(p);
        let namespace = p.namespace().unwrap_or_default();
        let refusal = if !scope.policy_namespaces.contains(&namespace) {
            Some((Refusal::NamespaceNotAllowed, not_allowed(&namespace, scope)))
        } else if !scope.privileged_namespaces.contains(&namespace) {
            not_permitted(&p.spec, &namespace, scope).map(|m| (Refusal::NotPermitted, m))
        } else {
            None
        };
        match refusal {
            Some(refused) => {
                verdicts.insert(id, verdict(&p.spec, Some(refused)));
            }
            None => documents.push(document(p)),
        }
    }
    let EachOutcome {
        snapshot,
        documents: outcomes,
    } = compile_each(&documents, secrets);
    for outcome in outcomes {
        let refused = outcome
            .result
            .err()
            .map(|e| (refusal_of(&e), e.to_string()));
        verdicts.insert(
            outcome.id,
            Verdict {
                refused,
                users: count(outcome.users),
                domains: count(outcome.domains),
                conflicts: outcome.conflicts,
            },
        );
    }
    Desired { snapshot, verdicts }
}

/// `namespace/name`, as the policy module names policies.
pub fn id(p: &RelayPolicyResource) -> String {
    format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any())
}

/// The object as the policy compiler's document.
fn document(p: &RelayPolicyResource) -> Document {
    let id = id(p);
    Document {
        at: Location {
            source_name: format!("RelayPolicy {id}"),
            document: 0,
            policy: Some(id),
        },
        policy: RelayPolicy {
            api_version: model::API_VERSION.to_string(),
            kind: model::KIND.to_string(),
            metadata: model::ObjectMeta {
                name: p.name_any(),
                namespace: p.namespace(),
            },
            spec: p.spec.clone(),
            status: None,
        },
    }
}

fn verdict(spec: &RelayPolicySpec, refused: Option<(Refusal, String)>) -> Verdict {
    Verdict {
        refused,
        users: count(spec.users.len()),
        domains: count(spec.local_domains.len() + spec.relay_domains.len()),
        conflicts: Vec::new(),
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn refusal_of(error: &PolicyError) -> Refusal {
    match error {
        PolicyError::Conflict { .. } | PolicyError::ModeConflict { .. } => Refusal::Conflict,
        PolicyError::SecretUnavailable { .. } => Refusal::SecretUnavailable,
        _ => Refusal::Invalid,
    }
}

fn list(namespaces: &BTreeSet<String>) -> String {
    namespaces.iter().cloned().collect::<Vec<_>>().join(", ")
}

fn not_allowed(namespace: &str, scope: &Scope) -> String {
    format!(
        "RelayPolicies in namespace {namespace} are ignored: the operator counts only those in {} (--policy-namespaces)",
        list(&scope.policy_namespaces)
    )
}

/// The relay-wide fields a delegated namespace sets, if any.
fn not_permitted(spec: &RelayPolicySpec, namespace: &str, scope: &Scope) -> Option<String> {
    let mut fields = Vec::new();
    if spec.mode == Mode::Open {
        fields.push("mode: open".to_string());
    }
    let set = [
        ("spec.trustedNetworks", !spec.trusted_networks.is_empty()),
        ("spec.relayDomains", !spec.relay_domains.is_empty()),
        ("spec.routes", !spec.routes.is_empty()),
        ("spec.limits", spec.limits != Default::default()),
        ("spec.retry", spec.retry != Default::default()),
    ];
    fields.extend(set.iter().filter(|(_, s)| *s).map(|(f, _)| f.to_string()));
    fields.extend(
        spec.users
            .iter()
            .enumerate()
            .filter(|(_, u)| u.allowed_senders.is_empty())
            .map(|(i, _)| format!("spec.users[{i}] without allowedSenders (any sender)")),
    );
    if fields.is_empty() {
        return None;
    }
    Some(format!(
        "{} may be set only in the privileged namespaces ({}, --privileged-namespaces); a policy in {namespace} may add users, each with allowedSenders, and local domains",
        fields.join(", "),
        list(&scope.privileged_namespaces)
    ))
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;

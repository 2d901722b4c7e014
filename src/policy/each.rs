//! Compiling policies one at a time, the operator's way: a policy that does not compile,
//! or that conflicts with a policy already in, is left out with its error, and the
//! others stay in force, so that one team's typo cannot take down another team's rules.
//! Files are compiled all or nothing instead (`PolicySnapshot::from_documents`).
//!
//! Who wins a conflict is decided by the order of the documents: the first one in keeps
//! its rules, and the later one is refused whole. The operator orders policies by age,
//! so a new policy can never take a domain or a user away from an existing one.

use super::compile::{SecretSource, compile_document};
use super::documents::Document;
use super::error::PolicyError;
use super::merge::Merger;
use super::snapshot::PolicySnapshot;

/// What became of each document, and the snapshot of those accepted.
#[derive(Debug)]
pub struct EachOutcome {
    /// `None` when no document was accepted: there is nothing to put in force.
    pub snapshot: Option<PolicySnapshot>,
    /// One per document, in input order.
    pub documents: Vec<DocumentOutcome>,
}

#[derive(Debug)]
pub struct DocumentOutcome {
    /// `namespace/name`.
    pub id: String,
    /// How many users and domains (local and relay) the document defines, accepted or not.
    pub users: usize,
    pub domains: usize,
    /// `Ok` when its rules are in the snapshot.
    pub result: Result<(), PolicyError>,
    /// Conflicts that later documents had with this one (they were refused, this one
    /// stays): reported here too, so that no side of a conflict is silent.
    pub conflicts: Vec<String>,
}

/// Compiles and merges `docs` in order, leaving out each one that fails.
pub fn compile_each(docs: &[Document], secrets: &dyn SecretSource) -> EachOutcome {
    let mut merger = Merger::default();
    let mut documents: Vec<DocumentOutcome> = Vec::with_capacity(docs.len());
    for doc in docs {
        let spec = &doc.policy.spec;
        let result = compile_document(doc, secrets).and_then(|compiled| merger.add(compiled));
        let id = doc.policy.id();
        if let Err(e) = &result
            && let Some(first) = conflict_first(e)
            && first != id
            && let Some(winner) = documents.iter_mut().find(|d| d.id == first)
        {
            winner.conflicts.push(e.to_string());
        }
        documents.push(DocumentOutcome {
            id,
            users: spec.users.len(),
            domains: spec.local_domains.len() + spec.relay_domains.len(),
            result,
            conflicts: Vec::new(),
        });
    }
    let snapshot = match merger.is_empty() {
        true => None,
        false => Some(PolicySnapshot::from_rules(merger.finish())),
    };
    EachOutcome {
        snapshot,
        documents,
    }
}

/// The policy already in that a conflict was with.
fn conflict_first(error: &PolicyError) -> Option<String> {
    match error {
        PolicyError::Conflict { first, .. } | PolicyError::ModeConflict { first, .. } => {
            first.policy.clone()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::NoSecrets;
    use crate::policy::documents::parse_documents;
    use crate::policy::tests::{BILLING_HASH, policy};

    fn docs(texts: &[&str]) -> Vec<Document> {
        texts
            .iter()
            .flat_map(|t| parse_documents("t.yaml", t).unwrap())
            .collect()
    }

    #[test]
    fn a_broken_policy_is_left_out_and_the_others_stay() {
        let good = policy("mail/good", "  trustedNetworks: [10.0.0.0/8]");
        let broken = policy("team/broken", "  trustedNetworks: [10.0.0.0/33]");
        let out = compile_each(&docs(&[&good, &broken]), &NoSecrets);
        let snap = out.snapshot.unwrap();
        assert_eq!(snap.policies(), ["mail/good"]);
        assert!(out.documents[0].result.is_ok());
        let err = out.documents[1].result.as_ref().unwrap_err().to_string();
        assert!(err.contains("spec.trustedNetworks[0]"), "{err}");
        assert!(err.contains("10.0.0.0/33"), "{err}");
        // The same good policy alone gives the same snapshot: the broken one left no trace.
        let alone = compile_each(&docs(&[&good]), &NoSecrets);
        assert_eq!(alone.snapshot.unwrap().revision(), snap.revision());
    }

    #[test]
    fn the_first_policy_wins_a_conflict_and_both_are_told() {
        let user = format!("  users: [{{name: app, passwordHash: '{BILLING_HASH}'}}]");
        let a = policy("mail/a", &user);
        let b = policy("team/b", &format!("{user}\n  relayDomains: [b.example]"));
        let out = compile_each(&docs(&[&a, &b]), &NoSecrets);
        let snap = out.snapshot.unwrap();
        assert_eq!(snap.policies(), ["mail/a"]);
        assert!(!snap.is_relay_domain("b.example"), "b is refused whole");
        let refused = out.documents[1].result.as_ref().unwrap_err().to_string();
        assert!(refused.contains("user app is defined twice"), "{refused}");
        assert_eq!(out.documents[0].conflicts, [refused]);
        assert_eq!((out.documents[1].users, out.documents[1].domains), (1, 1));
    }

    #[test]
    fn modes_conflict_per_policy_and_nothing_valid_gives_no_snapshot() {
        let auth = policy("mail/a", "");
        let open = policy("team/open", "  mode: open");
        let out = compile_each(&docs(&[&auth, &open]), &NoSecrets);
        assert_eq!(out.snapshot.unwrap().policies(), ["mail/a"]);
        assert!(matches!(
            out.documents[1].result,
            Err(PolicyError::ModeConflict { .. })
        ));
        let broken = policy("mail/x", "  relayDomains: ['-bad-']");
        assert!(
            compile_each(&docs(&[&broken]), &NoSecrets)
                .snapshot
                .is_none()
        );
        assert!(compile_each(&[], &NoSecrets).snapshot.is_none());
    }
}

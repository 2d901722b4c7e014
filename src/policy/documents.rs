//! Splitting YAML text into RelayPolicy documents, with each document's location for
//! error messages. Empty documents (a trailing `---`, a comment-only file) are skipped;
//! anything else must be a `sluice.dev/v1alpha1` `RelayPolicy`.

use serde::Deserialize;

use super::error::{Location, PolicyError};
use super::model::{API_VERSION, KIND, RelayPolicy};

/// A parsed document and where it came from.
#[derive(Debug, Clone)]
pub struct Document {
    pub at: Location,
    pub policy: RelayPolicy,
}

/// Parses every document of one YAML text.
pub fn parse_documents(source_name: &str, text: &str) -> Result<Vec<Document>, PolicyError> {
    let mut out = Vec::new();
    for (index, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let at = Location {
            source_name: source_name.to_string(),
            document: index + 1,
            policy: None,
        };
        // Deserialising the typed struct straight from the text keeps line numbers and
        // field paths in serde's messages; only on failure do we look again to give a
        // better message for empty or foreign documents.
        match RelayPolicy::deserialize(de) {
            Ok(policy) => out.push(checked(at, policy)?),
            Err(error) => match explain_failure(text, index, &at) {
                Failure::Empty => continue,
                Failure::Foreign(e) => return Err(e),
                Failure::Schema => return Err(PolicyError::Yaml { at, error }),
            },
        }
    }
    Ok(out)
}

fn checked(mut at: Location, policy: RelayPolicy) -> Result<Document, PolicyError> {
    if policy.api_version != API_VERSION || policy.kind != KIND {
        return Err(not_relay_policy(at, &policy.api_version, &policy.kind));
    }
    at.policy = Some(policy.id());
    if policy.metadata.name.trim().is_empty() {
        return Err(PolicyError::invalid(
            &at,
            "metadata.name",
            "must not be empty",
        ));
    }
    Ok(Document { at, policy })
}

fn not_relay_policy(at: Location, api_version: &str, kind: &str) -> PolicyError {
    PolicyError::NotRelayPolicy {
        at,
        api_version: api_version.to_string(),
        kind: kind.to_string(),
    }
}

enum Failure {
    /// The document is empty: skip it.
    Empty,
    /// The document is something other than a RelayPolicy.
    Foreign(PolicyError),
    /// It claims to be a RelayPolicy but does not fit the schema: report serde's error.
    Schema,
}

fn explain_failure(text: &str, index: usize, at: &Location) -> Failure {
    let value = serde_yaml::Deserializer::from_str(text)
        .nth(index)
        .and_then(|de| serde_yaml::Value::deserialize(de).ok());
    let Some(value) = value else {
        return Failure::Schema;
    };
    if value.is_null() {
        return Failure::Empty;
    }
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).unwrap_or("");
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    if api_version == API_VERSION && kind == KIND {
        Failure::Schema
    } else {
        Failure::Foreign(not_relay_policy(at.clone(), api_version, kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "apiVersion: sluice.dev/v1alpha1\nkind: RelayPolicy\nmetadata: {name: a, namespace: mail}\nspec: {}\n";

    #[test]
    fn several_documents_and_empty_ones() {
        let text = format!(
            "---\n{MINIMAL}---\n# only a comment\n---\n{}",
            MINIMAL.replace("name: a", "name: b")
        );
        let docs = parse_documents("p.yaml", &text).unwrap();
        let names: Vec<_> = docs.iter().map(|d| d.policy.id()).collect();
        assert_eq!(names, ["mail/a", "mail/b"]);
        assert_eq!(docs[1].at.document, 3);
        assert_eq!(docs[1].at.to_string(), "p.yaml document 3 (policy mail/b)");
    }

    #[test]
    fn a_foreign_document_is_named() {
        let text = format!("{MINIMAL}---\nlisteners: []\nspool: ./var\n");
        let err = parse_documents("p.yaml", &text).unwrap_err().to_string();
        assert!(
            err.starts_with("p.yaml document 2: not a RelayPolicy"),
            "{err}"
        );
        let other = MINIMAL.replace("v1alpha1", "v1");
        let err = parse_documents("q.yaml", &other).unwrap_err();
        assert!(
            matches!(err, PolicyError::NotRelayPolicy { ref api_version, .. } if api_version == "sluice.dev/v1")
        );
    }

    #[test]
    fn unknown_spec_fields_are_rejected_with_their_path() {
        let text = MINIMAL.replace("spec: {}", "spec:\n  trustedNetwork: [10.0.0.0/8]\n");
        let err = parse_documents("p.yaml", &text).unwrap_err().to_string();
        assert!(err.contains("p.yaml document 1"), "{err}");
        assert!(err.contains("unknown field `trustedNetwork`"), "{err}");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn metadata_extras_and_status_are_ignored_but_name_is_required() {
        let text = MINIMAL.replace(
            "namespace: mail}",
            "namespace: mail, uid: x, labels: {a: b}}",
        ) + "status: {conditions: []}\n";
        assert_eq!(parse_documents("p.yaml", &text).unwrap().len(), 1);
        let err = parse_documents("p.yaml", &MINIMAL.replace("name: a", "name: ''")).unwrap_err();
        assert!(err.to_string().contains("metadata.name"), "{err}");
    }

    #[test]
    fn malformed_yaml_is_an_error_not_a_panic() {
        assert!(parse_documents("p.yaml", "spec: [unclosed\n").is_err());
        assert!(parse_documents("p.yaml", "\t- x: : :\n").is_err());
    }
}

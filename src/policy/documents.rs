//! Splitting YAML text into RelayPolicy documents, with each document's location for
//! error messages. Empty documents (a trailing `---`, a comment-only file) are skipped;
//! anything else must be a `sluice.dev/v1alpha1` `RelayPolicy`.

use super::error::{Location, PolicyError};
use super::model::{API_VERSION, KIND, RelayPolicy};
use crate::yaml;

/// A parsed document and where it came from.
#[derive(Debug, Clone)]
pub struct Document {
    pub at: Location,
    pub policy: RelayPolicy,
}

/// Parses every document of one YAML text.
pub fn parse_documents(source_name: &str, text: &str) -> Result<Vec<Document>, PolicyError> {
    let at = |index: usize| Location {
        source_name: source_name.to_string(),
        document: index + 1,
        policy: None,
    };
    let documents =
        yaml::documents(text).map_err(|error| PolicyError::Yaml { at: at(0), error })?;
    let mut out = Vec::new();
    for (index, document) in documents.iter().enumerate() {
        if document.is_empty() {
            continue;
        }
        let at = at(index);
        // Deserialising the typed struct straight from the text keeps line numbers and
        // field paths in the messages; only on failure do we look again to give a better
        // message for foreign documents.
        match document.parse::<RelayPolicy>() {
            Ok(policy) => out.push(checked(at, policy)?),
            Err(error) => match explain_failure(document, &at) {
                Some(e) => return Err(e),
                None => return Err(PolicyError::Yaml { at, error }),
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

/// A document that failed to parse as a RelayPolicy: if it is something else (a config
/// file, a Deployment), say so; if it claims to be a RelayPolicy, `None` lets the caller
/// report the schema error.
fn explain_failure(document: &yaml::Document<'_>, at: &Location) -> Option<PolicyError> {
    let value: serde_json::Value = document.parse().ok()?;
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).unwrap_or("");
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    if api_version == API_VERSION && kind == KIND {
        None
    } else {
        Some(not_relay_policy(at.clone(), api_version, kind))
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
        assert!(err.contains("spec.trustedNetwork: "), "{err}");
        assert!(err.ends_with("at line 5, column 3"), "{err}");
    }

    #[test]
    fn an_error_in_a_later_document_gives_the_line_in_the_file() {
        let bad = MINIMAL.replace("spec: {}", "spec:\n  mode: relay-everything\n");
        let text = format!("{MINIMAL}---\n# the second\n{bad}");
        let err = parse_documents("p.yaml", &text).unwrap_err().to_string();
        assert!(err.starts_with("p.yaml document 2: spec.mode: "), "{err}");
        assert!(err.contains("relay-everything"), "{err}");
        assert!(err.ends_with("at line 11, column 9"), "{err}");
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

//! The one error type of policy compilation, and `Location`, which says where in the
//! input a problem sits. Every message is meant to be printed to an admin as is: it names
//! the source (file), the document, the policy and the field.

use std::fmt;
use std::path::PathBuf;

/// Where a RelayPolicy document came from: the source name (usually a file path), the
/// 1-based document index within that source, and the policy's `namespace/name` once known.
/// A document from the Kubernetes API has no file: its source names the object, and its
/// index is 0, which is not shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub source_name: String,
    pub document: usize,
    pub policy: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source_name)?;
        if self.document == 0 {
            // The source names the object already.
            return Ok(());
        }
        write!(f, " document {}", self.document)?;
        match &self.policy {
            Some(p) => write!(f, " (policy {p})"),
            None => Ok(()),
        }
    }
}

/// Everything that can make a set of RelayPolicy documents unusable.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    /// The YAML is malformed or does not fit the RelayPolicy schema (unknown field,
    /// wrong type, missing required field). The message carries the field path, the line
    /// and the column.
    #[error("{at}: {error}")]
    Yaml {
        at: Location,
        error: crate::yaml::YamlError,
    },

    #[error(
        "{at}: not a RelayPolicy: expected apiVersion {} and kind {}, found apiVersion {api_version:?} and kind {kind:?}",
        super::model::API_VERSION,
        super::model::KIND
    )]
    NotRelayPolicy {
        at: Location,
        api_version: String,
        kind: String,
    },

    /// A value has the right type but is not acceptable (bad domain, CIDR, hash, ...).
    #[error("{at}: field {field}: {reason}")]
    InvalidField {
        at: Location,
        field: String,
        reason: String,
    },

    #[error(
        "{at}: field {field}: Secret key {secret} cannot be resolved when compiling outside Kubernetes; use passwordHash with an argon2id, bcrypt or SHA-512-crypt hash instead"
    )]
    UnresolvableSecret {
        at: Location,
        field: String,
        /// `secret-name/key`.
        secret: String,
    },

    /// A referenced Secret is missing or unusable (operator only: files have none).
    #[error("{at}: field {field}: {reason}")]
    SecretUnavailable {
        at: Location,
        field: String,
        reason: String,
    },

    /// Two documents (or two entries) say different things about the same item. The
    /// locations are boxed to keep `Result<_, PolicyError>` small.
    #[error("conflict: {what}: {first} and {second}")]
    Conflict {
        what: String,
        first: Box<Location>,
        second: Box<Location>,
    },

    /// Policies disagree on `mode`. Merging never picks one: an `open` policy must not
    /// widen the rules of an `authenticated` policy it happens to be deployed beside.
    #[error(
        "conflict: spec.mode is {first_mode} in {first} but {second_mode} in {second}; all RelayPolicies must use the same mode (an omitted mode is authenticated)"
    )]
    ModeConflict {
        first: Box<Location>,
        first_mode: super::model::Mode,
        second: Box<Location>,
        second_mode: super::model::Mode,
    },

    #[error("no RelayPolicy documents found in {sources}")]
    NoPolicies { sources: String },
}

impl PolicyError {
    /// Shorthand for the most common error: a field with a value we cannot accept.
    pub(crate) fn invalid(
        at: &Location,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        PolicyError::InvalidField {
            at: at.clone(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

//! `PolicySnapshot`: the immutable, serialisable result of compiling RelayPolicies, with
//! its revision hash and the read-only queries sessions and workers make against it.
//! The relay and sender decisions themselves are in `decision.rs`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::compile::{NoSecrets, SecretSource, compile_document};
use super::documents::{Document, parse_documents};
use super::error::PolicyError;
use super::merge::merge;
use super::model::Mode;
use super::password::{burn_verify_time, verify_hash};
use super::rules::{Delivery, Route, Rules};

/// The version of the serialised snapshot layout, so a reader can tell a snapshot written
/// by a newer operator from a corrupt one.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// Compiled, merged relay rules. Immutable: a policy change produces a new snapshot that
/// replaces the old one atomically. Debug shows no password hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicySnapshot {
    format: u32,
    revision: String,
    rules: Rules,
}

impl PolicySnapshot {
    /// Compiles one or more RelayPolicy documents; each source is `(name, yaml text)` and
    /// may hold several documents. `passwordSecretRef` cannot be resolved here.
    pub fn from_yaml(sources: &[(String, String)]) -> Result<PolicySnapshot, PolicyError> {
        Self::from_yaml_with_secrets(sources, &NoSecrets)
    }

    /// Like [`PolicySnapshot::from_yaml`], resolving Secret references through `secrets`.
    pub fn from_yaml_with_secrets(
        sources: &[(String, String)],
        secrets: &dyn SecretSource,
    ) -> Result<PolicySnapshot, PolicyError> {
        let mut docs = Vec::new();
        for (name, text) in sources {
            docs.extend(parse_documents(name, text)?);
        }
        if docs.is_empty() {
            let names: Vec<&str> = sources.iter().map(|(n, _)| n.as_str()).collect();
            let sources = if names.is_empty() {
                "(no sources)".to_string()
            } else {
                names.join(", ")
            };
            return Err(PolicyError::NoPolicies { sources });
        }
        Self::from_documents(&docs, secrets)
    }

    /// Compiles already parsed documents (the operator builds them from the API server).
    pub fn from_documents(
        docs: &[Document],
        secrets: &dyn SecretSource,
    ) -> Result<PolicySnapshot, PolicyError> {
        if docs.is_empty() {
            return Err(PolicyError::NoPolicies {
                sources: "(no documents)".into(),
            });
        }
        let compiled = docs
            .iter()
            .map(|d| compile_document(d, secrets))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_rules(merge(compiled)?))
    }

    /// Reads and compiles policy files; each may hold several documents.
    pub fn load_files(paths: &[PathBuf]) -> Result<PolicySnapshot, PolicyError> {
        let mut sources = Vec::with_capacity(paths.len());
        for path in paths {
            let text = std::fs::read_to_string(path).map_err(|error| PolicyError::Io {
                path: path.clone(),
                error,
            })?;
            sources.push((path.display().to_string(), text));
        }
        Self::from_yaml(&sources)
    }

    fn from_rules(rules: Rules) -> PolicySnapshot {
        // The canonical form is the JSON of the rules: maps are ordered, so equal rules
        // give equal bytes. Serialising these plain types cannot fail; if it ever did,
        // the empty input still gives a well-formed (if uninformative) revision.
        let canonical = serde_json::to_vec(&rules).unwrap_or_default();
        let digest = Sha256::digest(&canonical);
        let revision = digest.iter().map(|b| format!("{b:02x}")).collect();
        PolicySnapshot {
            format: SNAPSHOT_FORMAT,
            revision,
            rules,
        }
    }

    /// A hex SHA-256 over the canonical JSON of the compiled rules: equal for equal
    /// rules, different when any rule (including which policy it came from) changes.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// The layout version this snapshot was written with.
    pub fn format(&self) -> u32 {
        self.format
    }

    /// The compiled rules, for the delivery worker and `sluice policy check`.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    pub fn mode(&self) -> Mode {
        self.rules.mode
    }

    /// `namespace/name` of the merged policies, in input order.
    pub fn policies(&self) -> &[String] {
        &self.rules.policies
    }

    pub fn has_users(&self) -> bool {
        !self.rules.users.is_empty()
    }

    /// Checks a SASL password. CPU-heavy by design: run it on a blocking thread. For an
    /// unknown user a dummy hash is verified anyway, so that the time taken does not
    /// tell a client which user names exist.
    pub fn verify_password(&self, user: &str, password: &str) -> bool {
        match self.rules.users.get(user) {
            Some(u) => verify_hash(u.password_hash.as_str(), password),
            None => {
                burn_verify_time(password);
                false
            }
        }
    }

    pub fn max_message_size(&self) -> Option<u64> {
        self.rules.limits.max_message_size
    }

    pub fn max_recipients(&self) -> Option<usize> {
        self.rules.limits.max_recipients
    }

    /// How long a message may stay queued before it bounces; `None` leaves the default
    /// to the queue.
    pub fn max_retry_lifetime(&self) -> Option<Duration> {
        self.rules.retry.max_lifetime_secs.map(Duration::from_secs)
    }

    /// Case-insensitive; a trailing dot is ignored.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.rules
            .local_domains
            .contains_key(&normalize_domain(domain))
    }

    pub fn is_relay_domain(&self, domain: &str) -> bool {
        self.rules
            .relay_domains
            .contains_key(&normalize_domain(domain))
    }

    /// How to deliver mail for a local domain.
    pub fn local_delivery(&self, domain: &str) -> Option<&Delivery> {
        self.rules
            .local_domains
            .get(&normalize_domain(domain))
            .map(|l| &l.delivery)
    }

    /// The smarthost route for a recipient domain; `None` means deliver by MX.
    pub fn route_for(&self, domain: &str) -> Option<&Route> {
        self.rules.route_for(&normalize_domain(domain))
    }
}

/// The form domains are stored in: lower-case, without the trailing dot.
pub(crate) fn normalize_domain(domain: &str) -> String {
    domain.strip_suffix('.').unwrap_or(domain).to_lowercase()
}

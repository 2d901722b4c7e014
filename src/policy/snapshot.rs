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
use super::password::{unknown_user_hash, verify_hash};
use super::rules::{DEFAULT_BOUNCE_SIZE_LIMIT, Delivery, Route, Rules};

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
    #[serde(skip)]
    unknown_user: UnknownUserHash,
}

/// What an unknown user's password is verified against, worked out on first use: it
/// follows from the rules, so it is neither stored nor compared. (Behind an `Arc`:
/// clones share it, and the snapshot stays small.)
#[derive(Debug, Clone, Default)]
struct UnknownUserHash(std::sync::Arc<std::sync::OnceLock<String>>);

impl PartialEq for UnknownUserHash {
    fn eq(&self, _: &Self) -> bool {
        true
    }
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

    pub(super) fn from_rules(rules: Rules) -> PolicySnapshot {
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
            unknown_user: UnknownUserHash::default(),
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
                let _ = verify_hash(self.unknown_user_hash(), password);
                false
            }
        }
    }

    /// Whether a session that authenticated `user` under `earlier` stays authenticated
    /// under this snapshot: only while the user exists with the same password hash. A
    /// removed user or a changed password ends what the old credentials opened.
    pub fn keeps_user(&self, earlier: &PolicySnapshot, user: &str) -> bool {
        match (self.rules.users.get(user), earlier.rules.users.get(user)) {
            (Some(now), Some(then)) => now.password_hash.as_str() == then.password_hash.as_str(),
            _ => false,
        }
    }

    /// A hash of the kind and work factors of the users' own (see
    /// [`unknown_user_hash`]), verifying no password.
    pub(crate) fn unknown_user_hash(&self) -> &str {
        self.unknown_user.0.get_or_init(|| {
            let hashes = self.rules.users.values();
            unknown_user_hash(hashes.map(|u| u.password_hash.as_str()))
        })
    }

    pub fn max_message_size(&self) -> Option<u64> {
        self.rules.limits.max_message_size
    }

    /// The most of a message a bounce returns, in bytes (`limits.bounceSizeLimit`).
    pub fn bounce_size_limit(&self) -> usize {
        let limit = self
            .rules
            .limits
            .bounce_size_limit
            .unwrap_or(DEFAULT_BOUNCE_SIZE_LIMIT);
        usize::try_from(limit).unwrap_or(usize::MAX)
    }

    pub fn max_recipients(&self) -> Option<usize> {
        self.rules.limits.max_recipients
    }

    /// How long a message may stay queued before it bounces; `None` leaves the default
    /// to the queue.
    pub fn max_retry_lifetime(&self) -> Option<Duration> {
        self.rules.retry.max_lifetime_secs.map(Duration::from_secs)
    }

    /// Whether recipients at address literals are accepted and delivered.
    pub fn address_literals(&self) -> super::model::AddressLiterals {
        self.rules.address_literals
    }

    /// The filter checks, in order; empty when no policy has `filters:`.
    pub fn filters(&self) -> &[crate::filter::settings::CheckSettings] {
        &self.rules.filters
    }

    /// The block lists asked about untrusted clients at their first RCPT; `None` when
    /// no policy has `dnsbl:`.
    pub fn dnsbl(&self) -> Option<&crate::filter::dnsbl::DnsblSettings> {
        self.rules.dnsbl.as_ref()
    }

    /// The signing keys; `None` when no policy has `signing:`.
    pub fn signing(&self) -> Option<&crate::filter::settings::SigningSettings> {
        self.rules.signing.as_ref()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::hash_password;
    use crate::policy::tests::{
        BILLING_HASH, BILLING_PASSWORD, EXAMPLE, PRINTER_HASH, PRINTER_PASSWORD, compile, example,
        policy,
    };

    #[test]
    fn revision_is_stable_for_equal_rules_and_changes_with_them() {
        let a = example();
        assert_eq!(a.revision(), example().revision());
        assert_eq!(a.revision().len(), 64);
        // Formatting and comments are not rules.
        let reformatted = EXAMPLE.replace(
            "  mode: authenticated\n",
            "  # comment\n  mode: authenticated\n\n",
        );
        assert_eq!(compile(&[&reformatted]).unwrap().revision(), a.revision());
        let changes = [
            EXAMPLE.replace("\"192.0.2.7\"", "\"192.0.2.8\""),
            EXAMPLE.replace("maxRecipients: 100", "maxRecipients: 99"),
            EXAMPLE.replace("name: corp", "name: corp2"),
            EXAMPLE.replace("@notifications.corp.example", "@alerts.corp.example"),
        ];
        for changed in changes {
            assert_ne!(
                compile(&[&changed]).unwrap().revision(),
                a.revision(),
                "{changed}"
            );
        }
    }

    #[test]
    fn serde_round_trip_keeps_rules_and_revision() {
        let snap = example();
        let json = serde_json::to_string(&snap).unwrap();
        let back: PolicySnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, snap);
        assert_eq!(back.revision(), snap.revision());
        assert_eq!(back.format(), SNAPSHOT_FORMAT);
        assert!(back.verify_password("billing-app", BILLING_PASSWORD));
    }

    #[test]
    fn debug_shows_no_password_hashes() {
        let shown = format!("{:?}", example());
        assert!(
            !shown.contains("svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl"),
            "{shown}"
        );
        assert!(!shown.contains(&PRINTER_HASH[7..]), "{shown}");
        assert!(shown.contains("StoredHash(sha512-crypt, redacted)"));
    }

    #[test]
    fn passwords_verify_per_user() {
        let snap = example();
        assert!(snap.has_users());
        assert!(snap.verify_password("billing-app", BILLING_PASSWORD));
        assert!(!snap.verify_password("billing-app", PRINTER_PASSWORD));
        assert!(snap.verify_password("legacy-printer", PRINTER_PASSWORD));
        assert!(!snap.verify_password("legacy-printer", BILLING_PASSWORD));
        assert!(!snap.verify_password("ghost", BILLING_PASSWORD));
        // User names are exact, as SASL gives them.
        assert!(!snap.verify_password("Billing-App", BILLING_PASSWORD));
    }

    #[test]
    fn unknown_users_cost_a_hash_of_the_users_own_kind() {
        let bcrypt_users = policy(
            "mail/a",
            &format!(
                "  users:\n    - {{name: a, passwordHash: '{p}'}}\n    - {{name: b, passwordHash: '{p}'}}\n    - {{name: c, passwordHash: '{BILLING_HASH}'}}",
                p = *PRINTER_HASH
            ),
        );
        let snap = compile(&[&bcrypt_users]).unwrap();
        assert!(snap.unknown_user_hash().starts_with("$2b$04$"));
        assert_eq!(snap.unknown_user_hash().len(), PRINTER_HASH.len());
        let sha = policy(
            "mail/a",
            &format!("  users: [{{name: c, passwordHash: '{BILLING_HASH}'}}]"),
        );
        let snap = compile(&[&sha]).unwrap();
        assert_eq!(
            crate::policy::password::work_factors(snap.unknown_user_hash()),
            "$6"
        );
        assert!(!snap.verify_password("ghost", BILLING_PASSWORD));
    }

    #[test]
    fn argon2_hashes_from_hash_password_work_in_a_policy() {
        let hash = hash_password("s3cret!");
        let text = policy(
            "mail/a",
            &format!("  users: [{{name: app, passwordHash: '{hash}'}}]"),
        );
        let snap = compile(&[&text]).unwrap();
        assert!(snap.verify_password("app", "s3cret!"));
        assert!(!snap.verify_password("app", "s3cret"));
        assert_ne!(hash, BILLING_HASH);
    }

    #[test]
    fn load_files_reads_and_names_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        let b = dir.path().join("b.yaml");
        std::fs::write(&a, EXAMPLE.as_str()).unwrap();
        std::fs::write(
            &b,
            format!(
                "{}---\n{}",
                policy("mail/x", ""),
                policy("mail/y", "  mode: open")
            ),
        )
        .unwrap();
        assert_eq!(
            PolicySnapshot::load_files(std::slice::from_ref(&a)).unwrap(),
            example()
        );
        let err = PolicySnapshot::load_files(&[a.clone(), b.clone()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("{} document 2 (policy mail/y)", b.display())),
            "{err}"
        );
        let missing = dir.path().join("missing.yaml");
        let err = PolicySnapshot::load_files(&[missing]).unwrap_err();
        assert!(matches!(err, PolicyError::Io { .. }));
        assert!(err.to_string().contains("missing.yaml"), "{err}");
    }

    #[test]
    fn queries_normalise_domains() {
        let snap = example();
        assert!(snap.is_local_domain("CORP.example"));
        assert!(snap.is_local_domain("corp.example."));
        assert!(!snap.is_local_domain("partner.example"));
        assert!(snap.is_relay_domain("Partner.Example"));
        assert!(matches!(
            snap.local_delivery("Tickets.Corp.Example"),
            Some(Delivery::Webhook { .. })
        ));
        assert_eq!(snap.local_delivery("example.org"), None);
    }

    #[test]
    fn the_most_specific_route_wins() {
        let snap = example();
        let host = |d: &str| snap.route_for(d).map(|r| r.smarthost.host.clone());
        assert_eq!(
            host("Partner.Example").as_deref(),
            Some("mx.partner.example")
        );
        assert_eq!(host("eu.partner.example").as_deref(), Some("10.9.8.7"));
        assert_eq!(
            host("example.org").as_deref(),
            Some("smtp.provider.example")
        );
        let no_default = compile(&[&policy(
            "p",
            "  routes: [{domains: [a.example], smarthost: {host: s.example, port: 25}}]",
        )])
        .unwrap();
        assert!(
            no_default.route_for("b.example").is_none(),
            "no route means MX"
        );
    }

    #[test]
    fn a_session_keeps_its_user_only_while_the_user_and_password_stay() {
        let before = example();
        assert!(example().keeps_user(&before, "billing-app"));
        let rehashed = compile(&[&EXAMPLE.replace(BILLING_HASH, &PRINTER_HASH)]).unwrap();
        assert!(
            !rehashed.keeps_user(&before, "billing-app"),
            "password changed"
        );
        let removed = compile(&[&EXAMPLE.replace("name: billing-app", "name: billing-2")]).unwrap();
        assert!(!removed.keeps_user(&before, "billing-app"), "user removed");
        assert!(!example().keeps_user(&before, "nobody"));
    }
}

//! Merging compiled documents into one rule set. Lists are unions; anything two policies
//! could say differently about one item is a conflict and an error, never a silent pick:
//!
//! - trusted networks, relay domains: union (duplicates are harmless);
//! - local domains: union; one domain with two different deliveries or recipient lists
//!   is a conflict;
//! - relay recipients: union per relay domain;
//! - a domain both local and relay is a conflict (the decision order would hide one);
//! - users: union; the same user name twice is a conflict;
//! - routes: in input order; the same domain pattern in two routes is a conflict;
//! - limits and retry lifetime: the smallest value of each;
//! - mode: all documents must agree (see `PolicyError::ModeConflict`);
//! - filters: at most one document has them, or all that have them say the same (their
//!   order decides which refusal a client hears, so they do not merge item by item);
//! - dnsbl: likewise at most one document, or all that have it the same (a threshold
//!   belongs to its own zones and weights).
//! - signing: the same, at most one document or all alike (two key lists for one
//!   domain would sign twice with no one having chosen that).

use std::collections::BTreeMap;

use super::compile::CompiledDoc;
use super::error::{Location, PolicyError};
use super::model::{AddressLiterals, Mode};
use super::parse::DomainPattern;
use super::recipients::{self, RecipientTable};
use super::rules::{Delivery, LocalDomain, Rules, TrustedNetwork, min_limit};

fn conflict(what: String, first: &Location, second: &Location) -> PolicyError {
    PolicyError::Conflict {
        what,
        first: Box::new(first.clone()),
        second: Box::new(second.clone()),
    }
}

/// Merges documents (at least one) in input order; the first conflict is the error.
pub fn merge(docs: Vec<CompiledDoc>) -> Result<Rules, PolicyError> {
    let mut merger = Merger::default();
    for doc in docs {
        merger.add(doc)?;
    }
    Ok(merger.finish())
}

/// Rules merged from documents added one at a time. A document that conflicts with what
/// is already in, or with itself, is refused whole and changes nothing, so the operator
/// can keep every other policy in force (first come, first served).
pub struct Merger {
    rules: Rules,
    origins: Origins,
}

impl Default for Merger {
    fn default() -> Self {
        Merger {
            rules: Rules {
                policies: Vec::new(),
                mode: Mode::default(),
                trusted_networks: Vec::new(),
                local_domains: BTreeMap::new(),
                relay_domains: BTreeMap::new(),
                relay_recipients: BTreeMap::new(),
                users: BTreeMap::new(),
                routes: Vec::new(),
                limits: Default::default(),
                retry: Default::default(),
                address_literals: Default::default(),
                filters: Vec::new(),
                dnsbl: None,
                signing: None,
            },
            origins: Origins::default(),
        }
    }
}

/// Where each merged item was first seen, to name both sides of a conflict.
#[derive(Default)]
struct Origins {
    policies: BTreeMap<String, Location>,
    mode: Option<(Location, Mode)>,
    local: BTreeMap<String, Location>,
    relay: BTreeMap<String, Location>,
    users: BTreeMap<String, Location>,
    patterns: BTreeMap<DomainPattern, Location>,
    filters: Option<Location>,
    dnsbl: Option<Location>,
    signing: Option<Location>,
}

impl Merger {
    /// Adds a document, or refuses it whole with the first conflict found.
    pub fn add(&mut self, doc: CompiledDoc) -> Result<(), PolicyError> {
        self.check(&doc)?;
        self.apply(doc);
        Ok(())
    }

    /// Whether anything was added.
    pub fn is_empty(&self) -> bool {
        self.rules.policies.is_empty()
    }

    pub fn finish(self) -> Rules {
        self.rules
    }

    /// Every conflict rule, checked against what is in and within the document itself,
    /// before anything changes.
    fn check(&self, doc: &CompiledDoc) -> Result<(), PolicyError> {
        let o = &self.origins;
        if let Some(first) = o.policies.get(&doc.id) {
            let what = format!("policy {} is defined twice", doc.id);
            return Err(conflict(what, first, &doc.at));
        }
        if let Some((first, first_mode)) = &o.mode
            && *first_mode != doc.mode
        {
            return Err(PolicyError::ModeConflict {
                first: Box::new(first.clone()),
                first_mode: *first_mode,
                second: Box::new(doc.at.clone()),
                second_mode: doc.mode,
            });
        }
        self.check_domains(doc)?;
        let mut users = BTreeMap::new();
        for (name, _) in &doc.users {
            if let Some(first) = o.users.get(name).or(users.get(name)) {
                let what = format!("user {name} is defined twice");
                return Err(conflict(what, first, &doc.at));
            }
            users.insert(name.clone(), doc.at.clone());
        }
        let mut patterns = BTreeMap::new();
        for pattern in doc.routes.iter().flat_map(|r| &r.domains) {
            if let Some(first) = o.patterns.get(pattern).or(patterns.get(pattern)) {
                let what = format!("route domain pattern {pattern} appears in two routes");
                return Err(conflict(what, first, &doc.at));
            }
            patterns.insert(pattern.clone(), doc.at.clone());
        }
        if let (Some(first), Some(filters)) = (&o.filters, &doc.filters)
            && *filters != self.rules.filters
        {
            let what = "two policies have different filters".to_string();
            return Err(conflict(what, first, &doc.at));
        }
        if let (Some(first), Some(dnsbl)) = (&o.dnsbl, &doc.dnsbl)
            && Some(dnsbl) != self.rules.dnsbl.as_ref()
        {
            let what = "two policies have different dnsbl sections".to_string();
            return Err(conflict(what, first, &doc.at));
        }
        if let (Some(first), Some(signing)) = (&o.signing, &doc.signing)
            && Some(signing) != self.rules.signing.as_ref()
        {
            let what = "two policies have different signing keys".to_string();
            return Err(conflict(what, first, &doc.at));
        }
        Ok(())
    }

    fn check_domains(&self, doc: &CompiledDoc) -> Result<(), PolicyError> {
        let o = &self.origins;
        let mut local: BTreeMap<&str, (&Delivery, &RecipientTable)> = BTreeMap::new();
        for (domain, delivery, table) in &doc.local_domains {
            let known = self
                .rules
                .local_domains
                .get(domain)
                .map(|l| (&l.delivery, &l.recipients));
            if let Some((existing, existing_table)) = known.or(local.get(domain.as_str()).copied())
            {
                let first = o.local.get(domain).unwrap_or(&doc.at);
                let differs = if existing != delivery {
                    "deliveries"
                } else if existing_table != table {
                    "recipient lists"
                } else {
                    ""
                };
                if !differs.is_empty() {
                    let what = format!("local domain {domain} has different {differs}");
                    return Err(conflict(what, first, &doc.at));
                }
            }
            if let Some(relay_at) = o.relay.get(domain) {
                return Err(conflict(
                    format!("{domain} is both a relay domain and a local domain"),
                    relay_at,
                    &doc.at,
                ));
            }
            local.insert(domain, (delivery, table));
        }
        for domain in &doc.relay_domains {
            let local_at = o
                .local
                .get(domain)
                .or(local.contains_key(domain.as_str()).then_some(&doc.at));
            if let Some(local_at) = local_at {
                return Err(conflict(
                    format!("{domain} is both a local domain and a relay domain"),
                    local_at,
                    &doc.at,
                ));
            }
        }
        Ok(())
    }

    /// Adds a checked document: lists are unions, limits the smallest.
    fn apply(&mut self, doc: CompiledDoc) {
        let (rules, o) = (&mut self.rules, &mut self.origins);
        if o.mode.is_none() {
            o.mode = Some((doc.at.clone(), doc.mode));
            rules.mode = doc.mode;
        }
        o.policies.insert(doc.id.clone(), doc.at.clone());
        rules.policies.push(doc.id.clone());
        for (domain, delivery, recipients) in doc.local_domains {
            o.local
                .entry(domain.clone())
                .or_insert_with(|| doc.at.clone());
            rules.local_domains.entry(domain).or_insert(LocalDomain {
                delivery,
                recipients,
                policy: doc.id.clone(),
            });
        }
        for (domain, table) in doc.relay_recipients {
            match rules.relay_recipients.get_mut(&domain) {
                Some(known) => recipients::union(known, table),
                None => {
                    rules.relay_recipients.insert(domain, table);
                }
            }
        }
        for domain in doc.relay_domains {
            o.relay
                .entry(domain.clone())
                .or_insert_with(|| doc.at.clone());
            rules
                .relay_domains
                .entry(domain)
                .or_insert_with(|| doc.id.clone());
        }
        for (name, user) in doc.users {
            o.users.insert(name.clone(), doc.at.clone());
            rules.users.insert(name, user);
        }
        for route in doc.routes {
            for pattern in &route.domains {
                o.patterns.insert(pattern.clone(), doc.at.clone());
            }
            rules.routes.push(route);
        }
        for network in doc.networks {
            if !rules.trusted_networks.iter().any(|t| t.network == network) {
                rules.trusted_networks.push(TrustedNetwork {
                    network,
                    policy: doc.id.clone(),
                });
            }
        }
        rules.limits.max_message_size =
            min_limit(rules.limits.max_message_size, doc.limits.max_message_size);
        rules.limits.max_recipients =
            min_limit(rules.limits.max_recipients, doc.limits.max_recipients);
        rules.limits.bounce_size_limit =
            min_limit(rules.limits.bounce_size_limit, doc.limits.bounce_size_limit);
        rules.retry.max_lifetime_secs =
            min_limit(rules.retry.max_lifetime_secs, doc.retry.max_lifetime_secs);
        // A permission, like a relay domain: the union of what the policies allow.
        if doc.address_literals == AddressLiterals::Allow {
            rules.address_literals = AddressLiterals::Allow;
        }
        if let Some(filters) = doc.filters
            && o.filters.is_none()
        {
            o.filters = Some(doc.at.clone());
            rules.filters = filters;
        }
        if let Some(dnsbl) = doc.dnsbl
            && o.dnsbl.is_none()
        {
            o.dnsbl = Some(doc.at.clone());
            rules.dnsbl = Some(dnsbl);
        }
        if let Some(signing) = doc.signing
            && o.signing.is_none()
        {
            o.signing = Some(doc.at.clone());
            rules.signing = Some(signing);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::PolicyError;
    use crate::policy::model::Mode;
    use crate::policy::tests::{BILLING_HASH, compile, policy};

    fn user(name: &str) -> String {
        format!("  users: [{{name: {name}, passwordHash: '{BILLING_HASH}'}}]")
    }

    #[test]
    fn documents_merge_as_unions_with_the_smallest_limits() {
        let a = policy(
            "mail/a",
            &("  trustedNetworks: [10.0.0.0/8]\n  relayDomains: [r1.example]\n  localDomains: [{domain: l.example, delivery: {maildir: {path: /m}}}]\n  limits: {maxMessageSize: 10Mi, maxRecipients: 50}\n  retry: {maxLifetime: 5d}\n  routes: [{domains: ['*'], smarthost: {host: s1.example, port: 25}}]\n".to_string()
                + &user("u1")),
        );
        let b = policy(
            "mail/b",
            "  trustedNetworks: [10.0.0.0/8, '2001:db8::/32']\n  relayDomains: [r1.example, r2.example]\n  localDomains: [{domain: L.example, delivery: {maildir: {path: /m}}}]\n  limits: {maxMessageSize: 25Mi}\n  retry: {maxLifetime: 12h}\n  routes: [{domains: [x.example], smarthost: {host: s2.example, port: 25}}]",
        );
        let snap = compile(&[&a, &b]).unwrap();
        let rules = snap.rules();
        assert_eq!(rules.policies, ["mail/a", "mail/b"]);
        let nets: Vec<_> = rules
            .trusted_networks
            .iter()
            .map(|t| (t.network.to_string(), t.policy.as_str()))
            .collect();
        assert_eq!(
            nets,
            [
                ("10.0.0.0/8".into(), "mail/a"),
                ("2001:db8::/32".into(), "mail/b")
            ]
        );
        assert_eq!(
            rules.relay_domains.keys().collect::<Vec<_>>(),
            ["r1.example", "r2.example"]
        );
        assert_eq!(rules.relay_domains["r2.example"], "mail/b");
        assert_eq!(rules.local_domains["l.example"].policy, "mail/a");
        assert!(rules.users.contains_key("u1"));
        assert_eq!(
            rules
                .routes
                .iter()
                .map(|r| r.policy.as_str())
                .collect::<Vec<_>>(),
            ["mail/a", "mail/b"]
        );
        assert_eq!(snap.max_message_size(), Some(10 * 1024 * 1024));
        assert_eq!(snap.max_recipients(), Some(50));
        assert_eq!(
            snap.max_retry_lifetime().map(|d| d.as_secs()),
            Some(12 * 3_600)
        );
    }

    fn conflict_of(texts: &[&str]) -> String {
        match compile(texts) {
            Err(e @ (PolicyError::Conflict { .. } | PolicyError::ModeConflict { .. })) => {
                e.to_string()
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    #[test]
    fn a_local_domain_with_two_deliveries_names_both_policies() {
        let a = policy(
            "mail/a",
            "  localDomains: [{domain: l.example, delivery: {maildir: {path: /m}}}]",
        );
        let b = policy(
            "mail/b",
            "  localDomains: [{domain: L.Example, delivery: {lmtp: {address: 'h:24'}}}]",
        );
        let err = conflict_of(&[&a, &b]);
        assert_eq!(
            err,
            "conflict: local domain l.example has different deliveries: a.yaml document 1 (policy mail/a) and b.yaml document 1 (policy mail/b)"
        );
    }

    #[test]
    fn recipient_lists_merge_and_conflict_like_the_rest() {
        let local = |name: &str, list: &str| {
            policy(
                name,
                &format!(
                    "  localDomains: [{{domain: l.example, delivery: {{maildir: {{path: /m}}}}, recipients: [{list}]}}]"
                ),
            )
        };
        let err = conflict_of(&[
            &local("mail/a", "a@l.example"),
            &local("mail/b", "b@l.example"),
        ]);
        assert!(
            err.contains("local domain l.example has different recipient lists"),
            "{err}"
        );
        assert!(
            compile(&[
                &local("mail/a", "a@l.example"),
                &local("mail/b", "A@l.example")
            ])
            .is_ok()
        );
        let relay = |name: &str, list: &str, limit: &str| {
            policy(
                name,
                &format!(
                    "  relayDomains: [r.example]\n  relayRecipients: [{list}]\n  limits: {{bounceSizeLimit: {limit}}}"
                ),
            )
        };
        let snap = compile(&[
            &relay("mail/a", "a@r.example", "100k"),
            &relay("mail/b", "b@r.example", "60000"),
        ])
        .unwrap();
        let table = &snap.rules().relay_recipients["r.example"];
        assert!(table.accepts("a") && table.accepts("b") && !table.accepts("c"));
        assert_eq!(snap.bounce_size_limit(), 60_000);
        assert_eq!(
            compile(&[&policy("mail/c", "")])
                .unwrap()
                .bounce_size_limit(),
            50_000,
            "the default"
        );
    }

    #[test]
    fn a_user_defined_twice_is_a_conflict() {
        let err = conflict_of(&[
            &policy("mail/a", &user("app")),
            &policy("mail/b", &user("app")),
        ]);
        assert!(err.contains("user app is defined twice"), "{err}");
        assert!(
            err.contains("policy mail/a") && err.contains("policy mail/b"),
            "{err}"
        );
        let twice = format!(
            "  users:\n  - {{name: app, passwordHash: '{BILLING_HASH}'}}\n  - {{name: app, passwordHash: '{BILLING_HASH}'}}"
        );
        assert!(conflict_of(&[&policy("mail/a", &twice)]).contains("user app is defined twice"));
    }

    #[test]
    fn a_domain_both_local_and_relay_is_a_conflict() {
        let a = policy("mail/a", "  relayDomains: [d.example]");
        let b = policy(
            "mail/b",
            "  localDomains: [{domain: d.example, delivery: {maildir: {path: /m}}}]",
        );
        assert!(
            conflict_of(&[&a, &b]).contains("d.example is both a relay domain and a local domain")
        );
        assert!(
            conflict_of(&[&b, &a]).contains("d.example is both a local domain and a relay domain")
        );
    }

    #[test]
    fn a_route_pattern_in_two_routes_is_a_conflict() {
        let a = policy(
            "mail/a",
            "  routes: [{domains: ['*.x.example'], smarthost: {host: s1.example, port: 25}}]",
        );
        let b = policy(
            "mail/b",
            "  routes: [{domains: [y.example, '*.X.example'], smarthost: {host: s2.example, port: 25}}]",
        );
        assert!(
            conflict_of(&[&a, &b])
                .contains("route domain pattern *.x.example appears in two routes")
        );
    }

    #[test]
    fn modes_must_agree() {
        let open = policy("mail/open", "  mode: open");
        let implicit = policy("mail/default", "");
        let err = conflict_of(&[&implicit, &open]);
        assert!(err.contains("spec.mode is authenticated in a.yaml document 1 (policy mail/default) but open in b.yaml document 1 (policy mail/open)"), "{err}");
        let both_open = compile(&[&open, &policy("mail/open2", "  mode: open")]).unwrap();
        assert_eq!(both_open.mode(), Mode::Open);
    }

    #[test]
    fn the_same_policy_twice_is_a_conflict() {
        let a = policy("mail/a", "");
        assert!(conflict_of(&[&a, &a]).contains("policy mail/a is defined twice"));
        // The same name in different namespaces is a different policy.
        assert!(compile(&[&a, &policy("other/a", "")]).is_ok());
    }

    #[test]
    fn no_documents_is_an_error() {
        assert!(matches!(compile(&[]), Err(PolicyError::NoPolicies { .. })));
        let err = compile(&["# nothing here\n", "---\n"])
            .unwrap_err()
            .to_string();
        assert_eq!(err, "no RelayPolicy documents found in a.yaml, b.yaml");
    }
}

//! Unit tests of `compile.rs`: the example policy, and every validation error naming its
//! source, document, policy and field.

use super::*;
use crate::policy::model::TlsMode;
use crate::policy::parse::{DomainPattern, SenderPattern};
use crate::policy::tests::{BILLING_HASH, EXAMPLE, compile, error_of, example, policy};

#[test]
fn the_example_compiles_to_normalised_rules() {
    let snap = example();
    let rules = snap.rules();
    assert_eq!(rules.policies, ["mail/corp"]);
    assert_eq!(rules.mode, Mode::Authenticated);
    let nets: Vec<String> = rules
        .trusted_networks
        .iter()
        .map(|t| t.network.to_string())
        .collect();
    assert_eq!(nets, ["10.0.0.0/8", "fd00::/8", "192.0.2.7/32"]);
    let lmtp = Delivery::Lmtp {
        address: "dovecot.mail.svc:24".into(),
    };
    assert_eq!(rules.local_domains["corp.example"].delivery, lmtp);
    assert!(matches!(
        rules.local_domains["tickets.corp.example"].delivery,
        Delivery::Webhook {
            signing_secret_ref: Some(_),
            ..
        }
    ));
    assert_eq!(
        rules.local_domains["archive.corp.example"].delivery,
        Delivery::Maildir {
            path: "/var/mail/archive".into()
        }
    );
    assert_eq!(rules.relay_domains["partner.example"], "mail/corp");
    let billing = &rules.users["billing-app"];
    assert_eq!(billing.password_hash.as_str(), BILLING_HASH);
    let expected = AllowedSenders::Only(vec![
        SenderPattern::Address {
            local: "billing".into(),
            domain: "corp.example".into(),
        },
        SenderPattern::Domain("notifications.corp.example".into()),
    ]);
    assert_eq!(billing.allowed_senders, expected);
    assert_eq!(
        rules.users["legacy-printer"].allowed_senders,
        AllowedSenders::Any
    );
    assert_eq!(rules.routes.len(), 3);
    assert_eq!(
        rules.routes[1].domains,
        [DomainPattern::Subdomains("partner.example".into())]
    );
    assert_eq!(rules.routes[1].smarthost.tls, TlsMode::Opportunistic);
    assert!(rules.routes[2].smarthost.credentials_secret_ref.is_some());
    assert_eq!(snap.max_message_size(), Some(25 * 1024 * 1024));
    assert_eq!(snap.max_recipients(), Some(100));
    assert_eq!(
        snap.max_retry_lifetime(),
        Some(std::time::Duration::from_secs(5 * 86_400))
    );
}

#[test]
fn an_empty_spec_is_an_authenticated_policy_with_no_rules() {
    let snap = compile(&[&policy("minimal", "")]).unwrap();
    assert_eq!(snap.mode(), Mode::Authenticated);
    assert!(!snap.has_users());
    assert_eq!(snap.max_message_size(), None);
    assert_eq!(snap.max_recipients(), None);
    assert_eq!(snap.policies(), ["minimal"]);
}

/// Each case: a spec body, then fragments the error message must contain.
const INVALID: &[(&str, &[&str])] = &[
    (
        "  trustedNetworks: [10.0.0.0/33]",
        &["spec.trustedNetworks[0]", "not a CIDR"],
    ),
    (
        "  trustedNetworks: [10.0.0.0/8, 10.1.2.3/8]",
        &["spec.trustedNetworks[1]", "did you mean 10.0.0.0/8"],
    ),
    (
        "  localDomains: [{domain: bad_domain, delivery: {maildir: {path: /m}}}]",
        &["spec.localDomains[0].domain", "invalid character"],
    ),
    (
        "  localDomains: [{domain: a.example, delivery: {}}]",
        &["spec.localDomains[0].delivery", "none is given"],
    ),
    (
        "  localDomains: [{domain: a.example, delivery: {maildir: {path: /m}, lmtp: {address: 'h:24'}}}]",
        &["spec.localDomains[0].delivery", "several are given"],
    ),
    (
        "  localDomains: [{domain: a.example, delivery: {lmtp: {address: dovecot}}}]",
        &["lmtp.address", "host:port"],
    ),
    (
        "  localDomains: [{domain: a.example, delivery: {maildir: {path: ''}}}]",
        &["maildir.path", "empty"],
    ),
    (
        "  localDomains: [{domain: a.example, delivery: {webhook: {url: 'ftp://x'}}}]",
        &["webhook.url", "http"],
    ),
    (
        "  localDomains: [{domain: a.example, delivery: {webhook: {url: 'https://x', signingSecretRef: {name: '', key: k}}}}]",
        &["signingSecretRef", "empty"],
    ),
    (
        "  relayDomains: [ok.example, '1.2.3.4']",
        &["spec.relayDomains[1]", "IP address"],
    ),
    (
        "  users: [{name: u}]",
        &[
            "spec.users[0]",
            "one of passwordHash or passwordSecretRef is required",
        ],
    ),
    (
        "  users: [{name: u, passwordHash: '$6$x$y', passwordSecretRef: {name: s, key: k}}]",
        &["spec.users[0]", "only one"],
    ),
    (
        "  users: [{name: u, passwordHash: 'plaintext'}]",
        &[
            "spec.users[0].passwordHash",
            "unrecognised password hash format",
        ],
    ),
    (
        "  users: [{name: u, passwordHash: '$argon2id$v=19$m=19456'}]",
        &["spec.users[0].passwordHash", "malformed argon2"],
    ),
    (
        "  users: [{name: u, passwordHash: '$2b$04$tooshort'}]",
        &["spec.users[0].passwordHash", "bcrypt"],
    ),
    (
        "  users: [{name: 'a b', passwordHash: '$6$x$y'}]",
        &["spec.users[0].name"],
    ),
    (
        "  users: [{name: u, passwordSecretRef: {name: relay-users, key: u}}]",
        &[
            "spec.users[0].passwordSecretRef",
            "relay-users/u",
            "use passwordHash",
        ],
    ),
    (
        "  routes: [{domains: ['*.*'], smarthost: {host: h.example, port: 25}}]",
        &["spec.routes[0].domains[0]"],
    ),
    (
        "  routes: [{domains: [], smarthost: {host: h.example, port: 25}}]",
        &["spec.routes[0].domains", "at least one"],
    ),
    (
        "  routes: [{domains: ['*'], smarthost: {host: 'bad host', port: 25}}]",
        &["spec.routes[0].smarthost.host"],
    ),
    (
        "  routes: [{domains: ['*'], smarthost: {host: h.example, port: 0}}]",
        &["spec.routes[0].smarthost.port"],
    ),
    (
        "  routes: [{domains: ['*'], smarthost: {host: h.example, port: 25, credentialsSecretRef: {name: s, usernameKey: '', passwordKey: p}}}]",
        &["credentialsSecretRef"],
    ),
    (
        "  limits: {maxMessageSize: 10MB}",
        &["spec.limits.maxMessageSize", "not a quantity"],
    ),
    (
        "  limits: {maxMessageSize: 0}",
        &["spec.limits.maxMessageSize", "greater than zero"],
    ),
    (
        "  limits: {maxRecipients: 0}",
        &["spec.limits.maxRecipients", "greater than zero"],
    ),
    (
        "  retry: {maxLifetime: 5 days}",
        &["spec.retry.maxLifetime", "not a duration"],
    ),
];

#[test]
fn each_invalid_value_names_source_document_policy_and_field() {
    for (spec, fragments) in INVALID {
        let err = error_of(spec);
        assert!(
            err.starts_with("a.yaml document 1 (policy mail/t): "),
            "{spec}\n=> {err}"
        );
        for fragment in *fragments {
            assert!(
                err.contains(fragment),
                "{spec}\n=> {err}\nmissing {fragment:?}"
            );
        }
    }
}

#[test]
fn schema_errors_name_the_field() {
    let cases = [
        ("  mode: opne", "unknown variant `opne`"),
        (
            "  users: [{name: u, pasword: x}]",
            "unknown field `pasword`",
        ),
        (
            "  localDomains: [{domain: a.example, delivery: {smtp: {}}}]",
            "unknown field `smtp`",
        ),
        (
            "  routes: [{domains: ['*'], smarthost: {host: h, port: 25, tls: none}}]",
            "unknown variant `none`",
        ),
        (
            "  routes: [{domains: ['*'], smarthost: {host: h}}]",
            "missing field `port`",
        ),
        ("  limits: {maxRecipients: -1}", "spec.limits.maxRecipients"),
        (
            "  limits: {maxMessageSize: -5}",
            "spec.limits.maxMessageSize: invalid type: integer `-5`, expected a byte count or a quantity like 10M or 25Mi",
        ),
        (
            "  limits: {maxMessageSize: 1.5}",
            "spec.limits.maxMessageSize",
        ),
    ];
    for (spec, fragment) in cases {
        let err = error_of(spec);
        assert!(err.contains(fragment), "{spec}\n=> {err}");
        assert!(err.contains("a.yaml document 1"), "{err}");
    }
}

struct FakeSecrets;

impl SecretSource for FakeSecrets {
    fn password_hash(
        &self,
        namespace: Option<&str>,
        secret: &SecretKeyRef,
    ) -> Result<Option<String>, String> {
        match (namespace, secret.name.as_str()) {
            (Some("mail"), "relay-users") => Ok(Some(BILLING_HASH.to_string())),
            _ => Err(format!("Secret {} has no key {}", secret.name, secret.key)),
        }
    }
}

#[test]
fn secret_references_resolve_through_a_secret_source() {
    let text = policy(
        "mail/k8s",
        "  users: [{name: app, passwordSecretRef: {name: relay-users, key: app}}]",
    );
    let sources = [("k8s".to_string(), text.clone())];
    let snap =
        crate::policy::PolicySnapshot::from_yaml_with_secrets(&sources, &FakeSecrets).unwrap();
    assert!(snap.has_users());
    let other = [("k8s".to_string(), text.replace("relay-users", "missing"))];
    let err =
        crate::policy::PolicySnapshot::from_yaml_with_secrets(&other, &FakeSecrets).unwrap_err();
    assert!(
        err.to_string()
            .contains("spec.users[0].passwordSecretRef: Secret missing has no key app"),
        "{err}"
    );
}

#[test]
fn the_example_text_is_stable_input() {
    // Guards the fixture itself: compiling twice gives the same rules.
    assert_eq!(compile(&[&EXAMPLE]).unwrap(), compile(&[&EXAMPLE]).unwrap());
}

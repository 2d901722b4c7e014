//! Unit tests of `decision.rs`: the relay decision table and users' sender rights.

use super::*;
use crate::policy::tests::{compile, example, policy};

fn client(ip: &str, user: Option<&str>) -> ClientInfo {
    ClientInfo {
        ip: ip.parse().unwrap(),
        authenticated_user: user.map(String::from),
    }
}

fn rcpt(address: &str) -> Mailbox {
    match address.rsplit_once('@') {
        Some((l, d)) => Mailbox::new(l, d),
        None => Mailbox::new(address, ""),
    }
}

fn decide(snap: &PolicySnapshot, ip: &str, user: Option<&str>, to: &str) -> Decision {
    snap.relay_decision(&client(ip, user), &rcpt(to))
}

#[test]
fn local_and_relay_domains_are_accepted_from_anyone_case_insensitively() {
    let snap = example();
    let d = decide(&snap, "192.0.2.1", None, "Alice@CORP.example");
    assert_eq!(
        d,
        Decision::LocalDomain {
            domain: "corp.example".into(),
            policy: "mail/corp".into()
        }
    );
    assert_eq!(
        d.to_string(),
        "accept: local domain corp.example (policy mail/corp)"
    );
    assert!(decide(&snap, "192.0.2.1", None, "a@corp.example.").is_accepted());
    let d = decide(&snap, "192.0.2.1", None, "bob@Partner.Example");
    assert_eq!(
        d.to_string(),
        "accept: relay domain partner.example (policy mail/corp)"
    );
    // A subdomain of a local domain is not local unless listed.
    assert!(!decide(&snap, "192.0.2.1", None, "a@sub.corp.example").is_accepted());
}

#[test]
fn postmaster_without_a_local_domain_is_refused() {
    let snap = compile(&[&policy("bare", "")]).unwrap();
    let d = decide(&snap, "192.0.2.1", None, "Postmaster");
    assert_eq!(d, Decision::NoPostmaster { domain: None });
    assert!(!d.is_accepted());
    assert_eq!(
        d.to_string(),
        "reject: user unknown: <Postmaster> has nowhere to go, there is no local domain"
    );
}

#[test]
fn postmaster_goes_to_the_first_local_domain_if_it_takes_postmaster() {
    let snap = example();
    let d = decide(&snap, "192.0.2.1", None, "Postmaster");
    assert_eq!(
        d,
        Decision::Postmaster {
            domain: "archive.corp.example".into(),
            policy: "mail/corp".into()
        }
    );
    assert!(
        d.to_string().contains("postmaster@archive.corp.example"),
        "{d}"
    );
    let listed = |list: &str| {
        policy(
            "p",
            &format!(
                "  localDomains: [{{domain: l.example, delivery: {{lmtp: {{address: 'h:24'}}}}, recipients: [{list}]}}]"
            ),
        )
    };
    let without = compile(&[&listed("alice@l.example")]).unwrap();
    let d = decide(&without, "192.0.2.1", None, "Postmaster");
    assert_eq!(
        d,
        Decision::NoPostmaster {
            domain: Some("l.example".into())
        }
    );
    assert!(d.to_string().contains("postmaster@l.example"), "{d}");
    let with = compile(&[&listed("Postmaster@l.example")]).unwrap();
    assert!(decide(&with, "192.0.2.1", None, "Postmaster").is_accepted());
}

const LISTED: &str = "  localDomains:\n  - domain: l.example\n    delivery: {lmtp: {address: 'h:24'}}\n    recipients: [alice@l.example, Bob@L.example]\n  - domain: m.example\n    delivery: {maildir: {path: /m}}\n  - domain: n.example\n    delivery: {maildir: {path: /n}}\n    recipients: ['@n.example']\n  relayDomains: [r.example, open.example]\n  relayRecipients: [carol@r.example]\n  trustedNetworks: [192.0.2.0/24]";

#[test]
fn local_recipient_lists_refuse_unknown_users_for_everyone() {
    let snap = compile(&[&policy("mail/p", LISTED)]).unwrap();
    for to in ["alice@l.example", "ALICE@l.example", "bob@L.Example."] {
        assert!(
            decide(&snap, "198.51.100.1", None, to).is_accepted(),
            "{to}"
        );
    }
    // Neither a trusted network nor authentication makes an unknown user deliverable.
    for (ip, user) in [
        ("198.51.100.1", None),
        ("192.0.2.9", None),
        ("198.51.100.1", Some("u")),
    ] {
        let d = decide(&snap, ip, user, "mallory@l.example");
        assert_eq!(
            d,
            Decision::UnknownRecipient {
                address: "mallory@l.example".into(),
                table: RecipientTableKind::Local,
                policy: "mail/p".into()
            }
        );
        assert_eq!(
            d.to_string(),
            "reject: user unknown: mallory@l.example is not in its local domain's recipients (policy mail/p)"
        );
    }
    // No list, or `@domain`: every (storable) local part.
    assert!(decide(&snap, "198.51.100.1", None, "anyone@m.example").is_accepted());
    assert!(decide(&snap, "198.51.100.1", None, "anyone@n.example").is_accepted());
}

#[test]
fn maildir_domains_refuse_local_parts_they_cannot_store() {
    let snap = compile(&[&policy("mail/p", LISTED)]).unwrap();
    for local in ["a/b", "..", ".hidden", "a\\b"] {
        let to = format!("{local}@m.example");
        let d = decide(&snap, "192.0.2.9", None, &to);
        assert_eq!(
            d,
            Decision::UnsafeLocalPart {
                address: to.clone(),
                policy: "mail/p".into()
            }
        );
        assert!(
            d.to_string().contains("cannot name a Maildir mailbox"),
            "{d}"
        );
        // Even the catch-all does not take them.
        assert!(!decide(&snap, "192.0.2.9", None, &format!("{local}@n.example")).is_accepted());
    }
    // LMTP has no file names to protect: the list decides.
    assert!(matches!(
        decide(&snap, "192.0.2.9", None, "a/b@l.example"),
        Decision::UnknownRecipient { .. }
    ));
}

#[test]
fn relay_recipient_lists_apply_to_their_domains_only() {
    let snap = compile(&[&policy("mail/p", LISTED)]).unwrap();
    assert!(decide(&snap, "198.51.100.1", None, "Carol@r.example").is_accepted());
    let d = decide(&snap, "198.51.100.1", None, "dave@r.example");
    assert_eq!(
        d,
        Decision::UnknownRecipient {
            address: "dave@r.example".into(),
            table: RecipientTableKind::Relay,
            policy: "mail/p".into()
        }
    );
    assert!(d.to_string().contains("is not in relayRecipients"), "{d}");
    assert!(decide(&snap, "198.51.100.1", None, "dave@open.example").is_accepted());
}

#[test]
fn foreign_domains_need_authentication() {
    let snap = example();
    let d = decide(&snap, "192.0.2.1", Some("billing-app"), "x@example.org");
    assert_eq!(
        d,
        Decision::AuthenticatedUser {
            domain: "example.org".into(),
            user: "billing-app".into(),
            policy: "mail/corp".into()
        }
    );
    assert_eq!(
        d.to_string(),
        "accept: authenticated user billing-app may relay to example.org (policy mail/corp)"
    );
    // A user the snapshot does not know gets no relay rights.
    let d = decide(&snap, "192.0.2.1", Some("ghost"), "x@example.org");
    assert_eq!(
        d.to_string(),
        "reject: relay access denied: example.org is not a local or relay domain, user ghost is not in the current policy and 192.0.2.1 is not in a trusted network"
    );
}

#[test]
fn trusted_networks_match_v4_v6_mapped_and_single_hosts() {
    let snap = example();
    let d = decide(&snap, "10.1.2.3", None, "x@example.org");
    assert_eq!(
        d.to_string(),
        "accept: client 10.1.2.3 in trusted network 10.0.0.0/8 (policy mail/corp)"
    );
    let d = decide(&snap, "fd12::1", None, "x@example.org");
    assert_eq!(
        d.to_string(),
        "accept: client fd12::1 in trusted network fd00::/8 (policy mail/corp)"
    );
    let d = decide(&snap, "::ffff:10.1.2.3", None, "x@example.org");
    assert!(
        matches!(d, Decision::TrustedNetwork { ip, .. } if ip.to_string() == "10.1.2.3"),
        "{d}"
    );
    assert!(decide(&snap, "192.0.2.7", None, "x@example.org").is_accepted());
    assert!(!decide(&snap, "192.0.2.8", None, "x@example.org").is_accepted());
    assert!(!decide(&snap, "11.0.0.1", None, "x@example.org").is_accepted());
    assert!(!decide(&snap, "fe80::1", None, "x@example.org").is_accepted());
}

#[test]
fn everything_else_is_denied_with_the_full_reason() {
    let snap = example();
    let d = decide(&snap, "192.0.2.1", None, "x@Example.org");
    assert!(!d.is_accepted());
    assert_eq!(
        d.to_string(),
        "reject: relay access denied: example.org is not a local or relay domain, the session is not authenticated and 192.0.2.1 is not in a trusted network"
    );
    // Address literals are foreign, whatever they point at.
    assert!(!decide(&snap, "192.0.2.1", None, "x@[10.0.0.1]").is_accepted());
}

#[test]
fn mode_open_relays_for_anyone_but_only_when_written_out() {
    let open = compile(&[&policy("mail/open", "  mode: open")]).unwrap();
    let d = decide(&open, "192.0.2.1", None, "x@example.org");
    assert_eq!(
        d,
        Decision::OpenRelay {
            domain: "example.org".into(),
            policies: vec!["mail/open".into()]
        }
    );
    assert_eq!(
        d.to_string(),
        "accept: mode open relays example.org for anyone (policy mail/open)"
    );
    let default = compile(&[&policy("mail/default", "")]).unwrap();
    assert!(!decide(&default, "192.0.2.1", None, "x@example.org").is_accepted());
}

#[test]
fn local_domains_win_over_trusted_networks() {
    let snap = example();
    assert!(matches!(
        decide(&snap, "10.1.2.3", Some("billing-app"), "a@corp.example"),
        Decision::LocalDomain { .. }
    ));
}

fn sender(snap: &PolicySnapshot, user: &str, from: Option<&str>) -> SenderDecision {
    snap.sender_decision(user, &from.map(rcpt))
}

#[test]
fn users_may_send_only_as_their_allowed_senders() {
    let snap = example();
    let ok = sender(&snap, "billing-app", Some("BILLING@corp.EXAMPLE"));
    assert!(ok.is_allowed());
    assert_eq!(
        ok.to_string(),
        "accept: user billing-app may send as <BILLING@corp.EXAMPLE> (allowedSenders entry billing@corp.example, policy mail/corp)"
    );
    assert!(
        sender(
            &snap,
            "billing-app",
            Some("anyone@Notifications.Corp.Example")
        )
        .is_allowed()
    );
    let no = sender(&snap, "billing-app", Some("ceo@corp.example"));
    assert!(!no.is_allowed());
    assert_eq!(
        no.to_string(),
        "reject: user billing-app may not send as <ceo@corp.example>: no allowedSenders entry matches (policy mail/corp)"
    );
    // "@domain" covers that domain only, not its subdomains.
    assert!(
        !sender(
            &snap,
            "billing-app",
            Some("x@eu.notifications.corp.example")
        )
        .is_allowed()
    );
}

#[test]
fn no_allowed_senders_means_any_sender_and_null_sender_is_allowed() {
    let snap = example();
    let any = sender(&snap, "legacy-printer", Some("whoever@example.org"));
    assert!(
        matches!(
            any,
            SenderDecision::Allowed {
                rule: SenderRule::AnySender { .. },
                ..
            }
        ),
        "{any}"
    );
    let null = sender(&snap, "billing-app", None);
    assert!(matches!(
        null,
        SenderDecision::Allowed {
            rule: SenderRule::NullSender,
            ..
        }
    ));
    assert_eq!(
        null.to_string(),
        "accept: user billing-app may send as <> (the null sender is allowed for every user)"
    );
}

#[test]
fn unknown_users_own_no_sender() {
    let d = sender(&example(), "ghost", Some("ghost@corp.example"));
    assert_eq!(
        d,
        SenderDecision::NotOwned {
            user: "ghost".into(),
            sender: "<ghost@corp.example>".into(),
            reason: NotOwnedReason::UnknownUser
        }
    );
    assert!(!d.is_allowed());
}

#[test]
fn routing_local_parts_need_a_known_user_or_a_trusted_network() {
    let snap = example();
    let routed = [
        "a%b@corp.example",
        "a!b@corp.example",
        "\"a@b\"@corp.example",
    ];
    for to in routed {
        let d = decide(&snap, "192.0.2.1", None, to);
        assert!(matches!(d, Decision::RoutingDenied { .. }), "{to}: {d}");
        assert!(d.to_string().contains("routing characters"), "{d}");
        // A user the snapshot no longer has is no better than none.
        let d = decide(&snap, "192.0.2.1", Some("gone"), to);
        assert!(matches!(d, Decision::RoutingDenied { .. }), "{to}: {d}");
        assert!(decide(&snap, "192.0.2.1", Some("billing-app"), to).is_accepted());
    }
    assert!(decide(&snap, "192.0.2.1", None, "a.b+c@corp.example").is_accepted());
}

#[test]
fn address_literals_are_refused_unless_a_policy_allows_them() {
    let snap = example();
    let d = decide(&snap, "192.0.2.1", Some("billing-app"), "x@[192.0.2.9]");
    assert_eq!(
        d,
        Decision::AddressLiteralDenied {
            domain: "[192.0.2.9]".into()
        }
    );
    let allow = compile(&[&policy("lit", "  addressLiterals: allow\n")]).unwrap();
    let refuse = compile(&[&policy("other", "")]).unwrap();
    assert_eq!(refuse.address_literals(), AddressLiterals::Refuse);
    assert_eq!(allow.address_literals(), AddressLiterals::Allow);
    let both = compile(&[
        &policy("lit", "  addressLiterals: allow\n"),
        &policy("other", ""),
    ]);
    assert_eq!(both.unwrap().address_literals(), AddressLiterals::Allow);
}

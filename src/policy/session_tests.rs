//! The session under the real snapshot: transcripts whose replies come from the relay
//! and sender decisions, with their texts and metric reasons.

use super::*;
use crate::policy::hash_password;
use crate::smtp::session::transcript::{T, reply, tls};
use crate::smtp::session::{AuthOutcome, ListenerKind, Step};
use std::sync::{Arc, OnceLock};

fn policy() -> Arc<PolicySnapshot> {
    static POLICY: OnceLock<Arc<PolicySnapshot>> = OnceLock::new();
    POLICY
        .get_or_init(|| {
            let yaml = format!(
                "apiVersion: sluice.dev/v1alpha1\nkind: RelayPolicy\nmetadata: {{name: test}}\nspec:\n  \
                 trustedNetworks: [\"10.0.0.0/8\"]\n  \
                 localDomains:\n    - domain: local.example\n      delivery: {{maildir: {{path: /tmp/sluice-test}}}}\n  \
                 relayDomains: [partner.example]\n  \
                 users:\n    - name: alice\n      passwordHash: \"{}\"\n      allowedSenders: [\"alice@local.example\", \"@alice.example\"]\n  \
                 limits: {{maxRecipients: 3}}\n",
                hash_password("secret")
            );
            Arc::new(PolicySnapshot::from_yaml(&[("test".into(), yaml)]).unwrap())
        })
        .clone()
}

fn relay(ip: &str) -> T<PolicySnapshot> {
    T::new(ListenerKind::Relay, ip, policy())
}

#[test]
fn a_local_part_maildir_cannot_store_is_refused_at_rcpt() {
    let mut t = relay("192.0.2.9");
    t.ok("EHLO client.test");
    t.ok("MAIL FROM:<a@sender.example>");
    let r = t.says("RCPT TO:<\"../x\"@local.example>", 553, Some("5.1.3"));
    assert!(r.to_string().contains("cannot be delivered here"), "{r}");
    let rejection = t.0.take_rejection().unwrap();
    assert_eq!(rejection.reason, "unknown_recipient");
    assert!(rejection.detail.contains("cannot name a Maildir mailbox"));
    t.says("RCPT TO:<\"a/b\"@local.example>", 553, Some("5.1.3"));
    t.says("RCPT TO:<ok@local.example>", 250, Some("2.1.5"));
}

#[test]
fn untrusted_client_is_refused_relay_but_may_send_to_local_and_relay_domains() {
    let mut t = relay("192.0.2.9");
    t.ok("EHLO client.test");
    t.ok("MAIL FROM:<a@sender.example>");
    let r = t.says("RCPT TO:<b@foreign.example>", 554, Some("5.7.1"));
    assert!(r.to_string().contains("Relay access denied"));
    assert_eq!(
        r.to_string().trim_end(),
        "554 5.7.1 <b@foreign.example>: Relay access denied"
    );
    assert_eq!(t.0.take_rejection().unwrap().reason, "relay_denied");
    t.says("RCPT TO:<x@LOCAL.example>", 250, Some("2.1.5"));
    t.says("RCPT TO:<x@partner.example>", 250, Some("2.1.5"));
    t.says("RCPT TO:<Postmaster>", 250, Some("2.1.5"));
}

#[test]
fn a_trusted_client_relays_within_the_policys_recipient_limit() {
    let mut t = relay("10.0.0.1");
    t.ok("EHLO c.test");
    t.ok("MAIL FROM:<a@b.example> SIZE=1000");
    for i in 0..3 {
        t.ok(&format!("RCPT TO:<r{i}@x.example>"));
    }
    t.says("RCPT TO:<r9@x.example>", 452, Some("4.5.3"));
}

#[test]
fn an_authenticated_user_sends_only_as_the_senders_it_owns() {
    let mut t = relay("192.0.2.9");
    t.0.tls_started(tls());
    let ehlo = t.ok("EHLO c.test").to_string();
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    assert!(matches!(
        t.0.command(b"AUTH PLAIN AGFsaWNlAHNlY3JldA=="),
        Step::VerifyCredentials { .. }
    ));
    assert_eq!(reply(t.0.auth_result(AuthOutcome::Accepted)).code, 235);
    let r = t.says("MAIL FROM:<bob@elsewhere.example>", 553, Some("5.7.1"));
    assert_eq!(
        r.to_string().trim_end(),
        "553 5.7.1 Sender address rejected: not owned by user alice"
    );
    let rejection = t.0.take_rejection().unwrap();
    assert_eq!(rejection.reason, "sender_not_owned");
    assert!(
        rejection.detail.contains("may not send as"),
        "{}",
        rejection.detail
    );
    t.ok("MAIL FROM:<anyone@alice.example>");
    t.ok("RCPT TO:<b@foreign.example>");
}

#[test]
fn the_block_lists_are_asked_about_untrusted_clients_only() {
    let yaml = "apiVersion: sluice.dev/v1alpha1\nkind: RelayPolicy\nmetadata: {name: t}\nspec:\n  trustedNetworks: [10.0.0.0/8]\n  relayDomains: [partner.example]\n  dnsbl: {zones: [{zone: a.test}, {zone: b.test}]}\n";
    let policy = Arc::new(PolicySnapshot::from_yaml(&[("t".into(), yaml.into())]).unwrap());
    let session = |ip: &str| {
        let mut t = T::new(ListenerKind::Relay, ip, Arc::clone(&policy));
        t.ok("EHLO c.test");
        t.ok("MAIL FROM:<s@c.test>");
        t
    };
    let mut untrusted = session("192.0.2.1");
    // Refused by the relay rules first: no lookup for it.
    untrusted.says("RCPT TO:<x@foreign.example>", 554, Some("5.7.1"));
    assert!(matches!(
        untrusted.0.command(b"RCPT TO:<a@partner.example>"),
        Step::CheckClient
    ));
    let mut trusted = session("10.1.2.3");
    trusted.says("RCPT TO:<a@partner.example>", 250, Some("2.1.5"));
    // Without `dnsbl:`, nobody is asked about.
    let mut t = relay("192.0.2.1");
    t.ok("EHLO c.test");
    t.ok("MAIL FROM:<s@c.test>");
    t.says("RCPT TO:<a@partner.example>", 250, Some("2.1.5"));
}

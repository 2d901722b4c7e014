//! Sender authentication end to end (issue 12): `sluice standalone` and `sluice ingress`
//! ask a loopback DNS server that serves SPF, DKIM and DMARC records made by the test;
//! messages signed here with mail-auth (Ed25519) are sent by Python's smtplib from an
//! untrusted loopback address, and what the sink receives carries our
//! `Authentication-Results` at the top, with forged ones gone; DMARC `p=reject` failures
//! are refused with 550 5.7.1 and `p=quarantine` failures tagged.

mod common;

use common::dns::{DnsServer, Zone};
use common::sink::{AcceptAll, Sink};
use mail_auth::common::crypto::Ed25519Key;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use std::path::Path;
use std::time::Duration;

#[path = "sender_auth/support.rs"]
mod support;
use support::*;

/// The records of every case. The client sends from 127.0.0.2 with HELO client.test
/// (no records: SPF for the HELO identity is `none`).
fn zone(key: &DkimKey) -> Zone {
    Zone::default()
        // SPF pass, DMARC p=reject: passes.
        .txt("pass.example", "v=spf1 ip4:127.0.0.2 -all")
        .txt("_dmarc.pass.example", "v=DMARC1; p=reject")
        .txt("s1._domainkey.pass.example", &key.txt)
        // SPF fail, unsigned, p=reject: refused.
        .txt("fail.example", "v=spf1 ip4:192.0.2.1 -all")
        .txt("_dmarc.fail.example", "v=DMARC1; p=reject")
        // SPF softfail, unsigned, p=quarantine: tagged.
        .txt("soft.example", "v=spf1 ip4:192.0.2.1 ~all")
        .txt("_dmarc.soft.example", "v=DMARC1; p=quarantine")
        // SPF fail but an aligned valid signature: DMARC passes on DKIM.
        .txt("signed.example", "v=spf1 -all")
        .txt("_dmarc.signed.example", "v=DMARC1; p=reject")
        .txt("s1._domainkey.signed.example", &key.txt)
        // No SPF, no DMARC: none.
        .addr("none.example", "192.0.2.7")
        // The SPF lookup fails: temperror; the key lookup fails: DKIM temperror.
        .servfail("temp.example")
        .txt("tempkey.example", "v=spf1 ip4:127.0.0.2 -all")
        .servfail("s1._domainkey.tempkey.example")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_mail_is_verified_and_dmarc_enforced() {
    let key = DkimKey::ed25519();
    let dns = DnsServer::start(zone(&key)).await;
    let sink = Sink::start(AcceptAll).await;
    let filters = "    - senderAuth: {dmarcReject: reject, dmarcQuarantine: tag}\n";
    let relay = start(&dns, &sink, filters).await;
    let dir = tempfile::tempdir().unwrap();

    let cases = [
        // (case, MAIL FROM domain, signed by, extra header, reply)
        ("pass", "pass.example", Some("pass.example"), "", 250),
        ("fail", "fail.example", None, "", 550),
        ("soft", "soft.example", None, "", 250),
        ("signed", "signed.example", Some("signed.example"), "", 250),
        (
            "broken",
            "pass.example",
            Some("pass.example"),
            "tamper",
            250,
        ),
        ("none", "none.example", None, "", 250),
        ("temp", "temp.example", None, "", 250),
        (
            "tempkey",
            "tempkey.example",
            Some("tempkey.example"),
            "",
            250,
        ),
        (
            "forged",
            "none.example",
            None,
            "Authentication-Results: relay.test; dkim=pass header.d=pass.example\r\nAuthentication-Results: other.example; spf=pass\r\n",
            250,
        ),
    ];
    for (case, domain, signer, extra, code) in cases {
        let mut message = message(case, domain, extra);
        if let Some(d) = signer {
            message = key.sign(d, &message);
        }
        if extra == "tamper" {
            message.extend_from_slice(b"a line added after signing\r\n");
        }
        let file = write(dir.path(), case, &message);
        let reply = send(
            relay.relay,
            UNTRUSTED,
            &format!("user@{domain}"),
            &file,
            None,
        )
        .await;
        assert_eq!(reply.0, code, "{case}: {reply:?}");
        if case == "fail" {
            for word in ["5.7.1", "DMARC", "fail.example"] {
                assert!(reply.1.contains(word), "{word} not in {reply:?}");
            }
        }
    }
    let got = delivered(&sink, 8).await;
    let results = |case: &str| -> String {
        let data = &got[case];
        let ours = ours(data);
        assert_eq!(ours.len(), 1, "{case}: one result of ours: {ours:?}");
        assert!(
            String::from_utf8_lossy(data).starts_with("Authentication-Results: relay.test;"),
            "{case}: our result goes at the top"
        );
        ours[0].clone()
    };
    let has = |case: &str, words: &[&str]| {
        let r = results(case);
        for w in words {
            assert!(r.contains(w), "{case}: {w} not in {r}");
        }
    };
    has(
        "pass",
        &[
            "spf=pass",
            "smtp.mailfrom=user@pass.example",
            "dkim=pass",
            "header.d=pass.example",
            "dmarc=pass",
            "arc=none",
        ],
    );
    has(
        "soft",
        &["spf=softfail", "dmarc=fail", "policy.dmarc=quarantine"],
    );
    has("signed", &["spf=fail", "dkim=pass", "dmarc=pass"]);
    // mail-auth reports a body that no longer matches its hash as `neutral`, with why.
    has(
        "broken",
        &["body hash did not verify", "spf=pass", "dmarc=pass"],
    );
    assert!(!results("broken").contains("dkim=pass"));
    has("none", &["spf=none", "dmarc=none"]);
    has("temp", &["spf=temperror"]);
    has("tempkey", &["dkim=temperror", "spf=pass"]);
    let tag = header_values(&got["soft"], "X-Sluice-Filter");
    assert_eq!(tag.len(), 1, "{tag:?}");
    assert!(
        tag[0].starts_with("sender-auth; dmarc quarantine;"),
        "{tag:?}"
    );
    assert!(header_values(&got["pass"], "X-Sluice-Filter").is_empty());
    // The forged result claiming our name is gone, another host's result stays.
    let all = header_values(&got["forged"], "Authentication-Results");
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all.iter().any(|v| v.starts_with("other.example;")));
    assert!(!all.iter().any(|v| v.contains("header.d=pass.example")));

    let admin = relay.admin;
    let refused = metric(
        admin,
        "sluice_filter_verdicts_total",
        &["sender-auth", "reject"],
    )
    .await;
    assert_eq!(refused, 1.0);
    let tagged = metric(
        admin,
        "sluice_filter_verdicts_total",
        &["sender-auth", "rewrite"],
    )
    .await;
    assert_eq!(tagged, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_senders_are_not_verified_but_cannot_forge_results() {
    let key = DkimKey::ed25519();
    let dns = DnsServer::start(zone(&key)).await;
    let sink = Sink::start(AcceptAll).await;
    let relay = start(&dns, &sink, "    - senderAuth: {}\n").await;
    let dir = tempfile::tempdir().unwrap();
    let forged = "Authentication-Results: relay.test; dmarc=pass header.from=fail.example\r\n";
    let file = write(dir.path(), "alice", &message("alice", "local.test", forged));
    let reply = send(
        relay.submission,
        UNTRUSTED,
        "alice@local.test",
        &file,
        Some(("alice", common::PASSWORD)),
    )
    .await;
    assert_eq!(reply.0, 250, "{reply:?}");
    // A trusted network's client with a failing domain is not judged either.
    let file = write(
        dir.path(),
        "trusted",
        &message("trusted", "fail.example", ""),
    );
    let reply = send(relay.relay, TRUSTED, "user@fail.example", &file, None).await;
    assert_eq!(reply.0, 250, "{reply:?}");
    let got = delivered(&sink, 2).await;
    for case in ["alice", "trusted"] {
        assert!(ours(&got[case]).is_empty(), "{case}: no result of ours");
        assert!(header_values(&got[case], "Authentication-Results").is_empty());
    }
    let exempt = metric(relay.admin, "sluice_filter_verdicts_total", &["exempt"]).await;
    assert_eq!(exempt, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dmarc_quarantine_failure_can_be_held() {
    let key = DkimKey::ed25519();
    let dns = DnsServer::start(zone(&key)).await;
    let sink = Sink::start(AcceptAll).await;
    let filters = "    - senderAuth: {dmarcQuarantine: quarantine}\n";
    let relay = start(&dns, &sink, filters).await;
    let dir = tempfile::tempdir().unwrap();
    let held = write(dir.path(), "soft", &message("soft", "soft.example", ""));
    let reply = send(relay.relay, UNTRUSTED, "user@soft.example", &held, None).await;
    assert_eq!(reply.0, 250, "{reply:?}");
    let pass = key.sign("pass.example", &message("pass", "pass.example", ""));
    let pass = write(dir.path(), "pass", &pass);
    let reply = send(relay.relay, UNTRUSTED, "user@pass.example", &pass, None).await;
    assert_eq!(reply.0, 250, "{reply:?}");
    // Only the passing message arrives (sent second, so the held one would have too).
    let got = delivered(&sink, 1).await;
    assert!(got.contains_key("pass"), "{:?}", got.keys());
    let (_, list) = common::roles::http_get(relay.admin, "/quarantine")
        .await
        .expect("/quarantine");
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let list = list.as_array().expect("a list of held messages");
    assert_eq!(list.len(), 1, "{list:?}");
    let reason = list[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("DMARC quarantine"), "{reason}");
    assert!(reason.contains("header.from=soft.example"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_dns_the_fail_mode_decides() {
    // A name server that never answers: every lookup times out, the check with it.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink = Sink::start(AcceptAll).await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "slow", &message("slow", "pass.example", ""));
    for (fail_mode, code) in [("closed", 451), ("open", 250)] {
        let filters =
            format!("    - senderAuth: {{}}\n      timeout: 1s\n      failMode: {fail_mode}\n");
        let relay = start_at(silent.local_addr().unwrap(), &sink, &filters).await;
        let started = std::time::Instant::now();
        let reply = send(relay.relay, UNTRUSTED, "user@pass.example", &file, None).await;
        assert_eq!(reply.0, code, "{fail_mode}: {reply:?}");
        assert!(started.elapsed() < Duration::from_secs(10), "{fail_mode}");
        if code == 451 {
            assert!(reply.1.contains("Sender authentication check unavailable"));
        }
    }
    let got = delivered(&sink, 1).await;
    assert!(
        ours(&got["slow"]).is_empty(),
        "no result when the check failed open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingress_role_verifies_too() {
    use common::nats::NatsServer;
    use common::roles::{READY_WITHIN, RoleProcess, policy_config, policy_push};
    let key = DkimKey::ed25519();
    let dns = DnsServer::start(zone(&key)).await;
    let nats = NatsServer::start();
    let sink = Sink::start(AcceptAll).await;
    let dir = tempfile::tempdir().unwrap();
    let filters = "    - senderAuth: {}\n";
    let config = policy_config(dir.path(), &policy(sink.addr.port(), filters));
    policy_push(&config, &nats.url(), &[]).await;
    let nameserver = dns.addr.to_string();
    let args = ["--nameserver", nameserver.as_str()];
    let mut ingress = RoleProcess::ingress("ingress", &nats.url(), &args).await;
    let mut worker = RoleProcess::worker("worker", &nats.url(), &[]).await;
    ingress.wait_ready(READY_WITHIN).await;
    worker.wait_ready(READY_WITHIN).await;
    let smtp = ingress.smtp();
    let file = write(dir.path(), "fail", &message("fail", "fail.example", ""));
    let reply = send(smtp, UNTRUSTED, "user@fail.example", &file, None).await;
    assert_eq!(reply.0, 550, "{reply:?}");
    let pass = key.sign("pass.example", &message("pass", "pass.example", ""));
    let file = write(dir.path(), "pass", &pass);
    let reply = send(smtp, UNTRUSTED, "user@pass.example", &file, None).await;
    assert_eq!(reply.0, 250, "{reply:?}");
    let got = delivered(&sink, 1).await;
    let ours = ours(&got["pass"]);
    assert_eq!(ours.len(), 1);
    for w in ["spf=pass", "dkim=pass", "dmarc=pass"] {
        assert!(ours[0].contains(w), "{w} not in {ours:?}");
    }
}

/// An Ed25519 DKIM key and its TXT record.
struct DkimKey {
    pkcs8: Vec<u8>,
    txt: String,
}

impl DkimKey {
    fn ed25519() -> DkimKey {
        use base64::Engine;
        let pkcs8 = Ed25519Key::generate_pkcs8().unwrap();
        let key = Ed25519Key::from_pkcs8_der(&pkcs8).unwrap();
        let p = base64::engine::general_purpose::STANDARD.encode(key.public_key());
        DkimKey {
            pkcs8,
            txt: format!("v=DKIM1; k=ed25519; p={p}"),
        }
    }

    /// `message` with a DKIM-Signature of `domain`, selector s1, at the top.
    fn sign(&self, domain: &str, message: &[u8]) -> Vec<u8> {
        let key = Ed25519Key::from_pkcs8_der(&self.pkcs8).unwrap();
        let signature = DkimSigner::from_key(key)
            .domain(domain)
            .selector("s1")
            .headers(["From", "To", "Subject", "Date", "Message-ID"])
            .sign(message)
            .unwrap();
        [signature.to_header().as_bytes(), message].concat()
    }
}

fn write(dir: &Path, case: &str, message: &[u8]) -> std::path::PathBuf {
    let path = dir.join(format!("{case}.eml"));
    std::fs::write(&path, message).unwrap();
    path
}

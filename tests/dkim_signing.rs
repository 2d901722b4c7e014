//! DKIM signing (issue 12) end to end: `sluice standalone` with a `signing:` policy,
//! real smtplib clients (authenticated, trusted network, Internet), a capturing sink,
//! and two independent verifiers of what arrives there: mail-auth against the loopback
//! DNS server publishing the keys, and Python's dkimpy. Also the refusals when a key
//! cannot be used, `sluice policy check`, `sluice dkim keygen`, and the ingress role
//! on a real nats-server (tests/dkim_signing/roles.rs).

mod common;

#[path = "dkim_signing/roles.rs"]
mod roles;
#[path = "dkim_signing/support.rs"]
mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_of_our_senders_leaves_signed_and_verifies() {
    let keys = Keys::new();
    let dns = keys.dns().await;
    let (relay, sink) = relay(keys.path(), &signing(""), true).await;

    // An authenticated user, dual-signed (RSA-2048 and Ed25519, RFC 8463).
    let reply = send(
        relay.relay,
        relay.submission,
        Client::Alice,
        &message("alice@example.com", "dual"),
    )
    .await;
    assert_eq!(reply.0, 250, "{reply:?}");
    // A trusted network, from a subdomain: the parent's key, aligned under relaxed DMARC.
    let reply = send(
        relay.relay,
        relay.submission,
        Client::From(TRUSTED),
        &message("app@mail.ed.example", "sub"),
    )
    .await;
    assert_eq!(reply.0, 250, "{reply:?}");
    let reply = send(
        relay.relay,
        relay.submission,
        Client::From(TRUSTED),
        &message("app@rsa.example", "rsa"),
    )
    .await;
    assert_eq!(reply.0, 250, "{reply:?}");

    let dual = delivered(&sink, "dual").await;
    let sigs = signatures(&dual);
    assert_eq!(sigs.len(), 2, "{}", String::from_utf8_lossy(&dual));
    assert!(
        dual.starts_with(b"DKIM-Signature: "),
        "prepended at the top"
    );
    let algorithms: Vec<String> = sigs.iter().map(|s| tag(s, "a")).collect();
    assert_eq!(algorithms, ["rsa-sha256", "ed25519-sha256"]);
    for sig in &sigs {
        assert_eq!(tag(sig, "d"), "example.com");
        assert_eq!(tag(sig, "c"), "relaxed/relaxed");
        assert!(!tag(sig, "t").is_empty() && tag(sig, "l").is_empty() && tag(sig, "x").is_empty());
        let h = tag(sig, "h").to_ascii_lowercase();
        let names: Vec<&str> = h.split(':').collect();
        assert_eq!(
            names.iter().filter(|n| **n == "from").count(),
            2,
            "From oversigned: {h}"
        );
        for name in [
            "subject",
            "date",
            "to",
            "message-id",
            "mime-version",
            "content-type",
        ] {
            assert!(names.contains(&name), "{name} signed: {h}");
        }
        assert!(
            !names.contains(&"cc") && !names.contains(&"reply-to"),
            "absent fields not named: {h}"
        );
    }
    assert_eq!(
        mail_auth_verdicts(&dns, &dual).await,
        [
            ("example.com".to_string(), true),
            ("example.com".to_string(), true)
        ]
    );
    let py = dkimpy_verdicts(&keys.records, &dual);
    assert_eq!(py.len(), 2);
    assert!(
        py.iter().all(|(d, _, _, ok)| d == "example.com" && *ok),
        "{py:?}"
    );

    let sub = delivered(&sink, "sub").await;
    let sigs = signatures(&sub);
    assert_eq!(sigs.len(), 1);
    assert_eq!(
        (tag(&sigs[0], "d"), tag(&sigs[0], "s")),
        ("ed.example".into(), "e".into())
    );
    assert_eq!(
        mail_auth_verdicts(&dns, &sub).await,
        [("ed.example".to_string(), true)]
    );
    assert!(dkimpy_verdicts(&keys.records, &sub)[0].3);

    let rsa = delivered(&sink, "rsa").await;
    assert_eq!(tag(&signatures(&rsa)[0], "a"), "rsa-sha256");
    assert_eq!(
        mail_auth_verdicts(&dns, &rsa).await,
        [("rsa.example".to_string(), true)]
    );
    assert!(dkimpy_verdicts(&keys.records, &rsa)[0].3);

    // A From added after signing breaks it: that is what oversigning is for.
    let text = String::from_utf8_lossy(&sub).replacen(
        "From: ",
        "From: evil@attacker.example\r\nFrom: ",
        1,
    );
    assert!(!mail_auth_verdicts(&dns, text.as_bytes()).await[0].1);
    assert_eq!(
        metric(
            relay.admin,
            "sluice_dkim_signatures_total",
            &["result=\"signed\""]
        )
        .await,
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internet_mail_and_foreign_domains_go_unsigned() {
    let keys = Keys::new();
    let (relay, sink) = relay(keys.path(), &signing(""), true).await;
    // An unauthenticated Internet client to a relay domain, with a From we have keys for.
    let reply = send(
        relay.relay,
        relay.submission,
        Client::From(UNTRUSTED),
        &message("someone@example.com", "internet"),
    )
    .await;
    assert_eq!(reply.0, 250, "{reply:?}");
    // Our user, but a From domain with no key: normal, delivered unsigned.
    let reply = send(
        relay.relay,
        relay.submission,
        Client::Alice,
        &message("alice@nokey.example", "nokey"),
    )
    .await;
    assert_eq!(reply.0, 250, "{reply:?}");
    // No From at all: not signed either (and logged).
    let no_from =
        b"To: rcpt@sink.test\r\nSubject: no from\r\nMessage-ID: <nofrom@client.test>\r\n\r\nx\r\n";
    let reply = send(
        relay.relay,
        relay.submission,
        Client::From(TRUSTED),
        no_from,
    )
    .await;
    assert_eq!(reply.0, 250, "{reply:?}");
    for id in ["internet", "nokey", "nofrom"] {
        let data = delivered(&sink, id).await;
        assert!(
            signatures(&data).is_empty(),
            "{id}: {}",
            String::from_utf8_lossy(&data)
        );
    }
    let name = "sluice_dkim_signatures_total";
    let unsigned = metric(relay.admin, name, &["result=\"unsigned\""]).await;
    assert_eq!(unsigned, 2.0, "Internet mail is not even considered");
    assert_eq!(metric(relay.admin, name, &["result=\"signed\""]).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stripped_message_is_signed_over_what_is_queued() {
    let keys = Keys::new();
    let dns = keys.dns().await;
    let filters =
        "  filters:\n    - attachments: {blockedExtensions: {action: strip, extensions: [js]}}\n";
    let (relay, sink) = relay(keys.path(), &format!("{filters}{}", signing("")), true).await;
    let content = "From: <alice@example.com>\r\nTo: rcpt@sink.test\r\nSubject: with js\r\nMessage-ID: <stripped@client.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n--b1\r\nContent-Type: application/javascript; name=\"evil.js\"\r\nContent-Disposition: attachment; filename=\"evil.js\"\r\nContent-Transfer-Encoding: base64\r\n\r\nYWxlcnQoMSk7\r\n--b1--\r\n";
    let reply = send(
        relay.relay,
        relay.submission,
        Client::Alice,
        content.as_bytes(),
    )
    .await;
    assert_eq!(reply.0, 250, "{reply:?}");
    let got = delivered(&sink, "stripped").await;
    assert!(
        !String::from_utf8_lossy(&got).contains("filename=\"evil.js\""),
        "stripped"
    );
    assert_eq!(signatures(&got).len(), 2);
    assert_eq!(
        mail_auth_verdicts(&dns, &got).await,
        [
            ("example.com".to_string(), true),
            ("example.com".to_string(), true)
        ]
    );
    assert!(dkimpy_verdicts(&keys.records, &got).iter().all(|v| v.3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_cannot_be_used_defers_and_queues_nothing() {
    let keys = Keys::new();
    let extra = "      - {domain: broken.example, selector: b, keySecretRef: {name: dkim-keys, key: garbage.pem}}\n      - {domain: missing.example, selector: m, keySecretRef: {name: dkim-keys, key: nothing-here.pem}}\n";
    let (relay, _sink) = relay(keys.path(), &signing(extra), false).await;
    for from in ["a@broken.example", "a@sub.missing.example"] {
        let reply = send(
            relay.relay,
            relay.submission,
            Client::Alice,
            &message(from, "refused"),
        )
        .await;
        assert_eq!(reply.0, 451, "{from}: {reply:?}");
        assert!(
            reply.1.contains("4.7.1") && reply.1.contains("try again later"),
            "{reply:?}"
        );
    }
    // The other keys of the same policy still sign.
    let reply = send(
        relay.relay,
        relay.submission,
        Client::Alice,
        &message("a@example.com", "fine"),
    )
    .await;
    assert_eq!(reply.0, 250, "{reply:?}");
    assert_eq!(
        metric(
            relay.admin,
            "sluice_dkim_signatures_total",
            &["result=\"error\""]
        )
        .await,
        2.0
    );
    let queued = relay.stop_and_list().await;
    assert_eq!(queued.len(), 1, "only the signed message is queued");
    assert_eq!(signatures(&queued[0].1).len(), 2);
}

#[test]
fn policy_check_lists_keys_and_names_bad_fields() {
    let (_dir, good, _) =
        common::prepare_with(&common::config_yaml("{}"), &policy(25, &signing("")));
    let (code, out) = common::sluice(&[
        "policy",
        "check",
        "--config",
        good.to_str().unwrap(),
        "--client",
        "127.0.0.1",
        "--from",
        "a@example.com",
        "--to",
        "b@sink.test",
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("dkim: ")).count(),
        4,
        "{out}"
    );
    assert!(
        out.contains("dkim: d=example.com s=r (key: secret dkim-keys, key rsa.pem)"),
        "{out}"
    );

    let section = "  signing:\n    dkim:\n      - {domain: example.com, selector: r, keySecretRef: {name: k, key: a.pem}}\n      - {domain: example.com, selector: 'Not_Valid', keySecretRef: {name: k, key: b.pem}}\n";
    let (_dir, bad, _) = common::prepare_with(&common::config_yaml("{}"), &policy(25, section));
    let (code, out) = common::sluice(&[
        "policy",
        "check",
        "--config",
        bad.to_str().unwrap(),
        "--client",
        "127.0.0.1",
        "--from",
        "a@example.com",
        "--to",
        "b@sink.test",
    ]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("spec.signing.dkim[1].selector"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_prints_a_key_that_signs_and_the_record_that_verifies_it() {
    use sluice::filter::settings::{KeySettings, SecretRef, SigningSettings};
    use sluice::filter::signing::Signer;
    for (algorithm, k) in [("rsa", "rsa"), ("ed25519", "ed25519")] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("gen")).unwrap();
        let out = dir.path().join("gen/key.pem");
        let (code, text) = common::sluice(&[
            "dkim",
            "keygen",
            "--domain",
            "gen.example",
            "--selector",
            "s2026",
            "--algorithm",
            algorithm,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{text}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let line = text
            .lines()
            .find(|l| l.starts_with("s2026._domainkey.gen.example. IN TXT "))
            .expect(&text);
        let value: String = line
            .split('"')
            .skip(1)
            .step_by(2)
            .inspect(|s| assert!(s.len() <= 255, "{s}"))
            .collect();
        assert!(value.starts_with(&format!("v=DKIM1; k={k}; p=")), "{value}");
        // The key file is one OpenSSL reads too (it refuses ring's PKCS#8 v2 Ed25519).
        let openssl = std::process::Command::new("openssl")
            .args(["pkey", "-noout", "-in"])
            .arg(&out)
            .output()
            .expect("openssl");
        assert!(
            openssl.status.success(),
            "{algorithm}: {}",
            String::from_utf8_lossy(&openssl.stderr)
        );
        let dns = common::dns::DnsServer::start(
            common::dns::Zone::default().txt("s2026._domainkey.gen.example", &value),
        )
        .await;
        let settings = SigningSettings {
            dkim: vec![KeySettings {
                domain: "gen.example".into(),
                selector: "s2026".into(),
                key_secret_ref: SecretRef {
                    name: "gen".into(),
                    key: "key.pem".into(),
                },
                expiration_secs: None,
            }],
            arc: None,
        };
        let signer = Signer::load(&settings, Some(dir.path()));
        let message = message("a@gen.example", "gen");
        let mut signed = signer.sign(&message).unwrap();
        assert!(!signed.is_empty());
        signed.extend_from_slice(&message);
        assert_eq!(
            mail_auth_verdicts(&dns, &signed).await,
            [("gen.example".to_string(), true)],
            "{algorithm}"
        );
        let records = [("s2026._domainkey.gen.example".to_string(), value)]
            .into_iter()
            .collect();
        assert!(dkimpy_verdicts(&records, &signed)[0].3, "{algorithm}");
    }
    // To stdout: the PEM, then the record.
    let (code, text) = common::sluice(&[
        "dkim",
        "keygen",
        "--domain",
        "gen.example",
        "--selector",
        "e",
        "--algorithm",
        "ed25519",
    ]);
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{text}");
    let pem_end = text.find("-----END PRIVATE KEY-----\n").unwrap() + 26;
    assert!(sluice::filter::signing::parse_key(&text.as_bytes()[..pem_end]).is_ok());
    let (code, text) = common::sluice(&[
        "dkim",
        "keygen",
        "--domain",
        "gen.example",
        "--selector",
        "r",
        "--bits",
        "1024",
    ]);
    assert_ne!(code, 0);
    assert!(text.contains("2048, 3072 or 4096"), "{text}");
}

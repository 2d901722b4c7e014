//! Unit tests of the client's pure parts: command lines with their parameters, local
//! refusals, and the mapping of replies and errors onto outcomes.

use super::commands::{Needs, mail_from, rcpt_to, refusal};
use super::*;
use crate::delivery::Outcome;
use crate::envelope::{Envelope, QueueId};
use crate::smtp::address::{Body, MailParams, Mailbox, Notify, Orcpt, Recipient, Ret};
use crate::smtp::reply::{Reply, ReplyParser};

fn envelope(params: MailParams) -> Envelope {
    Envelope {
        id: QueueId::generate(),
        reverse_path: Some(Mailbox::new("alice", "example.com")),
        params,
        recipients: vec![],
        received_at_ms: 0,
        client_ip: "127.0.0.1".parse().unwrap(),
        helo: "client.test".into(),
        authenticated_user: None,
        sender_trust: crate::envelope::SenderTrust::Untrusted,
        attempts: 0,
        last_error: None,
        delay_warned_at_ms: None,
        trace: None,
    }
}

fn rcpt(local: &str, domain: &str) -> Recipient {
    Recipient {
        address: Mailbox::new(local, domain),
        notify: None,
        orcpt: None,
    }
}

fn all_extensions() -> Extensions {
    Extensions {
        size: Some(1000),
        eight_bit_mime: true,
        smtputf8: true,
        pipelining: true,
        dsn: true,
        ..Extensions::default()
    }
}

fn parse(text: &str) -> Reply {
    let mut p = ReplyParser::new();
    text.split("\r\n")
        .filter(|l| !l.is_empty())
        .find_map(|l| p.push_line(l.as_bytes()).unwrap())
        .unwrap()
}

#[test]
fn mail_from_carries_the_parameters_the_server_supports() {
    let env = envelope(MailParams {
        body: Some(Body::EightBitMime),
        smtputf8: true,
        ret: Some(Ret::Headers),
        envid: Some("id+1 x".into()),
        ..MailParams::default()
    });
    let needs = Needs::of(&env, &[], b"x");
    let line = mail_from(&env, &all_extensions(), needs, 42);
    assert_eq!(
        line,
        "MAIL FROM:<alice@example.com> SIZE=42 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+2B1+20x\r\n"
    );
    // Nothing the server did not announce.
    let line = mail_from(&env, &Extensions::default(), needs, 42);
    assert_eq!(line, "MAIL FROM:<alice@example.com>\r\n");
    let bounce = Envelope {
        reverse_path: None,
        ..envelope(MailParams {
            body: Some(Body::SevenBit),
            ..MailParams::default()
        })
    };
    let needs = Needs::of(&bounce, &[], b"ascii");
    assert_eq!(
        mail_from(&bounce, &all_extensions(), needs, 5),
        "MAIL FROM:<> SIZE=5 BODY=7BIT\r\n"
    );
}

#[test]
fn rcpt_to_carries_dsn_parameters_only_with_dsn() {
    let mut r = rcpt("bob", "example.org");
    r.notify = Some(Notify {
        success: true,
        delay: true,
        ..Notify::default()
    });
    r.orcpt = Some(Orcpt {
        addr_type: "rfc822".into(),
        address: "bob+x@example.org".into(),
    });
    assert_eq!(
        rcpt_to(&r, &all_extensions()),
        "RCPT TO:<bob@example.org> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;bob+2Bx@example.org\r\n"
    );
    assert_eq!(
        rcpt_to(&r, &Extensions::default()),
        "RCPT TO:<bob@example.org>\r\n"
    );
    r.notify = Some(Notify {
        never: true,
        ..Notify::default()
    });
    r.orcpt = None;
    assert_eq!(
        rcpt_to(&r, &all_extensions()),
        "RCPT TO:<bob@example.org> NOTIFY=NEVER\r\n"
    );
    r.notify = Some(Notify::default());
    assert_eq!(
        rcpt_to(&r, &all_extensions()),
        "RCPT TO:<bob@example.org>\r\n"
    );
}

#[test]
fn refusals_size_then_smtputf8_then_8bitmime() {
    let env = envelope(MailParams::default());
    let ascii = Needs::of(&env, &[rcpt("bob", "example.org")], b"hi\r\n");
    let ext = all_extensions();
    assert_eq!(refusal(&ext, ascii, 1000, "mx"), None);
    assert_eq!(refusal(&ext, ascii, 1001, "mx").unwrap().0, "5.3.4");
    let utf8 = Needs::of(&env, &[rcpt("j\u{f6}rg", "example.org")], b"hi\r\n");
    assert!(utf8.smtputf8 && !utf8.eight_bit);
    let no_utf8 = Extensions {
        smtputf8: false,
        ..all_extensions()
    };
    assert_eq!(refusal(&no_utf8, utf8, 10, "mx").unwrap().0, "5.6.7");
    let eight = Needs::of(&env, &[], "caf\u{e9}".as_bytes());
    let seven_bit_only = Extensions::default();
    let (status, text) = refusal(&seven_bit_only, eight, 10, "mx[1.2.3.4]:25").unwrap();
    assert_eq!(status, "5.6.3");
    assert!(
        text.contains("8BITMIME") && text.contains("mx[1.2.3.4]:25"),
        "{text}"
    );
}

#[test]
fn replies_map_onto_outcomes() {
    let remote = || Some("mx[127.0.0.1]:25".to_string());
    let cases = [
        (
            "250 2.0.0 Ok: queued as X",
            "delivered",
            "",
            "250 2.0.0 Ok: queued as X",
        ),
        ("451 4.3.0 try later", "deferred", "", "451 4.3.0 try later"),
        (
            "550-5.1.1 <bob@example.org>:\r\n550 5.1.1 user unknown",
            "failed",
            "5.1.1",
            "550 5.1.1 <bob@example.org>: user unknown",
        ),
        ("554 no", "failed", "5.0.0", "554 no"),
        ("354 go ahead", "deferred", "", "354 go ahead"),
    ];
    for (text, kind, status, line) in cases {
        let outcome = reply_outcome(&parse(text), remote());
        let got = match &outcome {
            Outcome::Delivered { .. } => ("delivered", ""),
            Outcome::Deferred { .. } => ("deferred", ""),
            Outcome::Failed { status, .. } => ("failed", status.as_str()),
        };
        assert_eq!(got, (kind, status), "{text}");
        assert_eq!(outcome.reply(), line);
    }
}

#[test]
fn errors_map_onto_outcomes() {
    let remote = "mx[127.0.0.1]:25".to_string();
    let rejected = |command, text: &str| ClientError::Rejected {
        remote: remote.clone(),
        command,
        reply: parse(text),
    };
    let mail = rejected("MAIL", "553 5.7.1 sender refused");
    assert!(mail.is_permanent());
    assert_eq!(
        mail.to_outcome(Some(remote.clone())),
        Outcome::Failed {
            remote_mta: Some(remote.clone()),
            status: "5.7.1".into(),
            reply: "553 5.7.1 sender refused".into(),
        }
    );
    for temporary in [
        rejected("greeting", "554 go away"),
        rejected("AUTH", "535 5.7.8 bad credentials"),
        rejected("MAIL", "451 4.3.0 later"),
        ClientError::StarttlsNotOffered {
            remote: remote.clone(),
        },
        ClientError::Timeout {
            command: "DATA",
            duration: std::time::Duration::from_secs(1),
        },
    ] {
        assert!(!temporary.is_permanent(), "{temporary}");
        let outcome = temporary.to_outcome(None);
        assert!(matches!(outcome, Outcome::Deferred { .. }), "{outcome:?}");
    }
    let text = ClientError::StarttlsNotOffered { remote }.to_outcome(None);
    assert_eq!(
        text.reply(),
        "STARTTLS not offered by mx[127.0.0.1]:25, and TLS is required"
    );
}

#[test]
fn policy_tls_modes_map_and_debug_hides_the_password() {
    use crate::policy::model::TlsMode as P;
    assert_eq!(TlsMode::from(P::StarttlsRequired), TlsMode::Required);
    assert_eq!(TlsMode::from(P::ImplicitTls), TlsMode::Implicit);
    assert_eq!(TlsMode::from(P::Opportunistic), TlsMode::Opportunistic);
    let mut config = ClientConfig::new("relay.test");
    config.credentials = Some(("user".into(), "s3cret-pw".into()));
    let debug = format!("{config:?}");
    assert!(
        debug.contains("user") && !debug.contains("s3cret-pw"),
        "{debug}"
    );
}

#[test]
fn tls_server_names_of_address_literals_ips_and_idns() {
    use rustls::pki_types::ServerName;
    use std::net::IpAddr;
    let ip = |text: &str| {
        let ip: IpAddr = text.parse().unwrap();
        ServerName::IpAddress(ip.into())
    };
    let dns = |text: &'static str| ServerName::try_from(text).unwrap();
    let cases = [
        ("[192.0.2.1]", ip("192.0.2.1")),
        ("[IPv6:2001:db8::1]", ip("2001:db8::1")),
        ("[ipv6:2001:db8::1]", ip("2001:db8::1")),
        ("10.9.8.7", ip("10.9.8.7")),
        ("::1", ip("::1")),
        ("mx.example.org", dns("mx.example.org")),
        ("mx.example.org.", dns("mx.example.org")),
        ("bücher.example", dns("xn--bcher-kva.example")),
        ("BÜCHER.example.", dns("xn--bcher-kva.example")),
        ("xn--bcher-kva.example", dns("xn--bcher-kva.example")),
    ];
    for (name, want) in cases {
        assert_eq!(tls::tls_server_name(name).unwrap(), want, "{name}");
    }
    for bad in [
        "[nonsense]",
        "[2001:db8::1]",
        "[IPv6:192.0.2.1]",
        "[192.0.2.1",
        "[]",
        "bad name",
        "",
    ] {
        let err = tls::tls_server_name(bad).unwrap_err();
        assert!(
            matches!(err, ClientError::InvalidServerName { .. }),
            "{bad}: {err:?}"
        );
        assert!(err.is_tls_handshake_failure());
    }
}

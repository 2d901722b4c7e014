//! Real SMTP clients against the relay: the lettre crate (STARTTLS + AUTH), Python's
//! smtplib, and swaks, each as a newcomer would use them.

mod common;

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::process::Command;

fn lettre_transport(
    relay: &common::Relay,
    mechanism: Mechanism,
) -> AsyncSmtpTransport<Tokio1Executor> {
    let tls = TlsParameters::builder("localhost".to_string())
        .add_root_certificate(Certificate::from_pem(relay.ca_pem.as_bytes()).unwrap())
        .build_rustls()
        .unwrap();
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(relay.submission.port())
        .tls(Tls::Required(tls))
        .credentials(Credentials::new("alice".into(), common::PASSWORD.into()))
        .authentication(vec![mechanism])
        .build()
}

#[tokio::test]
async fn lettre_sends_over_starttls_with_auth_plain_and_login() {
    let relay = common::start("{}").await;
    for (mechanism, subject) in [(Mechanism::Plain, "plain"), (Mechanism::Login, "login")] {
        let message = Message::builder()
            .from("Alice <alice@local.test>".parse().unwrap())
            .to("Bob <bob@foreign.test>".parse().unwrap())
            .subject(subject)
            .body("Hello from lettre\r\n".to_string())
            .unwrap();
        let response = lettre_transport(&relay, mechanism)
            .send(message)
            .await
            .expect("lettre send");
        assert_eq!(response.code().to_string(), "250");
        let text = response.message().collect::<Vec<_>>().join(" ");
        assert!(text.contains("Ok: queued as"), "{text}");
    }
    let spool = relay.stop_and_list().await;
    assert_eq!(spool.len(), 2);
    for (entry, body) in spool {
        assert_eq!(entry.envelope.authenticated_user.as_deref(), Some("alice"));
        assert!(String::from_utf8_lossy(&body).contains("Hello from lettre"));
    }
}

const SMTPLIB_SCRIPT: &str = r#"
import smtplib, ssl, sys
port, cafile, password, mechanism = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=cafile)
with smtplib.SMTP("localhost", port, timeout=10) as s:
    s.ehlo("python.test")
    try:
        s.login("alice", password)
        print("plaintext login succeeded")
        sys.exit(1)
    except smtplib.SMTPNotSupportedError:
        pass
    s.starttls(context=ctx)
    s.ehlo("python.test")
    s.user, s.password = "alice", password
    code, resp = s.auth(mechanism, getattr(s, "auth_" + mechanism.lower()))
    assert code == 235, (code, resp)
    s.mail("alice@local.test")
    s.rcpt("carol@foreign.test")
    code, resp = s.data(b"Subject: from smtplib\r\n\r\nline one\r\n.dot line\r\n")
    print(code, resp.decode())
"#;

#[tokio::test]
async fn python_smtplib_sends_over_starttls_with_auth() {
    let relay = common::start("{}").await;
    for mechanism in ["PLAIN", "LOGIN"] {
        let port = relay.submission.port();
        let cafile = relay.dir.path().join("cert.pem");
        let out = tokio::task::spawn_blocking(move || {
            Command::new("python3")
                .args([
                    "-c",
                    SMTPLIB_SCRIPT,
                    &port.to_string(),
                    cafile.to_str().unwrap(),
                    common::PASSWORD,
                    mechanism,
                ])
                .output()
                .expect("python3")
        });
        let out = out.await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.starts_with("250 2.0.0 Ok: queued as"), "{stdout}");
    }
    let spool = relay.stop_and_list().await;
    assert_eq!(spool.len(), 2);
    assert!(
        spool[0]
            .1
            .ends_with(b"\r\nSubject: from smtplib\r\n\r\nline one\r\n.dot line\r\n")
    );
}

async fn swaks(args: Vec<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("swaks")
            .args(&args)
            .output()
            .expect("swaks is installed by scripts/test");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn swaks_from_trusted_gets_queued_and_from_untrusted_gets_554() {
    let relay = common::start("{}").await;
    let server = format!("127.0.0.1:{}", relay.relay.port());
    let base = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "--server",
            &server,
            "--to",
            "someone@example.org",
            "--from",
            "sender@local.test",
            "--timeout",
            "10",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let (ok, text) = swaks(base(&[])).await;
    assert!(ok && text.contains("<-  250 2.0.0 Ok: queued as"), "{text}");
    let (ok, text) = swaks(base(&["--local-interface", "127.0.0.2"])).await;
    assert!(!ok && text.contains("<** 554 5.7.1"), "{text}");
    for auth in ["PLAIN", "LOGIN"] {
        let (ok, text) = swaks(base(&[
            "--local-interface",
            "127.0.0.2",
            "--tls",
            "--auth",
            auth,
            "--auth-user",
            "alice",
            "--auth-password",
            common::PASSWORD,
            "--from",
            "alice@local.test",
        ]))
        .await;
        assert!(
            ok && text.contains("<~  235 2.7.0") && text.contains("<~  250 2.0.0 Ok: queued as"),
            "{auth}: {text}"
        );
    }
    // Without TLS AUTH is not even offered, and swaks gives up before sending a password.
    let (ok, text) = swaks(base(&[
        "--local-interface",
        "127.0.0.2",
        "--auth",
        "PLAIN",
        "--auth-user",
        "alice",
        "--auth-password",
        common::PASSWORD,
    ]))
    .await;
    assert!(!ok && !text.contains("235 "), "{text}");
    let spool = relay.stop_and_list().await;
    assert_eq!(spool.len(), 3, "one trusted and two authenticated messages");
}

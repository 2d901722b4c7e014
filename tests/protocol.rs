//! The SMTP conversation over real TCP (and TLS) on loopback: pipelining, sequencing and
//! syntax errors, the relay decision, STARTTLS and AUTH, BDAT, and SMTP smuggling.

mod common;

use base64::Engine;
use common::smtp::Client;
use sluice::telemetry::metrics::ReloadResult;
use std::sync::Arc;

#[tokio::test]
async fn pipelined_commands_get_their_replies_in_order() {
    let relay = common::start("{}").await;
    let mut c = Client::connect(relay.relay).await;
    c.send(b"EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<b@foreign.test>\r\nRCPT TO:<c@local.test>\r\nDATA\r\n").await;
    let ehlo = c.expect("250 ").await;
    assert!(ehlo.contains("PIPELINING"), "{ehlo}");
    c.expect("250 2.1.0").await;
    c.expect("250 2.1.5").await;
    c.expect("250 2.1.5").await;
    c.expect("354").await;
    c.send(b"Subject: pipelined\r\n\r\nhello\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n")
        .await;
    let queued = c.expect("250 2.0.0 Ok: queued as ").await;
    c.expect("250 2.0.0").await;
    c.expect("250 2.0.0").await;
    c.expect("221 2.0.0").await;
    let spool = relay.stop_and_list().await;
    assert_eq!(spool.len(), 1);
    assert!(
        queued.ends_with(spool[0].0.envelope.id.as_str()),
        "{queued}"
    );
    assert!(
        spool[0]
            .1
            .ends_with(b"\r\nSubject: pipelined\r\n\r\nhello\r\n")
    );
}

#[tokio::test]
async fn sequencing_syntax_and_unknown_commands() {
    let relay = common::start("{}").await;
    let mut c = Client::connect(relay.relay).await;
    c.cmd("MAIL FROM:<a@sender.test>", "503 5.5.1").await;
    c.cmd("EHLO", "501 5.5.4").await;
    c.cmd("EHLO client.test", "250 ").await;
    c.cmd("RCPT TO:<b@foreign.test>", "503 5.5.1").await;
    c.cmd("DATA", "503 5.5.1").await;
    c.cmd("MAIL FROM:a@sender.test", "501 5.5.4").await;
    c.cmd("MAIL FROM:<a@sender.test> FOO=BAR", "555 5.5.4")
        .await;
    c.cmd("MAIL FROM:<a@sender.test>", "250").await;
    c.cmd("MAIL FROM:<a@sender.test>", "503 5.5.1").await;
    c.cmd("DATA", "554 5.5.1").await;
    c.cmd("XYZZY", "500 5.5.2").await;
    c.cmd("VRFY postmaster", "252 2.5.2").await;
    c.cmd("HELP", "214 2.0.0").await;
    c.cmd("NOOP", "250 2.0.0").await;
    c.cmd("RSET", "250 2.0.0").await;
    c.cmd("RCPT TO:<b@foreign.test>", "503 5.5.1").await;
    c.cmd("QUIT", "221 2.0.0").await;
    assert!(c.closed().await);
}

#[tokio::test]
async fn untrusted_client_is_denied_relay_but_reaches_local_domains() {
    let relay = common::start("{}").await;
    let mut c = Client::connect_from(relay.relay, "127.0.0.2").await;
    c.cmd("EHLO client.test", "250 ").await;
    c.cmd("MAIL FROM:<a@sender.test>", "250").await;
    let denied = c.cmd("RCPT TO:<b@foreign.test>", "554 5.7.1").await;
    assert!(denied.contains("Relay access denied"), "{denied}");
    c.cmd("RCPT TO:<b@local.test>", "250 2.1.5").await;
    c.cmd("RCPT TO:<b@partner.test>", "250 2.1.5").await;
    c.cmd("DATA", "354").await;
    c.send(b"Subject: inbound\r\n\r\nhi\r\n.\r\n").await;
    c.expect("250 2.0.0").await;
    let spool = relay.stop_and_list().await;
    let rcpts: Vec<String> = spool[0]
        .0
        .envelope
        .recipients
        .iter()
        .map(|r| r.address.to_string())
        .collect();
    assert_eq!(rcpts, ["b@local.test", "b@partner.test"]);
}

#[tokio::test]
async fn submission_requires_auth_and_auth_requires_tls() {
    let relay = common::start("{}").await;
    let mut c = Client::connect(relay.submission).await;
    let ehlo = c.cmd("EHLO client.test", "250 ").await;
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    c.cmd("MAIL FROM:<alice@local.test>", "530 5.7.0").await;
    c.cmd(
        &format!("AUTH PLAIN {}", plain("alice", common::PASSWORD)),
        "538 5.7.11",
    )
    .await;
    c.cmd("AUTH LOGIN", "538 5.7.11").await;
}

#[tokio::test]
async fn a_removed_user_is_logged_out_at_the_next_command_after_the_policy_cap() {
    let relay = common::start("{sessionPolicyMaxAge: 1s}").await;
    let mut c = alice_over_tls(relay.submission, &relay.ca_pem).await;
    let policy = relay.dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        common::policy_yaml().replace("name: alice", "name: bob"),
    )
    .unwrap();
    let running = relay.running.as_ref().unwrap();
    running.reload();
    for _ in 0..100 {
        if running.metrics.policy_reloads.get(ReloadResult::Applied) >= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let started = std::time::Instant::now();
    loop {
        c.send(b"NOOP\r\n").await;
        let reply = c.reply().await;
        if reply.starts_with("421 4.7.0") {
            break;
        }
        assert!(reply.starts_with("250"), "{reply}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "alice's session outlived her removal by 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(c.closed().await);
}

fn plain(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A session from 127.0.0.2 to `addr`, over STARTTLS, authenticated as alice.
async fn alice_over_tls(addr: std::net::SocketAddr, ca_pem: &str) -> Client {
    let mut c = Client::connect_from(addr, "127.0.0.2").await;
    c.cmd("EHLO client.test", "250 ").await;
    let mut c = start_tls(c, ca_pem).await;
    c.cmd("EHLO client.test", "250 ").await;
    c.cmd(
        &format!("AUTH PLAIN {}", plain("alice", common::PASSWORD)),
        "235 2.7.0",
    )
    .await;
    c
}

async fn start_tls(mut c: Client, ca_pem: &str) -> Client {
    c.cmd("STARTTLS", "220 2.0.0").await;
    tls_handshake(c, ca_pem).await
}

/// The client side of a TLS handshake, trusting only the test's certificate.
pub async fn tls_handshake(c: Client, ca_pem: &str) -> Client {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = c.io.into_inner();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    Client::over(Box::new(tls))
}

#[tokio::test]
async fn auth_plain_and_login_over_starttls_then_relay_with_sender_rights() {
    let relay = common::start("{authFailureDelay: 10ms}").await;
    let mut c = Client::connect_from(relay.submission, "127.0.0.2").await;
    c.cmd("EHLO client.test", "250 ").await;
    let mut c = start_tls(c, &relay.ca_pem).await;
    let ehlo = c.cmd("EHLO client.test", "250 ").await;
    assert!(
        ehlo.contains("AUTH PLAIN LOGIN") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    c.cmd(
        &format!("AUTH PLAIN {}", plain("alice", "wrong")),
        "535 5.7.8",
    )
    .await;
    c.cmd("AUTH LOGIN", "334 VXNlcm5hbWU6").await;
    c.cmd(&b64("alice"), "334 UGFzc3dvcmQ6").await;
    c.cmd(&b64(common::PASSWORD), "235 2.7.0").await;
    c.cmd("MAIL FROM:<mallory@local.test>", "553 5.7.1").await;
    c.cmd("MAIL FROM:<alice@local.test>", "250").await;
    c.cmd("RCPT TO:<someone@foreign.test>", "250 2.1.5").await;
    c.cmd("DATA", "354").await;
    c.send(b"Subject: authenticated\r\n\r\nhi\r\n.\r\n").await;
    c.expect("250 2.0.0").await;

    // AUTH works on the relay port too, once under TLS.
    alice_over_tls(relay.relay, &relay.ca_pem).await;
    let spool = relay.stop_and_list().await;
    let text = String::from_utf8_lossy(&spool[0].1).into_owned();
    assert_eq!(
        spool[0].0.envelope.authenticated_user.as_deref(),
        Some("alice")
    );
    assert!(
        text.contains("(authenticated as alice)") && text.contains("with ESMTPSA id"),
        "{text}"
    );
    assert!(text.contains("(using TLSv1.3 with cipher"), "{text}");
}

#[tokio::test]
async fn commands_pipelined_after_starttls_are_discarded() {
    let relay = common::start("{}").await;
    let mut c = Client::connect_from(relay.relay, "127.0.0.2").await;
    c.cmd("EHLO client.test", "250 ").await;
    c.send(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n")
        .await;
    c.expect("220 2.0.0").await;
    let mut c = tls_handshake(c, &relay.ca_pem).await;
    // Had the injected MAIL been acted upon inside TLS, its 503 would answer this EHLO.
    c.cmd("EHLO client.test", "250 ").await;
    c.cmd("MAIL FROM:<a@sender.test>", "250 2.1.0").await;
}

#[tokio::test]
async fn bdat_chunks_pipelined_in_one_write_are_queued_intact() {
    let relay = common::start("{}").await;
    let mut c = Client::connect(relay.relay).await;
    let ehlo = c.cmd("EHLO client.test", "250 ").await;
    assert!(ehlo.contains("CHUNKING"), "{ehlo}");
    let (first, last) = (
        "Subject: chunked\r\n\r\nbinary-safe",
        " body\r\n.not stuffed\r\n",
    );
    let script = format!(
        "MAIL FROM:<a@sender.test> BODY=8BITMIME\r\nRCPT TO:<b@foreign.test>\r\nBDAT {}\r\n{first}BDAT {} LAST\r\n{last}QUIT\r\n",
        first.len(),
        last.len()
    );
    c.send(script.as_bytes()).await;
    c.expect("250 2.1.0").await;
    c.expect("250 2.1.5").await;
    c.expect(&format!("250 2.0.0 Ok: {} octets received", first.len()))
        .await;
    c.expect("250 2.0.0 Ok: queued as").await;
    c.expect("221 2.0.0").await;
    let spool = relay.stop_and_list().await;
    assert!(
        spool[0]
            .1
            .ends_with(format!("\r\n{first}{last}").as_bytes())
    );
}

#[tokio::test]
async fn failed_auth_slows_down_the_next_attempt_and_counts_as_an_error() {
    let relay = common::start("{authFailureDelay: 300ms, maxErrors: 3}").await;
    let c = Client::connect(relay.submission).await;
    let mut c = start_tls(c, &relay.ca_pem).await;
    c.cmd("EHLO client.test", "250 ").await;
    let wrong = format!("AUTH PLAIN {}", plain("alice", "wrong"));
    c.cmd(&wrong, "535 5.7.8").await;
    let started = std::time::Instant::now();
    c.cmd(&wrong, "535 5.7.8").await;
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    let started = std::time::Instant::now();
    c.cmd(&wrong, "421 4.7.0").await;
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    assert!(c.closed().await);
}

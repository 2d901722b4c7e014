//! Local delivery against real peers: Maildir in a temporary directory, and webhooks
//! against an HTTP(S) server on loopback written here, so that the request is checked
//! byte by byte (signature included) and the answers can misbehave on purpose.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sluice::delivery::Outcome;
use sluice::delivery::local::{WebhookTarget, deliver_maildir, deliver_webhook, sign};
use sluice::delivery::outcome::Handoff;
use sluice::envelope::{Envelope, QueueId};
use sluice::smtp::address::{MailParams, Mailbox, Recipient};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const MESSAGE: &[u8] = b"From: a@src.example\r\nSubject: hi\r\n\r\nbody line\r\n.dot\r\n";

fn recipient(address: &str) -> Recipient {
    let (local, domain) = address.rsplit_once('@').expect("an address");
    Recipient {
        address: Mailbox::new(local, domain),
        notify: None,
        orcpt: None,
    }
}

fn envelope(sender: Option<&str>, rcpts: &[&str]) -> (Envelope, Vec<Recipient>) {
    let recipients: Vec<Recipient> = rcpts.iter().map(|r| recipient(r)).collect();
    let reverse_path = sender.map(|s| recipient(s).address);
    let envelope = Envelope {
        id: QueueId::generate(),
        reverse_path,
        params: MailParams::default(),
        recipients: recipients.clone(),
        received_at_ms: 1_700_000_000_123,
        client_ip: "192.0.2.7".parse().expect("an address"),
        helo: "client.example".into(),
        authenticated_user: Some("alice".into()),
        sender_trust: sluice::envelope::SenderTrust::Authenticated,
        attempts: 0,
        last_error: None,
        delay_warned_at_ms: None,
        trace: None,
    };
    (envelope, recipients)
}

fn files_in(dir: &Path) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.expect("an entry").path()).collect(),
        Err(_) => Vec::new(),
    }
}

// ---- Maildir ----

#[tokio::test]
async fn maildir_delivers_into_new_with_trace_headers() {
    let root = tempfile::tempdir().unwrap();
    let (env, rcpts) = envelope(Some("alice@src.example"), &["Bob@dom.example"]);
    let outcomes = deliver_maildir(root.path(), &env, &rcpts, MESSAGE).await;
    assert_eq!(outcomes.len(), 1);
    let Outcome::Delivered {
        remote_mta, reply, ..
    } = &outcomes[0]
    else {
        panic!("not delivered: {outcomes:?}");
    };
    assert_eq!(remote_mta, &None);
    let mailbox = root.path().join("bob");
    let new = files_in(&mailbox.join("new"));
    assert_eq!(new.len(), 1);
    assert_eq!(reply, &format!("delivered to maildir {}", new[0].display()));
    let mut expected =
        b"Return-Path: <alice@src.example>\r\nDelivered-To: Bob@dom.example\r\n".to_vec();
    expected.extend_from_slice(MESSAGE);
    assert_eq!(std::fs::read(&new[0]).unwrap(), expected);
    assert!(files_in(&mailbox.join("tmp")).is_empty());
    assert!(mailbox.join("cur").is_dir());
}

#[tokio::test]
async fn maildir_gives_each_recipient_a_mailbox_and_each_delivery_a_file() {
    let root = tempfile::tempdir().unwrap();
    let (env, rcpts) = envelope(None, &["bob@d.example", "carol@d.example"]);
    let outcomes = deliver_maildir(root.path(), &env, &rcpts, MESSAGE).await;
    assert!(outcomes.iter().all(Outcome::is_delivered), "{outcomes:?}");
    deliver_maildir(root.path(), &env, &rcpts[..1], MESSAGE).await;
    assert_eq!(files_in(&root.path().join("bob/new")).len(), 2);
    let carol = files_in(&root.path().join("carol/new"));
    assert_eq!(carol.len(), 1);
    let content = std::fs::read(&carol[0]).unwrap();
    assert!(content.starts_with(b"Return-Path: <>\r\nDelivered-To: carol@d.example\r\n"));
}

#[tokio::test]
async fn maildir_refuses_local_parts_that_escape_the_root() {
    let parent = tempfile::tempdir().unwrap();
    let root = parent.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let bad = [
        "../evil@d.example",
        ".hidden@d.example",
        "a/b@d.example",
        "nul\0@d.example",
    ];
    let mut all: Vec<&str> = bad.to_vec();
    all.push("ok@d.example");
    let (env, rcpts) = envelope(Some("a@s.example"), &all);
    let outcomes = deliver_maildir(&root, &env, &rcpts, MESSAGE).await;
    for outcome in &outcomes[..bad.len()] {
        let Outcome::Failed { status, .. } = outcome else {
            panic!("not failed: {outcome:?}");
        };
        assert_eq!(status, "5.1.3");
    }
    assert!(outcomes[bad.len()].is_delivered());
    assert_eq!(files_in(parent.path()), vec![root.clone()]);
    assert_eq!(files_in(&root), vec![root.join("ok")]);
}

#[tokio::test]
async fn maildir_defers_when_the_root_is_unusable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let (env, rcpts) = envelope(Some("a@s.example"), &["bob@d.example"]);
    for root in [
        file.join("maildirs"),
        dir.path().join("missing"),
        file.clone(),
    ] {
        let outcomes = deliver_maildir(&root, &env, &rcpts, MESSAGE).await;
        let Outcome::Deferred { reply, .. } = &outcomes[0] else {
            panic!("not deferred: {outcomes:?}");
        };
        assert!(reply.contains(&root.display().to_string()), "{reply}");
    }
    assert!(!dir.path().join("missing").exists());
}

// ---- Webhook ----

/// What the test server saw.
struct Request {
    head: String,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads one request (head, then Content-Length bytes), answers `response` and, if
/// `hold`, keeps the connection open for a while instead of closing.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    response: &[u8],
    hold: bool,
) -> Request {
    let mut buf = Vec::new();
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.expect("a request");
        assert!(n > 0, "client closed before the end of the head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..end].to_vec()).expect("an ASCII head");
    let mut request = Request {
        head,
        body: buf[end..].to_vec(),
    };
    let length: usize = request.header("content-length").unwrap().parse().unwrap();
    while request.body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.expect("the body");
        assert!(n > 0, "client closed before the end of the body");
        request.body.extend_from_slice(&chunk[..n]);
    }
    // The client may hang up mid-answer (an oversized head): not the server's failure.
    let _ = stream.write_all(response).await;
    let _ = stream.flush().await;
    if hold {
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let _ = stream.shutdown().await;
    request
}

/// A one-connection plain HTTP server; returns its port and what it received.
async fn serve(response: &'static [u8], hold: bool) -> (u16, JoinHandle<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        exchange(stream, response, hold).await
    });
    (port, task)
}

fn target(url: String, secret: Option<&[u8]>) -> WebhookTarget {
    let mut target = WebhookTarget::new(url, secret.map(<[u8]>::to_vec), empty_roots());
    target.timeout = Duration::from_secs(5);
    target
}

async fn post(url: String, secret: Option<&[u8]>) -> Vec<Outcome> {
    let (env, rcpts) = envelope(
        Some("alice@src.example"),
        &["bob@d.example", "carol@d.example"],
    );
    deliver_webhook(&target(url, secret), &env, &rcpts, MESSAGE).await
}

#[tokio::test]
async fn webhook_posts_the_message_with_a_signed_envelope() {
    let (port, server) = serve(
        b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok",
        false,
    )
    .await;
    let (env, rcpts) = envelope(
        Some("alice@src.example"),
        &["bob@d.example", "carol@d.example"],
    );
    let url = format!("http://127.0.0.1:{port}/hook?k=v");
    let outcomes = deliver_webhook(&target(url, Some(b"s3cret")), &env, &rcpts, MESSAGE).await;
    let expected = Outcome::Delivered {
        remote_mta: Some("127.0.0.1".into()),
        reply: "HTTP 202 Accepted".into(),
        handoff: Handoff::Final,
    };
    assert_eq!(outcomes, vec![expected.clone(), expected]);

    let request = server.await.unwrap();
    assert!(
        request.head.starts_with("POST /hook?k=v HTTP/1.1\r\n"),
        "{}",
        request.head
    );
    assert_eq!(
        request.header("host"),
        Some(format!("127.0.0.1:{port}").as_str())
    );
    assert_eq!(request.header("content-type"), Some("message/rfc822"));
    assert_eq!(request.body, MESSAGE);

    let b64 = base64::engine::general_purpose::STANDARD;
    let json = b64
        .decode(request.header("x-sluice-envelope").unwrap())
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(
        value,
        serde_json::json!({
            "queueId": env.id.as_str(),
            "sender": "alice@src.example",
            "recipients": ["bob@d.example", "carol@d.example"],
            "receivedAt": "2023-11-14T22:13:20.123Z",
            "clientIp": "192.0.2.7",
            "helo": "client.example",
            "authenticatedUser": "alice",
        })
    );

    let signature = request.header("x-sluice-signature").unwrap();
    let (t, v1) = signature.split_once(",v1=").unwrap();
    let t: u64 = t.strip_prefix("t=").unwrap().parse().unwrap();
    assert_eq!(signature, sign(b"s3cret", t, &json, &request.body));
    // The documented construction, computed here without the crate.
    let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
    let body_hash: String = Sha256::digest(&request.body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    mac.update(format!("{t}.{body_hash}.").as_bytes());
    mac.update(&json);
    let mine: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(v1, mine);
}

#[tokio::test]
async fn webhook_without_a_secret_sends_no_signature() {
    let (port, server) = serve(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", false).await;
    let outcomes = post(format!("http://127.0.0.1:{port}"), None).await;
    assert!(outcomes.iter().all(Outcome::is_delivered), "{outcomes:?}");
    let request = server.await.unwrap();
    assert!(request.head.starts_with("POST / HTTP/1.1\r\n"));
    assert_eq!(request.header("x-sluice-signature"), None);
}

/// Status codes onto outcomes, with responses that are odd but legal.
#[tokio::test]
async fn webhook_statuses() {
    let cases: [(&'static [u8], &str, &str); 6] = [
        (
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
            "deferred",
            "HTTP 500 Internal Server Error",
        ),
        (
            b"HTTP/1.1 503 Unavailable\r\n\r\n",
            "deferred",
            "HTTP 503 Unavailable",
        ),
        (
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found",
            "failed",
            "HTTP 404 Not Found",
        ),
        (
            b"HTTP/1.1 429 Too Many Requests\r\n\r\n",
            "deferred",
            "HTTP 429 Too Many Requests",
        ),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
            "delivered",
            "HTTP 200 OK",
        ),
        (b"HTTP/1.0 204\n\n", "delivered", "HTTP 204"),
    ];
    for (response, kind, reply) in cases {
        let (port, server) = serve(response, false).await;
        let outcomes = post(format!("http://127.0.0.1:{port}/"), None).await;
        let got = match &outcomes[0] {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Deferred { .. } => "deferred",
            Outcome::Failed { status, .. } => {
                assert_eq!(status, "5.3.0");
                "failed"
            }
        };
        assert_eq!((got, outcomes[0].reply()), (kind, reply));
        server.await.unwrap();
    }
}

/// A chunked body on a connection the server keeps open: the status decides, and the
/// end of the chunked body ends the exchange without waiting for the server to close.
#[tokio::test]
async fn webhook_reads_only_what_it_needs_of_a_chunked_body() {
    let response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let (port, server) = serve(response, true).await;
    let started = Instant::now();
    let outcomes = post(format!("http://127.0.0.1:{port}/"), None).await;
    assert!(outcomes[0].is_delivered(), "{outcomes:?}");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    server.abort();
}

/// Asserts a deferral (for every recipient) whose reply mentions `why`.
fn assert_deferred(outcomes: &[Outcome], why: &str) {
    for outcome in outcomes {
        let deferred = matches!(outcome, Outcome::Deferred { reply, .. } if reply.contains(why));
        assert!(deferred, "expected a deferral for {why:?}: {outcome:?}");
    }
}

#[tokio::test]
async fn webhook_defers_when_the_server_stays_silent() {
    let (port, server) = serve(b"", true).await;
    let (env, rcpts) = envelope(None, &["bob@d.example"]);
    let mut silent = target(format!("http://127.0.0.1:{port}/"), None);
    silent.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let outcomes = deliver_webhook(&silent, &env, &rcpts, MESSAGE).await;
    assert_deferred(&outcomes, "no response within 300ms");
    assert!(started.elapsed() < Duration::from_secs(2));
    server.abort();
}

#[tokio::test]
async fn webhook_defers_on_garbage_and_refusal() {
    let padding = b"X-Pad: aaaaaaaa\r\n".repeat(2000);
    let huge = [b"HTTP/1.1 200 OK\r\n".as_slice(), &padding].concat();
    let huge: &'static [u8] = Box::leak(huge.into_boxed_slice());
    // hyper's words since the client is reqwest's; the variant is the same.
    let cases: [(&'static [u8], &str); 4] = [
        (
            b"hello\r\n\r\n",
            "unusable HTTP response: invalid HTTP version",
        ),
        (
            b"",
            "unusable HTTP response: connection closed before message completed",
        ),
        (
            b"HTTP/1.1 2",
            "unusable HTTP response: connection closed before message completed",
        ),
        (huge, "unusable HTTP response: message head is too large"),
    ];
    for (response, why) in cases {
        let (port, server) = serve(response, false).await;
        assert_deferred(&post(format!("http://127.0.0.1:{port}/"), None).await, why);
        server.await.unwrap();
    }

    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let urls = [
        (
            format!("http://127.0.0.1:{port}/"),
            "cannot connect to 127.0.0.1",
        ),
        ("ftp://h/".into(), "the scheme must be http or https"),
        (
            "http://u:p@h/".into(),
            "credentials in the URL are not supported",
        ),
    ];
    for (url, why) in urls {
        assert_deferred(&post(url, None).await, why);
    }
}

// ---- Webhook over TLS ----

/// A CA and a certificate for `localhost` signed by it.
fn pki() -> (rustls::RootCertStore, tokio_rustls::TlsAcceptor) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(leaf_key.serialize_der()).into();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    (roots, tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn serve_tls(acceptor: tokio_rustls::TlsAcceptor) -> (u16, JoinHandle<Option<Request>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.ok()?;
        Some(
            exchange(
                tls,
                b"HTTP/1.1 201 Created\r\nConnection: close\r\n\r\n",
                false,
            )
            .await,
        )
    });
    (port, task)
}

#[tokio::test]
async fn webhook_over_https_verifies_the_certificate() {
    let (roots, acceptor) = pki();
    let (env, rcpts) = envelope(Some("a@s.example"), &["bob@d.example"]);

    let (port, server) = serve_tls(acceptor.clone()).await;
    let mut trusted = target(format!("https://localhost:{port}/in"), Some(b"k"));
    trusted.roots = Arc::new(roots);
    let outcomes = deliver_webhook(&trusted, &env, &rcpts, MESSAGE).await;
    let expected = Outcome::Delivered {
        remote_mta: Some("localhost".into()),
        reply: "HTTP 201 Created".into(),
        handoff: Handoff::Final,
    };
    assert_eq!(outcomes, vec![expected]);
    assert_eq!(server.await.unwrap().expect("a TLS request").body, MESSAGE);

    let (port, server) = serve_tls(acceptor).await;
    let untrusted = target(format!("https://localhost:{port}/in"), None);
    let outcomes = deliver_webhook(&untrusted, &env, &rcpts, MESSAGE).await;
    assert_deferred(&outcomes, "TLS with localhost failed");
    assert!(server.await.unwrap().is_none());
}

fn empty_roots() -> Arc<rustls::RootCertStore> {
    Arc::new(rustls::RootCertStore::empty())
}

/// A keep-alive HTTPS receiver: answers 200 to every request on every connection and
/// counts the TCP connections it accepted.
async fn serve_tls_keepalive(
    acceptor: tokio_rustls::TlsAcceptor,
) -> (
    u16,
    Arc<std::sync::atomic::AtomicUsize>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (connections, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (c, r) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let (acceptor, r) = (acceptor.clone(), r.clone());
            tokio::spawn(async move {
                let mut tls = acceptor.accept(tcp).await.ok()?;
                let mut buf = Vec::new();
                loop {
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        let n = tls.read(&mut chunk).await.ok()?;
                        if n == 0 {
                            return None;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < end + length {
                        let mut chunk = [0u8; 4096];
                        let n = tls.read(&mut chunk).await.ok()?;
                        if n == 0 {
                            return None;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    buf.drain(..end + length);
                    r.fetch_add(1, Ordering::SeqCst);
                    tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await
                        .ok()?;
                }
                #[allow(unreachable_code)]
                Some(())
            });
        }
    });
    (port, connections, requests)
}

/// Messages to the same receiver share pooled connections: ten deliveries, one after
/// the other, over fewer TLS connections than messages.
#[tokio::test]
async fn webhook_reuses_connections_across_messages() {
    use std::sync::atomic::Ordering;
    let (roots, acceptor) = pki();
    let (port, connections, requests) = serve_tls_keepalive(acceptor).await;
    let mut hook = target(format!("https://localhost:{port}/in"), Some(b"k"));
    hook.roots = Arc::new(roots);
    let messages = 10;
    for _ in 0..messages {
        let (env, rcpts) = envelope(Some("a@s.example"), &["bob@d.example"]);
        let outcomes = deliver_webhook(&hook, &env, &rcpts, MESSAGE).await;
        assert!(outcomes.iter().all(Outcome::is_delivered), "{outcomes:?}");
    }
    assert_eq!(requests.load(Ordering::SeqCst), messages);
    let opened = connections.load(Ordering::SeqCst);
    assert!(
        opened < messages,
        "{opened} connections for {messages} messages"
    );
    assert_eq!(opened, 1, "sequential messages fit one connection");
}

//! The PROXY protocol through the real binary: a `sluice standalone` process whose
//! listeners expect a header from a load balancer on 127.0.0.1, and a raw TCP client
//! playing the balancer. The header's address must stand for the client everywhere
//! (trusted networks, per-IP limits, the `Received:` header), nothing the client sends
//! behind the header may be lost (pipelined commands, a TLS ClientHello), and anything
//! else (an untrusted peer, a missing, malformed, oversized or slow header) must be
//! closed without a greeting.

mod common;

use base64::Engine;
use common::smtp::{Client, REPLY_TIMEOUT};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// `proxied` trusts the balancer on 127.0.0.1; `foreign_proxy` only one at 192.0.2.1, so
/// 127.0.0.1 is not trusted there; `direct` speaks plain SMTP.
fn config(limits: &str) -> String {
    format!(
        r#"hostname: relay.test
listeners:
  - {{ name: proxied, address: "127.0.0.1:0", kind: relay, proxyProtocol: true, trustedProxies: ["127.0.0.1/32"], proxyHeaderTimeout: 1s }}
  - {{ name: foreign_proxy, address: "127.0.0.1:0", kind: relay, proxyProtocol: true, trustedProxies: ["192.0.2.1/32"] }}
  - {{ name: direct, address: "127.0.0.1:0", kind: relay }}
  - {{ name: submissions, address: "127.0.0.1:0", kind: submissions, proxyProtocol: true, trustedProxies: ["127.0.0.1"] }}
tls: {{ certFile: cert.pem, keyFile: key.pem }}
spool: spool
admin: "127.0.0.1:0"
portsFile: ports.json
policies: [policy.yaml]
limits: {limits}
delivery: {{ enabled: false }}
"#
    )
}

/// The tests' policy with 10.9.8.0/24 trusted besides 127.0.0.1: the balancer's own
/// address is trusted, so only the header can make a client untrusted.
fn policy() -> String {
    let policy = common::policy_yaml();
    let trusted = r#"trustedNetworks: ["127.0.0.1/32", "::1/128"]"#;
    assert!(policy.contains(trusted));
    policy.replace(
        trusted,
        r#"trustedNetworks: ["10.9.8.0/24", "127.0.0.1/32"]"#,
    )
}

/// A `sluice standalone` child process, SIGKILLed if the test fails before stopping it.
struct Sluice {
    child: Option<Child>,
    dir: TempDir,
    ports: HashMap<String, SocketAddr>,
    ca_pem: String,
}

impl Sluice {
    async fn start(limits: &str) -> Sluice {
        let (dir, config_path, ca_pem) = common::prepare_with(&config(limits), &policy());
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["standalone", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sluice");
        let mut sluice = Sluice {
            child: Some(child),
            dir,
            ports: HashMap::new(),
            ca_pem,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while sluice.ports.len() < 5 {
            let text = std::fs::read_to_string(sluice.dir.path().join("ports.json"));
            if let Some(ports) = text.ok().and_then(|t| serde_json::from_str(&t).ok()) {
                sluice.ports = ports;
            }
            let exited = sluice.child.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "sluice did not bind its listeners ({exited:?}):\n{}",
                sluice.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sluice
    }

    fn addr(&self, listener: &str) -> SocketAddr {
        self.ports[listener]
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// `sluice_connections_refused_total` for one reason.
    async fn refused(&self, reason: &str) -> u64 {
        let (_, text) = common::roles::http_get(self.addr("admin"), "/metrics")
            .await
            .expect("metrics");
        let series = format!("sluice_connections_refused_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&series))
            .map_or(0, |n| n.parse().unwrap())
    }

    /// SIGTERM, wait for the exit, and return what was queued.
    async fn stop_and_list(mut self) -> Vec<(sluice::queue::QueueEntry, Vec<u8>)> {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "sluice did not exit on SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        common::spool_contents(&self.dir.path().join("spool")).await
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.extend_from_slice(&[command, family]);
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn v2_tcp4(source: [u8; 4], port: u16) -> Vec<u8> {
    let payload = [
        &source[..],
        &[127, 0, 0, 1],
        &port.to_be_bytes(),
        &25u16.to_be_bytes(),
    ];
    v2(0x21, 0x11, &payload.concat())
}

/// Connects to `addr`, writes `first` (the header, and what else the test pipelines
/// behind it) in one write, and expects the greeting.
async fn proxied(addr: SocketAddr, first: &[u8]) -> Client {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(first).await.unwrap();
    let mut c = Client::over(Box::new(tcp));
    c.expect("220 ").await;
    c
}

/// Waits for the server to close `tcp` and checks that it wrote nothing first; returns
/// how long that took.
async fn closed_without_a_word(mut tcp: TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 512];
    let read = tokio::time::timeout(REPLY_TIMEOUT, tcp.read(&mut buf))
        .await
        .expect("the connection is still open");
    if let Ok(n @ 1..) = read {
        panic!("the server wrote {:?}", String::from_utf8_lossy(&buf[..n]));
    }
    started.elapsed()
}

/// One message to the relay domain, its subject naming the case.
async fn send_message(c: &mut Client, case: &str) {
    c.cmd("EHLO client.test", "250 ").await;
    c.cmd("MAIL FROM:<a@sender.test>", "250 2.1.0").await;
    c.cmd("RCPT TO:<b@partner.test>", "250 2.1.5").await;
    c.cmd("DATA", "354").await;
    c.send(format!("Subject: {case}\r\n\r\nhi\r\n.\r\n").as_bytes())
        .await;
    c.expect("250 2.0.0").await;
    c.cmd("QUIT", "221").await;
}

#[tokio::test]
async fn every_header_form_names_the_client_of_its_session() {
    let sluice = Sluice::start("{}").await;
    let addr = sluice.addr("proxied");
    let ipv6 = [
        "2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
        std::net::Ipv6Addr::LOCALHOST.octets(),
    ]
    .concat();
    let v2_tcp6 = v2(0x21, 0x21, &[&ipv6[..], &[0x30, 0x39, 0, 25]].concat());
    // An AWS-style TLV (VPC endpoint id) after the addresses is skipped.
    let tlv = [0xea, 0, 5, 1, b'v', b'p', b'c', b'e'];
    let ipv4 = [192, 0, 2, 9, 127, 0, 0, 1, 0x04, 0xd2, 0, 25];
    let v2_tlv = v2(0x21, 0x11, &[&ipv4[..], &tlv].concat());
    let cases: [(&str, Vec<u8>, &str); 7] = [
        (
            "v1-tcp4",
            b"PROXY TCP4 192.0.2.7 127.0.0.1 4242 25\r\n".to_vec(),
            "192.0.2.7",
        ),
        (
            "v1-tcp6",
            b"PROXY TCP6 2001:db8::8 ::1 4242 25\r\n".to_vec(),
            "2001:db8::8",
        ),
        ("v1-unknown", b"PROXY UNKNOWN\r\n".to_vec(), "127.0.0.1"),
        ("v2-tcp4", v2_tcp4([192, 0, 2, 8], 4242), "192.0.2.8"),
        ("v2-tcp6", v2_tcp6, "2001:db8::7"),
        ("v2-tlv", v2_tlv, "192.0.2.9"),
        ("v2-local", v2(0x20, 0x00, b""), "127.0.0.1"),
    ];
    for (case, header, _) in &cases {
        let mut c = proxied(addr, header).await;
        send_message(&mut c, case).await;
    }
    let queued = sluice.stop_and_list().await;
    assert_eq!(queued.len(), cases.len());
    for (case, _, client) in cases {
        let subject = format!("Subject: {case}\r\n");
        let (entry, body) = queued
            .iter()
            .find(|(_, body)| body.windows(subject.len()).any(|w| w == subject.as_bytes()))
            .unwrap_or_else(|| panic!("{case} was not queued"));
        assert_eq!(entry.envelope.client_ip.to_string(), client, "{case}");
        let received = format!("Received: from client.test ([{client}])");
        assert!(
            body.starts_with(received.as_bytes()),
            "{case}: {}",
            String::from_utf8_lossy(&body[..200.min(body.len())])
        );
    }
}

#[tokio::test]
async fn the_header_decides_trust_and_only_from_a_trusted_proxy() {
    let sluice = Sluice::start("{}").await;
    let header = b"PROXY TCP4 10.9.8.7 127.0.0.1 4242 25\r\n";
    // A trusted network named by a trusted proxy may relay anywhere without AUTH.
    let mut c = proxied(sluice.addr("proxied"), header).await;
    c.cmd("EHLO client.test", "250 ").await;
    c.cmd("MAIL FROM:<a@sender.test>", "250").await;
    c.cmd("RCPT TO:<b@foreign.test>", "250 2.1.5").await;
    c.cmd("QUIT", "221").await;
    // The balancer's own address is trusted, but the client it names is not.
    let outside = b"PROXY TCP4 198.51.100.7 127.0.0.1 4242 25\r\n";
    let mut c = proxied(sluice.addr("proxied"), outside).await;
    c.cmd("EHLO client.test", "250 ").await;
    c.cmd("MAIL FROM:<a@sender.test>", "250").await;
    c.cmd("RCPT TO:<b@foreign.test>", "554 5.7.1").await;
    c.cmd("QUIT", "221").await;
    // The same header from a peer that is not a trusted proxy: closed at once.
    let mut tcp = TcpStream::connect(sluice.addr("foreign_proxy"))
        .await
        .unwrap();
    tcp.write_all(header).await.unwrap();
    closed_without_a_word(tcp).await;
    assert_eq!(sluice.refused("proxy_untrusted").await, 1);
    // Without proxyProtocol the header is a bad command, and an untrusted client stays so.
    let mut c = Client::connect_from(sluice.addr("direct"), "127.0.0.2").await;
    c.cmd(
        std::str::from_utf8(&header[..header.len() - 2]).unwrap(),
        "500 5.5.2",
    )
    .await;
    c.cmd("EHLO client.test", "250 ").await;
    c.cmd("MAIL FROM:<a@sender.test>", "250").await;
    c.cmd("RCPT TO:<b@foreign.test>", "554 5.7.1").await;
    c.cmd("QUIT", "221").await;
}

#[tokio::test]
async fn connections_without_a_valid_header_are_closed_without_a_greeting() {
    let sluice = Sluice::start("{}").await;
    let addr = sluice.addr("proxied");
    let truncated = v2_tcp4([192, 0, 2, 7], 4242)[..20].to_vec();
    let mut oversized = v2(0x21, 0x11, b"");
    oversized[14..16].copy_from_slice(&1025u16.to_be_bytes());
    let invalid: [&[u8]; 4] = [
        b"EHLO client.test\r\n",
        b"PROXY TCP4 192.0.2.7 127.0.0.1 04242 25\r\n",
        &oversized,
        b"PROXY TCP4 192.0.2.7 127.0.0.1 4242 25\n",
    ];
    for first in invalid {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(first).await.unwrap();
        closed_without_a_word(tcp).await;
    }
    assert_eq!(sluice.refused("proxy_header_invalid").await, 4);
    // Half a header and then the end of the stream.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&truncated).await.unwrap();
    tcp.shutdown().await.unwrap();
    closed_without_a_word(tcp).await;
    assert_eq!(sluice.refused("proxy_header_incomplete").await, 1);
    // Half a header, or nothing at all, and silence: closed at proxyHeaderTimeout (1s).
    for first in [&truncated[..], b""] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(first).await.unwrap();
        let waited = closed_without_a_word(tcp).await;
        assert!(
            waited >= Duration::from_millis(900),
            "closed after {waited:?}"
        );
    }
    assert_eq!(sluice.refused("proxy_header_timeout").await, 2);
    // The listener still serves balancers that send a header.
    let mut c = proxied(addr, b"PROXY UNKNOWN\r\n").await;
    c.cmd("QUIT", "221").await;
}

#[tokio::test]
async fn the_per_ip_limit_counts_the_address_in_the_header() {
    let sluice = Sluice::start("{maxConnectionsPerIp: 2}").await;
    let addr = sluice.addr("proxied");
    let a = b"PROXY TCP4 192.0.2.10 127.0.0.1 4242 25\r\n";
    let _first = proxied(addr, a).await;
    let _second = proxied(addr, a).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(a).await.unwrap();
    let mut third = Client::over(Box::new(tcp));
    third.expect("421 4.7.0").await;
    assert!(third.closed().await);
    // Another client behind the same balancer (all of them come from 127.0.0.1).
    let b = v2_tcp4([192, 0, 2, 11], 4242);
    let mut other = proxied(addr, &b).await;
    other.cmd("EHLO client.test", "250 ").await;
    assert_eq!(sluice.refused("max_per_ip").await, 1);
}

#[tokio::test]
async fn commands_pipelined_behind_the_header_are_not_lost() {
    let sluice = Sluice::start("{}").await;
    let addr = sluice.addr("proxied");
    let commands = b"EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<b@foreign.test>\r\n";
    for header in [
        b"PROXY TCP4 10.9.8.7 127.0.0.1 4242 25\r\n".to_vec(),
        v2_tcp4([10, 9, 8, 7], 4242),
    ] {
        let mut c = proxied(addr, &[&header[..], commands].concat()).await;
        c.expect("250 ").await;
        c.expect("250 2.1.0").await;
        c.expect("250 2.1.5").await;
        c.cmd("QUIT", "221").await;
    }
}

/// Holds every write until the first flush, then sends them and `prefix` in one write:
/// the header and the TLS ClientHello reach the server in one segment.
struct FirstFlight {
    tcp: TcpStream,
    pending: Vec<u8>,
    held: bool,
}

impl AsyncWrite for FirstFlight {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.held {
            self.pending.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        while !this.pending.is_empty() {
            let n = std::task::ready!(Pin::new(&mut this.tcp).poll_write(cx, &this.pending))?;
            this.pending.drain(..n);
        }
        this.held = false;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

impl AsyncRead for FirstFlight {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

#[tokio::test]
async fn implicit_tls_starts_after_the_header_and_records_the_client() {
    let sluice = Sluice::start("{}").await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(sluice.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(sluice.addr("submissions"))
        .await
        .unwrap();
    let first = FirstFlight {
        tcp,
        pending: v2_tcp4([192, 0, 2, 20], 4242),
        held: true,
    };
    let handshake = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), first);
    let tls = tokio::time::timeout(REPLY_TIMEOUT, handshake)
        .await
        .expect("TLS handshake timed out")
        .expect("TLS handshake behind the header");
    let mut c = Client::over(Box::new(tls));
    c.expect("220 ").await;
    c.cmd("EHLO client.test", "250 ").await;
    let plain =
        base64::engine::general_purpose::STANDARD.encode(format!("\0alice\0{}", common::PASSWORD));
    c.cmd(&format!("AUTH PLAIN {plain}"), "235").await;
    c.cmd("MAIL FROM:<alice@local.test>", "250").await;
    c.cmd("RCPT TO:<b@foreign.test>", "250").await;
    c.cmd("DATA", "354").await;
    c.send(b"Subject: over TLS\r\n\r\nhi\r\n.\r\n").await;
    c.expect("250 2.0.0").await;
    c.cmd("QUIT", "221").await;
    let queued = sluice.stop_and_list().await;
    assert_eq!(queued.len(), 1);
    let body = String::from_utf8_lossy(&queued[0].1);
    assert!(
        body.starts_with("Received: from client.test ([192.0.2.20])\r\n\t(using TLS"),
        "{body}"
    );
}

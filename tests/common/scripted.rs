//! A scripted SMTP server for testing the outbound client: a test accepts one connection
//! at a time on loopback and plays the server's side line by line (`expect` what the
//! client must send, `send` what the server answers), so every byte the client writes is
//! checked and every reply, delay or dropped connection is under the test's control.

use super::smtp::Stream;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Long enough for any step of a client, short enough that a hang fails the test.
pub const STEP: Duration = Duration::from_secs(10);

pub async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// A server certificate for `localhost` and the root store a client needs to trust it.
pub fn tls_pair() -> (TlsAcceptor, rustls::RootCertStore) {
    tls_pair_for(&["localhost"])
}

/// The same for a certificate whose subject alternative names are `names` (an IP address
/// becomes an iPAddress SAN, anything else a dNSName).
pub fn tls_pair_for(names: &[&str]) -> (TlsAcceptor, rustls::RootCertStore) {
    let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let cert = rcgen::generate_simple_self_signed(names).unwrap();
    let der = CertificateDer::from(cert.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    (TlsAcceptor::from(Arc::new(config)), roots)
}

/// The server's end of one connection.
pub struct Peer {
    io: BufReader<Box<dyn Stream>>,
}

impl Peer {
    pub async fn accept(listener: &TcpListener) -> Peer {
        let (tcp, _) = tokio::time::timeout(STEP, listener.accept())
            .await
            .expect("client connects")
            .unwrap();
        Peer {
            io: BufReader::new(Box::new(tcp)),
        }
    }

    /// Accepts a connection on a unix socket (LMTP to local software).
    pub async fn accept_unix(listener: &tokio::net::UnixListener) -> Peer {
        let (stream, _) = tokio::time::timeout(STEP, listener.accept())
            .await
            .expect("client connects")
            .unwrap();
        Peer {
            io: BufReader::new(Box::new(stream)),
        }
    }

    /// Accepts a connection that is TLS from the first byte (RFC 8314).
    pub async fn accept_tls(listener: &TcpListener, acceptor: &TlsAcceptor) -> Peer {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = tokio::time::timeout(STEP, acceptor.accept(tcp))
            .await
            .unwrap();
        Peer {
            io: BufReader::new(Box::new(tls.expect("TLS handshake"))),
        }
    }

    /// Sends reply lines; each `\n`-separated line goes out with CRLF.
    pub async fn send(&mut self, text: &str) {
        let mut bytes = String::new();
        for line in text.split('\n') {
            bytes.push_str(line);
            bytes.push_str("\r\n");
        }
        self.io.get_mut().write_all(bytes.as_bytes()).await.unwrap();
    }

    /// One line from the client without its CRLF; `None` when the client closed.
    pub async fn line(&mut self) -> Option<String> {
        let mut raw = Vec::new();
        let n = tokio::time::timeout(STEP, self.io.read_until(b'\n', &mut raw))
            .await
            .expect("client sends a line")
            .ok()?;
        if n == 0 {
            return None;
        }
        assert!(raw.ends_with(b"\r\n"), "line without CRLF: {raw:?}");
        raw.truncate(raw.len() - 2);
        Some(String::from_utf8(raw).expect("UTF-8 line"))
    }

    pub async fn expect(&mut self, want: &str) {
        assert_eq!(self.line().await.as_deref(), Some(want));
    }

    /// Greets, expects `EHLO client.test` (or `LHLO`) and announces `keywords`.
    pub async fn greet_and_ehlo(&mut self, verb: &str, keywords: &[&str]) {
        self.send("220 server.test ESMTP scripted").await;
        self.ehlo(verb, keywords).await;
    }

    pub async fn ehlo(&mut self, verb: &str, keywords: &[&str]) {
        self.expect(&format!("{verb} client.test")).await;
        let mut lines = vec!["server.test".to_string()];
        lines.extend(keywords.iter().map(|k| k.to_string()));
        let last = lines.len() - 1;
        let reply: Vec<String> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("250{}{l}", if i == last { ' ' } else { '-' }))
            .collect();
        self.send(&reply.join("\n")).await;
    }

    /// The content after a 354, exactly as sent (still dot-stuffed), without the final
    /// `.` CRLF.
    pub async fn data(&mut self) -> Vec<u8> {
        let mut content = Vec::new();
        loop {
            let mut raw = Vec::new();
            let n = tokio::time::timeout(STEP, self.io.read_until(b'\n', &mut raw))
                .await
                .expect("client sends content")
                .unwrap();
            assert!(n > 0, "client closed during DATA");
            if raw == b".\r\n" {
                return content;
            }
            content.extend_from_slice(&raw);
        }
    }

    /// Reads `n` raw octets.
    pub async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        tokio::time::timeout(STEP, self.io.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        buf
    }

    /// Answers STARTTLS with 220 and runs the server side of the handshake.
    pub async fn starttls(self, acceptor: &TlsAcceptor) -> Peer {
        let mut peer = self;
        peer.expect("STARTTLS").await;
        peer.send("220 2.0.0 Ready to start TLS").await;
        assert!(
            peer.io.buffer().is_empty(),
            "client pipelined after STARTTLS"
        );
        let inner = peer.io.into_inner();
        let tls = tokio::time::timeout(STEP, acceptor.accept(inner))
            .await
            .unwrap();
        Peer {
            io: BufReader::new(Box::new(tls.expect("TLS handshake"))),
        }
    }

    /// The server side of a handshake after the 220 to STARTTLS was sent; `None` when
    /// the client gave up on it (e.g. it could not verify the certificate).
    pub async fn starttls_after_reply(peer: Peer, acceptor: &TlsAcceptor) -> Option<Peer> {
        let inner = peer.io.into_inner();
        let tls = tokio::time::timeout(STEP, acceptor.accept(inner))
            .await
            .unwrap();
        Some(Peer {
            io: BufReader::new(Box::new(tls.ok()?)),
        })
    }

    /// Answers STARTTLS with 220, waits for the start of the ClientHello (so that the
    /// client has taken the 220 alone), then answers with bytes that are no TLS record and
    /// hangs up: a broken TLS stack or a middlebox the handshake cannot get past.
    pub async fn starttls_then_garbage(mut self) {
        self.expect("STARTTLS").await;
        self.send("220 2.0.0 Ready to start TLS").await;
        let record_header = self.read_exact(5).await;
        assert_eq!(record_header[0], 22, "a TLS handshake record");
        let stream = self.io.get_mut();
        let _ = stream.write_all(b"this is not a TLS record\r\n").await;
        let _ = stream.shutdown().await;
    }

    /// Expects QUIT, answers it, and checks that the client then closes.
    pub async fn quit(&mut self) {
        self.expect("QUIT").await;
        self.send("221 2.0.0 Bye").await;
        assert_eq!(self.line().await, None, "client closes after QUIT");
    }
}

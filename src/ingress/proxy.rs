//! The PROXY protocol on a listener (`proxyProtocol: true`): which peers may send the
//! header (`trustedProxies`), and reading it off a new connection within
//! `proxyHeaderTimeout`, before the greeting and before any TLS handshake, to learn the
//! client's address. A refused connection is closed without a byte written.
//!
//! The header is read without reading past its end: the socket is peeked, the parser
//! ([`super::proxy_header`]) says where the header ends, and exactly those bytes are
//! then read. What the client sent behind it in the same segment (pipelined commands, a
//! TLS ClientHello) stays in the socket for the session or the TLS acceptor.

use super::proxy_header::{HeaderParser, Invalid, MAX_HEADER, Parse, ProxyHeader};
use crate::telemetry::metrics::ConnectionRefusal;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A listener's PROXY protocol settings.
#[derive(Debug, Clone)]
pub struct ProxyProtocol {
    /// The balancers allowed to send a header; any other peer is refused.
    pub trusted: Vec<IpNet>,
    /// How long a trusted peer has to send the whole header.
    pub header_timeout: Duration,
}

/// Why a connection was closed before its session began.
#[derive(Debug, thiserror::Error)]
pub enum ProxyRefusal {
    #[error("peer is not in trustedProxies")]
    Untrusted,
    #[error("no complete PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("connection closed before the end of the PROXY header")]
    Closed,
    #[error("reading the PROXY header: {0}")]
    Io(#[source] std::io::Error),
    #[error(transparent)]
    Invalid(#[from] Invalid),
}

impl ProxyRefusal {
    /// The `reason` label of `sluice_connections_refused_total`.
    pub fn metric_label(&self) -> ConnectionRefusal {
        match self {
            ProxyRefusal::Untrusted => ConnectionRefusal::ProxyUntrusted,
            ProxyRefusal::Timeout(_) => ConnectionRefusal::ProxyHeaderTimeout,
            ProxyRefusal::Closed | ProxyRefusal::Io(_) => ConnectionRefusal::ProxyHeaderIncomplete,
            ProxyRefusal::Invalid(_) => ConnectionRefusal::ProxyHeaderInvalid,
        }
    }

    pub fn label(&self) -> &'static str {
        use crate::telemetry::metrics::Label;
        self.metric_label().as_str()
    }
}

impl ProxyProtocol {
    /// `peer` is canonical (an IPv4 client on a dual-stack socket as IPv4).
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&peer))
    }

    /// The address the session is for, read from a trusted peer: the one in the
    /// header, or `peer` itself when the header names none (`LOCAL`, `UNKNOWN`: the
    /// balancer's health checks).
    pub async fn client(
        &self,
        tcp: &mut TcpStream,
        peer: SocketAddr,
    ) -> Result<SocketAddr, ProxyRefusal> {
        let header = tokio::time::timeout(self.header_timeout, read_header(tcp))
            .await
            .map_err(|_| ProxyRefusal::Timeout(self.header_timeout))??;
        Ok(header.client().unwrap_or(peer))
    }
}

/// Peeks at what has arrived, lets the parser find the header's end, and reads exactly
/// the header's bytes. While the header is incomplete every byte peeked belongs to it,
/// so those are read (consumed) before peeking again: each round takes at least a byte,
/// and the parser refuses anything longer than [`MAX_HEADER`].
async fn read_header(tcp: &mut TcpStream) -> Result<ProxyHeader, ProxyRefusal> {
    let mut parser = HeaderParser::new();
    let mut scratch = [0u8; MAX_HEADER];
    loop {
        let room = parser.room();
        let n = tcp
            .peek(&mut scratch[..room])
            .await
            .map_err(ProxyRefusal::Io)?;
        if n == 0 {
            return Err(ProxyRefusal::Closed);
        }
        let (take, done) = match parser.feed(&scratch[..n]) {
            Parse::NeedMore => (n, None),
            Parse::Done { header, consumed } => (consumed, Some(header)),
            Parse::Invalid(why) => return Err(why.into()),
        };
        // Already in the socket's buffer: this read does not wait.
        tcp.read_exact(&mut scratch[..take])
            .await
            .map_err(ProxyRefusal::Io)?;
        if let Some(header) = done {
            return Ok(header);
        }
    }
}

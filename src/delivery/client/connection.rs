//! Opening a session with the next hop: connect, (implicit TLS,) greeting, EHLO,
//! STARTTLS and EHLO again, AUTH; then RSET between messages and QUIT at the end.

use super::auth::authenticate;
use super::error::ClientError;
use super::extensions::Extensions;
use super::tls::handshake;
use super::wire::{Io, Wire};
use super::{ClientConfig, TlsMode};
use crate::smtp::reply::Reply;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::net::{TcpStream, UnixStream};

/// QUIT is a courtesy: nothing is lost if the server never answers it, so do not let a
/// slow server hold a worker for the full command timeout.
const QUIT_WAIT: Duration = Duration::from_secs(10);

/// One open session, ready for a transaction.
pub struct Connection {
    pub(super) wire: Wire,
    pub(super) extensions: Extensions,
    pub(super) config: ClientConfig,
    encrypted: bool,
}

impl Connection {
    /// Connects over TCP; `server_name` is the host name the certificate must match and
    /// the name in [`Connection::remote`].
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        config: &ClientConfig,
    ) -> Result<Connection, ClientError> {
        let remote = format!("{server_name}[{}]:{}", addr.ip(), addr.port());
        let dial = || async {
            let tcp = within_connect_timeout(config, &remote, TcpStream::connect(addr)).await?;
            // Pipelined commands go out in one write anyway; small writes should not wait.
            let _ = tcp.set_nodelay(true);
            Ok(Box::new(tcp) as Box<dyn Io>)
        };
        Connection::open_or_fall_back(dial, server_name, &remote, config).await
    }

    /// Connects to a local LMTP (or SMTP) server on a unix socket. TLS modes apply as
    /// over TCP, with `localhost` as the server name.
    pub async fn connect_unix(
        path: &Path,
        config: &ClientConfig,
    ) -> Result<Connection, ClientError> {
        let remote = format!("unix:{}", path.display());
        let dial = || async {
            let stream = within_connect_timeout(config, &remote, UnixStream::connect(path)).await?;
            Ok(Box::new(stream) as Box<dyn Io>)
        };
        Connection::open_or_fall_back(dial, "localhost", &remote, config).await
    }

    /// Opens a session over a stream from `dial`. When opportunistic STARTTLS was offered
    /// but its handshake failed (a certificate that does not verify, a broken TLS stack, a
    /// middlebox), the session is unusable, so a second stream is dialled and the message
    /// goes in plaintext, as Postfix does for `smtp_tls_security_level = may`: deferring
    /// until expiry protects nothing that plaintext delivery to a server without STARTTLS
    /// would not expose anyway. Required and implicit TLS never fall back.
    async fn open_or_fall_back<F, Fut>(
        dial: F,
        server_name: &str,
        remote: &str,
        config: &ClientConfig,
    ) -> Result<Connection, ClientError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Box<dyn Io>, ClientError>>,
    {
        let first = Connection::open(dial().await?, server_name, remote.to_string(), config).await;
        match first {
            Err(e) if config.tls == TlsMode::Opportunistic && e.is_tls_handshake_failure() => {
                tracing::warn!(%remote, error = %e, "opportunistic TLS failed, delivering without TLS on this connection");
                config.tls_fallbacks.inc();
                let plaintext = ClientConfig {
                    tls: TlsMode::Disabled,
                    ..config.clone()
                };
                let io = dial().await?;
                Connection::open(io, server_name, remote.to_string(), &plaintext).await
            }
            other => other,
        }
    }

    async fn open(
        io: Box<dyn Io>,
        server_name: &str,
        remote: String,
        config: &ClientConfig,
    ) -> Result<Connection, ClientError> {
        let encrypted = config.tls == TlsMode::Implicit;
        let io = match encrypted {
            true => handshake(io, server_name, &remote, config, config.timeouts.other).await?,
            false => io,
        };
        let mut wire = Wire::new(io, remote);
        let greeting = wire.reply("greeting", config.timeouts.greeting).await?;
        if greeting.code != 220 {
            // RFC 5321 3.1: after a 554 greeting the client should QUIT; the caller
            // tries the next host.
            let _ = wire.exchange(b"QUIT\r\n", "QUIT", QUIT_WAIT).await;
            return Err(rejected(&wire, "greeting", greeting));
        }
        let extensions = hello(&mut wire, config).await?;
        let mut conn = Connection {
            wire,
            extensions,
            config: config.clone(),
            encrypted,
        };
        conn = conn.starttls(server_name).await?;
        authenticate(&mut conn.wire, &conn.extensions, conn.encrypted, config).await?;
        tracing::debug!(remote = %conn.wire.remote, encrypted = conn.encrypted, "session open");
        Ok(conn)
    }

    /// Upgrades to TLS when the mode asks for it, then says EHLO again: the extensions
    /// announced in plaintext may have been forged (RFC 3207 4.2).
    async fn starttls(mut self, server_name: &str) -> Result<Connection, ClientError> {
        let offered = self.extensions.starttls;
        match self.config.tls {
            _ if self.encrypted => return Ok(self),
            TlsMode::Disabled => return Ok(self),
            TlsMode::Opportunistic if !offered => return Ok(self),
            TlsMode::Required if !offered => {
                let remote = self.wire.remote.clone();
                return Err(ClientError::StarttlsNotOffered { remote });
            }
            _ => {}
        }
        let timeout = self.config.timeouts.other;
        let reply = self
            .wire
            .exchange(b"STARTTLS\r\n", "STARTTLS", timeout)
            .await?;
        if reply.code != 220 {
            if self.config.tls == TlsMode::Opportunistic {
                // Opportunistic: a server that cannot do TLS just now still gets mail.
                tracing::info!(remote = %self.wire.remote, reply = %reply.one_line(), "STARTTLS refused, continuing without TLS");
                return Ok(self);
            }
            return Err(rejected(&self.wire, "STARTTLS", reply));
        }
        let remote = self.wire.remote.clone();
        let io = self.wire.into_io("STARTTLS")?;
        let io = handshake(io, server_name, &remote, &self.config, timeout).await?;
        let mut wire = Wire::new(io, remote);
        let extensions = hello(&mut wire, &self.config).await?;
        Ok(Connection {
            wire,
            extensions,
            encrypted: true,
            config: self.config,
        })
    }

    /// `server_name[ip]:port` (or `unix:path`), for logs and the DSN's Remote-MTA.
    pub fn remote(&self) -> &str {
        &self.wire.remote
    }

    /// The extensions of the latest EHLO/LHLO (after STARTTLS when there was one).
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// True once the session runs over TLS.
    pub fn is_encrypted(&self) -> bool {
        self.encrypted
    }

    /// RSET (RFC 5321 4.1.1.5): aborts any transaction, so the connection can carry the
    /// next message.
    pub async fn reset(&mut self) -> Result<(), ClientError> {
        let timeout = self.config.timeouts.other;
        let reply = self.wire.exchange(b"RSET\r\n", "RSET", timeout).await?;
        if reply.code / 100 != 2 {
            return Err(rejected(&self.wire, "RSET", reply));
        }
        Ok(())
    }

    /// QUIT, waiting briefly for the reply; errors no longer matter here.
    pub async fn quit(mut self) {
        let wait = self.config.timeouts.other.min(QUIT_WAIT);
        let _ = self.wire.exchange(b"QUIT\r\n", "QUIT", wait).await;
        self.wire.shutdown().await;
    }
}

/// EHLO (or LHLO for LMTP), falling back to HELO when the server rejects EHLO with a
/// 5xx, as servers without ESMTP do (RFC 5321 4.1.4 — HELO then offers no extensions).
async fn hello(wire: &mut Wire, config: &ClientConfig) -> Result<Extensions, ClientError> {
    let timeout = config.timeouts.ehlo;
    let verb = if config.lmtp { "LHLO" } else { "EHLO" };
    let line = format!("{verb} {}\r\n", config.helo_name);
    let reply = wire.exchange(line.as_bytes(), verb, timeout).await?;
    if reply.code / 100 == 2 {
        return Ok(Extensions::parse(&reply));
    }
    if config.lmtp || reply.code < 500 {
        return Err(rejected(wire, verb, reply));
    }
    let line = format!("HELO {}\r\n", config.helo_name);
    let reply = wire.exchange(line.as_bytes(), "HELO", timeout).await?;
    if reply.code / 100 != 2 {
        return Err(rejected(wire, "HELO", reply));
    }
    Ok(Extensions::default())
}

pub(super) fn rejected(wire: &Wire, command: &'static str, reply: Reply) -> ClientError {
    ClientError::Rejected {
        remote: wire.remote.clone(),
        command,
        reply,
    }
}

/// A connect attempt bounded by the configured connect timeout, with its errors named.
async fn within_connect_timeout<S>(
    config: &ClientConfig,
    remote: &str,
    connect: impl std::future::Future<Output = std::io::Result<S>>,
) -> Result<S, ClientError> {
    let duration = config.timeouts.connect;
    tokio::time::timeout(duration, connect)
        .await
        .map_err(|_| ClientError::Timeout {
            command: "connect",
            duration,
        })?
        .map_err(|source| ClientError::Connect {
            remote: remote.to_string(),
            source,
        })
}

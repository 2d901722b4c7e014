//! Bytes on the socket: writing commands and content, reading bounded replies, each step
//! under its timeout. Once a step fails the wire is marked broken, so that a reply still
//! in flight can never be taken as the answer to a later command.

use super::error::ClientError;
use crate::smtp::line::{Line, LineBuffer};
use crate::smtp::reply::{MAX_REPLY_LINE, Reply, ReplyParser};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Any byte stream the session runs over: TCP, a unix socket, or TLS over either.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub struct Wire {
    io: Box<dyn Io>,
    lines: LineBuffer,
    pub remote: String,
    broken: bool,
}

impl Wire {
    pub fn new(io: Box<dyn Io>, remote: String) -> Self {
        Wire {
            io,
            lines: LineBuffer::new(MAX_REPLY_LINE),
            remote,
            broken: false,
        }
    }

    /// Writes `bytes` in full within `duration`.
    pub async fn write(
        &mut self,
        bytes: &[u8],
        command: &'static str,
        duration: Duration,
    ) -> Result<(), ClientError> {
        self.check()?;
        let io = &mut self.io;
        let result = tokio::time::timeout(duration, async {
            io.write_all(bytes).await?;
            io.flush().await
        })
        .await;
        self.settle(result, command, duration)
    }

    /// Reads one whole reply within `duration`.
    pub async fn reply(
        &mut self,
        command: &'static str,
        duration: Duration,
    ) -> Result<Reply, ClientError> {
        self.check()?;
        let result = tokio::time::timeout(duration, self.read_reply(command)).await;
        match result {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => {
                self.broken = true;
                Err(e)
            }
            Err(_) => {
                self.broken = true;
                Err(ClientError::Timeout { command, duration })
            }
        }
    }

    async fn read_reply(&mut self, command: &'static str) -> Result<Reply, ClientError> {
        let mut parser = ReplyParser::new();
        let mut chunk = [0u8; 4096];
        loop {
            while let Some(line) = self.lines.next_line() {
                let Line::Complete(line) = line else {
                    let reason = format!("reply line longer than {MAX_REPLY_LINE} octets");
                    return Err(self.protocol(command, reason));
                };
                match parser.push_line(&line) {
                    Ok(Some(reply)) => return Ok(reply),
                    Ok(None) => {}
                    Err(e) => return Err(ClientError::reply_error(&self.remote, command, e)),
                }
            }
            let n = self
                .io
                .read(&mut chunk)
                .await
                .map_err(|source| ClientError::Io {
                    remote: self.remote.clone(),
                    command,
                    source,
                })?;
            if n == 0 {
                return Err(ClientError::Closed {
                    remote: self.remote.clone(),
                    command,
                });
            }
            self.lines.push(chunk.get(..n).unwrap_or_default());
        }
    }

    /// Hands the stream over for the TLS handshake. Bytes the server sent after its
    /// reply to STARTTLS were sent before encryption: acting on them would let an
    /// attacker inject replies (CVE-2011-0411 in reverse), so they are an error.
    pub fn into_io(mut self, command: &'static str) -> Result<Box<dyn Io>, ClientError> {
        self.check()?;
        if self.lines.buffered() > 0 {
            let reason = "data after the STARTTLS reply, before the TLS handshake".into();
            return Err(self.protocol(command, reason));
        }
        Ok(self.io)
    }

    /// Closes our side without waiting for anything.
    pub async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.io.shutdown()).await;
    }

    fn check(&self) -> Result<(), ClientError> {
        if self.broken {
            return Err(ClientError::Broken {
                remote: self.remote.clone(),
            });
        }
        Ok(())
    }

    fn protocol(&mut self, command: &'static str, reason: String) -> ClientError {
        self.broken = true;
        ClientError::Protocol {
            remote: self.remote.clone(),
            command,
            reason,
        }
    }

    fn settle(
        &mut self,
        result: Result<std::io::Result<()>, tokio::time::error::Elapsed>,
        command: &'static str,
        duration: Duration,
    ) -> Result<(), ClientError> {
        let err = match result {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(source)) => ClientError::Io {
                remote: self.remote.clone(),
                command,
                source,
            },
            Err(_) => ClientError::Timeout { command, duration },
        };
        self.broken = true;
        Err(err)
    }
}

impl Wire {
    /// Writes one command and reads its reply, both within `duration`.
    pub async fn exchange(
        &mut self,
        line: &[u8],
        command: &'static str,
        duration: Duration,
    ) -> Result<Reply, ClientError> {
        self.write(line, command, duration).await?;
        self.reply(command, duration).await
    }
}

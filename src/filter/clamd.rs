//! The malware check: the message streamed to `clamd` with `zINSTREAM` (clamd(8):
//! length-prefixed chunks, a zero length at the end), its one-line answer read with a
//! bounded size and time, and mapped to a [`Verdict`] ([`verdict`]).
//!
//! Several clamd addresses may be given for availability: one that cannot be reached
//! (refused, no route, no connection within [`CONNECT_TIMEOUT`]) passes the scan on to
//! the next. One that accepted the connection gives the answer, error or not: a second
//! clamd would reach the same verdict on the same message, and a hung one has already
//! used the time.

use super::scan::{FailMode, ScanError, Verdict, reply_text};
use crate::smtp::reply::Reply;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;

/// Each chunk carries at most this much of the message. clamd counts the stream against
/// its StreamMaxLength (100 MiB by default) as it arrives and answers "size limit
/// exceeded" once over, whatever the chunking; small chunks keep our buffers small.
pub const CHUNK: usize = 64 * 1024;
/// The longest answer read: a signature name is short, so 4 KiB is generous.
pub const MAX_ANSWER: usize = 4096;
/// How long one address may take to accept the connection before the next is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest signature name kept (ClamAV's own names stay well under it).
pub const MAX_SIGNATURE: usize = 128;

/// Where a clamd listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClamdAddress {
    /// `host:port`; a name is resolved at each scan.
    Tcp(String),
    /// A unix socket path (clamd's LocalSocket).
    Unix(PathBuf),
}

impl ClamdAddress {
    /// `unix:/absolute/path` or `host:port` (a name, an IPv4 address or `[IPv6]`).
    pub fn parse(text: &str) -> Result<ClamdAddress, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(format!("{text:?}: a unix socket path must be absolute"));
            }
            return Ok(ClamdAddress::Unix(PathBuf::from(path)));
        }
        let port = text
            .rsplit_once(':')
            .map(|(host, port)| (host, port.parse::<u16>()));
        match port {
            Some((host, Ok(port)))
                if !host.is_empty() && port > 0 && !host.contains(char::is_whitespace) =>
            {
                Ok(ClamdAddress::Tcp(text.to_string()))
            }
            _ => Err(format!("{text:?}: expected host:port or unix:/path")),
        }
    }
}

impl std::fmt::Display for ClamdAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClamdAddress::Tcp(address) => f.write_str(address),
            ClamdAddress::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// What clamd found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClamVerdict {
    Clean,
    /// The signature's name, printable ASCII, at most [`MAX_SIGNATURE`] characters.
    Infected(String),
}

/// Scans `message` with the first clamd in `addresses` that can be reached. `timeout`
/// bounds the whole scan, connection attempts included.
pub async fn scan(
    addresses: &[ClamdAddress],
    message: &[u8],
    timeout: Duration,
) -> Result<ClamVerdict, ScanError> {
    let deadline = Instant::now() + timeout;
    let mut last = ScanError::NoAddress;
    for address in addresses {
        let left = deadline.saturating_duration_since(Instant::now());
        let connect_time = left.min(CONNECT_TIMEOUT);
        let unreachable = |source| ScanError::Connect {
            address: address.to_string(),
            source,
        };
        let timed_out = || unreachable(std::io::Error::from(std::io::ErrorKind::TimedOut));
        let answer = match address {
            ClamdAddress::Tcp(target) => {
                match tokio::time::timeout(connect_time, TcpStream::connect(target.as_str())).await
                {
                    Ok(Ok(stream)) => {
                        let _ = stream.set_nodelay(true);
                        tokio::time::timeout_at(deadline, exchange(stream, message)).await
                    }
                    Ok(Err(e)) => {
                        last = unreachable(e);
                        continue;
                    }
                    Err(_) => {
                        last = timed_out();
                        continue;
                    }
                }
            }
            ClamdAddress::Unix(path) => {
                match tokio::time::timeout(connect_time, UnixStream::connect(path)).await {
                    Ok(Ok(stream)) => {
                        tokio::time::timeout_at(deadline, exchange(stream, message)).await
                    }
                    Ok(Err(e)) => {
                        last = unreachable(e);
                        continue;
                    }
                    Err(_) => {
                        last = timed_out();
                        continue;
                    }
                }
            }
        };
        return answer.map_err(|_| ScanError::Timeout(timeout))?;
    }
    Err(last)
}

/// The [`Verdict`] for a scan's result: infected → `550 5.7.1` naming the signature;
/// an error (size limit, protocol, timeout, unreachable) → as `fail` says.
pub fn verdict(result: &Result<ClamVerdict, ScanError>, fail: FailMode) -> Verdict {
    match result {
        Ok(ClamVerdict::Clean) => Verdict::Accept,
        Ok(ClamVerdict::Infected(signature)) => Verdict::Reject(Reply::new(
            550,
            "5.7.1",
            format!(
                "Message rejected: malware found ({})",
                reply_text(signature)
            ),
        )),
        Err(_) => fail.verdict("Virus"),
    }
}

/// Sends the command and the chunks while reading the answer: clamd may answer (size
/// limit) and close before it has taken the whole stream, and that answer is the one
/// that counts, not our broken pipe.
async fn exchange<S>(stream: S, message: &[u8]) -> Result<ClamVerdict, ScanError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let send = async {
        writer.write_all(b"zINSTREAM\0").await?;
        for chunk in message.chunks(CHUNK) {
            writer
                .write_all(&(chunk.len() as u32).to_be_bytes())
                .await?;
            writer.write_all(chunk).await?;
        }
        writer.write_all(&0u32.to_be_bytes()).await?;
        writer.flush().await
    };
    let receive = read_answer(&mut reader);
    tokio::pin!(send, receive);
    let answer = tokio::select! {
        answer = &mut receive => answer,
        sent = &mut send => match sent {
            Ok(()) => receive.await,
            // Whatever clamd said before it stopped reading explains the failure best.
            Err(e) => receive.await.map_err(|_| ScanError::Protocol(format!("sending: {e}"))),
        },
    }?;
    parse_answer(&answer)
}

/// Reads up to the NUL that ends a `z` command's answer (or the end of the stream), at
/// most [`MAX_ANSWER`] octets.
async fn read_answer<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Vec<u8>, ScanError> {
    let mut answer = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let n = reader
            .read(&mut buf)
            .await
            .map_err(|e| ScanError::Protocol(format!("reading the answer: {e}")))?;
        if n == 0 {
            if answer.is_empty() {
                return Err(ScanError::Protocol("clamd closed without an answer".into()));
            }
            return Ok(answer);
        }
        answer.extend_from_slice(&buf[..n]);
        if let Some(end) = answer.iter().position(|&b| b == 0) {
            answer.truncate(end);
            return Ok(answer);
        }
        if answer.len() > MAX_ANSWER {
            return Err(ScanError::Protocol(format!(
                "answer longer than {MAX_ANSWER} octets"
            )));
        }
    }
}

/// `stream: OK`, `stream: <signature> FOUND`, `INSTREAM size limit exceeded. ERROR`,
/// `<anything> ERROR`.
pub fn parse_answer(answer: &[u8]) -> Result<ClamVerdict, ScanError> {
    let text = String::from_utf8_lossy(answer);
    let text = text.trim_end_matches(['\n', '\r', '\0']);
    let body = text.strip_prefix("stream: ").unwrap_or(text);
    if body == "OK" {
        return Ok(ClamVerdict::Clean);
    }
    if let Some(signature) = body.strip_suffix(" FOUND") {
        let signature: String = reply_text(signature).chars().take(MAX_SIGNATURE).collect();
        if signature.is_empty() {
            return Err(ScanError::Protocol("FOUND without a signature".into()));
        }
        return Ok(ClamVerdict::Infected(signature));
    }
    if let Some(error) = body.strip_suffix(" ERROR") {
        if error.contains("size limit exceeded") {
            return Err(ScanError::SizeLimit);
        }
        return Err(ScanError::Scanner(reply_text(error)));
    }
    Err(ScanError::Protocol(format!(
        "unexpected answer {:?}",
        reply_text(text)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        assert_eq!(parse_answer(b"stream: OK\0").unwrap(), ClamVerdict::Clean);
        assert_eq!(
            parse_answer(b"stream: Eicar-Test-Signature FOUND").unwrap(),
            ClamVerdict::Infected("Eicar-Test-Signature".into())
        );
        let hostile = b"stream: Bad\r\n250 2.0.0 Ok\x1b FOUND";
        assert_eq!(
            parse_answer(hostile).unwrap(),
            ClamVerdict::Infected("Bad 250 2.0.0 Ok".into())
        );
        assert!(matches!(
            parse_answer(b"INSTREAM size limit exceeded. ERROR"),
            Err(ScanError::SizeLimit)
        ));
        assert!(matches!(
            parse_answer(b"stream: Can't allocate memory ERROR"),
            Err(ScanError::Scanner(_))
        ));
        for bad in [&b"stream:  FOUND"[..], b"PONG", b""] {
            assert!(matches!(parse_answer(bad), Err(ScanError::Protocol(_))));
        }
    }

    #[test]
    fn verdicts() {
        let infected = Ok(ClamVerdict::Infected("Eicar.UNOFFICIAL".into()));
        let Verdict::Reject(reply) = verdict(&infected, FailMode::Open) else {
            panic!("infected must reject");
        };
        assert_eq!(
            reply.to_bytes(),
            b"550 5.7.1 Message rejected: malware found (Eicar.UNOFFICIAL)\r\n"
        );
        assert_eq!(
            verdict(&Ok(ClamVerdict::Clean), FailMode::Closed),
            Verdict::Accept
        );
        let failed = Err(ScanError::SizeLimit);
        assert_eq!(verdict(&failed, FailMode::Open), Verdict::Accept);
        assert!(
            matches!(verdict(&failed, FailMode::Closed), Verdict::Tempfail(r) if r.code == 451)
        );
    }
}

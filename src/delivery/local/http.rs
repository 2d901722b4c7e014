//! The smallest HTTP/1.1 client the webhook and the Rspamd check need: one POST with a
//! `Content-Length` body over a fresh connection (TLS verified with rustls on the ring
//! provider), the response's status line, then close.
//!
//! For the webhook only the status decides the outcome ([`post`]); the Rspamd check also
//! reads the body, bounded ([`post_for_body`]). The response head is read up to 16 KiB (interim
//! 1xx heads skipped); the body, chunked or not, is read up to 64 KiB and discarded,
//! only so that closing with unread data does not reset the connection under the
//! receiver while it logs its success.

use super::LocalError;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 64 * 1024;
/// How long the discarded body may take once the status is known.
const DRAIN_TIME: Duration = Duration::from_secs(1);
/// The end of a chunked body without trailers.
const LAST_CHUNK: &[u8] = b"\r\n0\r\n\r\n";

/// An `http://` or `https://` URL taken apart; `host` has no brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// The `Host` header: the authority as written.
    pub authority: String,
    /// Path and query, at least `/`.
    pub target: String,
}

/// The final response's status line and what is needed to skip its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    pub code: u16,
    /// Printable ASCII only, at most 64 characters: it ends up in DSNs and logs.
    pub reason: String,
    content_length: Option<u64>,
    /// `Transfer-Encoding: chunked` (RFC 9112 6.1): it overrides any Content-Length.
    chunked: bool,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// `scheme "://" [userinfo "@"] host [":" port] [path-abempty] ["?" query] ["#" fragment]`
/// (RFC 3986), with userinfo refused: credentials belong in the signing secret.
pub(crate) fn parse_url(url: &str) -> Result<Url, LocalError> {
    let bad = |reason| LocalError::Url {
        url: url.to_owned(),
        reason,
    };
    let (https, rest) = match url.split_once("://") {
        Some((s, rest)) if s.eq_ignore_ascii_case("http") => (false, rest),
        Some((s, rest)) if s.eq_ignore_ascii_case("https") => (true, rest),
        _ => return Err(bad("the scheme must be http or https")),
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(split);
    let target = match target {
        "" => "/".to_owned(),
        t if t.starts_with('?') => format!("/{t}"),
        t => t.to_owned(),
    };
    if authority.contains('@') {
        return Err(bad("credentials in the URL are not supported"));
    }
    if target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(bad("the path has spaces or control characters"));
    }
    let (host, port) = split_host_port(authority).ok_or_else(|| bad("bad host or port"))?;
    Ok(Url {
        https,
        host: host.to_owned(),
        port: port.unwrap_or(if https { 443 } else { 80 }),
        authority: authority.to_owned(),
        target,
    })
}

fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok().filter(|&p| p != 0)?),
        None => None,
    };
    let host_ok = !host.is_empty() && host.bytes().all(|b| b > b' ' && b != 0x7f);
    host_ok.then_some((host, port))
}

/// POSTs `body` with `headers` (values must be free of CR and LF) and returns the final
/// status. `timeout` bounds connecting, sending and the response head together.
pub(crate) async fn post(
    url: &Url,
    headers: &[(&str, String)],
    body: &[u8],
    roots: &Arc<RootCertStore>,
    timeout: Duration,
) -> Result<Status, LocalError> {
    let head = request_head(url, headers, body.len());
    let exchange = exchange(url, &head, body, roots);
    let (mut stream, status, rest) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| LocalError::Timeout(timeout))??;
    let _ = tokio::time::timeout(DRAIN_TIME, drain(&mut stream, rest, status.content_length)).await;
    Ok(status)
}

/// Like [`post`], and returns the body too (de-chunked), at most `max_body` octets:
/// a longer one is an error, never truncated silently. `timeout` bounds the whole
/// exchange, the body included.
pub(crate) async fn post_for_body(
    url: &Url,
    headers: &[(&str, String)],
    body: &[u8],
    roots: &Arc<RootCertStore>,
    timeout: Duration,
    max_body: usize,
) -> Result<(Status, Vec<u8>), LocalError> {
    let head = request_head(url, headers, body.len());
    let whole = async {
        let (mut stream, status, rest) = exchange(url, &head, body, roots).await?;
        let raw = read_body(&mut stream, rest, &status, max_body).await?;
        let _ = stream.shutdown().await;
        let body = if status.chunked {
            dechunk(&raw, max_body)?
        } else {
            raw
        };
        Ok((status, body))
    };
    tokio::time::timeout(timeout, whole)
        .await
        .map_err(|_| LocalError::Timeout(timeout))?
}

/// The raw body: `Content-Length` octets, else up to the last chunk or the end of the
/// connection. A chunked body may carry framing beyond `max_body`, so it gets room for
/// that (a chunk-size line per chunk; [`dechunk`] enforces the real cap).
async fn read_body(
    stream: &mut Box<dyn Stream>,
    mut buf: Vec<u8>,
    status: &Status,
    max_body: usize,
) -> Result<Vec<u8>, LocalError> {
    let too_large = || LocalError::Response(format!("response body exceeds {max_body} octets"));
    let limit = if status.chunked {
        max_body.saturating_mul(2).saturating_add(1024)
    } else {
        max_body
    };
    let length = match (status.chunked, status.content_length) {
        (false, Some(n)) if n > max_body as u64 => return Err(too_large()),
        (false, Some(n)) => Some(n as usize),
        _ => None,
    };
    let mut chunk = [0u8; 8192];
    loop {
        match length {
            Some(n) if buf.len() >= n => {
                buf.truncate(n);
                return Ok(buf);
            }
            None if status.chunked && buf.ends_with(b"0\r\n\r\n") => return Ok(buf),
            _ => {}
        }
        if buf.len() > limit {
            return Err(too_large());
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| LocalError::Response(format!("reading the body: {e}")))?;
        if n == 0 {
            return match length {
                Some(_) => Err(LocalError::Response(
                    "body shorter than Content-Length".into(),
                )),
                None => Ok(buf),
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `chunked-body = *chunk last-chunk trailer-section CRLF` (RFC 9112 7.1), extensions
/// ignored, trailers dropped; more than `max_body` octets of data is an error.
fn dechunk(raw: &[u8], max_body: usize) -> Result<Vec<u8>, LocalError> {
    let bad = |why: &str| LocalError::Response(format!("bad chunked body: {why}"));
    let mut out = Vec::new();
    let mut rest = raw;
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("no chunk-size line"))?;
        let line = std::str::from_utf8(&rest[..line_end]).map_err(|_| bad("chunk size"))?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("chunk size"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if size > max_body - out.len().min(max_body) {
            return Err(LocalError::Response(format!(
                "response body exceeds {max_body} octets"
            )));
        }
        if rest.len() < size + 2 || &rest[size..size + 2] != b"\r\n" {
            return Err(bad("truncated chunk"));
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn request_head(url: &Url, headers: &[(&str, String)], length: usize) -> Vec<u8> {
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: sluice/{}\r\nContent-Length: {length}\r\nConnection: close\r\n",
        url.target,
        url.authority,
        env!("CARGO_PKG_VERSION")
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

async fn exchange(
    url: &Url,
    head: &[u8],
    body: &[u8],
    roots: &Arc<RootCertStore>,
) -> Result<(Box<dyn Stream>, Status, Vec<u8>), LocalError> {
    let mut stream = connect(url, roots).await?;
    let sent = send(&mut stream, head, body).await;
    // A receiver may answer (413, 401) and close before taking the whole body; its
    // answer is worth more than our write error.
    match (read_status(&mut stream).await, sent) {
        (Ok((status, rest)), _) => Ok((stream, status, rest)),
        (Err(_), Err(e)) => Err(LocalError::Send(e)),
        (Err(e), Ok(())) => Err(e),
    }
}

async fn connect(url: &Url, roots: &Arc<RootCertStore>) -> Result<Box<dyn Stream>, LocalError> {
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|source| LocalError::Connect {
            authority: url.authority.clone(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    if !url.https {
        return Ok(Box::new(tcp));
    }
    let tls_err = |reason: String| LocalError::Tls {
        host: url.host.clone(),
        reason,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(url.host.clone()).map_err(|e| tls_err(e.to_string()))?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| tls_err(e.to_string()))?;
    Ok(Box::new(tls))
}

async fn send(stream: &mut Box<dyn Stream>, head: &[u8], body: &[u8]) -> std::io::Result<()> {
    stream.write_all(head).await?;
    stream.write_all(body).await?;
    stream.flush().await
}

/// Reads heads until a final (non-1xx) one; returns it with the body bytes read past it.
async fn read_status(stream: &mut Box<dyn Stream>) -> Result<(Status, Vec<u8>), LocalError> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        if let Some(end) = head_end(&buf) {
            let status = parse_head(&buf[..end])?;
            if (100..200).contains(&status.code) && status.code != 101 {
                buf.drain(..end);
                continue;
            }
            return Ok((status, buf.split_off(end)));
        }
        if buf.len() >= MAX_HEAD {
            return Err(LocalError::Response("response head exceeds 16 KiB".into()));
        }
        let mut chunk = [0u8; 4096];
        let room = chunk.len().min(MAX_HEAD - buf.len());
        match stream.read(&mut chunk[..room]).await {
            Ok(0) => return status_at_eof(&buf, "closed".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return status_at_eof(&buf, e.to_string()),
        }
    }
}

/// A receiver that closes after its status line has still answered.
fn status_at_eof(buf: &[u8], why: String) -> Result<(Status, Vec<u8>), LocalError> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(end) => Ok((parse_head(&buf[..=end])?, Vec::new())),
        None => Err(LocalError::Response(format!(
            "connection {why} before a status line"
        ))),
    }
}

/// Where the head ends: after the first empty line (CRLF, or bare LF as RFC 9112 2.2
/// allows recipients to accept).
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `status-line = HTTP-version SP status-code SP [ reason-phrase ]` (RFC 9112 4), then
/// header fields, of which only Content-Length matters here.
pub(super) fn parse_head(head: &[u8]) -> Result<Status, LocalError> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.lines();
    let status_line = lines.next().unwrap_or_default();
    let bad = || LocalError::Response(format!("bad status line {:?}", truncate(status_line)));
    let (version, rest) = status_line.split_once(' ').ok_or_else(bad)?;
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    let valid = version.starts_with("HTTP/1.") && code.len() == 3;
    let code = code.parse::<u16>().ok().filter(|_| valid).ok_or_else(bad)?;
    let fields: Vec<(&str, &str)> = lines.filter_map(|line| line.split_once(':')).collect();
    let field = |wanted: &str| {
        fields
            .iter()
            .find(|(name, _)| name.trim().eq_ignore_ascii_case(wanted))
            .map(|(_, value)| value.trim())
    };
    let content_length = field("content-length").and_then(|value| value.parse().ok());
    let chunked = field("transfer-encoding")
        .is_some_and(|value| value.to_ascii_lowercase().contains("chunked"));
    Ok(Status {
        code,
        reason: truncate(reason),
        content_length,
        chunked,
    })
}

fn truncate(text: &str) -> String {
    let printable = text
        .chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control());
    printable.take(64).collect::<String>().trim().to_owned()
}

/// Reads and drops the body: `Content-Length` bytes, else until the last chunk or the
/// end of the connection, never more than 64 KiB; then closes (TLS close_notify).
async fn drain(stream: &mut Box<dyn Stream>, start: Vec<u8>, length: Option<u64>) {
    let want = length.map_or(MAX_BODY, |n| n.min(MAX_BODY as u64) as usize);
    let mut seen = start.len();
    let mut tail = start;
    let mut chunk = [0u8; 4096];
    while seen < want && !(length.is_none() && last_chunk_seen(&tail, seen)) {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                seen += n;
                tail.extend_from_slice(&chunk[..n]);
                let keep = tail.len().saturating_sub(LAST_CHUNK.len());
                tail.drain(..keep);
            }
        }
    }
    let _ = stream.shutdown().await;
}

/// `tail` holds the last bytes of the `seen` read so far; an empty chunked body is the
/// last chunk alone, without the CRLF of a chunk before it.
fn last_chunk_seen(tail: &[u8], seen: usize) -> bool {
    tail.ends_with(LAST_CHUNK) || (seen == LAST_CHUNK.len() - 2 && tail == &LAST_CHUNK[2..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(https: bool, host: &str, port: u16, authority: &str, target: &str) -> Url {
        let (host, authority, target) = (host.into(), authority.into(), target.into());
        Url {
            https,
            host,
            port,
            authority,
            target,
        }
    }

    #[test]
    fn urls() {
        let cases = [
            (
                "http://h.example",
                url(false, "h.example", 80, "h.example", "/"),
            ),
            (
                "HTTPS://h:8443/a/b?c=d#frag",
                url(true, "h", 8443, "h:8443", "/a/b?c=d"),
            ),
            (
                "http://[::1]:81?x",
                url(false, "::1", 81, "[::1]:81", "/?x"),
            ),
            (
                "https://[2001:db8::1]/",
                url(true, "2001:db8::1", 443, "[2001:db8::1]", "/"),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_url(text).unwrap(), expected, "{text}");
        }
        for bad in [
            "ftp://h/",
            "h.example/x",
            "http://",
            "http://:80/",
            "http://h:0/",
            "http://h:99999/",
            "http://h:x/",
            "http://u:p@h/",
            "http://h/a b",
            "http://[::1/",
        ] {
            assert!(parse_url(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn heads() {
        let s = parse_head(b"HTTP/1.1 202 Accepted\r\nContent-Length: 12\r\n\r\n").unwrap();
        assert_eq!(
            (s.code, s.reason.as_str(), s.content_length),
            (202, "Accepted", Some(12))
        );
        let s = parse_head(b"HTTP/1.0 500\n\n").unwrap();
        assert_eq!(
            (s.code, s.reason.as_str(), s.content_length),
            (500, "", None)
        );
        let s = parse_head("HTTP/1.1 404 N\u{1b}[31mot \u{e9}Found\r\n\r\n".as_bytes()).unwrap();
        assert_eq!(s.reason, "N[31mot Found");
        for bad in [
            "",
            "HTTP/1.1\r\n",
            "HTTP/2 200 OK\r\n",
            "HTTP/1.1 2000 x\r\n",
            "hello\r\n",
        ] {
            assert!(parse_head(bad.as_bytes()).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n", 10).unwrap(),
            b"abcde"
        );
        assert!(dechunk(b"3\r\nabc\r\n8\r\nabcdefgh\r\n0\r\n\r\n", 10).is_err());
        assert!(dechunk(b"5\r\nabc\r\n0\r\n\r\n", 10).is_err());
        assert!(dechunk(b"zz\r\n", 10).is_err());
        assert!(dechunk(b"ffffffffffffffffff\r\n", 10).is_err());
        let s = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert!(s.chunked);
    }

    #[test]
    fn head_ends() {
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\n\r\nbody"), Some(19));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\n\nbody"), Some(17));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n"), None);
    }
}

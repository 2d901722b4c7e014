//! The outbound HTTP client, shared by the webhook delivery and the Rspamd check, on
//! reqwest (hyper underneath): POST a body, read the status and a bounded body.
//!
//! - One client per set of trusted roots (`client`), kept for the life of the process:
//!   connections to a receiver are pooled and reused from message to message, and the
//!   rustls configuration (ring provider, the given roots) is built once.
//! - Proxies come from the standard variables: `HTTPS_PROXY` for `https://` URLs,
//!   `HTTP_PROXY` for `http://` ones (either in lower case too), except for the hosts in
//!   `NO_PROXY`, and never for loopback addresses, which no proxy can reach on our
//!   behalf. `ALL_PROXY` and system settings are not read.
//! - Redirects are not followed: a 3xx is the receiver's answer.
//! - For the webhook only the status decides the outcome (`post`); its body is read,
//!   at most 64 KiB within a second, only so that the connection can go back to the pool.
//!   The Rspamd check reads the body, bounded (`post_for_body`).
//! - Failures are [`HttpError`]s, which each caller maps onto its own error: the webhook
//!   into `delivery::local::LocalError`, the Rspamd check into `filter::scan::ScanError`.
//!   This module sits below both and imports neither.

use bytes::Bytes;
use rustls::RootCertStore;
use std::io;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

const MAX_BODY: usize = 64 * 1024;
/// How long the discarded body may take once the status is known.
const DRAIN_TIME: Duration = Duration::from_secs(1);
/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(30);
/// Idle connections kept per receiver.
const POOL_PER_HOST: usize = 8;
/// Never sent to a proxy, whatever `NO_PROXY` says.
const LOOPBACK: &str = "localhost,127.0.0.0/8,::1";

/// What went wrong in an HTTP exchange. The texts are the ones users and tests see in
/// deferral replies, DSNs and logs.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Says "webhook" as it did before the client moved here: deferral replies and
    /// tests carry this text. Rspamd reports it as a configuration error.
    #[error("webhook URL {url:?} is not usable: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        authority: String,
        source: io::Error,
    },
    #[error("TLS with {host} failed: {reason}")]
    Tls { host: String, reason: String },
    #[error("cannot send the request: {0}")]
    Send(io::Error),
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("unusable HTTP response: {0}")]
    Response(String),
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
}

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

impl Url {
    fn text(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority, self.target)
    }
}

/// The final response's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    pub code: u16,
    /// The reason phrase as sent (the standard one when the receiver sent that);
    /// printable ASCII only, at most 64 characters: it ends up in DSNs and logs.
    pub reason: String,
}

impl Status {
    pub(crate) fn new(code: u16, reason: &str) -> Status {
        Status {
            code,
            reason: truncate(reason),
        }
    }

    fn of(response: &reqwest::Response) -> Status {
        let status = response.status();
        // hyper keeps a reason phrase other than the standard one as an extension.
        let reason = match response.extensions().get::<hyper::ext::ReasonPhrase>() {
            Some(sent) => String::from_utf8_lossy(sent.as_bytes()).into_owned(),
            None => status.canonical_reason().unwrap_or_default().to_owned(),
        };
        Status::new(status.as_u16(), &reason)
    }
}

/// `scheme "://" [userinfo "@"] host [":" port] [path-abempty] ["?" query] ["#" fragment]`
/// (RFC 3986), with userinfo refused: credentials belong in the signing secret.
pub(crate) fn parse_url(url: &str) -> Result<Url, HttpError> {
    let bad = |reason| HttpError::Url {
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

/// The client for `roots`: the same one for as long as `roots` lives, so that its
/// connections are pooled across messages.
pub(crate) fn client(roots: &Arc<RootCertStore>) -> Result<reqwest::Client, HttpError> {
    static CLIENTS: Mutex<Vec<(Weak<RootCertStore>, reqwest::Client)>> = Mutex::new(Vec::new());
    let mut clients = CLIENTS.lock().unwrap_or_else(PoisonError::into_inner);
    // Dead entries go first, so that a new store at a freed address is not mistaken
    // for the old one.
    clients.retain(|(held, _)| held.strong_count() > 0);
    if let Some((_, client)) = clients
        .iter()
        .find(|(held, _)| std::ptr::eq(held.as_ptr(), Arc::as_ptr(roots)))
    {
        return Ok(client.clone());
    }
    let client = build(roots)?;
    clients.push((Arc::downgrade(roots), client.clone()));
    Ok(client)
}

fn build(roots: &Arc<RootCertStore>) -> Result<reqwest::Client, HttpError> {
    let setup = |e: &dyn std::error::Error| HttpError::Client(chain(e));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| setup(&e))?
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    let builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(POOL_PER_HOST)
        .tcp_nodelay(true);
    proxies(builder).build().map_err(|e| setup(&e))
}

/// `reqwest::Proxy::https` or `::http`.
type ProxyFor = fn(&str) -> reqwest::Result<reqwest::Proxy>;

/// The proxies of the standard variables, loopback excepted.
fn proxies(mut builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    let var = |names: [&str; 2]| {
        names
            .into_iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
    };
    let no_proxy = match var(["NO_PROXY", "no_proxy"]) {
        Some(list) => format!("{list},{LOOPBACK}"),
        None => LOOPBACK.to_owned(),
    };
    // Naming a proxy (or none) also stops reqwest from reading the variables itself.
    builder = builder.no_proxy();
    let schemes: [(_, ProxyFor); 2] = [
        (["HTTPS_PROXY", "https_proxy"], |u| reqwest::Proxy::https(u)),
        (["HTTP_PROXY", "http_proxy"], |u| reqwest::Proxy::http(u)),
    ];
    for (names, proxy) in schemes {
        let Some(url) = var(names) else { continue };
        match proxy(&url) {
            Ok(p) => {
                let p = p.no_proxy(reqwest::NoProxy::from_string(&no_proxy));
                builder = builder.proxy(p);
            }
            Err(e) => tracing::warn!(variable = names[0], error = %chain(&e), "proxy ignored"),
        }
    }
    builder
}

/// POSTs `body` with `headers` (values must be free of CR and LF) and returns the final
/// status. `timeout` bounds connecting, sending and the response head together.
pub(crate) async fn post(
    url: &Url,
    headers: &[(&str, String)],
    body: &[u8],
    roots: &Arc<RootCertStore>,
    timeout: Duration,
) -> Result<Status, HttpError> {
    let request = request(url, headers, body, roots)?;
    let mut response = tokio::time::timeout(timeout, request.send())
        .await
        .map_err(|_| HttpError::Timeout(timeout))?
        .map_err(|e| error(url, &e))?;
    let status = Status::of(&response);
    // Read so that the connection can be reused; a longer or slower body is dropped
    // with its connection.
    let _ = tokio::time::timeout(DRAIN_TIME, read_body(&mut response, MAX_BODY)).await;
    Ok(status)
}

/// Like [`post`], and returns the body too, at most `max_body` octets: a longer one is
/// an error, never truncated silently. `timeout` bounds the whole exchange, the body
/// included.
pub(crate) async fn post_for_body(
    url: &Url,
    headers: &[(&str, String)],
    body: &[u8],
    roots: &Arc<RootCertStore>,
    timeout: Duration,
    max_body: usize,
) -> Result<(Status, Vec<u8>), HttpError> {
    let request = request(url, headers, body, roots)?;
    let whole = async {
        let mut response = request.send().await.map_err(|e| error(url, &e))?;
        let status = Status::of(&response);
        let body = read_body(&mut response, max_body)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => {
                    HttpError::Response(format!("response body exceeds {max_body} octets"))
                }
                BodyError::Read(e) => {
                    HttpError::Response(format!("reading the body: {}", chain(&e)))
                }
            })?;
        Ok((status, body))
    };
    tokio::time::timeout(timeout, whole)
        .await
        .map_err(|_| HttpError::Timeout(timeout))?
}

fn request(
    url: &Url,
    headers: &[(&str, String)],
    body: &[u8],
    roots: &Arc<RootCertStore>,
) -> Result<reqwest::RequestBuilder, HttpError> {
    let mut request = client(roots)?
        .post(url.text())
        .body(Bytes::copy_from_slice(body));
    for (name, value) in headers {
        request = request.header(*name, value.as_str());
    }
    Ok(request)
}

enum BodyError {
    TooLarge,
    Read(reqwest::Error),
}

/// The body, chunk by chunk, up to `max` octets.
async fn read_body(response: &mut reqwest::Response, max: usize) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if chunk.len() > max - body.len() {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// What went wrong, as an [`HttpError`]: a TLS failure anywhere in the chain is one,
/// whatever wraps it.
fn error(url: &Url, e: &reqwest::Error) -> HttpError {
    if let Some(tls) = tls_error(e) {
        return HttpError::Tls {
            host: url.host.clone(),
            reason: tls.to_string(),
        };
    }
    if let Some(framing) = framing_error(e) {
        return HttpError::Response(framing.to_string());
    }
    if e.is_connect() {
        HttpError::Connect {
            authority: url.authority.clone(),
            source: io::Error::other(chain(e)),
        }
    } else if e.is_timeout() {
        HttpError::Response(chain(e))
    } else if e.is_request() || e.is_body() {
        HttpError::Send(io::Error::other(chain(e)))
    } else {
        HttpError::Response(chain(e))
    }
}

/// hyper's error when the response could not be read as HTTP/1.1 (a bad status line or
/// head, a connection closed before the end of the head).
fn framing_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a hyper::Error> {
    let mut source = Some(e);
    while let Some(current) = source {
        if let Some(h) = current.downcast_ref::<hyper::Error>()
            && (h.is_parse() || h.is_parse_status() || h.is_incomplete_message())
        {
            return Some(h);
        }
        source = current.source();
    }
    None
}

/// The rustls error under `e`: io errors wrap it, in io errors, whose `source` skips it.
fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut source = Some(e);
    while let Some(mut current) = source {
        while let Some(inner) = current
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            current = inner;
        }
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        source = current.source();
    }
    None
}

/// The error and its sources, `: `-separated (reqwest's own text says little).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text
}

fn truncate(text: &str) -> String {
    let printable = text
        .chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control());
    printable.take(64).collect::<String>().trim().to_owned()
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
}

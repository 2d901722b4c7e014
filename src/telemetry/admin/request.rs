//! Parsing the one bounded request head the admin listener reads: method, path, query,
//! and the headers it looks at (`Host`, `Authorization`, `Origin`). A pure function of
//! its bytes ([`parse`]), for fuzzing.

use crate::envelope::QueueId;

/// The most header fields a request may have; probes and `sluice queue` send a handful.
pub const MAX_HEADERS: usize = 32;

/// The request line and the headers we look at.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// `Host`, as sent (RFC 9112 3.2: exactly one in an HTTP/1.1 request).
    pub host: Option<&'a str>,
    /// The `Authorization` value, as sent.
    pub authorization: Option<&'a str>,
    /// A browser sent it (see the module notes).
    pub origin: bool,
}

/// Why a request head is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("not text")]
    NotText,
    #[error("not an HTTP/1.x request line")]
    RequestLine,
    #[error("a header line that is not a field")]
    Field,
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    #[error("{0} given twice")]
    Repeated(&'static str),
}

/// `request-line = method SP request-target SP HTTP-version CRLF` (RFC 9112 3), then
/// `field-name ":" OWS field-value OWS` lines up to an empty one; `head` is what the
/// listener read, up to and including the empty line (or a bounded part of it).
pub fn parse(head: &[u8]) -> Result<Request<'_>, HeadError> {
    let head = std::str::from_utf8(head).map_err(|_| HeadError::NotText)?;
    let head = head.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or_default().split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v)) => (m, t, v),
        _ => return Err(HeadError::RequestLine),
    };
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || method.is_empty() {
        return Err(HeadError::RequestLine);
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let mut request = Request {
        method,
        path,
        query,
        host: None,
        authorization: None,
        origin: false,
    };
    for (count, line) in lines.enumerate() {
        if count >= MAX_HEADERS {
            return Err(HeadError::TooManyHeaders);
        }
        let (name, value) = line.split_once(':').ok_or(HeadError::Field)?;
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err(HeadError::Field);
        }
        let value = value.trim_matches([' ', '\t']);
        let slot = match name.to_ascii_lowercase().as_str() {
            "host" => (&mut request.host, "Host"),
            "authorization" => (&mut request.authorization, "Authorization"),
            "origin" => {
                request.origin = true;
                continue;
            }
            _ => continue,
        };
        if slot.0.replace(value).is_some() {
            return Err(HeadError::Repeated(slot.1));
        }
    }
    Ok(request)
}

impl Request<'_> {
    /// Whether the query has `name` set to anything but `0`/`false`.
    pub(super) fn flag(&self, name: &str) -> bool {
        self.query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .any(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                key == name && !matches!(value, "0" | "false")
            })
    }
}

/// What a path names.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Resource {
    Health,
    Ready,
    Metrics,
    Queue,
    Message(QueueId),
    RetryAll,
    Retry(QueueId),
    Quarantine,
    Held(QueueId),
    Release(QueueId),
}

impl Resource {
    pub(super) fn parse(path: &str) -> Option<Resource> {
        Some(match path {
            "/healthz" => Resource::Health,
            "/readyz" => Resource::Ready,
            "/metrics" => Resource::Metrics,
            "/queue" | "/queue/" => Resource::Queue,
            "/queue/retry" => Resource::RetryAll,
            "/quarantine" | "/quarantine/" => Resource::Quarantine,
            _ if path.starts_with("/quarantine/") => {
                let rest = &path["/quarantine/".len()..];
                match rest.strip_suffix("/release") {
                    Some(id) => Resource::Release(QueueId::parse(id)?),
                    None => Resource::Held(QueueId::parse(rest)?),
                }
            }
            _ => {
                let rest = path.strip_prefix("/queue/")?;
                match rest.strip_suffix("/retry") {
                    Some(id) => Resource::Retry(QueueId::parse(id)?),
                    None => Resource::Message(QueueId::parse(rest)?),
                }
            }
        })
    }

    /// The queue API (the quarantine's included), which needs access
    /// ([`super::access`]); the probes and metrics are open.
    pub(super) fn is_queue(&self) -> bool {
        !matches!(self, Resource::Health | Resource::Ready | Resource::Metrics)
    }

    pub(super) fn allow(&self) -> &'static str {
        match self {
            Resource::Health
            | Resource::Ready
            | Resource::Metrics
            | Resource::Queue
            | Resource::Quarantine => "GET",
            Resource::Message(_) | Resource::Held(_) => "GET, DELETE",
            Resource::RetryAll | Resource::Retry(_) | Resource::Release(_) => "POST",
        }
    }

    /// `/quarantine…`, served from the quarantine slot.
    pub(super) fn is_quarantine(&self) -> bool {
        matches!(
            self,
            Resource::Quarantine | Resource::Held(_) | Resource::Release(_)
        )
    }

    pub(super) fn allows(&self, method: &str) -> bool {
        self.allow().split(", ").any(|m| m == method)
    }
}

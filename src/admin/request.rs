//! What the admin listener looks at in a request that hyper has framed: method, path,
//! query, and the headers `Host`, `Authorization` and `Origin` ([`Request::from_parts`]);
//! and what a path names ([`Resource`]). Pure functions of their input, for fuzzing.

use crate::envelope::QueueId;
use hyper::header::{AUTHORIZATION, HOST, HeaderMap, HeaderName, ORIGIN};
use hyper::http::request::Parts;

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

/// Why a request is refused with 400 once hyper has framed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("{0} is not visible ASCII")]
    NotText(&'static str),
    #[error("{0} given twice")]
    Repeated(&'static str),
}

impl<'a> Request<'a> {
    /// The parts of `parts` that the listener decides on. hyper has already refused
    /// what is not HTTP/1.x, more than [`MAX_HEADERS`] fields and heads over the size
    /// limit; `Host` and `Authorization` must be single and visible ASCII.
    pub fn from_parts(parts: &'a Parts) -> Result<Request<'a>, HeadError> {
        Ok(Request {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query(),
            host: single(&parts.headers, HOST, "Host")?,
            authorization: single(&parts.headers, AUTHORIZATION, "Authorization")?,
            origin: parts.headers.contains_key(ORIGIN),
        })
    }
}

fn single<'a>(
    headers: &'a HeaderMap,
    name: HeaderName,
    label: &'static str,
) -> Result<Option<&'a str>, HeadError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(HeadError::Repeated(label));
    }
    // hyper has trimmed the optional whitespace around the value.
    value
        .to_str()
        .map(Some)
        .map_err(|_| HeadError::NotText(label))
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

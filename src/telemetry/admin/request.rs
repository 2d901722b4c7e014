//! Parsing the one bounded request head the admin listener reads: method, path, query
//! and whether the request came from a browser page (`Origin`).

use crate::queue::QueueId;

/// The request line and the one header we look at.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Request<'a> {
    pub(super) method: &'a str,
    pub(super) path: &'a str,
    pub(super) query: Option<&'a str>,
    /// A browser sent it (see the module notes).
    pub(super) origin: bool,
}

impl<'a> Request<'a> {
    /// `request-line = method SP request-target SP HTTP-version CRLF` (RFC 9112 3), then
    /// header fields; `None` for anything else.
    pub(super) fn parse(head: &'a [u8]) -> Option<Request<'a>> {
        let head = std::str::from_utf8(head).ok()?;
        let mut lines = head.split("\r\n");
        let mut parts = lines.next()?.split(' ');
        let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || !version.starts_with("HTTP/1.") || method.is_empty() {
            return None;
        }
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        let origin = lines.any(|line| {
            line.split_once(':')
                .is_some_and(|(name, _)| name.eq_ignore_ascii_case("origin"))
        });
        Some(Request {
            method,
            path,
            query,
            origin,
        })
    }

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
}

impl Resource {
    pub(super) fn parse(path: &str) -> Option<Resource> {
        Some(match path {
            "/healthz" => Resource::Health,
            "/readyz" => Resource::Ready,
            "/metrics" => Resource::Metrics,
            "/queue" | "/queue/" => Resource::Queue,
            "/queue/retry" => Resource::RetryAll,
            _ => {
                let rest = path.strip_prefix("/queue/")?;
                match rest.strip_suffix("/retry") {
                    Some(id) => Resource::Retry(QueueId::parse(id)?),
                    None => Resource::Message(QueueId::parse(rest)?),
                }
            }
        })
    }

    pub(super) fn allow(&self) -> &'static str {
        match self {
            Resource::Health | Resource::Ready | Resource::Metrics | Resource::Queue => "GET",
            Resource::Message(_) => "GET, DELETE",
            Resource::RetryAll | Resource::Retry(_) => "POST",
        }
    }

    pub(super) fn allows(&self, method: &str) -> bool {
        self.allow().split(", ").any(|m| m == method)
    }
}

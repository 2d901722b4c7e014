//! The admin listener's request-head parsing, reachable from the cargo-fuzz targets in
//! fuzz/ (the parser itself is private to the listener). Not an API: hidden from the
//! docs, and free to change with the parser.

use super::request::{self, Resource};

/// What the listener makes of one request head, owned so that it can leave the module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// An `Origin` header was present.
    pub origin: bool,
    /// `?bounce=` set to anything but `0`/`false`.
    pub bounce: bool,
    /// The resource the path names, in `Debug` form; `None` for an unknown path (404).
    pub resource: Option<String>,
    /// The methods the resource allows (the `Allow` header of a 405).
    pub allow: Option<&'static str>,
    /// Whether the resource allows the request's method.
    pub allowed: bool,
}

/// Parses `head` (the bytes up to and including the blank line) as the listener does;
/// `None` where it answers 400.
pub fn parse_request_head(head: &[u8]) -> Option<RequestHead> {
    let request = request::parse(head).ok()?;
    let resource = Resource::parse(request.path);
    Some(RequestHead {
        method: request.method.to_string(),
        path: request.path.to_string(),
        query: request.query.map(str::to_string),
        origin: request.origin,
        bounce: request.flag("bounce"),
        allow: resource.as_ref().map(Resource::allow),
        allowed: resource.as_ref().is_some_and(|r| r.allows(request.method)),
        resource: resource.map(|r| format!("{r:?}")),
    })
}

//! What the admin listener decides from a request that hyper has framed, reachable from
//! the cargo-fuzz target in fuzz/ (the pieces are private to the listener). Not an API:
//! hidden from the docs, and free to change with the listener.
//!
//! The HTTP/1.1 framing itself is hyper's (fuzzed upstream); what is left to fuzz is
//! ours: the request target onto a [`Resource`], the query flag, and the `Host`,
//! `Authorization` and `Origin` fields.

use super::request::{Request, Resource};
use hyper::http;

/// What the listener makes of one request, owned so that it can leave the module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub host: Option<String>,
    pub authorization: Option<String>,
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

/// Builds the request hyper would hand over for this method, request target and
/// header fields (`None` where the `http` types refuse them, as hyper would with 400),
/// then decides as the listener does; `Err` where the listener answers 400 itself.
pub fn decide(
    method: &[u8],
    target: &[u8],
    fields: &[(&[u8], &[u8])],
) -> Option<Result<RequestHead, String>> {
    let mut builder = http::Request::builder()
        .method(http::Method::from_bytes(method).ok()?)
        .uri(http::Uri::try_from(target).ok()?);
    for (name, value) in fields {
        let name = http::HeaderName::from_bytes(name).ok()?;
        let value = http::HeaderValue::from_bytes(value).ok()?;
        builder = builder.header(name, value);
    }
    let (parts, ()) = builder.body(()).ok()?.into_parts();
    Some(
        Request::from_parts(&parts)
            .map(owned)
            .map_err(|e| e.to_string()),
    )
}

fn owned(request: Request<'_>) -> RequestHead {
    let resource = Resource::parse(request.path);
    RequestHead {
        method: request.method.to_string(),
        path: request.path.to_string(),
        query: request.query.map(str::to_string),
        host: request.host.map(str::to_string),
        authorization: request.authorization.map(str::to_string),
        origin: request.origin,
        bounce: request.flag("bounce"),
        allow: resource.as_ref().map(Resource::allow),
        allowed: resource.as_ref().is_some_and(|r| r.allows(request.method)),
        resource: resource.map(|r| format!("{r:?}")),
    }
}

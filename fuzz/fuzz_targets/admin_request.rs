//! Fuzzes the admin listener's request head parser (`telemetry::admin`, through its
//! `fuzzing` entry point): the request line, the `Origin` header, the query flag and the
//! path's resource. The input is mapped onto tokens of HTTP heads (methods, paths, a
//! queue id, versions, separators, header names) with one slot for a raw byte.
//!
//! Invariants checked, against a model written from RFC 9112 3 and the module notes:
//! - nothing panics; a head parses exactly when it is UTF-8, its first line (up to CRLF)
//!   has three space-separated parts, a non-empty method and an `HTTP/1.` version, and
//!   every later line up to the empty one is a field (`name:` with a name free of
//!   blanks), at most `MAX_HEADERS` of them, with `Host` and `Authorization` at most once;
//! - method, path and query are the parts of that line, unchanged;
//! - `origin` is set exactly when a later line has a field name `Origin`, any case;
//! - `bounce` follows the query; a resource allows the method exactly when its `Allow`
//!   list names it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::telemetry::admin::fuzzing::{RequestHead, parse_request_head};
use sluice::telemetry::admin::request::MAX_HEADERS;

const TOKENS: [&[u8]; 32] = [
    b"GET",
    b"POST",
    b"DELETE",
    b" ",
    b" ",
    b"/",
    b"/queue",
    b"/queue/",
    b"01JF0000000000000000000000",
    b"/retry",
    b"/metrics",
    b"/healthz",
    b"/readyz",
    b"?",
    b"bounce=",
    b"1",
    b"0",
    b"false",
    b"&",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/2",
    b"\r\n",
    b"\r\n",
    b"\n",
    b"Origin",
    b"oRiGiN",
    b"Host",
    b"Authorization",
    b":",
    b"\xc3\xa9",
    b"\xff",
];

/// The model: what the parser must make of `head`.
fn model(head: &[u8]) -> Option<(String, String, Option<String>, bool)> {
    let text = std::str::from_utf8(head).ok()?;
    let text = text.split("\r\n\r\n").next()?;
    let mut lines = text.split("\r\n");
    let parts: Vec<&str> = lines.next()?.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return None;
    };
    if method.is_empty() || !version.starts_with("HTTP/1.") {
        return None;
    }
    let (path, query) = match target.find('?') {
        Some(i) => (&target[..i], Some(target[i + 1..].to_string())),
        None => (target, None),
    };
    let fields: Vec<&str> = lines.collect();
    if fields.len() > MAX_HEADERS {
        return None;
    }
    let mut names = Vec::with_capacity(fields.len());
    for field in fields {
        let name = &field[..field.find(':')?];
        if name.is_empty() || name.contains([' ', '\t']) {
            return None;
        }
        names.push(name.to_ascii_lowercase());
    }
    let count = |n: &str| names.iter().filter(|m| *m == n).count();
    if count("host") > 1 || count("authorization") > 1 {
        return None;
    }
    Some((method.into(), path.into(), query, count("origin") > 0))
}

fn model_bounce(query: Option<&str>) -> bool {
    query.into_iter().flat_map(|q| q.split('&')).any(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        key == "bounce" && value != "0" && value != "false"
    })
}

fuzz_target!(|data: &[u8]| {
    let mut head = Vec::with_capacity(data.len() * 4);
    let mut bytes = data.iter();
    while let Some(&b) = bytes.next() {
        match TOKENS.get(b as usize % (TOKENS.len() + 1)) {
            Some(token) => head.extend_from_slice(token),
            None => head.extend(bytes.next()),
        }
    }
    let parsed = parse_request_head(&head);
    let want = model(&head);
    assert_eq!(
        parsed
            .as_ref()
            .map(|h| (h.method.clone(), h.path.clone(), h.query.clone(), h.origin)),
        want,
        "{:?}",
        String::from_utf8_lossy(&head)
    );
    let Some(RequestHead {
        method,
        query,
        bounce,
        resource,
        allow,
        allowed,
        ..
    }) = parsed
    else {
        return;
    };
    assert_eq!(bounce, model_bounce(query.as_deref()));
    assert_eq!(resource.is_some(), allow.is_some());
    let listed = allow.is_some_and(|a| a.split(", ").any(|m| m == method));
    assert_eq!(allowed, listed);
});

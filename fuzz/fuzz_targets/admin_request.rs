//! Fuzzes the admin listener's request head parser (`telemetry::admin`, through its
//! `fuzzing` entry point): the request line, the `Origin` header, the query flag and the
//! path's resource. The input is mapped onto tokens of HTTP heads (methods, paths, a
//! queue id, versions, separators, header names) with one slot for a raw byte.
//!
//! Invariants checked, against a model written from RFC 9112 3 and the module notes:
//! - nothing panics; a head parses exactly when its first line (up to CRLF) is UTF-8
//!   and has three space-separated parts, a non-empty method and an `HTTP/1.` version;
//! - method, path and query are the parts of that line, unchanged;
//! - `origin` is set exactly when a later line has a field name `Origin`, any case;
//! - `bounce` follows the query; a resource allows the method exactly when its `Allow`
//!   list names it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::telemetry::admin::fuzzing::{RequestHead, parse_request_head};

const TOKENS: [&[u8]; 31] = [
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
    b":",
    b"\xc3\xa9",
    b"\xff",
];

/// The model: what the parser must make of `head`.
fn model(head: &[u8]) -> Option<(String, String, Option<String>, bool)> {
    let text = std::str::from_utf8(head).ok()?;
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
    let origin = lines.any(|l| {
        l.find(':')
            .is_some_and(|i| l[..i].eq_ignore_ascii_case("origin"))
    });
    Some((method.into(), path.into(), query, origin))
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

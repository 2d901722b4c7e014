//! Fuzzes what the admin listener decides from a request hyper has framed
//! (`sluice::admin`, through its `fuzzing` entry point): the request target onto a
//! resource, the query flag, and the `Host`, `Authorization` and `Origin` fields. The
//! HTTP/1.1 framing is hyper's and fuzzed upstream. The input is mapped onto tokens
//! (methods, paths, a queue id, separators, header names and values) with one slot for a
//! raw byte; a `\n` token ends the method, then the target, then each field, and `:`
//! splits a field into name and value.
//!
//! Invariants checked, against a model written from the module notes:
//! - nothing panics;
//! - method and path come through unchanged, the query is what follows the first `?`;
//! - `Host` or `Authorization` given twice is refused (400), once it is passed on;
//! - `origin` is set exactly when a field is named `Origin`, any case;
//! - `bounce` follows the query; a resource allows the method exactly when its `Allow`
//!   list names it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::admin::fuzzing::{RequestHead, decide};

const TOKENS: [&[u8]; 30] = [
    b"GET",
    b"POST",
    b"DELETE",
    b" ",
    b"/",
    b"/queue",
    b"/queue/",
    b"01JF0000000000000000000000",
    b"/retry",
    b"/release",
    b"/quarantine",
    b"/metrics",
    b"/healthz",
    b"/readyz",
    b"?",
    b"bounce=",
    b"1",
    b"0",
    b"false",
    b"&",
    b"\n",
    b"\n",
    b"Origin",
    b"oRiGiN",
    b"Host",
    b"Authorization",
    b"Bearer x",
    b":",
    b"\xc3\xa9",
    b"\xff",
];

fn model_bounce(query: Option<&str>) -> bool {
    query.into_iter().flat_map(|q| q.split('&')).any(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        key == "bounce" && value != "0" && value != "false"
    })
}

fuzz_target!(|data: &[u8]| {
    let mut text = Vec::with_capacity(data.len() * 4);
    let mut bytes = data.iter();
    while let Some(&b) = bytes.next() {
        match TOKENS.get(b as usize % (TOKENS.len() + 1)) {
            Some(token) => text.extend_from_slice(token),
            None => text.extend(bytes.next()),
        }
    }
    let mut lines = text.split(|&b| b == b'\n');
    let (Some(method), Some(target)) = (lines.next(), lines.next()) else {
        return;
    };
    let fields: Vec<(&[u8], &[u8])> = lines
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            Some((&line[..colon], &line[colon + 1..]))
        })
        .collect();
    let Some(decided) = decide(method, target, &fields) else {
        return;
    };
    let named = |n: &str| {
        fields
            .iter()
            .filter(|(f, _)| f.eq_ignore_ascii_case(n.as_bytes()))
            .count()
    };
    let not_text = |n: &str| {
        fields
            .iter()
            .any(|(f, v)| f.eq_ignore_ascii_case(n.as_bytes()) && !v.is_ascii())
    };
    let refused = named("host") > 1
        || named("authorization") > 1
        || not_text("host")
        || not_text("authorization");
    assert_eq!(decided.is_err(), refused, "{decided:?}");
    let Ok(RequestHead {
        method: m,
        path,
        query,
        origin,
        bounce,
        resource,
        allow,
        allowed,
        ..
    }) = decided
    else {
        return;
    };
    assert_eq!(m.as_bytes(), method);
    if target.starts_with(b"/") {
        let end = target
            .iter()
            .position(|&b| b == b'?')
            .unwrap_or(target.len());
        assert_eq!(path.as_bytes(), &target[..end]);
        let after = (end < target.len()).then(|| &target[end + 1..]);
        assert_eq!(query.as_deref().map(str::as_bytes), after);
    }
    assert_eq!(origin, named("origin") > 0);
    assert_eq!(bounce, model_bounce(query.as_deref()));
    assert_eq!(resource.is_some(), allow.is_some());
    let listed = allow.is_some_and(|a| a.split(", ").any(|x| x == m));
    assert_eq!(allowed, listed);
});

//! Fuzzes the JetStream queue's envelope decoder (`queue::jetstream::codec::decode`):
//! the headers of a message in the stream, which anyone with publish rights on the
//! subject can write. The first byte picks how the `Sluice-Envelope` JSON is made: the
//! input itself, or a valid envelope with the input's edits spliced in (tokens of JSON
//! at positions the input picks), so that the fuzzer reaches the fields and not only
//! the JSON syntax; the next bytes pick the other headers and the payload length.
//!
//! Invariants checked:
//! - `decode` never panics, and refuses (never defaults) a message without headers or
//!   without an envelope;
//! - the body size is the header's number (blanks around it allowed), else the payload
//!   length, and the not-before time is the header's number;
//! - the valid envelope decodes exactly when those numbers parse and the object name is
//!   a word of `[A-Za-z0-9._-]`;
//! - whatever decodes encodes again and decodes to the same `Meta`.
#![no_main]

use async_nats::HeaderMap;
use libfuzzer_sys::fuzz_target;
use sluice::envelope::TraceParent;
use sluice::envelope::{Envelope, QueueId, SenderTrust};
use sluice::queue::jetstream::codec::{
    BODY_OBJECT, BODY_SIZE, ENVELOPE, EnvelopeLimits, MSG_ID, NOT_BEFORE, encode,
};
use sluice::queue::jetstream::codec::{DecodeError, Meta};
use sluice::smtp::address::{Body, MailParams, Mailbox, Notify, Orcpt, Recipient};
use std::sync::OnceLock;

/// Values for the numeric and object headers; `None` leaves the header out.
const VALUES: [Option<&str>; 10] = [
    None,
    Some("0"),
    Some("1234"),
    Some(" 42 "),
    Some("-1"),
    Some("18446744073709551616"),
    Some("12abc"),
    Some(""),
    Some("body-object-1"),
    None,
];

/// JSON fragments spliced into the valid envelope.
const EDITS: [&str; 24] = [
    "\"",
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "null",
    "true",
    "0",
    "-1",
    "4294967296",
    "18446744073709551616",
    "1e3",
    "\"x\"",
    "\\u0000",
    "\\ud800",
    "\\",
    "é",
    " ",
    "\"recipients\":[]",
    "\"client_ip\":\"::1\"",
    "\"id\":\"../x\"",
    "\"reverse_path\":null",
];

/// A valid envelope, with every optional part present, as the ingress writes it.
fn template() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let envelope = Envelope {
            id: QueueId::parse("01JF0000000000000000000000").expect("id"),
            reverse_path: Some(Mailbox::new("alice", "example.com")),
            params: MailParams {
                size: Some(1000),
                body: Some(Body::EightBitMime),
                smtputf8: true,
                envid: Some("env-1".into()),
                ..MailParams::default()
            },
            recipients: vec![Recipient {
                address: Mailbox::new("bob", "example.org"),
                notify: Some(Notify {
                    success: true,
                    ..Notify::default()
                }),
                orcpt: Some(Orcpt {
                    addr_type: "rfc822".into(),
                    address: "bob@example.org".into(),
                }),
            }],
            received_at_ms: 1_700_000_000_000,
            client_ip: "192.0.2.1".parse().expect("ip"),
            helo: "client.example".into(),
            authenticated_user: Some("alice".into()),
            sender_trust: SenderTrust::Authenticated,
            attempts: 2,
            last_error: Some("451 4.7.1 later".into()),
            delay_warned_at_ms: Some(1_700_000_100_000),
            trace: TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        };
        serde_json::to_string(&envelope).expect("envelope JSON")
    })
}

/// The template with one edit per two input bytes: where, and which fragment (or, for
/// the last slots, deleting the character there).
fn spliced(edits: &[u8]) -> String {
    let mut json: Vec<char> = template().chars().collect();
    for pair in edits.chunks_exact(2) {
        let at = pair[0] as usize * json.len() / 256;
        match EDITS.get(pair[1] as usize % (EDITS.len() + 8)) {
            Some(fragment) => {
                let tail = json.split_off(at);
                json.extend(fragment.chars());
                json.extend(tail);
            }
            None if at < json.len() => {
                json.remove(at);
            }
            None => {}
        }
    }
    json.into_iter().collect()
}

/// The decoder with a worker's default limits, which the template is well within.
fn decode(headers: Option<&HeaderMap>, payload_len: usize) -> Result<Meta, DecodeError> {
    sluice::queue::jetstream::codec::decode(headers, payload_len, &EnvelopeLimits::default())
}

/// A header value as NATS could carry it: one line.
fn header_value(text: &str) -> String {
    text.chars().filter(|c| *c != '\r' && *c != '\n').collect()
}

fuzz_target!(|data: &[u8]| {
    let [mode, not_before, size, object, payload, rest @ ..] = data else {
        return;
    };
    let json = match mode % 4 {
        0 => header_value(&String::from_utf8_lossy(rest)),
        1 => {
            // The valid envelope, unchanged: must decode.
            template().to_string()
        }
        _ => header_value(&spliced(rest)),
    };
    let pick = |b: &u8| VALUES[*b as usize % VALUES.len()];
    let mut headers = HeaderMap::new();
    headers.insert(MSG_ID, "01JF0000000000000000000000");
    headers.insert(ENVELOPE, json.as_str());
    for (name, value) in [
        (NOT_BEFORE, pick(not_before)),
        (BODY_SIZE, pick(size)),
        (BODY_OBJECT, pick(object)),
    ] {
        if let Some(value) = value {
            headers.insert(name, value);
        }
    }
    let payload_len = *payload as usize * 1000;

    assert!(decode(None, payload_len).is_err(), "no headers");
    let mut no_envelope = HeaderMap::new();
    no_envelope.insert(BODY_SIZE, "10");
    assert!(
        decode(Some(&no_envelope), payload_len).is_err(),
        "no envelope"
    );

    let decoded = decode(Some(&headers), payload_len);
    if mode % 4 == 1 {
        let numbers_ok = [pick(not_before), pick(size)]
            .iter()
            .all(|v| v.is_none_or(|v| v.trim().parse::<u64>().is_ok()));
        // A body object's name is an object store key: a word of [A-Za-z0-9._-].
        let object_ok = pick(object).is_none_or(|v| {
            !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        });
        assert_eq!(decoded.is_ok(), numbers_ok && object_ok, "{decoded:?}");
    }
    let Ok(meta) = decoded else {
        return;
    };
    let number = |v: Option<&str>| v.map(|v| v.trim().parse::<u64>().expect("checked number"));
    assert_eq!(
        meta.body_size,
        number(pick(size)).unwrap_or(payload_len as u64)
    );
    assert_eq!(meta.not_before_ms, number(pick(not_before)));
    assert_eq!(meta.body_object.as_deref(), pick(object));

    let again = encode(&meta, "01JF0000000000000000000000.1").expect("encode what decoded");
    assert_eq!(
        decode(Some(&again), payload_len).expect("decode again"),
        meta
    );
});

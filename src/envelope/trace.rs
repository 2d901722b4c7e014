//! W3C Trace Context (`traceparent`, version 00) for messages: the ingress starts a
//! trace for each message it accepts, the envelope carries it through the queue (and
//! JetStream shows it in the standard `traceparent` header), the worker logs its trace
//! id, and a bounce continues the original's trace. A tracing backend can then join the
//! ingress pod's, the worker pod's and the bounce's records of one message.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    sampled: bool,
}

impl TraceParent {
    /// A new trace: random ids (never all zero, which the format reserves).
    pub fn new_root() -> Self {
        TraceParent {
            trace_id: nonzero(),
            parent_id: nonzero(),
            sampled: true,
        }
    }

    /// The next step of the same trace.
    pub fn child(&self) -> Self {
        TraceParent {
            parent_id: nonzero(),
            ..*self
        }
    }

    /// `00-<32 hex>-<16 hex>-<2 hex>`; `None` for anything else, as the W3C text asks of
    /// a receiver (lower-case hex, no all-zero ids, version ff invalid).
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || version != "00" {
            return None;
        }
        let trace_id = hex::<16>(trace)?;
        let parent_id = hex::<8>(parent)?;
        let flags = hex::<1>(flags)?[0];
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            parent_id,
            sampled: flags & 1 == 1,
        })
    }

    pub fn trace_id(&self) -> String {
        to_hex(&self.trace_id)
    }

    /// A context from its parts (an exported span's ids); `None` for the all-zero ids
    /// the format reserves.
    pub fn from_parts(trace_id: [u8; 16], parent_id: [u8; 8], sampled: bool) -> Option<Self> {
        (trace_id != [0; 16] && parent_id != [0; 8]).then_some(TraceParent {
            trace_id,
            parent_id,
            sampled,
        })
    }

    pub fn trace_id_bytes(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The id of the span this context names: the parent of the next step's spans.
    pub fn parent_id_bytes(&self) -> [u8; 8] {
        self.parent_id
    }

    /// Whether the trace was sampled upstream (the flag that a parent-based sampler
    /// follows).
    pub fn sampled(&self) -> bool {
        self.sampled
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flags = u8::from(self.sampled);
        write!(
            f,
            "00-{}-{}-{flags:02x}",
            to_hex(&self.trace_id),
            to_hex(&self.parent_id)
        )
    }
}

impl Serialize for TraceParent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TraceParent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        TraceParent::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not a traceparent: {text:?}")))
    }
}

fn nonzero<const N: usize>() -> [u8; N] {
    loop {
        let bytes: [u8; N] = rand::random();
        if bytes != [0; N] {
            return bytes;
        }
    }
}

fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let valid = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
    if text.len() != 2 * N || !text.bytes().all(valid) {
        return None;
    }
    let mut out = [0; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_w3c_example_reads_and_writes_back() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceParent::parse(text).unwrap();
        assert_eq!(parsed.to_string(), text);
        assert_eq!(parsed.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let json = serde_json::to_string(&parsed).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<TraceParent>(&json).unwrap(), parsed);
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-+1",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_child_keeps_the_trace_and_changes_the_parent() {
        let root = TraceParent::new_root();
        let child = root.child();
        assert_eq!(child.trace_id(), root.trace_id());
        assert_ne!(child.to_string(), root.to_string());
        assert_eq!(TraceParent::parse(&root.to_string()), Some(root));
        assert_ne!(TraceParent::new_root().trace_id(), root.trace_id());
    }
}

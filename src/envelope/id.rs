//! Queue ids: unique, sortable by time, short enough for a log line.
//!
//! 26 characters of Crockford base32 over 128 bits: 48 bits of milliseconds since the
//! epoch, then 80 bits that increase monotonically within the process and start from a
//! random value (the ULID layout), so ids from concurrent sessions and from several
//! ingress pods never collide and sort by acceptance time.

use rand::Rng;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Mutex;
use std::time::SystemTime;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Read back (from the spool, a JetStream header, an admin path) only as `generate`
/// writes it: an id becomes part of log lines, file and object names and subjects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QueueId(String);

impl TryFrom<String> for QueueId {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        QueueId::parse(&text).ok_or_else(|| format!("{text:?} is not a queue id"))
    }
}

impl From<QueueId> for String {
    fn from(id: QueueId) -> String {
        id.0
    }
}

static LAST: Mutex<(u64, u128)> = Mutex::new((0, 0));

impl QueueId {
    pub fn generate() -> Self {
        let now = super::unix_ms(SystemTime::now()) & ((1 << 48) - 1);
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        let random_mask = (1u128 << 80) - 1;
        // Within one millisecond, or if the clock stepped back, keep counting up from the
        // previous id so that order follows generation order.
        let (ms, tail) = if now <= last.0 {
            (last.0, (last.1 + 1) & random_mask)
        } else {
            (now, rand::rng().random::<u128>() & (random_mask >> 1))
        };
        *last = (ms, tail);
        QueueId(encode(((ms as u128) << 80) | tail))
    }

    /// Accepts an id as printed by `generate` (used by the queue tools).
    pub fn parse(text: &str) -> Option<Self> {
        let valid = text.len() == 26
            && text
                .bytes()
                .all(|b| ALPHABET.contains(&b.to_ascii_uppercase()));
        valid.then(|| QueueId(text.to_ascii_uppercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// When the id was generated, in milliseconds since the Unix epoch: the first 10
    /// characters hold 50 bits, the 48 of the time below 2 zero bits.
    pub fn timestamp_ms(&self) -> u64 {
        self.0.bytes().take(10).fold(0, |ms, b| {
            let digit = ALPHABET.iter().position(|a| *a == b).unwrap_or(0);
            (ms << 5) | digit as u64
        })
    }
}

fn encode(mut value: u128) -> String {
    let mut out = [0u8; 26];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value & 31) as usize];
        value >>= 5;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_sorted_in_generation_order() {
        let ids: Vec<QueueId> = (0..10_000).map(|_| QueueId::generate()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, ids);
    }

    #[test]
    fn only_ids_as_generated_deserialize() {
        let id = QueueId::generate();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<QueueId>(&json).unwrap(), id);
        for hostile in ["\"../x\"", "\"\"", "\"01JF0000000000000000000000/\"", "7"] {
            assert!(
                serde_json::from_str::<QueueId>(hostile).is_err(),
                "{hostile}"
            );
        }
    }

    #[test]
    fn parse_round_trips() {
        let id = QueueId::generate();
        assert_eq!(QueueId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(QueueId::parse(&id.as_str().to_lowercase()), Some(id));
        assert_eq!(QueueId::parse("short"), None);
    }

    #[test]
    fn the_timestamp_is_the_generation_time() {
        let before = crate::envelope::unix_ms(SystemTime::now());
        let id = QueueId::generate();
        let after = crate::envelope::unix_ms(SystemTime::now());
        // The counter may carry an earlier millisecond forward, never a later one.
        assert!(id.timestamp_ms() <= after, "{id}");
        assert!(id.timestamp_ms() + 1_000 >= before, "{id}");
        // The example id of the ULID specification: 2016-07-30T23:54:10.259Z.
        let example = QueueId::parse("01ARZ3NDEKTSV4RRFFQ69G5FAV").unwrap();
        assert_eq!(example.timestamp_ms(), 1_469_922_850_259);
    }
}

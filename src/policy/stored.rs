//! The layout of the value in the policy bucket (see `bucket.rs`): JSON with a format
//! number, who wrote it, and the snapshot,
//! `{"format":1,"writer":{"kind":"policy-push","identity":"host","at":"…Z"},"snapshot":{…}}`.
//!
//! A snapshot too large for one NATS message (a few thousand users' hashes pass NATS's
//! default 1 MiB) is stored whole, in that same layout, as an object in the object store
//! bucket `sluice-policy-objects`; the key then holds format 2, a reference to it with its
//! size and SHA-256: `{"format":2,"writer":{…},"object":{"name":…,"size":…,"sha256":…}}`.
//! Small snapshots stay inline, in format 1, which older pods read.
//!
//! A reader takes the format number first and refuses a value of a newer format by that
//! number, instead of misreading it. Fields it does not know are ignored, so fields can
//! be added without a new number; `writer` was added that way, and values written before
//! it (without one) still decode. The writer is there for people (`sluice policy
//! status`), not for the rules: a writer this version cannot read, such as a kind added
//! later, is dropped, and never makes a pod refuse the snapshot beside it.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use super::check::check;
use super::snapshot::{PolicySnapshot, SNAPSHOT_FORMAT};

/// The layout of the stored value. A change that an older pod would misread, in the
/// wrapper or in the snapshot, gets a new number; a new field that older pods may ignore
/// does not.
pub(super) const FORMAT: u32 = 1;

/// The layout of a value that refers to an object holding a format-1 value.
pub(super) const FORMAT_OBJECT: u32 = 2;

/// The largest object a reader fetches: far beyond any real policy, and a bound on what a
/// forged reference can make a pod read.
pub(super) const MAX_OBJECT: u64 = 64 << 20;

/// Who wrote a snapshot into the bucket, and when, by its own clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Writer {
    pub kind: WriterKind,
    /// The pod name (operator) or the host name (`sluice policy push`).
    pub identity: String,
    /// RFC 3339, UTC, to the millisecond.
    pub at: DateTime<Utc>,
}

impl Writer {
    /// `identity` writing now. Milliseconds are all that is kept, so that the value read
    /// back equals the one written.
    pub fn now(kind: WriterKind, identity: impl Into<String>) -> Writer {
        Writer {
            kind,
            identity: identity.into(),
            at: Utc::now().trunc_subsecs(3),
        }
    }
}

/// What kind of program wrote a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WriterKind {
    /// `sluice operator`, from RelayPolicy resources.
    Operator,
    /// `sluice policy push`, from files.
    PolicyPush,
}

impl WriterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WriterKind::Operator => "operator",
            WriterKind::PolicyPush => "policy-push",
        }
    }
}

impl std::fmt::Display for WriterKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stored value, as written.
#[derive(Serialize)]
pub(super) struct Stored<'a> {
    pub format: u32,
    pub writer: &'a Writer,
    pub snapshot: &'a PolicySnapshot,
}

impl<'a> Stored<'a> {
    pub fn new(snapshot: &'a PolicySnapshot, writer: &'a Writer) -> Self {
        Stored {
            format: FORMAT,
            writer,
            snapshot,
        }
    }
}

/// Where a large snapshot's value is, and how to know it is the one meant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ObjectRef {
    pub name: String,
    pub size: u64,
    /// Hex SHA-256 of the object's bytes.
    pub sha256: String,
}

/// A value referring to an object, as written.
#[derive(Serialize)]
pub(super) struct StoredRef<'a> {
    pub format: u32,
    pub writer: &'a Writer,
    pub object: &'a ObjectRef,
}

/// The format number alone, read before anything else.
#[derive(Deserialize)]
struct Format {
    format: u32,
}

/// A stored value, as read.
#[derive(Debug, Deserialize)]
pub(super) struct Loaded {
    pub snapshot: PolicySnapshot,
    /// `None` when written before writers were recorded, or unreadable.
    #[serde(default, deserialize_with = "lenient")]
    pub writer: Option<Writer>,
}

/// A value referring to an object, as read.
#[derive(Debug, Deserialize)]
struct LoadedRef {
    object: ObjectRef,
    #[serde(default, deserialize_with = "lenient")]
    writer: Option<Writer>,
}

/// What a value holds: the snapshot, or where to fetch it.
// One lives briefly per policy update read; boxing the snapshot would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(super) enum Decoded {
    Inline(Loaded),
    Object {
        object: ObjectRef,
        writer: Option<Writer>,
    },
}

/// Why a stored value was refused.
#[derive(Debug, thiserror::Error)]
pub(super) enum ValueError {
    #[error("format {0}, and this sluice reads formats {FORMAT} and {FORMAT_OBJECT}: upgrade it")]
    Format(u32),
    #[error("the snapshot object {name}: {reason}")]
    Object { name: String, reason: String },
    #[error("snapshot layout {0}, and this sluice reads layout {SNAPSHOT_FORMAT}: upgrade it")]
    SnapshotFormat(u32),
    #[error("not a policy snapshot: {0}")]
    Json(#[from] serde_json::Error),
    /// Decodes, but holds a value that compilation would have refused.
    #[error("an invalid policy snapshot: {0}")]
    Invalid(String),
}

/// A value from the key.
pub(super) fn decode_value(value: &[u8]) -> Result<Decoded, ValueError> {
    let Format { format } = serde_json::from_slice(value)?;
    match format {
        FORMAT => decode(value).map(Decoded::Inline),
        FORMAT_OBJECT => {
            let LoadedRef { object, writer } = serde_json::from_slice(value)?;
            Ok(Decoded::Object { object, writer })
        }
        other => Err(ValueError::Format(other)),
    }
}

/// A format-1 value, from the key or from an object, checked as compilation checks
/// (`check.rs`): the bucket is input like a file.
pub(super) fn decode(value: &[u8]) -> Result<Loaded, ValueError> {
    let Format { format } = serde_json::from_slice(value)?;
    if format != FORMAT {
        return Err(ValueError::Format(format));
    }
    let loaded: Loaded = serde_json::from_slice(value)?;
    if loaded.snapshot.format() != SNAPSHOT_FORMAT {
        return Err(ValueError::SnapshotFormat(loaded.snapshot.format()));
    }
    check(loaded.snapshot.revision(), loaded.snapshot.rules()).map_err(ValueError::Invalid)?;
    Ok(loaded)
}

/// Any JSON is accepted where the writer goes; what does not read as a [`Writer`] is
/// none, so that the rules beside it stay in force.
fn lenient<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Writer>, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

//! The attachment analyser of issue 11: what a message carries, judged against rules,
//! and attachments cut out of it.
//!
//! Sans-IO and synchronous, so the filter pipeline can run it on a blocking thread and
//! the fuzzer can drive it directly:
//! - [`analyse`] walks every MIME part ([`walk`]), names each attachment ([`names`]),
//!   finds its real type by magic bytes (`infer`) and lists zip archives ([`archive`]);
//! - [`evaluate`] turns the analysis and the [`Rules`] into [`Finding`]s ([`rules`]);
//! - [`strip`] and [`strip_all`] splice a short notice over named parts, leaving every
//!   other byte of the message as it was ([`strip`](mod@strip)).
//!
//! Every walk is bounded by [`Limits`]: MIME depth and part count, and for archives the
//! entry count, nesting, and the bytes ever decompressed (see [`ArchiveLimits`]).

pub mod archive;
mod lazy;
pub mod names;
pub mod rules;
pub mod strip;
pub mod walk;

pub use archive::{Archive, ArchiveEntry, ArchiveLimits, ArchiveStop};
pub use rules::{Action, Finding, Rule, Rules, evaluate};
pub use strip::{strip, strip_all};
pub use walk::analyse;

/// How far [`analyse`] goes into a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Nesting of multiparts and message/rfc822 parts walked; parts deeper are not
    /// examined and [`Analysis::stopped`] says so.
    pub max_depth: usize,
    /// MIME parts examined in all.
    pub max_parts: usize,
    pub archive: ArchiveLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: 10,
            max_parts: 1000,
            archive: ArchiveLimits::default(),
        }
    }
}

/// A part's place in the message handed to [`analyse`]: from the first octet of its
/// headers to the last octet of its body, both between the boundary lines (the CRLF
/// before the next boundary belongs to the boundary, RFC 2046 5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PartRange {
    pub start: usize,
    pub end: usize,
}

/// One attachment or named inline part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The file name, decoded (RFC 2231 and RFC 2047), as the sender wrote it.
    pub name: Option<String>,
    /// The Content-Type the sender declared, lower case, without parameters.
    pub declared_type: String,
    /// The type found by magic bytes of the decoded body, if known.
    pub real_type: Option<&'static str>,
    /// Size of the decoded body in octets.
    pub size: u64,
    /// Where to cut to remove it. For a part inside an encoded message/rfc822 part
    /// (whose octets are not in the message as such) this is the enclosing part.
    /// `None` when the message itself is the attachment (a single-part message): there
    /// is no part to cut without rewriting the message's own header, so a `strip`
    /// action must be treated as `reject` there.
    pub range: Option<PartRange>,
    /// Whether it lies inside an encoded message/rfc822 part (see `range`).
    pub in_encoded_message: bool,
    /// Its listing, when it is a zip archive.
    pub archive: Option<Archive>,
}

/// Why [`analyse`] did not look at everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageStop {
    /// Parts nested deeper than [`Limits::max_depth`].
    TooDeep,
    /// More parts than [`Limits::max_parts`].
    TooManyParts,
    /// The MIME parser gave up (it panicked; only its debug builds do).
    Unparseable,
}

/// What [`analyse`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Analysis {
    pub attachments: Vec<Attachment>,
    /// Set when a limit stopped the walk; the rules treat it as a finding of its own.
    pub stopped: Option<MessageStop>,
}

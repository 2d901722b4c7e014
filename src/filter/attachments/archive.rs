//! Zip archive listings: entry names, sizes, encryption, real types of entries and
//! nested zips, all within [`ArchiveLimits`].
//!
//! Only the central directory is trusted for names, sizes and flags. Entry data is
//! decompressed for two reasons only, each through a `take` bound: the first
//! [`MAGIC_PREFIX`] octets for the real type, and whole nested zips up to
//! [`ArchiveLimits::max_nested_size`]. Every octet decompressed counts against
//! [`ArchiveLimits::max_decompressed`] for the whole attachment, nested levels included,
//! so a zip bomb costs at most that much work. Memory held at once is at most
//! `max_nesting` nested buffers of `max_nested_size` octets, plus the central
//! directories, which the entry-count check bounds before the zip crate reads them.

use std::io::{Cursor, Read};
use zip::ZipArchive;

/// Octets of an entry read to find its real type.
pub const MAGIC_PREFIX: usize = 8192;

/// Bounds on one attachment's archive listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Entries listed per archive; more stop the listing ([`ArchiveStop::TooManyEntries`]).
    pub max_entries: usize,
    /// Sum of the uncompressed sizes the central directories declare, nested archives
    /// included; more is reported as a zip bomb ([`ArchiveStop::TooLarge`]).
    pub max_total_size: u64,
    /// Octets actually decompressed for the whole attachment.
    pub max_decompressed: u64,
    /// Largest nested archive opened (it is held in memory while listed).
    pub max_nested_size: u64,
    /// Archives inside archives opened: 1 lists an archive's own zips but not theirs.
    pub max_nesting: usize,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        Self {
            max_entries: 1000,
            max_total_size: 100 * 1024 * 1024,
            max_decompressed: 16 * 1024 * 1024,
            max_nested_size: 8 * 1024 * 1024,
            max_nesting: 3,
        }
    }
}

/// Why a listing stopped short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveStop {
    TooManyEntries,
    /// Declared or decompressed sizes over the caps: a zip bomb, or near enough.
    TooLarge,
    /// A nested archive deeper than [`ArchiveLimits::max_nesting`].
    TooDeep,
    /// Not a zip the zip crate can read.
    Unreadable,
}

/// One entry of a zip archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveEntry {
    /// As stored (UTF-8 or CP437), at most [`super::names::MAX_NAME_CHARS`] characters.
    pub name: String,
    /// Uncompressed size the central directory declares.
    pub size: u64,
    pub encrypted: bool,
    /// By magic bytes of its first octets; `None` when encrypted or unreadable.
    pub real_type: Option<&'static str>,
    /// The listing of a nested zip.
    pub archive: Option<Box<Archive>>,
}

/// The listing of one zip archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Archive {
    pub entries: Vec<ArchiveEntry>,
    pub stopped: Option<ArchiveStop>,
}

impl Archive {
    /// Every entry, nested ones included, with the limit stops met on the way.
    pub fn walk(&self, visit: &mut impl FnMut(&ArchiveEntry)) {
        for entry in &self.entries {
            visit(entry);
            if let Some(nested) = &entry.archive {
                nested.walk(visit);
            }
        }
    }

    /// The first stop found in this archive or any nested one.
    pub fn any_stop(&self) -> Option<ArchiveStop> {
        self.stopped.or_else(|| {
            self.entries
                .iter()
                .filter_map(|e| e.archive.as_ref().and_then(|a| a.any_stop()))
                .next()
        })
    }
}

/// Whether `data` starts like a zip archive (a local header, or the end record of an
/// empty one).
pub fn is_zip(data: &[u8]) -> bool {
    data.starts_with(b"PK\x03\x04") || data.starts_with(b"PK\x05\x06")
}

/// Lists the zip archive in `data`.
pub fn list(data: &[u8], limits: &ArchiveLimits) -> Archive {
    let mut budget = Budget {
        declared: 0,
        decompressed: 0,
    };
    list_nested(data, limits, 0, &mut budget)
}

struct Budget {
    declared: u64,
    decompressed: u64,
}

fn list_nested(data: &[u8], limits: &ArchiveLimits, depth: usize, budget: &mut Budget) -> Archive {
    let mut archive = Archive::default();
    // Without a readable end record the zip crate would have to guess how much to
    // allocate for the directory; refuse instead.
    match declared_entries(data) {
        None => {
            archive.stopped = Some(ArchiveStop::Unreadable);
            return archive;
        }
        Some(n) if n > limits.max_entries as u64 => {
            archive.stopped = Some(ArchiveStop::TooManyEntries);
            return archive;
        }
        Some(_) => {}
    }
    let Ok(mut zip) = ZipArchive::new(Cursor::new(data)) else {
        archive.stopped = Some(ArchiveStop::Unreadable);
        return archive;
    };
    for index in 0..zip.len() {
        if index >= limits.max_entries {
            archive.stopped = Some(ArchiveStop::TooManyEntries);
            break;
        }
        let Ok(raw) = zip.by_index_raw(index) else {
            archive.stopped = Some(ArchiveStop::Unreadable);
            break;
        };
        let name = match raw.name() {
            Ok(name) => name.chars().take(super::names::MAX_NAME_CHARS).collect(),
            Err(_) => String::from_utf8_lossy(raw.name_raw())
                .chars()
                .take(255)
                .collect(),
        };
        let mut entry = ArchiveEntry {
            name,
            size: raw.size(),
            encrypted: raw.encrypted(),
            real_type: None,
            archive: None,
        };
        let is_dir = raw.is_dir();
        drop(raw);
        budget.declared = budget.declared.saturating_add(entry.size);
        if budget.declared > limits.max_total_size {
            archive.entries.push(entry);
            archive.stopped = Some(ArchiveStop::TooLarge);
            break;
        }
        if !entry.encrypted
            && !is_dir
            && let Err(stop) = inspect(&mut zip, index, &mut entry, limits, depth, budget)
        {
            archive.entries.push(entry);
            archive.stopped = Some(stop);
            break;
        }
        archive.entries.push(entry);
    }
    archive
}

/// Reads an entry's first octets for its real type, and a nested zip whole.
fn inspect(
    zip: &mut ZipArchive<Cursor<&[u8]>>,
    index: usize,
    entry: &mut ArchiveEntry,
    limits: &ArchiveLimits,
    depth: usize,
    budget: &mut Budget,
) -> Result<(), ArchiveStop> {
    let prefix = read_bounded(zip, index, MAGIC_PREFIX as u64, limits, budget)?;
    entry.real_type = infer::get(&prefix).map(|t| t.mime_type());
    if !is_zip(&prefix) {
        return Ok(());
    }
    if depth + 1 > limits.max_nesting {
        entry.archive = Some(Box::new(Archive {
            entries: Vec::new(),
            stopped: Some(ArchiveStop::TooDeep),
        }));
        return Ok(());
    }
    if entry.size > limits.max_nested_size {
        return Err(ArchiveStop::TooLarge);
    }
    // One more octet than allowed tells a lying size from an honest one.
    let whole = read_bounded(zip, index, limits.max_nested_size + 1, limits, budget)?;
    if whole.len() as u64 > limits.max_nested_size {
        return Err(ArchiveStop::TooLarge);
    }
    entry.archive = Some(Box::new(list_nested(&whole, limits, depth + 1, budget)));
    Ok(())
}

/// Up to `max` decompressed octets of an entry, charged to the budget; an entry that
/// cannot be decompressed (unknown method, corrupt data) reads as empty.
fn read_bounded(
    zip: &mut ZipArchive<Cursor<&[u8]>>,
    index: usize,
    max: u64,
    limits: &ArchiveLimits,
    budget: &mut Budget,
) -> Result<Vec<u8>, ArchiveStop> {
    let left = limits.max_decompressed.saturating_sub(budget.decompressed);
    if left == 0 {
        return Err(ArchiveStop::TooLarge);
    }
    let Ok(file) = zip.by_index(index) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let read = file.take(max.min(left)).read_to_end(&mut out);
    budget.decompressed += out.len() as u64;
    if read.is_err() {
        out.clear();
    }
    if out.len() as u64 == left && left < max {
        return Err(ArchiveStop::TooLarge);
    }
    Ok(out)
}

/// The entry count the end-of-central-directory record declares (ZIP64 included), so
/// that an archive of millions of tiny entries is refused before its directory is read.
fn declared_entries(data: &[u8]) -> Option<u64> {
    const EOCD_LEN: usize = 22;
    let earliest = data.len().saturating_sub(EOCD_LEN + u16::MAX as usize);
    let eocd = (earliest..=data.len().checked_sub(EOCD_LEN)?)
        .rev()
        .find(|&i| data[i..].starts_with(b"PK\x05\x06"))?;
    let entries = u16::from_le_bytes([data[eocd + 10], data[eocd + 11]]);
    if entries != u16::MAX {
        return Some(u64::from(entries));
    }
    // ZIP64: a locator just before the record points at the ZIP64 end record.
    let locator = eocd.checked_sub(20)?;
    if !data[locator..].starts_with(b"PK\x06\x07") {
        return None;
    }
    let offset = u64::from_le_bytes(data[locator + 8..locator + 16].try_into().ok()?);
    let record = data.get(usize::try_from(offset).ok()?..)?;
    if !record.starts_with(b"PK\x06\x06") {
        return None;
    }
    Some(u64::from_le_bytes(record.get(32..40)?.try_into().ok()?))
}

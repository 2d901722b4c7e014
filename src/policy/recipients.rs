//! Recipient validation at RCPT time, so that an address delivery would refuse is refused
//! in the SMTP session (`550 5.1.1`) instead of being accepted and bounced later: a
//! bounce to a forged sender is backscatter. The same idea as Postfix's
//! `local_recipient_maps` and `relay_recipient_maps`.
//!
//! - A local domain's `recipients` lists the addresses it takes; `@domain` takes every
//!   local part. Without a list every local part is taken, as before.
//! - `relayRecipients` lists addresses of the document's relay domains; a relay domain
//!   with at least one entry takes only those, one with none takes any address.
//! - A Maildir domain never takes a local part it could not store as a directory name,
//!   whatever the list says ([`maildir_safe`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::error::{Location, PolicyError};
use super::parse::{SenderPattern, sender_pattern};

/// The most entries one `recipients` or `relayRecipients` list may hold; the schema says
/// the same (`maxItems`), and compilation checks it for files, which no API server bounds.
pub const MAX_RECIPIENT_ENTRIES: usize = 10_000;

/// Longest file name most filesystems accept (NAME_MAX).
const NAME_MAX: usize = 255;

/// Which local parts of one domain are accepted.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RecipientTable {
    /// No list, or `@domain` in it: every local part.
    #[default]
    Any,
    /// Only these local parts, in lower case.
    Only(BTreeSet<String>),
}

impl RecipientTable {
    pub fn is_any(&self) -> bool {
        matches!(self, RecipientTable::Any)
    }

    /// Local parts compare case-insensitively, as Postfix's table lookups do.
    pub fn accepts(&self, local: &str) -> bool {
        match self {
            RecipientTable::Any => true,
            RecipientTable::Only(set) => set.contains(&local.to_lowercase()),
        }
    }

    fn add(&mut self, pattern: SenderPattern) {
        match (self, pattern) {
            (RecipientTable::Any, _) => {}
            (table, SenderPattern::Domain(_)) => *table = RecipientTable::Any,
            (RecipientTable::Only(set), SenderPattern::Address { local, .. }) => {
                set.insert(local);
            }
        }
    }
}

/// Whether Maildir delivery can store mail for `local`: its lower-case form is the
/// mailbox's directory name under the root, so it must not be empty, start with a dot
/// (`.`, `..`, hidden entries), hold `/`, `\` or control characters (NUL included), or
/// be longer than a file name may be.
pub fn maildir_safe(local: &str) -> bool {
    let name = local.to_lowercase();
    !(name.is_empty()
        || name.starts_with('.')
        || name.len() > NAME_MAX
        || name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control()))
}

/// Checks the size of a list field before its entries are parsed.
fn bounded(at: &Location, field: &str, entries: &[String]) -> Result<(), PolicyError> {
    if entries.len() > MAX_RECIPIENT_ENTRIES {
        return Err(PolicyError::invalid(
            at,
            field,
            format!(
                "{} entries, more than the {MAX_RECIPIENT_ENTRIES} allowed",
                entries.len()
            ),
        ));
    }
    Ok(())
}

/// The table of one local domain (`domain` already normalised); every entry must be an
/// address of that domain or `@domain`.
pub(super) fn local_table(
    at: &Location,
    field: &str,
    domain: &str,
    entries: &[String],
) -> Result<RecipientTable, PolicyError> {
    bounded(at, field, entries)?;
    if entries.is_empty() {
        return Ok(RecipientTable::Any);
    }
    let mut table = RecipientTable::Only(BTreeSet::new());
    for (i, entry) in entries.iter().enumerate() {
        let invalid = |r: String| PolicyError::invalid(at, format!("{field}[{i}]"), r);
        let pattern = sender_pattern(entry).map_err(invalid)?;
        if pattern_domain(&pattern) != domain {
            return Err(invalid(format!("{entry:?} is not an address of {domain}")));
        }
        table.add(pattern);
    }
    Ok(table)
}

/// The tables of `relayRecipients`, per relay domain; every entry's domain must be one of
/// `relay_domains` (the document's own: one policy cannot restrict another's domain).
pub(super) fn relay_tables(
    at: &Location,
    entries: &[String],
    relay_domains: &[String],
) -> Result<BTreeMap<String, RecipientTable>, PolicyError> {
    let field = "spec.relayRecipients";
    bounded(at, field, entries)?;
    let mut tables: BTreeMap<String, RecipientTable> = BTreeMap::new();
    for (i, entry) in entries.iter().enumerate() {
        let invalid = |r: String| PolicyError::invalid(at, format!("{field}[{i}]"), r);
        let pattern = sender_pattern(entry).map_err(invalid)?;
        let domain = pattern_domain(&pattern).to_string();
        if !relay_domains.contains(&domain) {
            return Err(invalid(format!(
                "{entry:?}: {domain} is not in this policy's relayDomains"
            )));
        }
        tables
            .entry(domain)
            .or_insert_with(|| RecipientTable::Only(BTreeSet::new()))
            .add(pattern);
    }
    Ok(tables)
}

/// Adds `from` into `into`: the union of the accepted local parts.
pub(super) fn union(into: &mut RecipientTable, from: RecipientTable) {
    match from {
        RecipientTable::Any => *into = RecipientTable::Any,
        RecipientTable::Only(set) => {
            if let RecipientTable::Only(mine) = into {
                mine.extend(set);
            }
        }
    }
}

fn pattern_domain(pattern: &SenderPattern) -> &str {
    match pattern {
        SenderPattern::Address { domain, .. } | SenderPattern::Domain(domain) => domain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Location {
        Location {
            source_name: "a.yaml".into(),
            document: 1,
            policy: None,
        }
    }

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn maildir_safety_matches_what_the_maildir_writer_refuses() {
        for ok in ["alice", "Bob.Smith", "a+tag", "x-y_z", "Grüße"] {
            assert!(maildir_safe(ok), "{ok}");
        }
        let long = "a".repeat(256);
        for bad in [
            "", ".", "..", ".hidden", "a/b", "a\\b", "a\u{0}b", "a\nb", &long,
        ] {
            assert!(!maildir_safe(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_local_table_lists_local_parts_or_takes_all() {
        let t = local_table(&at(), "f", "corp.example", &list(&["Alice@Corp.Example"])).unwrap();
        assert!(t.accepts("alice") && t.accepts("ALICE"));
        assert!(!t.accepts("bob"));
        let all = local_table(
            &at(),
            "f",
            "corp.example",
            &list(&["a@corp.example", "@corp.example"]),
        );
        assert_eq!(all.unwrap(), RecipientTable::Any);
        assert_eq!(
            local_table(&at(), "f", "corp.example", &[]).unwrap(),
            RecipientTable::Any
        );
        let err = local_table(&at(), "f", "corp.example", &list(&["a@other.example"]));
        assert!(
            err.unwrap_err()
                .to_string()
                .contains("not an address of corp.example")
        );
        let err = local_table(&at(), "f", "corp.example", &list(&["nobody"]));
        assert!(err.unwrap_err().to_string().contains("f[0]"));
    }

    #[test]
    fn lists_are_bounded_for_files_too() {
        let many: Vec<String> = (0..=MAX_RECIPIENT_ENTRIES)
            .map(|i| format!("u{i}@corp.example"))
            .collect();
        let err = local_table(&at(), "f", "corp.example", &many).unwrap_err();
        assert!(
            err.to_string().contains("more than the 10000 allowed"),
            "{err}"
        );
        let err = relay_tables(&at(), &many, &list(&["corp.example"])).unwrap_err();
        assert!(
            err.to_string().contains("more than the 10000 allowed"),
            "{err}"
        );
    }

    #[test]
    fn relay_tables_are_per_domain_of_the_document() {
        let domains = list(&["r.example", "s.example"]);
        let t = relay_tables(&at(), &list(&["a@R.example", "b@r.example"]), &domains).unwrap();
        assert!(t["r.example"].accepts("a") && t["r.example"].accepts("B"));
        assert!(!t["r.example"].accepts("c"));
        assert!(!t.contains_key("s.example"), "no entry: any address");
        let err = relay_tables(&at(), &list(&["a@x.example"]), &domains).unwrap_err();
        assert!(
            err.to_string()
                .contains("x.example is not in this policy's relayDomains")
        );
    }

    #[test]
    fn union_widens_and_any_absorbs() {
        let mut a = RecipientTable::Only(BTreeSet::from(["a".to_string()]));
        union(
            &mut a,
            RecipientTable::Only(BTreeSet::from(["b".to_string()])),
        );
        assert!(a.accepts("a") && a.accepts("b") && !a.accepts("c"));
        union(&mut a, RecipientTable::Any);
        assert!(a.is_any());
    }
}

//! Relay policy: the `RelayPolicy` model (the CRD spec is also the file format),
//! its compilation into an immutable [`PolicySnapshot`], the relay decision for each
//! recipient, the sender rights of users, and password hashes.
//!
//! | file | owns |
//! | --- | --- |
//! | `model.rs` | the serde types of a RelayPolicy document |
//! | `documents.rs` | splitting YAML text into documents, apiVersion/kind checks |
//! | `parse.rs` | parsers for domains, patterns, networks, quantities, durations |
//! | `compile.rs` | validating one document; Secret resolution |
//! | `merge.rs` | merging documents, conflict rules |
//! | `each.rs` | compiling policies one at a time, leaving out those that fail (the operator) |
//! | `filters.rs`, `dnsbl.rs` | the `filters:` and `dnsbl:` sections: schema, compilation, checks |
//! | `rules.rs` | the compiled rules inside a snapshot |
//! | `snapshot.rs` | `PolicySnapshot`: construction, revision, queries |
//! | `bucket.rs` | the snapshot in the NATS KV bucket `sluice-policy`: push, read, follow |
//! | `stored.rs` | the layout of the bucket's value: format number, writer, snapshot |
//! | `check.rs` | checking a snapshot read from the bucket as compilation checks |
//! | `objects.rs` | snapshots too large for one NATS message, in an object store bucket |
//! | `decision.rs` | relay and sender decisions with their explanations |
//! | `session.rs` | the snapshot as the SMTP session's `SessionPolicy`: decisions to replies |
//! | `recipients.rs` | recipient tables of local and relay domains, Maildir-safe local parts |
//! | `password.rs` | hashing, verifying and validating password hashes |
//! | `signing.rs` | the `signing:` section: DKIM and ARC keys by reference |
//! | `sealed.rs` | smarthost credentials and webhook keys sealed in the snapshot for the workers |
//! | `error.rs` | `PolicyError` |
//! | `*_tests.rs`, `tests.rs` | unit tests too long to sit beside their code; shared fixtures |

pub mod bucket;
mod check;
mod compile;
mod decision;
pub mod dnsbl;
mod documents;
mod each;
mod error;
pub mod filters;
mod merge;
pub mod model;
mod objects;
mod parse;
mod password;
mod recipients;
mod rules;
pub mod sealed;
mod session;
pub mod signing;
mod snapshot;
mod stored;

#[cfg(test)]
mod tests;

pub use compile::{NoSecrets, SecretSource};
pub use decision::{
    ClientInfo, Decision, NotOwnedReason, RecipientTableKind, SenderDecision, SenderRule,
    SessionAuth,
};
pub use documents::{Document, parse_documents};
pub use each::{DocumentOutcome, EachOutcome, compile_each};
pub use error::{Location, PolicyError};
pub use parse::{DomainPattern, SenderPattern, network as parse_network};
pub use password::{
    HashScheme, StoredHash, hash_password, hash_password_with_salt, validate_hash, verify_hash,
};
pub use recipients::{MAX_RECIPIENT_ENTRIES, RecipientTable, maildir_safe};
pub use rules::{
    AllowedSenders, DEFAULT_BOUNCE_SIZE_LIMIT, Delivery, Limits, LocalDomain, PolicyCounts, Retry,
    Route, Rules, SealedCredentials, Smarthost, TrustedNetwork, User,
};
pub use snapshot::{PolicySnapshot, SNAPSHOT_FORMAT};

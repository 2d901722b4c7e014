//! ARC sealing (RFC 8617) for a relay that changes the messages it passes on: after the
//! filters' last change, the results of sender authentication (`filter::verify`) are
//! sealed into a new ARC set, so that a receiver further on can still trust what the
//! sender's DKIM signature and SPF said here, although the stripped or tagged message no
//! longer verifies.
//!
//! The set's ARC-Authentication-Results are our `Authentication-Results`, its
//! ARC-Message-Signature covers the message as it leaves, and its ARC-Seal chains it to
//! the sets the message arrived with (`cv=` from their validation). A chain whose last
//! seal already says `cv=fail` is not sealed again (RFC 8617 5.1.2), nor is a chain
//! too broken to number (more than 50 sets, or sets that do not parse).

use super::scan::ScanContext;
use super::signing::SharedKey;
use super::verify::{Verified, Verifier};
use mail_auth::AuthenticatedMessage;
use mail_auth::arc::ArcSealer;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::Done;

/// Fields the ARC-Message-Signature covers besides those DKIM signing covers
/// ([`super::signing::SIGNED_HEADERS`]): the sender's signatures and our results, which
/// the next hop's validation depends on.
const ALSO_SIGNED: &[&str] = &["DKIM-Signature", "Authentication-Results"];

/// Seals with one key, for one policy revision.
pub struct Sealer {
    sealer: ArcSealer<SharedKey, Done>,
    domain: String,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

/// Why a message was not sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the ARC chain it arrived with has failed before (cv=fail): not sealed again")]
    ChainFailed,
    #[error("the ARC chain it arrived with cannot be extended: {0}")]
    ChainBroken(String),
    #[error("the message has no header section")]
    NoHeader,
    #[error("sealing failed: {0}")]
    Sign(String),
}

impl Sealer {
    /// A sealer signing as `d=domain`, `s=selector`.
    pub fn new(key: SharedKey, domain: &str, selector: &str) -> Sealer {
        let sealer = ArcSealer::from_key(key)
            .domain(domain)
            .selector(selector)
            .headers(
                super::signing::SIGNED_HEADERS
                    .iter()
                    .chain(ALSO_SIGNED)
                    .copied(),
            );
        Sealer {
            sealer,
            domain: domain.to_string(),
        }
    }

    /// The ARC set for `message` (the message as it leaves, our results at its top),
    /// as three header fields to put above everything else.
    pub fn seal(
        &self,
        verifier: &Verifier,
        verified: &Verified<'_>,
        context: &ScanContext,
        message: &[u8],
    ) -> Result<String, SealError> {
        let arc = &verified.arc;
        let arrived_with_sets = !matches!(arc.result(), mail_auth::DkimResult::None);
        if arrived_with_sets && arc.sets().is_empty() {
            return Err(SealError::ChainBroken(format!("{:?}", arc.result())));
        }
        if !arc.can_be_sealed() {
            return Err(SealError::ChainFailed);
        }
        let parsed = AuthenticatedMessage::parse(message).ok_or(SealError::NoHeader)?;
        let results = verifier.results(verified, context);
        let set = self
            .sealer
            .seal(&parsed, &results, arc)
            .map_err(|e| SealError::Sign(e.to_string()))?;
        Ok(set.to_header())
    }
}

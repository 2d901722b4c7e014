//! Content headers added to messages on their way through, and the checks that judge a
//! message before it is accepted: the attachment analyser, the external scanners
//! (Rspamd for junk, clamd for malware) and what they share, and the [`pipeline`] that
//! runs them between the end of DATA and the reply as a policy's `filters:` say
//! ([`settings`]), with header changes by [`rewrite`]. [`dnsbl`] judges the client by
//! DNS block lists at its first RCPT; [`verify`] checks SPF, DKIM, ARC and DMARC of mail
//! from the Internet and [`seal`] seals its results; [`signing`] DKIM-signs our own
//! senders' mail with keys [`keygen`] makes. The `Received:` header is the protocol's
//! ([`crate::smtp::received`]).

pub mod attachments;
mod checks;
pub mod clamd;
pub mod dnsbl;
pub mod keygen;
pub mod pipeline;
pub mod rewrite;
pub mod rspamd;
pub mod scan;
pub mod seal;
pub mod settings;
pub mod signing;
pub mod verify;

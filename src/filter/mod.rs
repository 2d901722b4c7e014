//! Content and trace headers added to messages on their way through, and the checks
//! that judge a message before it is accepted: the `Received:` header, the attachment
//! analyser, the external scanners (Rspamd for junk, clamd for malware) and what they
//! share, and the [`pipeline`] that runs them between the end of DATA and the reply as a
//! policy's `filters:` say ([`settings`]), with header changes by [`rewrite`]; DKIM
//! signing of our own senders' mail ([`signing`]) and the keys for it ([`keygen`]).
//! SPF/DKIM/DMARC results and DNSBL checks belong here as they arrive.

pub mod attachments;
mod checks;
pub mod clamd;
pub mod keygen;
pub mod pipeline;
pub mod received;
pub mod rewrite;
pub mod rspamd;
pub mod scan;
pub mod settings;
pub mod signing;

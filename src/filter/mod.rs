//! Content and trace headers added to messages on their way through, and the checks
//! that judge a message before it is accepted: the `Received:` header, the external
//! scanners (Rspamd for junk, clamd for malware) and what they share; SPF/DKIM/DMARC
//! results, attachment stripping and DNSBL checks belong here as they arrive.

pub mod clamd;
pub mod received;
pub mod rspamd;
pub mod scan;

//! Content and trace headers added to messages on their way through, and the checks
//! that judge a message before it is accepted: the `Received:` header, the attachment
//! analyser, the external scanners (Rspamd for junk, clamd for malware) and what they
//! share. Issue 11's pipeline between end of DATA and the reply, which puts these to
//! use, comes next; SPF/DKIM/DMARC results and DNSBL checks belong here as they arrive.

pub mod attachments;
pub mod clamd;
pub mod received;
pub mod rspamd;
pub mod scan;

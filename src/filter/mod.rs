//! Content and trace headers added to messages on their way through: the `Received:`
//! header, and the attachment analyser of issue 11 (a library so far: the pipeline
//! between end of DATA and the reply comes next); SPF/DKIM/DMARC results and DNSBL
//! checks belong here as they arrive.

pub mod attachments;
pub mod received;

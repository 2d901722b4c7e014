//! Content and trace headers added to messages on their way through: the `Received:`
//! header today; SPF/DKIM/DMARC results, attachment stripping and DNSBL checks belong
//! here as they arrive.

pub mod attachments;
pub mod received;

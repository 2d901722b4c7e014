//! SMTP commands (RFC 5321 4.1) and their parser: one command line in, one [`Command`]
//! or a [`CommandError`] that knows its reply out.

use super::address::{MailParams, Mailbox, Notify, Orcpt, ReversePath};

/// One parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    Mail {
        reverse_path: ReversePath,
        params: MailParams,
    },
    Rcpt {
        forward_path: Mailbox,
        notify: Option<Notify>,
        orcpt: Option<Orcpt>,
    },
    Data,
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy(String),
    Help(Option<String>),
    StartTls,
    Auth {
        mechanism: String,
        initial_response: Option<String>,
    },
}

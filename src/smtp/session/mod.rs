//! The server side of one SMTP connection as a state machine free of I/O.
//!
//! The ingress feeds it command lines ([`Session::command`]) or, after DATA/BDAT, raw
//! message bytes ([`Session::message_bytes`]); each call answers with a [`Step`] that says
//! what the connection must do next: write a reply, upgrade to TLS, check credentials,
//! store a message. Results of those actions come back through [`Session::tls_started`],
//! [`Session::auth_result`] and [`Session::enqueue_result`]. Per-verb handling lives in the
//! submodules, one file per group of verbs.
//!
//! The session is generic over the [`SessionPolicy`] it applies (the relay policy, in
//! the ingress) and takes its clock and ids from a [`SessionEnv`], so that it reads
//! nothing of the world itself.

mod auth;
mod client_check;
mod ehlo;
mod env;
mod envelope;
mod message;
mod rules;
#[cfg(test)]
pub(crate) mod transcript;

use super::command::{Command, parse_command};
use super::reply::Reply;
use crate::envelope::{Envelope, QueueId};
use message::{Discard, Receiving};
use std::net::IpAddr;
use std::sync::Arc;

pub use auth::AuthOutcome;
pub use env::{SessionEnv, SystemEnv};
pub use message::QueueFailure;
pub use rules::{Client, ClientVerdict, Refusal, SessionPolicy};

/// What kind of port a listener is (RFC 8314 and common practice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Port 25 style: STARTTLS offered, AUTH offered only under TLS, relay rules apply.
    Relay,
    /// Port 587 style: AUTH required before MAIL.
    Submission,
    /// Port 465 style: implicit TLS, AUTH required before MAIL.
    Submissions,
}

/// Settings that shape every session of one listener.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our name in the greeting, EHLO reply and Received header.
    pub hostname: String,
    pub kind: ListenerKind,
    /// STARTTLS is offered when the listener has a certificate (and is not implicit TLS).
    pub tls_available: bool,
    /// AUTH over a connection without TLS; off unless the listener says so.
    pub allow_plaintext_auth: bool,
    pub max_message_size: u64,
    pub max_recipients: usize,
    /// Longest text line accepted in message content, without CRLF.
    pub max_data_line: usize,
    /// Lines of content ending in a bare LF: taken as CRLF, or the message refused.
    pub bare_line_endings: crate::smtp::data::BareLineEndings,
    /// Errors (syntax, sequence, refused recipients, failed AUTH) before 421 and close.
    pub max_errors: u32,
    /// Whether our Received header names the authenticated user.
    pub received_user: ReceivedUser,
    /// More `Received:` headers than this in a message (ours not counted) mean a mail
    /// loop: `554 5.4.6` at the end of the data.
    pub max_received_headers: usize,
}

/// Whether the `Received:` header of authenticated mail names the SASL user (the
/// protocol, `ESMTPA`/`ESMTPSA`, says it was authenticated either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceivedUser {
    Named,
    Omitted,
}

impl ReceivedUser {
    /// Named on submission ports, where users send their own mail; omitted on a relay
    /// port, where a login name would go out to every recipient.
    pub fn default_for(kind: ListenerKind) -> Self {
        match kind {
            ListenerKind::Relay => ReceivedUser::Omitted,
            ListenerKind::Submission | ListenerKind::Submissions => ReceivedUser::Named,
        }
    }
}

/// What is known about the peer and the transport.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub client_ip: IpAddr,
    pub tls: Option<TlsInfo>,
}

/// The negotiated TLS parameters, for the Received header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
}

/// What the connection must do next.
#[derive(Debug)]
#[must_use]
pub enum Step {
    /// Send the reply and read the next command line.
    Reply(Reply),
    /// Send the reply and close the connection.
    Close(Reply),
    /// Send the reply (220), discard any input buffered after the command, do the TLS
    /// handshake, then call [`Session::tls_started`].
    StartTls(Reply),
    /// Send the reply (354), then feed the content through [`Session::message_bytes`].
    StartData(Reply),
    /// Feed the next `size` bytes (a BDAT chunk) through [`Session::message_bytes`]; no
    /// reply is sent before they are read.
    ReadChunk,
    /// Check the credentials (slow: on a blocking thread), then call
    /// [`Session::auth_result`].
    VerifyCredentials { username: String, password: String },
    /// Store the message durably, then call [`Session::enqueue_result`].
    Enqueue(Box<(Envelope, Vec<u8>)>),
    /// Ask the block lists of the policy's `dnsbl:` about the client (slow: DNS), then
    /// call [`Session::client_checked`], which answers the RCPT that asked.
    CheckClient,
}

/// Whether the connection has memory for message content now: the ingress says so
/// before each command ([`Session::set_resources`]), since only it knows its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resources {
    Available,
    /// A new transaction, recipient or message content would not fit: 452 4.3.1.
    Exhausted,
}

const BUDGET_SPENT: &str = "the memory budget for message content is spent";

/// The mail transaction: exists only from MAIL to the end of the message.
#[derive(Debug)]
struct Transaction {
    envelope: Envelope,
    receiving: Option<Receiving>,
}

#[derive(Debug, PartialEq, Eq)]
enum Greeted {
    No,
    Helo(String),
    Ehlo(String),
}

pub struct Session<P> {
    config: Arc<SessionConfig>,
    policy: Arc<P>,
    env: Arc<dyn SessionEnv>,
    conn: ConnectionInfo,
    greeted: Greeted,
    user: Option<String>,
    auth: Option<auth::Exchange>,
    transaction: Option<Transaction>,
    /// A refused BDAT chunk still being read.
    discard: Option<Discard>,
    /// The queue id of a message handed to the queue and not yet answered.
    pending: Option<QueueId>,
    rejection: Option<Rejection>,
    /// The block lists' verdict on the client, asked once per session.
    client_check: client_check::ClientCheck,
    errors: u32,
    failed_auths: u32,
    resources: Resources,
}

/// Why the last step refused a recipient, a sender or a message: for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// A short label for the metric (`relay_denied`, `message_too_big`, ...).
    pub reason: &'static str,
    pub detail: String,
    /// The queue id the transaction would have had, when there was a transaction.
    pub queue_id: Option<QueueId>,
}

impl<P: SessionPolicy> Session<P> {
    /// A session of a listener configured by `config`, under `policy`, with the time and
    /// ids from `env`.
    pub fn new(
        config: Arc<SessionConfig>,
        policy: Arc<P>,
        env: Arc<dyn SessionEnv>,
        conn: ConnectionInfo,
    ) -> Self {
        Session {
            config,
            policy,
            env,
            conn,
            greeted: Greeted::No,
            user: None,
            auth: None,
            transaction: None,
            discard: None,
            pending: None,
            rejection: None,
            client_check: client_check::ClientCheck::default(),
            errors: 0,
            failed_auths: 0,
            resources: Resources::Available,
        }
    }

    pub fn greeting(&self) -> Reply {
        Reply::plain(220, vec![format!("{} ESMTP Sluice", self.config.hostname)])
    }

    /// True while the session expects message content rather than command lines.
    pub fn receiving_message(&self) -> bool {
        self.discard.is_some()
            || self
                .transaction
                .as_ref()
                .and_then(|t| t.receiving.as_ref())
                .is_some_and(Receiving::expects_bytes)
    }

    /// True from MAIL until the transaction ends: a draining server lets it finish.
    pub fn in_transaction(&self) -> bool {
        self.transaction.is_some()
    }

    /// True while the next line is a SASL response rather than a command.
    pub fn in_auth_exchange(&self) -> bool {
        self.auth.is_some()
    }

    /// The refusal made by the last step, if it made one.
    pub fn take_rejection(&mut self) -> Option<Rejection> {
        self.rejection.take()
    }

    /// How many failed AUTH attempts this session has made; the connection slows each
    /// next attempt down by this much.
    pub fn failed_auths(&self) -> u32 {
        self.failed_auths
    }

    /// The client's address, as policy and limits see it.
    pub fn client_ip(&self) -> IpAddr {
        self.conn.client_ip
    }

    /// The negotiated TLS parameters, when the session runs over TLS.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.conn.tls.as_ref()
    }

    /// The policy this session applies.
    pub fn policy(&self) -> &Arc<P> {
        &self.policy
    }

    /// Takes a newer policy. The connection calls it between transactions, outside an
    /// AUTH exchange, so that one transaction is judged by one policy. A session whose
    /// user the new policy no longer accepts (removed, or another password) ends with
    /// `421 4.7.0`: what its old credentials opened must close.
    pub fn adopt_policy(&mut self, policy: Arc<P>) -> Option<Reply> {
        if let Some(user) = &self.user
            && !policy.keeps_user(&self.policy, user)
        {
            return Some(Reply::new(
                421,
                "4.7.0",
                format!(
                    "{} Error: credentials no longer valid, reconnect",
                    self.config.hostname
                ),
            ));
        }
        self.policy = policy;
        None
    }

    /// Whether there is memory for content now; applies to the following commands.
    pub fn set_resources(&mut self, resources: Resources) {
        self.resources = resources;
    }

    /// RFC 3463 4.3.1 "mail system full": the transient answer while the process holds
    /// all the message content it may; the client tries again later.
    fn insufficient_storage_reply(&mut self, code: u16, detail: String) -> Reply {
        self.rejection = Some(Rejection {
            reason: "insufficient_storage",
            detail,
            queue_id: self.transaction.as_ref().map(|t| t.envelope.id.clone()),
        });
        Reply::new(
            code,
            "4.3.1",
            "Error: insufficient system storage, try again later",
        )
    }

    /// Handles one command line (without its line ending).
    pub fn command(&mut self, line: &[u8]) -> Step {
        if self.auth.is_some() {
            return self.auth_response(line);
        }
        match parse_command(line) {
            Ok(command) => self.dispatch(command),
            Err(e) => self.error(e.reply()),
        }
    }

    /// A command line longer than the configured bound was received and discarded.
    pub fn line_too_long(&mut self) -> Step {
        self.error(Reply::new(500, "5.5.2", "Error: line too long"))
    }

    /// The peer was silent for longer than the command or data timeout.
    pub fn timeout(&self) -> Reply {
        Reply::new(
            421,
            "4.4.2",
            format!("{} Error: timeout exceeded", self.config.hostname),
        )
    }

    /// The server is shutting down or cannot serve.
    pub fn shutting_down(&self) -> Reply {
        Reply::new(
            421,
            "4.3.2",
            format!(
                "{} Service shutting down, try again later",
                self.config.hostname
            ),
        )
    }

    fn dispatch(&mut self, command: Command) -> Step {
        if self.resources == Resources::Exhausted
            && matches!(command, Command::Mail { .. } | Command::Rcpt { .. })
        {
            // Not counted as the client's error: the shortage is ours.
            return Step::Reply(self.insufficient_storage_reply(452, BUDGET_SPENT.into()));
        }
        match command {
            Command::Ehlo(name) => self.ehlo(name),
            Command::Helo(name) => self.helo(name),
            Command::Mail {
                reverse_path,
                params,
            } => self.mail(reverse_path, params),
            Command::Rcpt {
                forward_path,
                notify,
                orcpt,
            } => self.rcpt(forward_path, notify, orcpt),
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.transaction = None;
                Step::Reply(Reply::new(250, "2.0.0", "Ok"))
            }
            Command::Noop => Step::Reply(Reply::new(250, "2.0.0", "Ok")),
            Command::Quit => Step::Close(Reply::new(221, "2.0.0", "Bye")),
            Command::Vrfy(_) => Step::Reply(Reply::new(
                252,
                "2.5.2",
                "Cannot VRFY user, but will accept message and attempt delivery",
            )),
            Command::Help(_) => Step::Reply(help()),
            Command::StartTls => self.starttls(),
            Command::Auth {
                mechanism,
                initial_response,
            } => self.auth(&mechanism, initial_response),
        }
    }

    /// Answers with an error reply, counting it against the session's error limit.
    fn error(&mut self, reply: Reply) -> Step {
        self.errors += 1;
        if self.errors >= self.config.max_errors {
            return Step::Close(Reply::new(
                421,
                "4.7.0",
                format!("{} Error: too many errors", self.config.hostname),
            ));
        }
        Step::Reply(reply)
    }

    fn sequence_error(&mut self, text: &str) -> Step {
        self.error(Reply::new(503, "5.5.1", format!("Error: {text}")))
    }
}

fn help() -> Reply {
    Reply {
        code: 214,
        status: Some("2.0.0"),
        lines: vec![
            "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH"
                .to_string(),
            "See RFC 5321".to_string(),
        ],
    }
}

#[cfg(test)]
mod tests;

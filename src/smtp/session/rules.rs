//! What the session asks of the relay's rules, in its own terms: limits, whether AUTH
//! is on, the trusted networks, and the verdicts on a reverse-path and a forward-path.
//! The relay policy's snapshot implements [`SessionPolicy`] on its side
//! (`policy/session.rs`); the session never names it, so that the protocol layer
//! depends on no policy model, and its tests run on a small implementation of their
//! own.

use crate::envelope::SenderTrust;
use crate::smtp::address::{Mailbox, ReversePath};
use crate::smtp::reply::Reply;
use std::net::IpAddr;

/// The rules one session applies; a newer value replaces them between transactions
/// ([`super::Session::adopt_policy`]).
pub trait SessionPolicy {
    /// Whether there are users to check credentials against: AUTH is offered only then.
    fn has_users(&self) -> bool;

    /// A bound on message size below the listener's, if the rules set one.
    fn max_message_size(&self) -> Option<u64>;

    /// A bound on recipients per transaction below the listener's, if the rules set one.
    fn max_recipients(&self) -> Option<usize>;

    /// Whether `ip` is in a trusted client network.
    fn trusts_network(&self, ip: IpAddr) -> bool;

    /// Whether the authenticated `user` may send as `reverse_path` (MAIL FROM).
    fn sender(&self, user: &str, reverse_path: &ReversePath) -> Result<(), Refusal>;

    /// Whether a client may send to `forward_path` (RCPT TO): the relay decision.
    fn recipient(&self, client: &Client<'_>, forward_path: &Mailbox) -> Result<(), Refusal>;

    /// Whether a client of this trust must pass the block lists before its first
    /// recipient is taken ([`super::Step::CheckClient`]).
    fn checks_client(&self, trust: SenderTrust) -> bool;

    /// Whether a session authenticated as `user` under `earlier` may go on under these
    /// rules (the user still exists, with the same credentials).
    fn keeps_user(&self, earlier: &Self, user: &str) -> bool;
}

/// Who is asking, for the relay decision.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    pub ip: IpAddr,
    /// The SASL user, once AUTH succeeded.
    pub user: Option<&'a str>,
}

/// A refused reverse-path, forward-path or client: the reply the client hears, and for
/// logs and metrics why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// A short label for the metric (`relay_denied`, `sender_not_owned`, `dnsbl`, ...).
    pub reason: &'static str,
    /// For the log line.
    pub detail: String,
    pub reply: Reply,
}

/// The block lists' verdict on the client, as the connection found it after a
/// [`super::Step::CheckClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientVerdict {
    /// Not listed, or the lists could not be asked and the rules fail open.
    Clear,
    /// Listed, or the lists could not be asked and the rules fail closed: every RCPT of
    /// the session hears this.
    Refused(Refusal),
}

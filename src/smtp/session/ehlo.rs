//! EHLO, HELO and STARTTLS: greeting the client, advertising extensions, and the TLS
//! upgrade that resets the session (RFC 5321 4.1.1.1, RFC 3207).

use super::{ConnectionInfo, Greeted, ListenerKind, Session, SessionPolicy, Step, TlsInfo};
use crate::smtp::reply::Reply;

impl<P: SessionPolicy> Session<P> {
    pub(super) fn ehlo(&mut self, name: String) -> Step {
        self.transaction = None;
        let mut lines = vec![self.config.hostname.clone()];
        lines.extend(self.extensions());
        self.greeted = Greeted::Ehlo(name);
        Step::Reply(Reply::plain(250, lines))
    }

    pub(super) fn helo(&mut self, name: String) -> Step {
        self.transaction = None;
        self.greeted = Greeted::Helo(name);
        Step::Reply(Reply::plain(250, vec![self.config.hostname.clone()]))
    }

    /// The EHLO keywords this session offers right now.
    fn extensions(&self) -> Vec<String> {
        let mut ext = vec![
            "PIPELINING".to_string(),
            format!("SIZE {}", self.max_message_size()),
            "8BITMIME".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
            "SMTPUTF8".to_string(),
            "CHUNKING".to_string(),
            "DSN".to_string(),
        ];
        if self.starttls_offered() {
            ext.push("STARTTLS".to_string());
        }
        if self.auth_offered() {
            ext.push("AUTH PLAIN LOGIN".to_string());
        }
        ext
    }

    fn starttls_offered(&self) -> bool {
        self.config.tls_available
            && self.conn.tls.is_none()
            && self.config.kind != ListenerKind::Submissions
    }

    /// AUTH is offered only where credentials are protected by TLS, unless the listener
    /// explicitly allows plaintext, and only when the policy has users to check against.
    pub(super) fn auth_offered(&self) -> bool {
        self.policy.has_users() && self.auth_permitted_on_transport()
    }

    pub(super) fn auth_permitted_on_transport(&self) -> bool {
        self.conn.tls.is_some() || self.config.allow_plaintext_auth
    }

    pub(super) fn starttls(&mut self) -> Step {
        if self.conn.tls.is_some() {
            return self.sequence_error("TLS already active");
        }
        if !self.starttls_offered() {
            return self.error(Reply::new(502, "5.5.1", "Error: STARTTLS not available"));
        }
        Step::StartTls(Reply::new(220, "2.0.0", "Ready to start TLS"))
    }

    /// After a successful handshake the session starts over (RFC 3207 4.2): the client
    /// must say EHLO again, and nothing learnt before TLS is kept.
    pub fn tls_started(&mut self, tls: TlsInfo) {
        self.conn = ConnectionInfo {
            client_ip: self.conn.client_ip,
            tls: Some(tls),
        };
        self.greeted = Greeted::No;
        self.transaction = None;
        self.user = None;
        self.auth = None;
    }

    pub(super) fn max_message_size(&self) -> u64 {
        match self.policy.max_message_size() {
            Some(limit) => limit.min(self.config.max_message_size),
            None => self.config.max_message_size,
        }
    }

    pub(super) fn max_recipients(&self) -> usize {
        match self.policy.max_recipients() {
            Some(limit) => limit.min(self.config.max_recipients),
            None => self.config.max_recipients,
        }
    }
}

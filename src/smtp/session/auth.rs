//! AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms: the SASL exchange and
//! the rules on when it may happen. Checking the password is the connection's job (it is
//! slow by design), the session only asks for it.

use super::{Greeted, Session, SessionPolicy, Step};
use crate::smtp::reply::Reply;
use crate::smtp::sasl::{self, Mechanism};

/// Where an AUTH exchange stands between command lines.
#[derive(Debug)]
pub(super) enum Exchange {
    PlainResponse,
    LoginUsername,
    LoginPassword { username: String },
    Verifying { username: String },
}

/// The verdict on the credentials of a [`Step::VerifyCredentials`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    Accepted,
    /// The credentials were checked and are wrong.
    Rejected,
    /// The credentials could not be checked now (the client or user is locked out, or
    /// the server is busy): RFC 4954's temporary failure, so that a client with the
    /// right password tries again later instead of asking its user for another.
    Unavailable,
}

impl<P: SessionPolicy> Session<P> {
    pub(super) fn auth(&mut self, mechanism: &str, initial: Option<String>) -> Step {
        if let Some(step) = self.auth_refusal() {
            return step;
        }
        let Some(mechanism) = Mechanism::parse(mechanism) else {
            return self.error(Reply::new(
                504,
                "5.5.4",
                "Unsupported authentication mechanism",
            ));
        };
        match (mechanism, initial) {
            (Mechanism::Plain, Some(response)) => self.plain_response(&response),
            (Mechanism::Plain, None) => self.challenge(Exchange::PlainResponse, ""),
            (Mechanism::Login, Some(username)) => self.login_username(&username),
            (Mechanism::Login, None) => {
                self.challenge(Exchange::LoginUsername, sasl::LOGIN_USERNAME_PROMPT)
            }
        }
    }

    /// The reasons AUTH cannot start now, in the order a client would want to hear them.
    fn auth_refusal(&mut self) -> Option<Step> {
        if !matches!(self.greeted, Greeted::Ehlo(_)) {
            return Some(self.sequence_error("send EHLO first"));
        }
        if self.user.is_some() {
            return Some(self.sequence_error("already authenticated"));
        }
        if self.transaction.is_some() {
            return Some(self.sequence_error("MAIL transaction in progress"));
        }
        if !self.policy.has_users() {
            return Some(self.sequence_error("authentication not enabled"));
        }
        if !self.auth_permitted_on_transport() {
            return Some(self.error(Reply::new(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism",
            )));
        }
        None
    }

    fn challenge(&mut self, next: Exchange, prompt: &str) -> Step {
        self.auth = Some(next);
        Step::Reply(Reply::plain(334, vec![prompt.to_string()]))
    }

    /// A line sent in answer to a 334 challenge.
    pub(super) fn auth_response(&mut self, line: &[u8]) -> Step {
        let response = String::from_utf8_lossy(line).trim().to_string();
        match self.auth.take() {
            Some(Exchange::PlainResponse) => self.plain_response(&response),
            Some(Exchange::LoginUsername) => self.login_username(&response),
            Some(Exchange::LoginPassword { username }) => {
                match sasl::decode_login_field(&response) {
                    Ok(password) => self.verify(username, password),
                    Err(e) => self.error(e.reply()),
                }
            }
            Some(Exchange::Verifying { .. }) | None => {
                self.sequence_error("no authentication in progress")
            }
        }
    }

    fn plain_response(&mut self, response: &str) -> Step {
        match sasl::decode_plain(response) {
            Ok(c) => self.verify(c.username.clone(), c.password.clone()),
            Err(e) => self.error(e.reply()),
        }
    }

    fn login_username(&mut self, response: &str) -> Step {
        match sasl::decode_login_field(response) {
            Ok(username) => self.challenge(
                Exchange::LoginPassword { username },
                sasl::LOGIN_PASSWORD_PROMPT,
            ),
            Err(e) => self.error(e.reply()),
        }
    }

    fn verify(&mut self, username: String, password: String) -> Step {
        self.auth = Some(Exchange::Verifying {
            username: username.clone(),
        });
        Step::VerifyCredentials { username, password }
    }

    /// The connection's verdict on the credentials it was asked to verify.
    pub fn auth_result(&mut self, outcome: AuthOutcome) -> Step {
        let Some(Exchange::Verifying { username }) = self.auth.take() else {
            return self.sequence_error("no authentication in progress");
        };
        match outcome {
            AuthOutcome::Accepted => {
                self.user = Some(username);
                Step::Reply(Reply::new(235, "2.7.0", "Authentication successful"))
            }
            AuthOutcome::Rejected => {
                self.failed_auths += 1;
                self.error(Reply::new(
                    535,
                    "5.7.8",
                    "Error: authentication failed: credentials invalid",
                ))
            }
            AuthOutcome::Unavailable => self.error(Reply::new(
                454,
                "4.7.0",
                "Temporary authentication failure, try again later",
            )),
        }
    }
}

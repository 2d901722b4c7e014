//! Sender authentication of mail from the Internet: SPF (RFC 7208) for the HELO and MAIL
//! FROM identities, DKIM signatures (RFC 6376), the ARC chain (RFC 8617) and DMARC
//! (RFC 7489 and its successor) on mail-auth, over the ingress's hickory resolver (whose
//! cache keeps repeated lookups off the network). The results become one
//! `Authentication-Results` field (RFC 8601) under our host name, and a DMARC failure of
//! a domain whose policy is `reject` or `quarantine` becomes the verdict the policy asks
//! for ([`DmarcAction`]).
//!
//! Everything a message brings is hostile: the number of DKIM signatures verified is
//! bounded ([`MAX_SIGNATURES`]), SPF's lookup limits are mail-auth's (RFC 7208 4.6.4), and
//! the whole check runs under the check's time limit in the pipeline.

use super::checks::Found;
use super::scan::{Rewrite, ScanContext, reply_text};
use super::settings::{DmarcAction, SenderAuthSettings};
use crate::smtp::reply::Reply;
use mail_auth::dmarc::Policy;
use mail_auth::{
    ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimOutput, DmarcOutput, DmarcResult,
    MessageAuthenticator, SpfOutput, SpfResult,
};

/// The most DKIM signatures of one message that are verified: each costs DNS lookups
/// and a signature check, and a sender needs one or two (RFC 8463 dual signing).
pub const MAX_SIGNATURES: usize = 8;

/// The header this check writes.
pub const RESULTS_HEADER: &str = "Authentication-Results";

/// Verifies messages for one policy revision.
pub struct Verifier {
    authenticator: MessageAuthenticator,
    /// Our `authserv-id`: the host name of the relay.
    hostname: String,
    settings: SenderAuthSettings,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("hostname", &self.hostname)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What verification found, borrowing from the parsed message: the pipeline keeps it
/// until the message's final form is known, for an ARC seal over that form.
pub struct Verified<'m> {
    pub spf_helo: SpfOutput,
    pub spf_mail_from: Option<SpfOutput>,
    pub dkim: Vec<DkimOutput<'m>>,
    pub arc: ArcOutput<'m>,
    pub dmarc: DmarcOutput,
    /// The RFC 5322.From domain DMARC judged, empty when there was none (or several).
    pub header_from: String,
    /// The RFC 5321.MailFrom domain (the HELO name for the null sender).
    pub mail_from_domain: String,
    results: String,
}

impl Verifier {
    /// A verifier asking DNS through `resolver` (the ingress's, sharing its cache).
    pub fn new(
        resolver: hickory_resolver::TokioResolver,
        hostname: &str,
        settings: SenderAuthSettings,
    ) -> Verifier {
        Verifier {
            authenticator: MessageAuthenticator(resolver),
            hostname: hostname.to_string(),
            settings,
        }
    }

    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// Parses `message` for verification; `None` when it has no header section at all
    /// (only SPF can then be checked). Signatures beyond [`MAX_SIGNATURES`] are dropped.
    pub fn parse(message: &[u8]) -> Option<AuthenticatedMessage<'_>> {
        let mut parsed = AuthenticatedMessage::parse(message)?;
        parsed.dkim_headers.truncate(MAX_SIGNATURES);
        Some(parsed)
    }

    /// Runs SPF, DKIM, ARC and DMARC for a message from `context`'s client.
    pub async fn verify<'m>(
        &self,
        parsed: Option<&'m AuthenticatedMessage<'m>>,
        context: &ScanContext,
    ) -> Verified<'m> {
        let auth = &self.authenticator;
        let ip = context.client_ip;
        let helo = context.helo.as_str();
        let host = self.hostname.as_str();
        let sender = context.mail_from.as_str();
        // The HELO identity first (RFC 7208 2.3); MAIL FROM unless HELO already failed,
        // as mail-auth's combined check does, but both outputs kept for the header.
        let spf_helo = auth
            .verify_spf(mail_auth::spf::verify::SpfParameters::verify_ehlo(
                ip, helo, host,
            ))
            .await;
        let spf_mail_from = if sender.is_empty() || spf_helo.result() == SpfResult::Fail {
            None
        } else {
            Some(
                auth.verify_spf(mail_auth::spf::verify::SpfParameters::verify_mail_from(
                    ip, helo, host, sender,
                ))
                .await,
            )
        };
        let mail_from_domain = match sender.rsplit_once('@') {
            Some((_, domain)) => domain.to_ascii_lowercase(),
            None => helo.to_ascii_lowercase(),
        };
        let (dkim, arc, dmarc, header_from) = match parsed {
            Some(message) => {
                let (dkim, arc) =
                    futures_util::future::join(auth.verify_dkim(message), auth.verify_arc(message))
                        .await;
                let header_from = single_from_domain(message);
                (dkim, arc, None, header_from)
            }
            None => (Vec::new(), ArcOutput::default(), None, String::new()),
        };
        let mut verified = Verified {
            spf_helo,
            spf_mail_from,
            dkim,
            arc,
            dmarc: dmarc.unwrap_or_default(),
            header_from,
            mail_from_domain,
            results: String::new(),
        };
        if let Some(message) = parsed {
            let spf = verified
                .spf_mail_from
                .as_ref()
                .unwrap_or(&verified.spf_helo);
            verified.dmarc = auth
                .verify_dmarc(mail_auth::dmarc::verify::DmarcParameters::new(
                    message,
                    &verified.dkim,
                    &verified.mail_from_domain,
                    spf,
                ))
                .await;
        }
        verified.results = self.results(&verified, context).to_string();
        verified
    }

    /// The results as mail-auth's `AuthenticationResults` (the form ARC sealing takes).
    pub fn results<'a>(
        &'a self,
        verified: &'a Verified<'_>,
        context: &ScanContext,
    ) -> AuthenticationResults<'a> {
        let mut results = AuthenticationResults::new(&self.hostname)
            .with_dkim_results(&verified.dkim, &verified.header_from);
        results = match &verified.spf_mail_from {
            Some(spf) => results.with_spf_mailfrom_result(
                spf,
                context.client_ip,
                &context.mail_from,
                &context.helo,
            ),
            None if context.mail_from.is_empty() => results.with_spf_mailfrom_result(
                &verified.spf_helo,
                context.client_ip,
                "",
                &context.helo,
            ),
            None => {
                results.with_spf_ehlo_result(&verified.spf_helo, context.client_ip, &context.helo)
            }
        };
        results
            .with_arc_result(&verified.arc, context.client_ip)
            .with_dmarc_result(&verified.dmarc)
    }

    /// The verdict on a DMARC failure as the policy wants it, and the
    /// `Authentication-Results` field for the top of the message, which goes on in
    /// every mode.
    pub fn judge(&self, verified: &Verified<'_>) -> (Found, Rewrite) {
        let results = Rewrite {
            prepend: vec![verified.header_field()],
            ..Rewrite::default()
        };
        let detail = verified.summary();
        let failed = matches!(verified.dmarc.result(), DmarcResult::Fail(_));
        let action = match (failed, verified.dmarc.policy()) {
            (true, Policy::Reject) => self.settings.dmarc_reject,
            (true, Policy::Quarantine) => self.settings.dmarc_quarantine,
            _ => DmarcAction::Ignore,
        };
        let domain = verified.dmarc.domain();
        let found = match action {
            DmarcAction::Ignore => Found::Clean,
            DmarcAction::Reject => {
                let text = format!(
                    "Message refused: it fails the DMARC policy of {domain}, which asks for rejection"
                );
                Found::Reject(Reply::new(550, "5.7.1", reply_text(&text)), detail)
            }
            DmarcAction::Quarantine => Found::HoldAll(format!("DMARC quarantine: {detail}")),
            DmarcAction::Tag => {
                let tag = Rewrite {
                    add_headers: vec![(
                        super::pipeline::TAG_HEADER.to_string(),
                        super::scan::header_value(&format!(
                            "sender-auth; dmarc {}; {detail}",
                            policy_name(verified.dmarc.policy())
                        )),
                    )],
                    ..Rewrite::default()
                };
                Found::Headers(tag, detail)
            }
        };
        (found, results)
    }
}

impl Verified<'_> {
    /// The complete `Authentication-Results` field, folded, ending in CRLF.
    pub fn header_field(&self) -> String {
        format!("{RESULTS_HEADER}: {}\r\n", self.results)
    }

    /// `spf=pass dkim=fail arc=none dmarc=fail (p=reject)`, for logs and events.
    pub fn summary(&self) -> String {
        let spf = self.spf_mail_from.as_ref().unwrap_or(&self.spf_helo);
        let dkim = if self
            .dkim
            .iter()
            .any(|d| *d.result() == mail_auth::DkimResult::Pass)
        {
            "pass"
        } else if self.dkim.is_empty() {
            "none"
        } else {
            dkim_name(self.dkim[0].result())
        };
        let dmarc = match self.dmarc.result() {
            DmarcResult::Pass => "pass",
            DmarcResult::Fail(_) => "fail",
            DmarcResult::TempError(_) => "temperror",
            DmarcResult::PermError(_) => "permerror",
            DmarcResult::None => "none",
        };
        format!(
            "spf={} dkim={dkim} arc={} dmarc={dmarc} (p={}) header.from={}",
            spf_name(spf.result()),
            dkim_name(self.arc.result()),
            policy_name(self.dmarc.policy()),
            self.header_from,
        )
    }
}

fn spf_name(result: SpfResult) -> &'static str {
    match result {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

fn dkim_name(result: &mail_auth::DkimResult) -> &'static str {
    use mail_auth::DkimResult as R;
    match result {
        R::Pass => "pass",
        R::Neutral(_) => "neutral",
        R::Fail(_) => "fail",
        R::PermError(_) => "permerror",
        R::TempError(_) => "temperror",
        R::None => "none",
    }
}

fn policy_name(policy: Policy) -> &'static str {
    match policy {
        Policy::Reject => "reject",
        Policy::Quarantine => "quarantine",
        Policy::None | Policy::Unspecified => "none",
    }
}

/// The one domain of the From field, lower-case; empty when there are several domains
/// or none (DMARC does not apply to those, RFC 7489 6.6.1).
fn single_from_domain(message: &AuthenticatedMessage<'_>) -> String {
    let mut domains = message
        .from
        .iter()
        .filter_map(|a| a.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()));
    match (domains.next(), domains.next()) {
        (Some(d), None) => d,
        _ => String::new(),
    }
}

/// The occurrence numbers (1-based, as `Rewrite::remove_headers` counts) of the
/// `Authentication-Results` fields in `message`'s header section whose authserv-id is
/// `hostname`: a sender cannot have written a result of ours (RFC 8601 5).
pub fn forged_results(message: &[u8], hostname: &str) -> Vec<i32> {
    let mut found = Vec::new();
    let mut occurrence = 0;
    for (name, value) in super::rewrite::header_fields(message) {
        if !name.eq_ignore_ascii_case(RESULTS_HEADER.as_bytes()) {
            continue;
        }
        occurrence += 1;
        if authserv_id(value).is_some_and(|id| id.eq_ignore_ascii_case(hostname)) {
            found.push(occurrence);
        }
    }
    found
}

/// The authserv-id at the start of an `Authentication-Results` value: the first token
/// after comments and white space, up to white space, `;` or a comment.
fn authserv_id(value: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(value);
    let mut rest = text.trim_start();
    // Comments may come first (RFC 8601 2.2 allows CFWS); nested ones are rare, and a
    // value we cannot read is left alone rather than guessed at.
    while let Some(after) = rest.strip_prefix('(') {
        let close = after.find(')')?;
        rest = after[close + 1..].trim_start();
    }
    let rest = rest.strip_prefix('"').map_or(rest, |r| r);
    let end = rest
        .find(|c: char| c.is_whitespace() || c == ';' || c == '(' || c == '"')
        .unwrap_or(rest.len());
    let id = &rest[..end];
    (!id.is_empty()).then(|| id.to_string())
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;

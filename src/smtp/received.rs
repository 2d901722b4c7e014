//! The `Received:` trace header (RFC 5321 4.4, RFC 5322 3.6.7) with the protocol names of
//! RFC 3848 and RFC 6531 (ESMTPSA, UTF8SMTPS, ...).

use crate::envelope::Envelope;
use crate::smtp::session::{ReceivedUser, TlsInfo};
use chrono::{DateTime, TimeZone};

/// What the trace header records about how a message reached us.
pub struct Trace<'a> {
    pub hostname: &'a str,
    pub envelope: &'a Envelope,
    pub tls: Option<&'a TlsInfo>,
    /// The client said EHLO rather than HELO.
    pub esmtp: bool,
    /// Whether to name the authenticated user.
    pub user: ReceivedUser,
}

/// The complete header, folded, ending in CRLF.
pub fn header<Tz: TimeZone>(trace: &Trace<'_>, now: DateTime<Tz>) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let env = trace.envelope;
    let mut lines = vec![format!(
        "Received: from {} ([{}])",
        sanitize(&env.helo),
        env.client_ip
    )];
    if let Some(tls) = trace.tls {
        lines.push(format!(
            "(using {} with cipher {})",
            tls.version, tls.cipher
        ));
    }
    if let (Some(user), ReceivedUser::Named) = (&env.authenticated_user, trace.user) {
        lines.push(format!("(authenticated as {})", sanitize(user)));
    }
    lines.push(format!(
        "by {} (Sluice) with {} id {}",
        trace.hostname,
        protocol(trace),
        env.id
    ));
    // Naming the recipient only when there is one keeps Bcc recipients private.
    let date = now.format("%a, %d %b %Y %H:%M:%S %z");
    match env.recipients.as_slice() {
        [only] => lines.push(format!("for <{}>; {date}", only.address)),
        _ => lines.push(format!("; {date}")),
    }
    let mut out = lines.join("\r\n\t");
    out.push_str("\r\n");
    out
}

/// How many `Received:` fields the header section of `message` holds: the hops it has
/// made (RFC 5321 6.3: a count past a limit means a loop). See [`HopCounter`].
pub fn count(message: &[u8]) -> usize {
    let mut counter = HopCounter::default();
    counter.feed(message);
    counter.hops()
}

/// Counts `Received:` fields as a message streams past, in pieces of any size, holding
/// no more than a few bytes of it: the ingress keeps content in memory only up to a
/// threshold. The header section ends at the first empty line, or, as in Postfix, at
/// the first line that is neither a field nor the continuation of one; the body is never
/// read. Field names compare case-insensitively, and the obsolete blanks before the
/// colon (RFC 5322 4.5) count too.
#[derive(Debug, Default)]
pub struct HopCounter {
    hops: usize,
    line: LineState,
    ended: bool,
}

#[derive(Debug, Default)]
enum LineState {
    /// Nothing of the line yet.
    #[default]
    Start,
    /// In the field name: its first bytes (lowercased, enough to tell `received`), its
    /// length, whether blanks followed it, and whether it is still a valid name.
    Name {
        start: [u8; 8],
        len: usize,
        blanks: bool,
        valid: bool,
    },
    /// Past the colon, or a continuation line: nothing more to learn before the LF.
    Rest,
}

impl HopCounter {
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.ended {
                return;
            }
            self.byte(b);
        }
    }

    /// The `Received:` fields seen so far.
    pub fn hops(&self) -> usize {
        self.hops
    }

    fn byte(&mut self, b: u8) {
        let state = std::mem::take(&mut self.line);
        self.line = match (state, b) {
            (LineState::Rest, b'\n') => LineState::Start,
            (LineState::Rest, _) => LineState::Rest,
            (LineState::Start, b' ' | b'\t') => LineState::Rest,
            (LineState::Start, b) => self.name_byte([0; 8], 0, false, true, b),
            (
                LineState::Name {
                    start,
                    len,
                    blanks,
                    valid,
                },
                b,
            ) => self.name_byte(start, len, blanks, valid, b),
        };
    }

    fn name_byte(
        &mut self,
        mut start: [u8; 8],
        len: usize,
        blanks: bool,
        valid: bool,
        b: u8,
    ) -> LineState {
        match b {
            b':' => {
                if len == 0 || !valid {
                    self.ended = true;
                } else if len == 8 && &start == b"received" {
                    self.hops += 1;
                }
                LineState::Rest
            }
            // A line without a colon: the header section is over.
            b'\n' => {
                self.ended = true;
                LineState::Start
            }
            b if b.is_ascii_whitespace() => LineState::Name {
                start,
                len,
                blanks: true,
                valid,
            },
            b => {
                if len < start.len() {
                    start[len] = b.to_ascii_lowercase();
                }
                LineState::Name {
                    start,
                    len: len + 1,
                    blanks,
                    // Blanks inside a name, or bytes outside 33..=126, make it no name.
                    valid: valid && !blanks && (33..=126).contains(&b),
                }
            }
        }
    }
}

/// `with` keyword: SMTP or ESMTP, UTF8SMTP for SMTPUTF8 transactions, then S for TLS
/// and A for an authenticated session.
fn protocol(trace: &Trace<'_>) -> String {
    let mut name = if trace.envelope.params.smtputf8 {
        "UTF8SMTP".to_string()
    } else if trace.esmtp {
        "ESMTP".to_string()
    } else {
        "SMTP".to_string()
    };
    if trace.esmtp && trace.tls.is_some() {
        name.push('S');
    }
    if trace.esmtp && trace.envelope.authenticated_user.is_some() {
        name.push('A');
    }
    name
}

/// Client-supplied text may not break the header: keep printable characters only.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || c == '(' || c == ')' {
                '?'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::QueueId;
    use crate::smtp::address::{MailParams, Mailbox, Recipient};
    use chrono::Utc;

    fn envelope(user: Option<&str>, rcpts: usize) -> Envelope {
        Envelope {
            id: QueueId::parse("01JAAAAAAAAAAAAAAAAAAAAAAA").unwrap(),
            reverse_path: None,
            params: MailParams::default(),
            recipients: (0..rcpts)
                .map(|i| Recipient {
                    address: Mailbox::new(format!("r{i}"), "example.org"),
                    notify: None,
                    orcpt: None,
                })
                .collect(),
            received_at_ms: 0,
            client_ip: "192.0.2.7".parse().unwrap(),
            helo: "client.example\r\nX-Injected: 1".into(),
            authenticated_user: user.map(String::from),
            sender_trust: crate::envelope::SenderTrust::Untrusted,
            attempts: 0,
            last_error: None,
            delay_warned_at_ms: None,
            trace: None,
        }
    }

    #[test]
    fn records_tls_user_protocol_id_and_single_recipient() {
        let env = envelope(Some("alice"), 1);
        let tls = TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_256_GCM_SHA384".into(),
        };
        let trace = Trace {
            hostname: "relay.example",
            envelope: &env,
            tls: Some(&tls),
            esmtp: true,
            user: ReceivedUser::Named,
        };
        let date = Utc.with_ymd_and_hms(2026, 11, 29, 8, 0, 0).unwrap();
        assert_eq!(
            header(&trace, date),
            "Received: from client.example??X-Injected: 1 ([192.0.2.7])\r\n\t\
             (using TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384)\r\n\t\
             (authenticated as alice)\r\n\t\
             by relay.example (Sluice) with ESMTPSA id 01JAAAAAAAAAAAAAAAAAAAAAAA\r\n\t\
             for <r0@example.org>; Sun, 29 Nov 2026 08:00:00 +0000\r\n"
        );
    }

    #[test]
    fn counts_received_fields_of_the_header_section_only() {
        let cases: &[(&str, usize)] = &[
            (
                "Received: a\r\nreceived : b\r\n\tfolded\r\nRECEIVED:c\r\nSubject: x\r\n\r\nReceived: body\r\n",
                3,
            ),
            ("Subject: x\r\n\r\n", 0),
            ("", 0),
            ("Received: a\nReceived: b\n\nReceived: c\n", 2),
            // Not a field: the body starts there, as in Postfix.
            ("Received: a\r\nnot a header\r\nReceived: b\r\n", 1),
            ("X-Received: a\r\nReceived-SPF: pass\r\nReceived: b", 1),
            (" Received: continuation of nothing\r\nReceived: a\r\n", 1),
        ];
        for (text, hops) in cases {
            assert_eq!(count(text.as_bytes()), *hops, "{text:?}");
            // In two pieces, split anywhere, and byte by byte: the same count.
            let bytes = text.as_bytes();
            for at in 0..=bytes.len() {
                let mut counter = HopCounter::default();
                counter.feed(&bytes[..at]);
                counter.feed(&bytes[at..]);
                assert_eq!(counter.hops(), *hops, "{text:?} split at {at}");
            }
            let mut counter = HopCounter::default();
            bytes
                .iter()
                .for_each(|b| counter.feed(std::slice::from_ref(b)));
            assert_eq!(counter.hops(), *hops, "{text:?} byte by byte");
        }
    }

    #[test]
    fn several_recipients_are_not_named_and_helo_is_plain_smtp() {
        let env = envelope(None, 2);
        let trace = Trace {
            hostname: "relay.example",
            envelope: &env,
            tls: None,
            esmtp: false,
            user: ReceivedUser::Named,
        };
        let text = header(&trace, Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap());
        assert!(text.contains("with SMTP id"), "{text}");
        assert!(
            text.ends_with("\r\n\t; Fri, 02 Jan 2026 03:04:05 +0000\r\n"),
            "{text}"
        );
        assert!(!text.contains("r0@"), "{text}");
    }

    #[test]
    fn the_user_can_be_left_out_while_the_protocol_still_says_authenticated() {
        let env = envelope(Some("alice"), 1);
        let trace = Trace {
            hostname: "relay.example",
            envelope: &env,
            tls: None,
            esmtp: true,
            user: ReceivedUser::Omitted,
        };
        let text = header(&trace, Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap());
        assert!(!text.contains("alice"), "{text}");
        assert!(text.contains("with ESMTPA id"), "{text}");
    }
}

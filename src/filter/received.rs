//! The `Received:` trace header (RFC 5321 4.4, RFC 5322 3.6.7) with the protocol names of
//! RFC 3848 and RFC 6531 (ESMTPSA, UTF8SMTPS, ...).

use crate::queue::Envelope;
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
/// made (RFC 5321 6.3: a count past a limit means a loop). The section ends at the first
/// empty line, or, as in Postfix, at the first line that is neither a field nor the
/// continuation of one; the body is never read. Field names compare case-insensitively,
/// and the obsolete space before the colon (RFC 5322 4.5) counts too.
pub fn count(message: &[u8]) -> usize {
    let mut hops = 0;
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            break;
        };
        let name = line[..colon].trim_ascii_end();
        if name.is_empty() || !name.iter().all(|b| (33..=126).contains(b)) {
            break;
        }
        if name.eq_ignore_ascii_case(b"received") {
            hops += 1;
        }
    }
    hops
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
    use crate::queue::QueueId;
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
            sender_trust: crate::queue::SenderTrust::Untrusted,
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

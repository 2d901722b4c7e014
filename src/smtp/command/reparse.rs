//! Envelope parts that come back from storage another process wrote (the headers of a
//! JetStream message) are held to the parser that accepted them: each is written back as
//! the MAIL or RCPT command it came from and must parse back to itself. What passes
//! could have come from our ingress; nothing else reaches a command line of ours (a CR
//! or LF, a NUL, a path too long, an ENVID that is not xtext-safe, a NOTIFY of nothing).

use super::{Command, parse_command};
use crate::smtp::address::{Body, MailParams, Notify, Recipient, Ret, ReversePath};
use crate::smtp::xtext;

/// The reverse-path and MAIL parameters, as `MAIL FROM:` would give them.
pub fn reparse_mail(reverse_path: &ReversePath, params: &MailParams) -> Result<(), String> {
    let mut line = match reverse_path {
        Some(mailbox) => format!("MAIL FROM:<{mailbox}>"),
        None => "MAIL FROM:<>".to_string(),
    };
    if let Some(size) = params.size {
        line += &format!(" SIZE={size}");
    }
    match params.body {
        Some(Body::SevenBit) => line += " BODY=7BIT",
        Some(Body::EightBitMime) => line += " BODY=8BITMIME",
        None => {}
    }
    if params.smtputf8 {
        line += " SMTPUTF8";
    }
    match params.ret {
        Some(Ret::Full) => line += " RET=FULL",
        Some(Ret::Headers) => line += " RET=HDRS",
        None => {}
    }
    if let Some(envid) = &params.envid {
        line += &format!(" ENVID={}", xtext::encode(envid));
    }
    if let Some(auth) = &params.auth {
        line += &format!(" AUTH={}", xtext::encode(auth));
    }
    let expected = Command::Mail {
        reverse_path: reverse_path.clone(),
        params: params.clone(),
    };
    same(&line, &expected, "reverse-path")
}

/// A forward-path with its DSN parameters, as `RCPT TO:` would give them.
pub fn reparse_rcpt(recipient: &Recipient) -> Result<(), String> {
    let mut line = format!("RCPT TO:<{}>", recipient.address);
    if let Some(notify) = recipient.notify {
        line += &format!(" NOTIFY={}", notify_value(notify));
    }
    if let Some(orcpt) = &recipient.orcpt {
        line += &format!(
            " ORCPT={};{}",
            orcpt.addr_type,
            xtext::encode(&orcpt.address)
        );
    }
    let expected = Command::Rcpt {
        forward_path: recipient.address.clone(),
        notify: recipient.notify,
        orcpt: recipient.orcpt.clone(),
    };
    same(&line, &expected, "recipient")
}

fn notify_value(notify: Notify) -> String {
    let flags = [
        (notify.never, "NEVER"),
        (notify.success, "SUCCESS"),
        (notify.failure, "FAILURE"),
        (notify.delay, "DELAY"),
    ];
    let set: Vec<&str> = flags
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect();
    set.join(",")
}

fn same(line: &str, expected: &Command, what: &str) -> Result<(), String> {
    match parse_command(line.as_bytes()) {
        Ok(parsed) if parsed == *expected => Ok(()),
        Ok(_) => Err(format!("{what} {line:?} does not parse back to itself")),
        Err(e) => Err(format!("{what} {line:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::address::{Mailbox, Orcpt};

    fn recipient(local: &str, domain: &str) -> Recipient {
        Recipient {
            address: Mailbox::new(local, domain),
            notify: None,
            orcpt: None,
        }
    }

    #[test]
    fn what_the_ingress_accepts_passes() {
        let params = MailParams {
            size: Some(12),
            body: Some(Body::EightBitMime),
            smtputf8: true,
            ret: Some(Ret::Headers),
            envid: Some("id 1+2=3".into()),
            auth: Some("a@b.example".into()),
        };
        let sender = Some(Mailbox::new("jörg", "bücher.example"));
        assert_eq!(reparse_mail(&sender, &params), Ok(()));
        assert_eq!(reparse_mail(&None, &MailParams::default()), Ok(()));
        let mut r = recipient("\"a b\"", "[192.0.2.1]");
        r.notify = Some(Notify {
            success: true,
            failure: true,
            ..Notify::default()
        });
        r.orcpt = Some(Orcpt {
            addr_type: "rfc822".into(),
            address: "x;y@z".into(),
        });
        assert_eq!(reparse_rcpt(&r), Ok(()));
        assert_eq!(reparse_rcpt(&recipient("Postmaster", "")), Ok(()));
    }

    #[test]
    fn what_could_not_have_come_from_it_fails() {
        for (local, domain) in [
            ("a\r\nRCPT TO:<x", "b.example"),
            ("a", "b.example>\r\nDATA"),
            ("a\0", "b.example"),
            ("a", "b example"),
            ("a@b", "c.example"),
            ("", "b.example"),
            ("a", ""),
            (&"a".repeat(65), "b.example"),
        ] {
            let r = recipient(local, domain);
            assert!(reparse_rcpt(&r).is_err(), "{local:?}@{domain:?}");
            let sender = Some(r.address);
            assert!(reparse_mail(&sender, &MailParams::default()).is_err());
        }
        let mut r = recipient("a", "b.example");
        r.notify = Some(Notify::default());
        assert!(reparse_rcpt(&r).is_err(), "NOTIFY of nothing");
        r.notify = Some(Notify {
            never: true,
            delay: true,
            ..Notify::default()
        });
        assert!(reparse_rcpt(&r).is_err(), "NEVER with DELAY");
        r.notify = None;
        r.orcpt = Some(Orcpt {
            addr_type: "rfc 822".into(),
            address: "x".into(),
        });
        assert!(reparse_rcpt(&r).is_err(), "addr-type with a space");
        let bad_envid = MailParams {
            envid: Some("a\r\nb".into()),
            ..MailParams::default()
        };
        assert!(reparse_mail(&None, &bad_envid).is_err());
        let long_envid = MailParams {
            envid: Some("e".repeat(101)),
            ..MailParams::default()
        };
        assert!(reparse_mail(&None, &long_envid).is_err());
        let empty_auth = MailParams {
            auth: Some(String::new()),
            ..MailParams::default()
        };
        assert!(reparse_mail(&None, &empty_auth).is_err());
    }
}

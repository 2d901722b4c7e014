//! The MAIL and RCPT command lines with the parameters the server can take, and the
//! checks that refuse a message locally rather than corrupt it or send it to be refused.

use super::data::is_eight_bit;
use super::extensions::Extensions;
use crate::envelope::Envelope;
use crate::smtp::address::{Body, Notify, Recipient, Ret, display_reverse_path};
use crate::smtp::xtext;

/// What carrying this message requires of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    pub smtputf8: bool,
    pub eight_bit: bool,
}

impl Needs {
    pub fn of(envelope: &Envelope, recipients: &[Recipient], message: &[u8]) -> Needs {
        let utf8_address = envelope.reverse_path.as_ref().is_some_and(|m| m.is_utf8())
            || recipients.iter().any(|r| r.address.is_utf8());
        Needs {
            smtputf8: envelope.params.smtputf8 || utf8_address,
            eight_bit: envelope.params.body == Some(Body::EightBitMime) || is_eight_bit(message),
        }
    }
}

/// A reason to fail every recipient without sending: the enhanced status code and the
/// text for the DSN. Checked in the order a server would: size, then the extensions.
pub fn refusal(
    ext: &Extensions,
    needs: Needs,
    size: usize,
    remote: &str,
) -> Option<(&'static str, String)> {
    if let Some(limit) = ext.size_limit().filter(|&limit| size as u64 > limit) {
        let text = format!("message size {size} exceeds the limit {limit} of {remote}");
        return Some(("5.3.4", text));
    }
    if needs.smtputf8 && !ext.smtputf8 {
        let text = format!("{remote} does not support SMTPUTF8, which this message needs");
        return Some(("5.6.7", text));
    }
    if needs.eight_bit && !ext.eight_bit_mime {
        // Converting to 7 bit would alter a possibly signed message; refuse instead.
        let text = format!("{remote} does not support 8BITMIME, which this message needs");
        return Some(("5.6.3", text));
    }
    None
}

/// `MAIL FROM:<reverse-path>` with SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8
/// (RFC 6531) and the DSN parameters RET and ENVID (RFC 3461), each only when the server
/// announced the extension. `AUTH=` (RFC 4954 5) is not passed on: it asserts an
/// identity the next hop has no reason to trust.
pub fn mail_from(envelope: &Envelope, ext: &Extensions, needs: Needs, size: usize) -> String {
    let mut line = format!("MAIL FROM:{}", display_reverse_path(&envelope.reverse_path));
    if ext.size.is_some() {
        line.push_str(&format!(" SIZE={size}"));
    }
    if ext.eight_bit_mime && needs.eight_bit {
        line.push_str(" BODY=8BITMIME");
    } else if ext.eight_bit_mime && envelope.params.body == Some(Body::SevenBit) {
        line.push_str(" BODY=7BIT");
    }
    if needs.smtputf8 && ext.smtputf8 {
        line.push_str(" SMTPUTF8");
    }
    if ext.dsn {
        match envelope.params.ret {
            Some(Ret::Full) => line.push_str(" RET=FULL"),
            Some(Ret::Headers) => line.push_str(" RET=HDRS"),
            None => {}
        }
        if let Some(envid) = &envelope.params.envid {
            line.push_str(&format!(" ENVID={}", xtext::encode(envid)));
        }
    }
    line.push_str("\r\n");
    line
}

/// `RCPT TO:<forward-path>` with NOTIFY and ORCPT when the server announced DSN.
pub fn rcpt_to(recipient: &Recipient, ext: &Extensions) -> String {
    let mut line = format!("RCPT TO:<{}>", recipient.address);
    if ext.dsn {
        if let Some(notify) = recipient.notify.as_ref().and_then(notify_value) {
            line.push_str(&format!(" NOTIFY={notify}"));
        }
        if let Some(orcpt) = &recipient.orcpt {
            let address = xtext::encode(&orcpt.address);
            line.push_str(&format!(" ORCPT={};{address}", orcpt.addr_type));
        }
    }
    line.push_str("\r\n");
    line
}

/// `NEVER`, or the conditions joined with commas; `None` when nothing was asked for.
fn notify_value(n: &Notify) -> Option<String> {
    if n.never {
        return Some("NEVER".into());
    }
    let conditions = [
        (n.success, "SUCCESS"),
        (n.failure, "FAILURE"),
        (n.delay, "DELAY"),
    ];
    let on: Vec<&str> = conditions
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, w)| *w)
        .collect();
    (!on.is_empty()).then(|| on.join(","))
}

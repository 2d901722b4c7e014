//! The ESMTP parameters of MAIL FROM and RCPT TO: SIZE (RFC 1870), BODY (RFC 6152),
//! SMTPUTF8 (RFC 6531), RET, ENVID, NOTIFY, ORCPT (RFC 3461) and AUTH (RFC 4954).

use super::{CommandError, PathKind};
use crate::smtp::address::{Body, MailParams, Notify, Orcpt, Ret};
use crate::smtp::xtext;

/// RFC 3461 4.4 and 4.2.
const MAX_ENVID: usize = 100;
const MAX_ORCPT: usize = 500;
/// Keeps an unknown keyword echoed in a reply short.
const MAX_ECHOED_KEYWORD: usize = 32;

/// ```text
/// Mail-parameters = esmtp-param *(SP esmtp-param)
/// esmtp-param     = esmtp-keyword ["=" esmtp-value]
/// ```
pub(super) fn parse_mail_params(params: &str) -> Result<MailParams, CommandError> {
    let mut p = MailParams::default();
    let mut seen = Vec::new();
    for (keyword, value) in split_params(params, PathKind::Reverse)? {
        let (name, ok) = match keyword.to_ascii_uppercase().as_str() {
            "SIZE" => ("SIZE", parse_size(value).map(|v| p.size = Some(v))),
            "BODY" => ("BODY", parse_body(value).map(|v| p.body = Some(v))),
            "SMTPUTF8" => ("SMTPUTF8", value.is_none().then(|| p.smtputf8 = true)),
            "RET" => ("RET", parse_ret(value).map(|v| p.ret = Some(v))),
            "ENVID" => ("ENVID", parse_envid(value).map(|v| p.envid = Some(v))),
            "AUTH" => ("AUTH", parse_auth(value).map(|v| p.auth = v)),
            _ => return Err(unsupported(keyword)),
        };
        check(name, ok, &mut seen)?;
    }
    Ok(p)
}

/// The DSN parameters of RCPT TO.
pub(super) type RcptParams = (Option<Notify>, Option<Orcpt>);

/// `Rcpt-parameters = esmtp-param *(SP esmtp-param)`
pub(super) fn parse_rcpt_params(params: &str) -> Result<RcptParams, CommandError> {
    let (mut notify, mut orcpt) = (None, None);
    let mut seen = Vec::new();
    for (keyword, value) in split_params(params, PathKind::Forward)? {
        let (name, ok) = match keyword.to_ascii_uppercase().as_str() {
            "NOTIFY" => (
                "NOTIFY",
                value.and_then(parse_notify).map(|v| notify = Some(v)),
            ),
            "ORCPT" => (
                "ORCPT",
                value.and_then(parse_orcpt).map(|v| orcpt = Some(v)),
            ),
            _ => return Err(unsupported(keyword)),
        };
        check(name, ok, &mut seen)?;
    }
    Ok((notify, orcpt))
}

/// Turns one parsed parameter into its error, if any; a repeated one is an error too.
fn check(
    name: &'static str,
    ok: Option<()>,
    seen: &mut Vec<&'static str>,
) -> Result<(), CommandError> {
    if seen.contains(&name) {
        return Err(CommandError::DuplicateParameter { keyword: name });
    }
    seen.push(name);
    ok.ok_or(CommandError::BadParameter {
        keyword: name,
        usage: usage(name),
    })
}

/// ```text
/// esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
/// esmtp-value   = 1*(%d33-60 / %d62-126)      ; =/ UTF8-non-ascii (RFC 6531)
/// ```
fn split_params(params: &str, kind: PathKind) -> Result<Vec<(&str, Option<&str>)>, CommandError> {
    let syntax = CommandError::Syntax {
        usage: kind.usage(),
    };
    let mut out = Vec::new();
    for param in params.split(' ').filter(|p| !p.is_empty()) {
        let (keyword, value) = match param.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (param, None),
        };
        let keyword_ok = keyword.starts_with(|c: char| c.is_ascii_alphanumeric())
            && keyword
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        let value_ok = value
            .is_none_or(|v| !v.is_empty() && v.chars().all(|c| c > ' ' && c != '=' && c != '\x7f'));
        if !keyword_ok || !value_ok {
            return Err(syntax);
        }
        out.push((keyword, value));
    }
    Ok(out)
}

fn unsupported(keyword: &str) -> CommandError {
    let keyword = keyword.chars().take(MAX_ECHOED_KEYWORD).collect();
    CommandError::UnsupportedParameter { keyword }
}

fn usage(keyword: &str) -> &'static str {
    match keyword {
        "SIZE" => "Syntax: SIZE=<message size in octets>",
        "BODY" => "Syntax: BODY=7BIT or BODY=8BITMIME",
        "SMTPUTF8" => "Syntax: SMTPUTF8 (without a value)",
        "RET" => "Syntax: RET=FULL or RET=HDRS",
        "ENVID" => "Syntax: ENVID=<xtext of at most 100 characters>",
        "AUTH" => "Syntax: AUTH=<xtext mailbox> or AUTH=<>",
        "NOTIFY" => "Syntax: NOTIFY=NEVER or NOTIFY=SUCCESS,FAILURE,DELAY in any combination",
        _ => "Syntax: ORCPT=<addr-type>;<xtext address>",
    }
}

/// `size-value = 1*20DIGIT` (RFC 1870); a value past u64 is simply too big.
fn parse_size(value: Option<&str>) -> Option<u64> {
    let v = value?;
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(v.parse().unwrap_or(u64::MAX))
}

/// `body-value = "7BIT" / "8BITMIME"` (RFC 6152; BINARYMIME is not offered).
fn parse_body(value: Option<&str>) -> Option<Body> {
    match value?.to_ascii_uppercase().as_str() {
        "7BIT" => Some(Body::SevenBit),
        "8BITMIME" => Some(Body::EightBitMime),
        _ => None,
    }
}

/// `ret-parameter = "RET=" ("FULL" / "HDRS")`
fn parse_ret(value: Option<&str>) -> Option<Ret> {
    match value?.to_ascii_uppercase().as_str() {
        "FULL" => Some(Ret::Full),
        "HDRS" => Some(Ret::Headers),
        _ => None,
    }
}

/// `envid-parameter = "ENVID=" xtext`, at most 100 characters, printable US-ASCII
/// once decoded (RFC 3461 4.4).
fn parse_envid(value: Option<&str>) -> Option<String> {
    let v = value.filter(|v| v.len() <= MAX_ENVID)?;
    xtext::decode(v).filter(|d| d.bytes().all(|b| (b' '..=b'~').contains(&b)))
}

/// `auth-param = "AUTH=" ( xtext / "<>" )` (RFC 4954 5); `<>` yields `Some(None)`.
fn parse_auth(value: Option<&str>) -> Option<Option<String>> {
    match value? {
        "<>" => Some(None),
        v => xtext::decode(v).filter(|d| !d.is_empty()).map(Some),
    }
}

/// ```text
/// notify-esmtp-value  = "NEVER" / 1#notify-list-element
/// notify-list-element = "SUCCESS" / "FAILURE" / "DELAY"
/// ```
fn parse_notify(value: &str) -> Option<Notify> {
    let mut n = Notify::default();
    for item in value.split(',') {
        match item.to_ascii_uppercase().as_str() {
            "NEVER" => n.never = true,
            "SUCCESS" => n.success = true,
            "FAILURE" => n.failure = true,
            "DELAY" => n.delay = true,
            _ => return None,
        }
    }
    let conditions = n.success || n.failure || n.delay;
    (n.never != conditions).then_some(n)
}

/// `orcpt-parameter = "ORCPT=" addr-type ";" xtext`, `addr-type = atom`, at most 500
/// characters (RFC 3461 4.2).
fn parse_orcpt(value: &str) -> Option<Orcpt> {
    let (addr_type, encoded) = value.split_once(';').filter(|_| value.len() <= MAX_ORCPT)?;
    let atom_ok = !addr_type.is_empty()
        && addr_type
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c));
    let address = xtext::decode(encoded).filter(|a| !a.is_empty() && atom_ok)?;
    Some(Orcpt {
        addr_type: addr_type.to_string(),
        address,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use CommandError::*;

    fn bad(keyword: &'static str) -> CommandError {
        BadParameter {
            keyword,
            usage: usage(keyword),
        }
    }

    #[test]
    fn mail_params_table() {
        let envid_101 = format!("ENVID={}", "x".repeat(101));
        let p = |f: fn(&mut MailParams)| {
            let mut p = MailParams::default();
            f(&mut p);
            Ok(p)
        };
        #[rustfmt::skip]
        let cases: Vec<(&str, Result<MailParams, CommandError>)> = vec![
            ("", p(|_| {})),
            (" SIZE=1000  BODY=8bitmime", p(|p| { p.size = Some(1000); p.body = Some(Body::EightBitMime) })),
            ("size=0 body=7BIT smtputf8", p(|p| { p.size = Some(0); p.body = Some(Body::SevenBit); p.smtputf8 = true })),
            ("SIZE=99999999999999999999", p(|p| p.size = Some(u64::MAX))),
            ("RET=hdrs ENVID=QQ+2B1", p(|p| { p.ret = Some(Ret::Headers); p.envid = Some("QQ+1".into()) })),
            ("AUTH=bob+40example.com", p(|p| p.auth = Some("bob@example.com".into()))),
            ("AUTH=<>", p(|_| {})),
            ("SIZE=", Err(Syntax { usage: PathKind::Reverse.usage() })),
            ("SIZE=1=2", Err(Syntax { usage: PathKind::Reverse.usage() })),
            ("-X=1", Err(Syntax { usage: PathKind::Reverse.usage() })),
            ("SIZE=12a", Err(bad("SIZE"))),
            ("SIZE=123456789012345678901", Err(bad("SIZE"))),
            ("SIZE", Err(bad("SIZE"))),
            ("BODY=BINARYMIME", Err(bad("BODY"))),
            ("SMTPUTF8=yes", Err(bad("SMTPUTF8"))),
            ("RET=ALL", Err(bad("RET"))),
            ("ENVID=a+2", Err(bad("ENVID"))),
            ("ENVID=a+0Ab", Err(bad("ENVID"))),
            (&envid_101, Err(bad("ENVID"))),
            ("AUTH=", Err(Syntax { usage: PathKind::Reverse.usage() })),
            ("AUTH=+ZZ", Err(bad("AUTH"))),
            ("SIZE=1 size=2", Err(DuplicateParameter { keyword: "SIZE" })),
            ("AUTH=<> AUTH=<>", Err(DuplicateParameter { keyword: "AUTH" })),
            ("NOTIFY=NEVER", Err(UnsupportedParameter { keyword: "NOTIFY".into() })),
            ("X-Foo", Err(UnsupportedParameter { keyword: "X-Foo".into() })),
        ];
        for (params, want) in cases {
            assert_eq!(parse_mail_params(params), want, "{params:?}");
        }
        assert!(parse_mail_params(&format!("ENVID={}", "x".repeat(100))).is_ok());
    }

    #[test]
    fn rcpt_params_table() {
        let n = |never, success, failure, delay| {
            Some(Notify {
                never,
                success,
                failure,
                delay,
            })
        };
        let o = |t: &str, a: &str| {
            Some(Orcpt {
                addr_type: t.into(),
                address: a.into(),
            })
        };
        #[rustfmt::skip]
        let cases: Vec<(&str, Result<RcptParams, CommandError>)> = vec![
            ("", Ok((None, None))),
            ("NOTIFY=never", Ok((n(true, false, false, false), None))),
            ("notify=SUCCESS,delay", Ok((n(false, true, false, true), None))),
            ("NOTIFY=FAILURE ORCPT=rfc822;bob+2Bx@example.com", Ok((n(false, false, true, false), o("rfc822", "bob+x@example.com")))),
            ("NOTIFY=NEVER,SUCCESS", Err(bad("NOTIFY"))),
            ("NOTIFY=SUCCESS,,DELAY", Err(bad("NOTIFY"))),
            ("NOTIFY=SOMETIMES", Err(bad("NOTIFY"))),
            ("NOTIFY", Err(bad("NOTIFY"))),
            ("ORCPT=bob@example.com", Err(bad("ORCPT"))),
            ("ORCPT=;bob@example.com", Err(bad("ORCPT"))),
            ("ORCPT=rfc822;", Err(bad("ORCPT"))),
            ("ORCPT=rfc822;a+G0", Err(bad("ORCPT"))),
            ("NOTIFY=DELAY NOTIFY=DELAY", Err(DuplicateParameter { keyword: "NOTIFY" })),
            ("SIZE=10", Err(UnsupportedParameter { keyword: "SIZE".into() })),
        ];
        for (params, want) in cases {
            assert_eq!(parse_rcpt_params(params), want, "{params:?}");
        }
    }
}

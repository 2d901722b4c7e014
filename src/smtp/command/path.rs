//! Reverse-paths and forward-paths (RFC 5321 4.1.2, with the RFC 6531 3.3 UTF-8
//! extensions) and the domain syntax shared with EHLO/HELO.

use super::{CommandError, PathKind};
use crate::smtp::address::{Mailbox, ReversePath};
use std::net::{Ipv4Addr, Ipv6Addr};

/// RFC 5321 4.5.3.1: limits in octets, a path counting its angle brackets.
const MAX_PATH: usize = 256;
const MAX_LOCAL: usize = 64;
const MAX_DOMAIN: usize = 255;
/// RFC 1035 2.3.4; a longer label can never resolve.
const MAX_LABEL: usize = 63;

/// Splits `"<" path-content ">" [SP parameters]` into the content between the angle
/// brackets and the parameters. A `>` inside a quoted local part does not end the path.
pub(super) fn split_path(arg: &str, kind: PathKind) -> Result<(&str, &str), CommandError> {
    let syntax = CommandError::Syntax {
        usage: kind.usage(),
    };
    let inner = arg.strip_prefix('<').ok_or(syntax.clone())?;
    let (mut quoted, mut escaped) = (false, false);
    let end = inner.char_indices().find_map(|(i, c)| {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(i),
            _ => {}
        }
        None
    });
    let (content, rest) = inner.split_at(end.ok_or(syntax.clone())?);
    let params = rest.get(1..).unwrap_or_default();
    if !params.is_empty() && !params.starts_with(' ') {
        return Err(syntax);
    }
    if content.len() + 2 > MAX_PATH {
        return Err(CommandError::PathTooLong { kind });
    }
    Ok((content, params))
}

/// `Reverse-path = Path / "<>"`, given the content between the angle brackets.
pub(super) fn parse_reverse_path(content: &str) -> Result<ReversePath, CommandError> {
    if content.is_empty() {
        return Ok(None);
    }
    parse_path(content, PathKind::Reverse).map(Some)
}

/// `Forward-path = Path`, or the special `"<Postmaster>"` (RFC 5321 4.1.1.3).
pub(super) fn parse_forward_path(content: &str) -> Result<Mailbox, CommandError> {
    if content.eq_ignore_ascii_case("postmaster") {
        return Ok(Mailbox::new(content, ""));
    }
    parse_path(content, PathKind::Forward)
}

/// ```text
/// Path      = "<" [ A-d-l ":" ] Mailbox ">"
/// A-d-l     = At-domain *( "," At-domain )   ; source route, ignored (RFC 5321 3.3)
/// At-domain = "@" Domain
/// Mailbox   = Local-part "@" ( Domain / address-literal )
/// ```
fn parse_path(content: &str, kind: PathKind) -> Result<Mailbox, CommandError> {
    let bad = CommandError::BadAddress { kind };
    let mailbox = match content.strip_prefix('@') {
        Some(_) => {
            let (route, mailbox) = content.split_once(':').ok_or(bad.clone())?;
            let mut hops = route.split(',').map(|hop| hop.strip_prefix('@'));
            if !hops.all(|d| d.is_some_and(|d| is_domain(d, false))) {
                return Err(bad);
            }
            mailbox
        }
        None => content,
    };
    let (local, domain) = mailbox.rsplit_once('@').ok_or(bad.clone())?;
    let domain_ok = is_domain(domain, false) || is_address_literal(domain);
    if !is_local_part(local) || !domain_ok {
        return Err(bad);
    }
    Ok(Mailbox::new(local, domain))
}

/// ```text
/// Local-part   = Dot-string / Quoted-string     ; at most 64 octets
/// Dot-string   = Atom *("." Atom)
/// Atom         = 1*atext                        ; atext =/ UTF8-non-ascii
/// Quoted-string = DQUOTE *QcontentSMTP DQUOTE
/// QcontentSMTP = qtextSMTP / quoted-pairSMTP
/// qtextSMTP    = %d32-33 / %d35-91 / %d93-126  ; =/ UTF8-non-ascii
/// quoted-pairSMTP = %d92 %d32-126
/// ```
fn is_local_part(local: &str) -> bool {
    if local.is_empty() || local.len() > MAX_LOCAL {
        return false;
    }
    match local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
        Some(quoted) => is_quoted_content(quoted),
        None => local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext)),
    }
}

fn is_quoted_content(s: &str) -> bool {
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        let ok = match c {
            '\\' => chars.next().is_some_and(|e| (' '..='~').contains(&e)),
            '"' => false,
            ' '..='~' => true,
            _ => !c.is_ascii() && !c.is_control(),
        };
        if !ok {
            return false;
        }
    }
    true
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || is_utf8_non_ascii(c)
}

fn is_utf8_non_ascii(c: char) -> bool {
    !c.is_ascii() && !c.is_control()
}

/// ```text
/// Domain     = sub-domain *("." sub-domain)
/// sub-domain = Let-dig [Ldh-str] / U-label      ; U-label per RFC 6531 3.3
/// Ldh-str    = *( ALPHA / DIGIT / "-" ) Let-dig
/// ```
/// `underscore` admits `_` as many EHLO names carry one (Windows host names).
pub(super) fn is_domain(domain: &str, underscore: bool) -> bool {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= MAX_LABEL
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| {
                c.is_ascii_alphanumeric()
                    || c == '-'
                    || (underscore && c == '_')
                    || is_utf8_non_ascii(c)
            })
    };
    domain.len() <= MAX_DOMAIN && domain.split('.').all(label_ok)
}

/// ```text
/// address-literal      = "[" ( IPv4-address-literal / IPv6-address-literal ) "]"
/// IPv6-address-literal = "IPv6:" IPv6-addr
/// ```
/// General-address-literal is refused: no other tag is registered.
pub(super) fn is_address_literal(s: &str) -> bool {
    let Some(inner) = s.strip_prefix('[').and_then(|s| s.strip_suffix(']')) else {
        return false;
    };
    match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => inner
            .get(5..)
            .is_some_and(|a| a.parse::<Ipv6Addr>().is_ok()),
        _ => inner.parse::<Ipv4Addr>().is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_path_table() {
        let long_local = "a".repeat(65);
        let long_domain = format!(
            "{}.com",
            "a".repeat(63) + "." + &"b".repeat(63) + "." + &"c".repeat(63) + "." + &"d".repeat(60)
        );
        let long_label = format!("x@{}.com", "a".repeat(64));
        // (content between the angle brackets, Some((local, domain)) if valid)
        #[rustfmt::skip]
        let cases: Vec<(&str, Option<(&str, &str)>)> = vec![
            ("bob@example.com", Some(("bob", "example.com"))),
            ("Bob.O'Neil+tag@Example.COM", Some(("Bob.O'Neil+tag", "Example.COM"))),
            ("\"a b@c\"@example.com", Some(("\"a b@c\"", "example.com"))),
            ("\"a\\\"b\"@example.com", Some(("\"a\\\"b\"", "example.com"))),
            ("bob@[192.0.2.1]", Some(("bob", "[192.0.2.1]"))),
            ("bob@[IPv6:2001:db8::1]", Some(("bob", "[IPv6:2001:db8::1]"))),
            ("@a.example,@b.example:bob@c.example", Some(("bob", "c.example"))),
            ("jörg@bücher.example", Some(("jörg", "bücher.example"))),
            ("Postmaster", Some(("Postmaster", ""))),
            ("POSTMASTER", Some(("POSTMASTER", ""))),
            ("postmaster@example.com", Some(("postmaster", "example.com"))),
            ("", None),
            ("bob", None),
            ("bob@", None),
            ("@example.com", None),
            ("bob@@example.com", None),
            (".bob@example.com", None),
            ("bo..b@example.com", None),
            ("bob.@example.com", None),
            ("bo b@example.com", None),
            ("bob@-example.com", None),
            ("bob@example-.com", None),
            ("bob@exa_mple.com", None),
            ("bob@example..com", None),
            ("bob@example.com.", None),
            ("bob@[192.0.2.256]", None),
            ("bob@[192.0.2.1", None),
            ("bob@[IPv6:1.2.3.4]", None),
            ("bob@[x-tag:foo]", None),
            ("\"a\"b\"@example.com", None),
            ("@a.example:bob", None),
            ("@a..example:bob@c.example", None),
            ("a.example:bob@c.example", None),
            (&long_local, None),
            (&long_label, None),
        ];
        for (content, want) in cases {
            let got = parse_forward_path(content).ok();
            assert_eq!(got, want.map(|(l, d)| Mailbox::new(l, d)), "{content:?}");
        }
        assert!(parse_forward_path(&format!("a@{long_domain}")).is_err());
        assert!(parse_forward_path(&format!("{}@example.com", "a".repeat(64))).is_ok());
    }

    type Split<'a> = Result<(&'a str, &'a str), CommandError>;

    #[test]
    fn split_path_table() {
        let max = format!("<a@{}>", "b".repeat(MAX_PATH - 4));
        let over = format!("<a@{}>", "b".repeat(MAX_PATH - 3));
        #[rustfmt::skip]
        let cases: Vec<(&str, Split)> = vec![
            ("<a@b>", Ok(("a@b", ""))),
            ("<> SIZE=1", Ok(("", " SIZE=1"))),
            ("<\"x>y\"@b> BODY=7BIT", Ok(("\"x>y\"@b", " BODY=7BIT"))),
            ("<a@b>SIZE=1", Err(CommandError::Syntax { usage: PathKind::Reverse.usage() })),
            ("a@b", Err(CommandError::Syntax { usage: PathKind::Reverse.usage() })),
            ("<a@b", Err(CommandError::Syntax { usage: PathKind::Reverse.usage() })),
            (&max, Ok((&max[1..max.len() - 1], ""))),
            (&over, Err(CommandError::PathTooLong { kind: PathKind::Reverse })),
        ];
        for (arg, want) in cases {
            assert_eq!(split_path(arg, PathKind::Reverse), want, "{arg:?}");
        }
    }

    #[test]
    fn reverse_path_null_and_postmaster() {
        assert_eq!(parse_reverse_path(""), Ok(None));
        assert!(parse_reverse_path("Postmaster").is_err());
    }
}

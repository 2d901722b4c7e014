//! SMTP commands (RFC 5321 4.1) and their parser: one command line in, one [`Command`]
//! or a [`CommandError`] that knows its reply out.

use super::address::{MailParams, Mailbox, Notify, Orcpt, ReversePath};
use super::reply::Reply;

/// One parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    Mail {
        reverse_path: ReversePath,
        params: MailParams,
    },
    Rcpt {
        forward_path: Mailbox,
        notify: Option<Notify>,
        orcpt: Option<Orcpt>,
    },
    Data,
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy(String),
    Help(Option<String>),
    StartTls,
    Auth {
        mechanism: String,
        initial_response: Option<String>,
    },
}

mod params;
mod path;
mod reparse;

pub use reparse::{reparse_mail, reparse_rcpt};

/// Which path a MAIL or RCPT argument is: it decides the usage and the reply text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// The reverse-path of MAIL FROM.
    Reverse,
    /// The forward-path of RCPT TO.
    Forward,
}

impl PathKind {
    fn usage(self) -> &'static str {
        match self {
            PathKind::Reverse => "Syntax: MAIL FROM:<address> [parameters]",
            PathKind::Forward => "Syntax: RCPT TO:<address> [parameters]",
        }
    }

    fn role(self) -> &'static str {
        match self {
            PathKind::Reverse => "sender",
            PathKind::Forward => "recipient",
        }
    }

    /// RFC 3463: X.1.7 is a bad sender's address, X.1.3 a bad destination address.
    fn bad_syntax_status(self) -> &'static str {
        match self {
            PathKind::Reverse => "5.1.7",
            PathKind::Forward => "5.1.3",
        }
    }
}

/// Why a command line was refused; [`CommandError::reply`] gives the reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Unknown verb, empty line, or bytes that are not a verb at all.
    #[error("command not recognized")]
    Unrecognized,
    /// A known verb with arguments of the wrong shape.
    #[error("{usage}")]
    Syntax { usage: &'static str },
    /// A known MAIL/RCPT parameter with a value it does not take.
    #[error("bad {keyword} parameter value ({usage})")]
    BadParameter {
        keyword: &'static str,
        usage: &'static str,
    },
    #[error("duplicate {keyword} parameter")]
    DuplicateParameter { keyword: &'static str },
    /// A parameter we do not implement; the keyword (validated, shortened) as sent.
    #[error("unsupported parameter {keyword}")]
    UnsupportedParameter { keyword: String },
    /// Angle brackets present, but no valid mailbox (or `<>` as a forward-path).
    #[error("bad {} address syntax", kind.role())]
    BadAddress { kind: PathKind },
    /// More than 256 octets between and including the angle brackets.
    #[error("{} path too long", kind.role())]
    PathTooLong { kind: PathKind },
}

impl CommandError {
    pub fn reply(&self) -> Reply {
        match self {
            CommandError::Unrecognized => Reply::new(500, "5.5.2", "Error: command not recognized"),
            CommandError::Syntax { usage } => Reply::new(501, "5.5.4", *usage),
            CommandError::BadParameter { keyword, usage } => Reply::new(
                501,
                "5.5.4",
                format!("Bad {keyword} parameter value. {usage}"),
            ),
            CommandError::DuplicateParameter { keyword } => {
                Reply::new(501, "5.5.4", format!("Duplicate {keyword} parameter"))
            }
            CommandError::UnsupportedParameter { keyword } => {
                Reply::new(555, "5.5.4", format!("Unsupported parameter {keyword}"))
            }
            CommandError::BadAddress { kind } => {
                let text = format!("Bad {} address syntax", kind.role());
                Reply::new(553, kind.bad_syntax_status(), text)
            }
            // RFC 5321 4.5.3.1.10 suggests "501 Path too long".
            CommandError::PathTooLong { kind } => {
                Reply::new(501, kind.bad_syntax_status(), "Path too long")
            }
        }
    }
}

/// The verbs we know, for dispatch and for the usage in their syntax errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Ehlo,
    Helo,
    Mail,
    Rcpt,
    Data,
    Bdat,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    StartTls,
    Auth,
}

/// Verb names with the usage lines of their syntax errors.
const VERBS: [(&str, Verb, &str); 13] = [
    ("EHLO", Verb::Ehlo, "Syntax: EHLO hostname"),
    ("HELO", Verb::Helo, "Syntax: HELO hostname"),
    (
        "MAIL",
        Verb::Mail,
        "Syntax: MAIL FROM:<address> [parameters]",
    ),
    ("RCPT", Verb::Rcpt, "Syntax: RCPT TO:<address> [parameters]"),
    ("DATA", Verb::Data, "Syntax: DATA"),
    ("BDAT", Verb::Bdat, "Syntax: BDAT size [LAST]"),
    ("RSET", Verb::Rset, "Syntax: RSET"),
    ("NOOP", Verb::Noop, "Syntax: NOOP [string]"),
    ("QUIT", Verb::Quit, "Syntax: QUIT"),
    ("VRFY", Verb::Vrfy, "Syntax: VRFY address"),
    ("HELP", Verb::Help, "Syntax: HELP [topic]"),
    ("STARTTLS", Verb::StartTls, "Syntax: STARTTLS"),
    (
        "AUTH",
        Verb::Auth,
        "Syntax: AUTH mechanism [initial-response]",
    ),
];

/// Parses one command line (without its CRLF).
///
/// ```text
/// command = verb [SP arguments]   ; verbs case-insensitive (RFC 5321 2.4)
/// ```
///
/// Leniencies, as common servers have them: runs of spaces separate arguments and
/// trailing spaces are ignored. Control characters (a NUL, a bare CR) are refused
/// anywhere, as is a line that is not UTF-8.
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    let verb_end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let (name, rest) = line.split_at(verb_end);
    let (verb, usage) = VERBS
        .iter()
        .find(|(n, _, _)| n.as_bytes().eq_ignore_ascii_case(name))
        .map(|&(_, verb, usage)| (verb, usage))
        .ok_or(CommandError::Unrecognized)?;
    let syntax = CommandError::Syntax { usage };
    let args = std::str::from_utf8(rest).map_err(|_| syntax.clone())?;
    if args.chars().any(char::is_control) {
        return Err(syntax);
    }
    let args = args.trim_matches(' ');
    match verb {
        Verb::Ehlo => parse_hello(args, usage).map(Command::Ehlo),
        Verb::Helo => parse_hello(args, usage).map(Command::Helo),
        Verb::Mail => parse_mail(args),
        Verb::Rcpt => parse_rcpt(args),
        Verb::Bdat => parse_bdat(args).ok_or(syntax),
        Verb::Auth => parse_auth(args).ok_or(syntax),
        Verb::Noop => Ok(Command::Noop),
        Verb::Vrfy if !args.is_empty() => Ok(Command::Vrfy(args.to_string())),
        Verb::Help => Ok(Command::Help(
            Some(args.to_string()).filter(|a| !a.is_empty()),
        )),
        _ if !args.is_empty() => Err(syntax),
        Verb::Data => Ok(Command::Data),
        Verb::Rset => Ok(Command::Rset),
        Verb::Quit => Ok(Command::Quit),
        Verb::StartTls => Ok(Command::StartTls),
        Verb::Vrfy => Err(syntax),
    }
}

/// `ehlo = "EHLO" SP ( Domain / address-literal )`, likewise HELO (RFC 5321 4.1.1.1).
fn parse_hello(args: &str, usage: &'static str) -> Result<String, CommandError> {
    if path::is_domain(args, true) || path::is_address_literal(args) {
        Ok(args.to_string())
    } else {
        Err(CommandError::Syntax { usage })
    }
}

/// `mail = "MAIL FROM:" Reverse-path [SP Mail-parameters]`; a space after the colon
/// is tolerated as many clients send one.
fn parse_mail(args: &str) -> Result<Command, CommandError> {
    let path = strip_keyword(args, "FROM:", PathKind::Reverse)?;
    let (content, params) = path::split_path(path, PathKind::Reverse)?;
    let reverse_path = path::parse_reverse_path(content)?;
    let params = params::parse_mail_params(params)?;
    Ok(Command::Mail {
        reverse_path,
        params,
    })
}

/// `rcpt = "RCPT TO:" ( "<Postmaster@" Domain ">" / "<Postmaster>" / Forward-path )
/// [SP Rcpt-parameters]`
fn parse_rcpt(args: &str) -> Result<Command, CommandError> {
    let path = strip_keyword(args, "TO:", PathKind::Forward)?;
    let (content, params) = path::split_path(path, PathKind::Forward)?;
    let forward_path = path::parse_forward_path(content)?;
    let (notify, orcpt) = params::parse_rcpt_params(params)?;
    Ok(Command::Rcpt {
        forward_path,
        notify,
        orcpt,
    })
}

fn strip_keyword<'a>(
    args: &'a str,
    keyword: &str,
    kind: PathKind,
) -> Result<&'a str, CommandError> {
    match (args.get(..keyword.len()), args.get(keyword.len()..)) {
        (Some(k), Some(rest)) if k.eq_ignore_ascii_case(keyword) => {
            Ok(rest.trim_start_matches(' '))
        }
        _ => Err(CommandError::Syntax {
            usage: kind.usage(),
        }),
    }
}

/// `bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ]`, `chunk-size = 1*DIGIT`,
/// `end-marker = "LAST"` (RFC 3030 2).
fn parse_bdat(args: &str) -> Option<Command> {
    let mut words = args.split(' ').filter(|w| !w.is_empty());
    let size = words
        .next()
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))?;
    let size = size.parse().ok()?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return None,
    };
    words
        .next()
        .is_none()
        .then_some(Command::Bdat { size, last })
}

/// `"AUTH" SP sasl-mech [SP initial-response]`, `sasl-mech = 1*20mech-char`,
/// `initial-response = base64 / "="` (RFC 4954 4); `=` is an empty response.
fn parse_auth(args: &str) -> Option<Command> {
    let mut words = args.split(' ').filter(|w| !w.is_empty());
    let mechanism = words.next().filter(|m| {
        m.len() <= 20
            && m.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })?;
    let initial_response = words
        .next()
        .map(|r| if r == "=" { "" } else { r }.to_string());
    words.next().is_none().then(|| Command::Auth {
        mechanism: mechanism.to_string(),
        initial_response,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(local: &str, domain: &str) -> Command {
        let reverse_path = Some(Mailbox::new(local, domain));
        Command::Mail {
            reverse_path,
            params: MailParams::default(),
        }
    }

    fn rcpt(local: &str, domain: &str) -> Command {
        Command::Rcpt {
            forward_path: Mailbox::new(local, domain),
            notify: None,
            orcpt: None,
        }
    }

    #[test]
    fn good_lines() {
        let auth = |m: &str, r: Option<&str>| Command::Auth {
            mechanism: m.into(),
            initial_response: r.map(String::from),
        };
        let params = MailParams {
            size: Some(10),
            smtputf8: true,
            ..MailParams::default()
        };
        let notify = Some(Notify {
            never: true,
            ..Notify::default()
        });
        #[rustfmt::skip]
        let cases: Vec<(&[u8], Command)> = vec![
            (b"EHLO mail.example.com", Command::Ehlo("mail.example.com".into())),
            (b"ehlo [192.0.2.1]", Command::Ehlo("[192.0.2.1]".into())),
            (b"EHLO [IPv6:2001:db8::1]", Command::Ehlo("[IPv6:2001:db8::1]".into())),
            (b"HeLo my_host ", Command::Helo("my_host".into())),
            (b"MAIL FROM:<bob@example.com>", mail("bob", "example.com")),
            (b"mail from: <bob@example.com>", mail("bob", "example.com")),
            (b"MAIL FROM:<@relay.example:bob@example.com>", mail("bob", "example.com")),
            (b"MAIL FROM:<>", Command::Mail { reverse_path: None, params: MailParams::default() }),
            ("MAIL FROM:<jörg@bücher.example> SIZE=10 SMTPUTF8".as_bytes(), Command::Mail { reverse_path: Some(Mailbox::new("jörg", "bücher.example")), params }),
            (b"RCPT TO:<alice@example.org>", rcpt("alice", "example.org")),
            (b"RCPT TO:<postMaster>", rcpt("postMaster", "")),
            (b"RCPT TO:<a@b.example> NOTIFY=NEVER", Command::Rcpt { forward_path: Mailbox::new("a", "b.example"), notify, orcpt: None }),
            (b"DATA", Command::Data),
            (b"data  ", Command::Data),
            (b"BDAT 0 LAST", Command::Bdat { size: 0, last: true }),
            (b"BDAT 4096", Command::Bdat { size: 4096, last: false }),
            (b"bdat 12 last", Command::Bdat { size: 12, last: true }),
            (b"RSET", Command::Rset),
            (b"NOOP", Command::Noop),
            (b"NOOP anything at all", Command::Noop),
            (b"QUIT", Command::Quit),
            (b"STARTTLS", Command::StartTls),
            (b"VRFY bob", Command::Vrfy("bob".into())),
            (b"HELP", Command::Help(None)),
            (b"HELP MAIL", Command::Help(Some("MAIL".into()))),
            (b"AUTH PLAIN", auth("PLAIN", None)),
            (b"auth plain AGJvYgBzZWNyZXQ=", auth("plain", Some("AGJvYgBzZWNyZXQ="))),
            (b"AUTH PLAIN =", auth("PLAIN", Some(""))),
        ];
        for (line, want) in cases {
            assert_eq!(
                parse_command(line),
                Ok(want),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn bad_lines() {
        let long_path = format!("RCPT TO:<a@{}>", "b".repeat(254));
        #[rustfmt::skip]
        let cases: Vec<(&[u8], u16, &str)> = vec![
            (b"", 500, "5.5.2"),
            (b" NOOP", 500, "5.5.2"),
            (b"FOO bar", 500, "5.5.2"),
            (b"EHLOX", 500, "5.5.2"),
            (b"\xff\xfe", 500, "5.5.2"),
            (b"NOOP \xff", 501, "5.5.4"),
            (b"NOOP a\x00b", 501, "5.5.4"),
            (b"EHLO", 501, "5.5.4"),
            (b"EHLO a b", 501, "5.5.4"),
            (b"HELO -bad-.example", 501, "5.5.4"),
            (b"EHLO [300.1.1.1]", 501, "5.5.4"),
            (b"MAIL", 501, "5.5.4"),
            (b"MAIL TO:<a@b>", 501, "5.5.4"),
            (b"MAIL FROM:a@b.example", 501, "5.5.4"),
            (b"MAIL FROM:<a@b.example", 501, "5.5.4"),
            (b"MAIL FROM:<a@b.example>x", 501, "5.5.4"),
            (b"MAIL FROM:<a@b.example>\rRCPT TO:<c@d>", 501, "5.5.4"),
            (b"MAIL FROM:<a..b@c.example>", 553, "5.1.7"),
            (b"MAIL FROM:<Postmaster>", 553, "5.1.7"),
            (b"MAIL FROM:<a@b.example> SIZE=x", 501, "5.5.4"),
            (b"MAIL FROM:<a@b.example> SIZE=1 SIZE=1", 501, "5.5.4"),
            (b"MAIL FROM:<a@b.example> FOO=bar", 555, "5.5.4"),
            (b"RCPT TO:<>", 553, "5.1.3"),
            (b"RCPT TO:<bob>", 553, "5.1.3"),
            (b"RCPT TO:<a@b.example> SIZE=10", 555, "5.5.4"),
            (b"RCPT TO:<a@b.example> NOTIFY=NEVER,DELAY", 501, "5.5.4"),
            (long_path.as_bytes(), 501, "5.1.3"),
            (b"DATA now", 501, "5.5.4"),
            (b"RSET x", 501, "5.5.4"),
            (b"QUIT now", 501, "5.5.4"),
            (b"STARTTLS x", 501, "5.5.4"),
            (b"BDAT", 501, "5.5.4"),
            (b"BDAT -1", 501, "5.5.4"),
            (b"BDAT 10 FIRST", 501, "5.5.4"),
            (b"BDAT 10 LAST x", 501, "5.5.4"),
            (b"BDAT 99999999999999999999999", 501, "5.5.4"),
            (b"VRFY", 501, "5.5.4"),
            (b"AUTH", 501, "5.5.4"),
            (b"AUTH PLAIN a b", 501, "5.5.4"),
            (b"AUTH PL@IN", 501, "5.5.4"),
        ];
        for (line, code, status) in cases {
            let reply = parse_command(line)
                .expect_err(&String::from_utf8_lossy(line))
                .reply();
            assert_eq!(
                (reply.code, reply.status),
                (code, Some(status)),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn reply_texts() {
        #[rustfmt::skip]
        let cases: Vec<(&[u8], &str)> = vec![
            (b"XYZZY", "500 5.5.2 Error: command not recognized"),
            (b"EHLO", "501 5.5.4 Syntax: EHLO hostname"),
            (b"MAIL FROM:", "501 5.5.4 Syntax: MAIL FROM:<address> [parameters]"),
            (b"MAIL FROM:<a@> ", "553 5.1.7 Bad sender address syntax"),
            (b"RCPT TO:<a@>", "553 5.1.3 Bad recipient address syntax"),
            (b"RCPT TO:<a@b> X-FOO", "555 5.5.4 Unsupported parameter X-FOO"),
            (b"MAIL FROM:<> BODY=x", "501 5.5.4 Bad BODY parameter value. Syntax: BODY=7BIT or BODY=8BITMIME"),
        ];
        for (line, want) in cases {
            let reply = parse_command(line).unwrap_err().reply();
            assert_eq!(reply.to_string(), want);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let prefixes: [&[u8]; 5] = [
            b"MAIL FROM:<",
            b"RCPT TO:<@",
            b"EHLO [IPv6:",
            b"AUTH ",
            b"BDAT ",
        ];
        let alphabet = b"<>@.:,;=+\" \\[]\x00\r\xc3\xa9aZ09-_";
        let mut seed: u32 = 1;
        for i in 0..20_000 {
            let mut line = prefixes[i % prefixes.len()].to_vec();
            for _ in 0..(i % 40) {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                line.push(alphabet[(seed >> 16) as usize % alphabet.len()]);
            }
            let _ = parse_command(&line).map_err(|e| e.reply());
        }
    }
}

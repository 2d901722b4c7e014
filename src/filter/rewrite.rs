//! Changes to a message's header section ([`Rewrite`]): fields removed, the Subject
//! replaced, fields added at the end of the section. The body and every field not
//! named stay byte for byte as they were; the header section is read as RFC 5322 2.2
//! writes it (a field runs on over lines that start with a space or a tab).

use super::scan::Rewrite;

/// The end of the header section: the offset of the empty line's CRLF, or the message's
/// length when it has no body (and no empty line).
fn header_end(message: &[u8]) -> usize {
    if message.starts_with(b"\r\n") {
        return 0;
    }
    message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message.len(), |i| i + 2)
}

/// Each field of the header section as (name, start, end), `end` past its last CRLF.
fn fields(header: &[u8]) -> Vec<(&[u8], usize, usize)> {
    let mut out: Vec<(&[u8], usize, usize)> = Vec::new();
    let mut at = 0;
    while at < header.len() {
        let end = header[at..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(header.len(), |i| at + i + 2);
        let line = &header[at..end];
        match (line.first(), out.last_mut()) {
            (Some(b' ' | b'\t'), Some(last)) => last.2 = end,
            _ => {
                let name = line.split(|b| *b == b':').next().unwrap_or_default();
                out.push((name.trim_ascii(), at, end));
            }
        }
        at = end;
    }
    out
}

/// The fields of `message`'s header section as (name, value), the value with its line
/// folds and without the final CRLF.
pub fn header_fields(message: &[u8]) -> Vec<(&[u8], &[u8])> {
    let header = &message[..header_end(message)];
    fields(header)
        .into_iter()
        .map(|(name, start, end)| {
            let field = &header[start..end];
            let value = field
                .iter()
                .position(|b| *b == b':')
                .map_or(&field[field.len()..], |i| &field[i + 1..]);
            (name, value.strip_suffix(b"\r\n").unwrap_or(value))
        })
        .collect()
}

/// Whether any field of the header section is named `name` (ASCII case-insensitive).
pub fn has_field(message: &[u8], name: &str) -> bool {
    let end = header_end(message);
    fields(&message[..end])
        .iter()
        .any(|(n, _, _)| n.eq_ignore_ascii_case(name.as_bytes()))
}

/// `message` with `rewrite` applied: removals first (Rspamd's numbering: 0 every field
/// of the name, n > 0 the n-th, n < 0 the n-th from the end), then the Subject, then the
/// added fields, in order, at the end of the header section.
pub fn apply(message: &[u8], rewrite: &Rewrite) -> Vec<u8> {
    let end = header_end(message);
    let header = &message[..end];
    let fields = fields(header);
    let mut drop = vec![false; fields.len()];
    let matching = |name: &str| -> Vec<usize> {
        let idx: Vec<usize> = (0..fields.len())
            .filter(|i| fields[*i].0.eq_ignore_ascii_case(name.as_bytes()))
            .collect();
        idx
    };
    for (name, n) in &rewrite.remove_headers {
        let idx = matching(name);
        let chosen: Vec<usize> = match *n {
            0 => idx,
            n if n > 0 => idx.get(n as usize - 1).copied().into_iter().collect(),
            n => idx
                .len()
                .checked_sub(n.unsigned_abs() as usize)
                .and_then(|i| idx.get(i).copied())
                .into_iter()
                .collect(),
        };
        for i in chosen {
            drop[i] = true;
        }
    }
    let subject_at = rewrite
        .subject
        .as_ref()
        .and_then(|_| matching("Subject").into_iter().find(|i| !drop[*i]));
    let mut out = Vec::with_capacity(message.len() + 256);
    for field in &rewrite.prepend {
        out.extend_from_slice(field.as_bytes());
    }
    let mut copied = 0;
    for (i, (_, start, stop)) in fields.iter().enumerate() {
        if drop[i] || Some(i) == subject_at {
            out.extend_from_slice(&header[copied..*start]);
            if Some(i) == subject_at {
                push_field(
                    &mut out,
                    "Subject",
                    rewrite.subject.as_deref().unwrap_or_default(),
                );
            }
            copied = *stop;
        }
    }
    out.extend_from_slice(&header[copied..]);
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    if let (Some(subject), None) = (&rewrite.subject, subject_at) {
        push_field(&mut out, "Subject", subject);
    }
    for (name, value) in &rewrite.add_headers {
        push_field(&mut out, name, value);
    }
    out.extend_from_slice(&message[end..]);
    out
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &[u8] = b"Received: from x\r\n\tby y\r\nSubject: hi\r\nX-Spam: a\r\nX-Spam: b\r\nX-Spam: c\r\n\r\nbody\r\nX-Spam: not a header\r\n";

    fn rewrite(remove: &[(&str, i32)], subject: Option<&str>, add: &[(&str, &str)]) -> Rewrite {
        Rewrite {
            add_headers: add
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            remove_headers: remove.iter().map(|(n, i)| (n.to_string(), *i)).collect(),
            subject: subject.map(str::to_string),
            prepend: Vec::new(),
        }
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn nothing_to_do_changes_nothing() {
        assert_eq!(apply(MESSAGE, &Rewrite::default()), MESSAGE);
    }

    #[test]
    fn removals_by_occurrence() {
        let out = text(apply(MESSAGE, &rewrite(&[("x-spam", 0)], None, &[])));
        assert!(out.starts_with("Received: from x\r\n\tby y\r\nSubject: hi\r\n\r\nbody"));
        assert!(
            out.ends_with("X-Spam: not a header\r\n"),
            "the body is not touched"
        );
        let out = text(apply(MESSAGE, &rewrite(&[("X-Spam", 2)], None, &[])));
        assert!(out.contains("X-Spam: a\r\nX-Spam: c\r\n\r\n"));
        let out = text(apply(MESSAGE, &rewrite(&[("X-Spam", -1)], None, &[])));
        assert!(out.contains("X-Spam: a\r\nX-Spam: b\r\n\r\n"));
        for out_of_range in [4, -4] {
            assert_eq!(
                apply(MESSAGE, &rewrite(&[("X-Spam", out_of_range)], None, &[])),
                MESSAGE
            );
        }
        let out = text(apply(MESSAGE, &rewrite(&[("Received", 0)], None, &[])));
        assert!(
            out.starts_with("Subject: hi\r\n"),
            "a folded field goes whole: {out:?}"
        );
    }

    #[test]
    fn subject_and_additions() {
        let out = text(apply(
            MESSAGE,
            &rewrite(
                &[],
                Some("*** SPAM *** hi"),
                &[("X-Spam-Flag", "YES"), ("X-A", "1")],
            ),
        ));
        assert!(out.contains("\r\nSubject: *** SPAM *** hi\r\nX-Spam: a"));
        assert!(out.contains("X-Spam: c\r\nX-Spam-Flag: YES\r\nX-A: 1\r\n\r\nbody\r\n"));
        let bare = b"From: a@b\r\n\r\nbody";
        let out = text(apply(bare, &rewrite(&[], Some("new"), &[])));
        assert_eq!(out, "From: a@b\r\nSubject: new\r\n\r\nbody");
    }

    #[test]
    fn messages_without_body_or_header() {
        assert_eq!(
            text(apply(b"From: a@b", &rewrite(&[], None, &[("X", "1")]))),
            "From: a@b\r\nX: 1\r\n"
        );
        assert_eq!(
            text(apply(b"\r\nbody", &rewrite(&[], None, &[("X", "1")]))),
            "X: 1\r\n\r\nbody"
        );
        assert!(has_field(MESSAGE, "x-spam") && !has_field(MESSAGE, "body"));
    }
}

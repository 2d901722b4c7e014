//! Message content for DATA (RFC 5321 4.5.2): line endings made canonical, dot-stuffing,
//! and the end-of-data indication.

/// The bytes to send after the 354: every line ending becomes CRLF, a line that begins
/// with "." gets a second one, the content ends with CRLF even when the message did not,
/// and `.` CRLF closes it.
///
/// A bare CR or LF is not a line ending in SMTP (RFC 5321 2.3.8), yet some servers take
/// it as one; sent as it is, `<LF>.<LF>` could end the message early at the next hop
/// and let the rest be read as commands (SMTP smuggling). The ingress refuses such
/// content, so this only matters for messages made elsewhere (bounces, tests), and
/// turning each into CRLF is the one reading every server agrees on.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 5);
    let mut line_start = true;
    let mut bytes = message.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        line_start = matches!(b, b'\r' | b'\n');
        match b {
            b'\r' => {
                bytes.next_if_eq(&b'\n');
                out.extend_from_slice(b"\r\n");
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            _ => out.push(b),
        }
    }
    if !line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// True when the content has octets above 127 and so needs 8BITMIME (RFC 6152).
pub fn is_eight_bit(message: &[u8]) -> bool {
    !message.is_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuffing_table() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b"a\r\n", b"a\r\n.\r\n"),
            (b"no final line ending", b"no final line ending\r\n.\r\n"),
            (b".\r\n", b"..\r\n.\r\n"),
            (b"a\r\n.\r\nb\r\n", b"a\r\n..\r\nb\r\n.\r\n"),
            (b"..x\r\n.y", b"...x\r\n..y\r\n.\r\n"),
            (b"a.b\r\n a\r\n", b"a.b\r\n a\r\n.\r\n"),
            // Bare line endings become CRLF, and a dot after them is stuffed.
            (b"a\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
            (b"a\r.\r\n", b"a\r\n..\r\n.\r\n"),
            (b"\r\n\r\n", b"\r\n\r\n.\r\n"),
        ];
        for (input, want) in cases {
            assert_eq!(
                dot_stuff(input),
                *want,
                "dot_stuff({:?})",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn eight_bit_octets_pass_unchanged() {
        let msg = "Subject: caf\u{e9}\r\n\r\n\u{fc}ber\r\n".as_bytes();
        assert!(is_eight_bit(msg));
        assert!(!is_eight_bit(b"plain\r\n"));
        let mut want = msg.to_vec();
        want.extend_from_slice(b".\r\n");
        assert_eq!(dot_stuff(msg), want);
    }
}

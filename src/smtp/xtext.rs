//! xtext (RFC 3461 4), the encoding of the DSN parameters ENVID and ORCPT and of the
//! `AUTH=` parameter of MAIL FROM (RFC 4954 5).

/// Decodes xtext; `None` when `s` is not xtext or does not decode to UTF-8.
///
/// ```text
/// xtext   = *( xchar / hexchar )
/// xchar   = any ASCII CHAR between "!" (33) and "~" (126) inclusive,
///           except for "+" and "="
/// hexchar = ASCII "+" immediately followed by two upper case hexadecimal digits
/// ```
///
/// Lower case hex digits are accepted too: they cannot be confused with anything else,
/// and some clients send them.
pub fn decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => {
                let hi = hex_value(bytes.next()?)?;
                let lo = hex_value(bytes.next()?)?;
                out.push(hi << 4 | lo);
            }
            b'=' => return None,
            b'!'..=b'~' => out.push(b),
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// Encodes `s` as xtext: every octet outside `!`..`~`, and `+` and `=`, becomes `+XX`.
pub fn encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push('+');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("", Some("")),
            ("bob@example.com", Some("bob@example.com")),
            ("a+2Bb", Some("a+b")),
            ("a+3Db+20c", Some("a=b c")),
            ("+2b", Some("+")),
            ("+C3+A9", Some("é")),
            ("a+", None),
            ("a+2", None),
            ("a+2G", None),
            ("a=b", None),
            ("a b", None),
            ("a\tb", None),
            ("é", None),
            ("+FF", None),
        ];
        for (input, want) in cases {
            assert_eq!(decode(input).as_deref(), *want, "decode({input:?})");
        }
    }

    #[test]
    fn encode_table_and_round_trip() {
        let cases = [
            ("bob@example.com", "bob@example.com"),
            ("a+b=c d", "a+2Bb+3Dc+20d"),
            ("é\n", "+C3+A9+0A"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(encode(input), want);
            assert_eq!(decode(want).as_deref(), Some(input));
        }
    }
}

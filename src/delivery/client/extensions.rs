//! The service extensions a server announces in its EHLO/LHLO reply (RFC 5321 4.1.1.1).

use crate::smtp::reply::Reply;

/// The EHLO keywords the client acts on. After HELO (no EHLO), all are absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    /// `SIZE [limit]` (RFC 1870): `Some(0)` when announced without a fixed limit.
    pub size: Option<u64>,
    /// `8BITMIME` (RFC 6152).
    pub eight_bit_mime: bool,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// `PIPELINING` (RFC 2920).
    pub pipelining: bool,
    /// `DSN` (RFC 3461).
    pub dsn: bool,
    /// `CHUNKING` (RFC 3030); noted, but content always goes with DATA.
    pub chunking: bool,
    /// `ENHANCEDSTATUSCODES` (RFC 2034).
    pub enhanced_status_codes: bool,
    /// `STARTTLS` (RFC 3207).
    pub starttls: bool,
    /// `AUTH` mechanisms (RFC 4954), upper case.
    pub auth: Vec<String>,
}

impl Extensions {
    /// Reads the keywords from an EHLO reply; the first line is the server's greeting
    /// text, and unknown keywords are ignored.
    ///
    /// ```text
    /// ehlo-line = ehlo-keyword *( SP ehlo-param )
    /// ```
    pub fn parse(reply: &Reply) -> Extensions {
        let mut ext = Extensions::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            let keyword = keyword.to_ascii_uppercase();
            match keyword.as_str() {
                "SIZE" => ext.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => ext.eight_bit_mime = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                "PIPELINING" => ext.pipelining = true,
                "DSN" => ext.dsn = true,
                "CHUNKING" => ext.chunking = true,
                "ENHANCEDSTATUSCODES" => ext.enhanced_status_codes = true,
                "STARTTLS" => ext.starttls = true,
                // `AUTH=LOGIN PLAIN` is the pre-standard form some servers still send.
                "AUTH" | "AUTH=" => ext.add_auth(words),
                k if k.starts_with("AUTH=") => {
                    ext.add_auth(k.get(5..).into_iter().chain(words));
                }
                _ => {}
            }
        }
        ext
    }

    fn add_auth<'a>(&mut self, mechanisms: impl Iterator<Item = &'a str>) {
        for m in mechanisms {
            let m = m.to_ascii_uppercase();
            if !m.is_empty() && !self.auth.contains(&m) {
                self.auth.push(m);
            }
        }
    }

    /// The fixed maximum message size, if the server announced one.
    pub fn size_limit(&self) -> Option<u64> {
        self.size.filter(|&n| n > 0)
    }

    pub fn has_auth(&self, mechanism: &str) -> bool {
        self.auth.iter().any(|m| m == mechanism)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ehlo(lines: &[&str]) -> Extensions {
        Extensions::parse(&Reply::plain(
            250,
            lines.iter().map(|l| l.to_string()).collect(),
        ))
    }

    #[test]
    fn parses_the_keywords_we_use() {
        let e = ehlo(&[
            "mx.example greets you",
            "SIZE 10240000",
            "8bitmime",
            "PIPELINING",
            "DSN",
            "SMTPUTF8",
            "CHUNKING",
            "ENHANCEDSTATUSCODES",
            "STARTTLS",
            "AUTH PLAIN login",
            "AUTH=LOGIN CRAM-MD5",
            "X-UNKNOWN whatever",
        ]);
        assert_eq!(e.size_limit(), Some(10_240_000));
        assert!(e.eight_bit_mime && e.pipelining && e.dsn && e.smtputf8 && e.chunking);
        assert!(e.enhanced_status_codes && e.starttls);
        assert_eq!(e.auth, ["PLAIN", "LOGIN", "CRAM-MD5"]);
    }

    #[test]
    fn greeting_line_is_not_a_keyword_and_size_may_lack_a_limit() {
        let e = ehlo(&["STARTTLS", "SIZE"]);
        assert!(!e.starttls);
        assert_eq!(e.size, Some(0));
        assert_eq!(e.size_limit(), None);
        let e = ehlo(&["mx", "SIZE nonsense", "", "   "]);
        assert_eq!(e.size_limit(), None);
        assert_eq!(ehlo(&["only a greeting"]), Extensions::default());
    }
}

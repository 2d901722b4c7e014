//! The SASL mechanisms of AUTH (RFC 4954): PLAIN (RFC 4616) and LOGIN
//! (draft-murchison-sasl-login), decoded from their base64 responses. Checking the
//! credentials is the policy's job.

use super::reply::Reply;
use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use std::fmt;

/// The server challenge "Username:" of LOGIN, base64-encoded.
pub const LOGIN_USERNAME_PROMPT: &str = "VXNlcm5hbWU6";
/// The server challenge "Password:" of LOGIN, base64-encoded.
pub const LOGIN_PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

/// Some clients leave out the base64 padding; nothing is ambiguous without it.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
}

impl Mechanism {
    /// Mechanism names are case-insensitive (RFC 4422 3.1).
    pub fn parse(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case("PLAIN") {
            Some(Mechanism::Plain)
        } else if name.eq_ignore_ascii_case("LOGIN") {
            Some(Mechanism::Login)
        } else {
            None
        }
    }

    /// The name as advertised in the EHLO AUTH keyword.
    pub fn as_str(&self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
        }
    }
}

/// A username and password as the client sent them.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    // Credentials end up in logs via `{:?}`; the password must not.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("response is not base64")]
    Base64,
    #[error("response does not have the mechanism's form")]
    Malformed,
    #[error("authorization identity differs from the authentication identity")]
    AuthzidMismatch,
    #[error("client cancelled the exchange")]
    Cancelled,
}

impl SaslError {
    pub fn reply(&self) -> Reply {
        match self {
            // RFC 4954 4: a "*" response cancels, answered with 501.
            SaslError::Cancelled => Reply::new(501, "5.0.0", "Authentication cancelled"),
            _ => Reply::new(501, "5.5.2", "Cannot decode response"),
        }
    }
}

/// Decodes a PLAIN response; `*` cancels.
///
/// ```text
/// message = [authzid] UTF8NUL authcid UTF8NUL passwd   ; RFC 4616 2
/// authcid = 1*SAFE
/// passwd  = 1*SAFE
/// ```
///
/// Acting for another identity is not supported, so a non-empty authzid must name the
/// authcid itself.
pub fn decode_plain(response: &str) -> Result<Credentials, SaslError> {
    let decoded = decode_base64(response)?;
    let mut parts = decoded.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(passwd), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    if authcid.is_empty() || passwd.is_empty() {
        return Err(SaslError::Malformed);
    }
    if !authzid.is_empty() && authzid != authcid {
        return Err(SaslError::AuthzidMismatch);
    }
    Ok(Credentials {
        username: utf8(authcid)?,
        password: utf8(passwd)?,
    })
}

/// Decodes one LOGIN response line (the username or the password); `*` cancels.
pub fn decode_login_field(response: &str) -> Result<String, SaslError> {
    let decoded = decode_base64(response)?;
    if decoded.is_empty() || decoded.contains(&0) {
        return Err(SaslError::Malformed);
    }
    utf8(&decoded)
}

fn decode_base64(response: &str) -> Result<Vec<u8>, SaslError> {
    let response = response.trim_matches([' ', '\t']);
    if response == "*" {
        return Err(SaslError::Cancelled);
    }
    BASE64.decode(response).map_err(|_| SaslError::Base64)
}

fn utf8(bytes: &[u8]) -> Result<String, SaslError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| SaslError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(raw: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(raw)
    }

    #[test]
    fn plain_table() {
        use SaslError::*;
        let ok = |u: &str, p: &str| {
            Ok(Credentials {
                username: u.into(),
                password: p.into(),
            })
        };
        let cases: Vec<(String, Result<Credentials, SaslError>)> = vec![
            (b64(b"\0bob\0secret"), ok("bob", "secret")),
            (b64(b"bob\0bob\0secret"), ok("bob", "secret")),
            (b64("\0jörg\0pässwörd".as_bytes()), ok("jörg", "pässwörd")),
            (
                b64(b"\0bob\0secret").trim_end_matches('=').into(),
                ok("bob", "secret"),
            ),
            (b64(b"alice\0bob\0secret"), Err(AuthzidMismatch)),
            (b64(b"\0\0secret"), Err(Malformed)),
            (b64(b"\0bob\0"), Err(Malformed)),
            (b64(b"bob\0secret"), Err(Malformed)),
            (b64(b"\0bob\0sec\0ret"), Err(Malformed)),
            (b64(b"\0bob\0\xff"), Err(Malformed)),
            (String::new(), Err(Malformed)),
            ("*".into(), Err(Cancelled)),
            ("!!notbase64".into(), Err(Base64)),
        ];
        for (response, want) in cases {
            assert_eq!(decode_plain(&response), want, "{response:?}");
        }
    }

    #[test]
    fn login_table() {
        use SaslError::*;
        let cases: Vec<(String, Result<String, SaslError>)> = vec![
            (b64(b"bob"), Ok("bob".into())),
            (b64(b"secret"), Ok("secret".into())),
            (String::new(), Err(Malformed)),
            (b64(b"a\0b"), Err(Malformed)),
            ("*".into(), Err(Cancelled)),
            ("Ym9i$".into(), Err(Base64)),
        ];
        for (response, want) in cases {
            assert_eq!(decode_login_field(&response), want, "{response:?}");
        }
    }

    #[test]
    fn prompts_mechanisms_replies_and_redaction() {
        assert_eq!(b64(b"Username:"), LOGIN_USERNAME_PROMPT);
        assert_eq!(b64(b"Password:"), LOGIN_PASSWORD_PROMPT);
        assert_eq!(Mechanism::parse("plain"), Some(Mechanism::Plain));
        assert_eq!(Mechanism::parse("LoGiN"), Some(Mechanism::Login));
        assert_eq!(Mechanism::parse("CRAM-MD5"), None);
        assert_eq!(
            SaslError::Cancelled.reply().to_bytes(),
            b"501 5.0.0 Authentication cancelled\r\n"
        );
        assert_eq!(
            SaslError::Base64.reply().to_bytes(),
            b"501 5.5.2 Cannot decode response\r\n"
        );
        let creds = Credentials {
            username: "bob".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{creds:?}").contains("hunter2"));
    }
}

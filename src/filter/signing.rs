//! DKIM signing (RFC 6376, RFC 8463) of the mail the relay sends for its own users and
//! networks, and the key that ARC seals with: keys read from the secrets directory
//! once per policy revision ([`Signer::load`]), the key chosen by the RFC 5322.From
//! domain, and one `DKIM-Signature` per key of that domain ([`Signer::sign`]).
//!
//! What is signed: relaxed/relaxed, `rsa-sha256` or `ed25519-sha256` by the key, a `t=`
//! timestamp, no `l=` (a body length lets anyone append content), `x=` only when the
//! policy sets an expiration. The header fields are RFC 6376 5.4.1's list, only those
//! present (mail-auth would name absent ones too), and `From` once more than it occurs,
//! so that a `From` added on the way breaks the signature instead of being displayed.

use mail_auth::common::crypto::{Algorithm, DkimKey, Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::dkim::{Canonicalization, DkimSigner};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::settings::{KeySettings, SigningSettings};

/// The longest key file read: a 4096-bit RSA key in PEM is about 3.3 KB.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// RFC 6376 5.4.1's header fields that SHOULD be signed, signed when present.
pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Resent-Date",
    "Resent-From",
    "Resent-To",
    "Resent-Cc",
    "In-Reply-To",
    "References",
    "List-Id",
    "List-Help",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Subscribe",
    "List-Post",
    "List-Owner",
    "List-Archive",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

/// Why a key is not usable. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no secrets directory (delivery.secretsDir, --secrets-dir) to read {name}/{key} from")]
    NoSecretsDir { name: String, key: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is larger than {MAX_KEY_FILE} bytes: not a key")]
    TooLarge { path: PathBuf },
    #[error("{path} holds no PEM private key (PKCS#8 or PKCS#1)")]
    NotPem { path: PathBuf },
    #[error("{path}: an EC (SEC1) key; DKIM signs with RSA or Ed25519")]
    Unsupported { path: PathBuf },
    #[error(
        "{path}: RSA keys of 2048 to 4096 bits are used (2048 recommended, RFC 8301); this one is not: {reason}"
    )]
    RsaSize { path: PathBuf, reason: String },
    #[error("{path}: not a usable RSA or Ed25519 key: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// Why a message could not be signed: the deployment is broken, the client retries.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the key of {domain} selector {selector} is not loaded: {source}")]
    Key {
        domain: String,
        selector: String,
        source: Arc<KeyError>,
    },
    #[error("signing as {domain} selector {selector} failed: {source}")]
    Sign {
        domain: String,
        selector: String,
        source: mail_auth::Error,
    },
}

/// A loaded private key that can be shared: mail-auth's builders take their key by
/// value, and loading one from its file per message is what this module avoids.
#[derive(Clone)]
pub struct SharedKey(Arc<DkimKey>);

impl SharedKey {
    /// `rsa-sha256` or `ed25519-sha256`.
    pub fn algorithm(&self) -> Algorithm {
        SigningKey::algorithm(&*self.0)
    }
}

impl SigningKey for SharedKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }

    fn algorithm(&self) -> Algorithm {
        SigningKey::algorithm(&*self.0)
    }
}

impl std::fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedKey({:?})", self.algorithm())
    }
}

/// The key ARC sets are sealed with: `ArcSealer::from_key(arc.key.clone())`.
#[derive(Debug, Clone)]
pub struct ArcKey {
    pub domain: String,
    pub selector: String,
    pub key: SharedKey,
}

/// One configured DKIM key and whether it loaded.
struct DkimEntry {
    domain: String,
    selector: String,
    expiration_secs: Option<u64>,
    key: Result<SharedKey, Arc<KeyError>>,
}

/// The signing keys of one policy revision.
pub struct Signer {
    dkim: Vec<DkimEntry>,
    arc: Option<Result<ArcKey, Arc<KeyError>>>,
}

/// What [`Signer::sign_message`] made of a message.
#[derive(Debug)]
pub enum Signed {
    /// `DKIM-Signature` fields to prepend, one per key of `domain`.
    Headers {
        domain: String,
        selectors: Vec<String>,
        headers: Vec<u8>,
    },
    /// Goes on unsigned: why.
    Unsigned(Unsigned),
}

/// Why a message goes on unsigned; none of these is an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsigned {
    /// No From address (RFC 5322 requires one): nothing to align a signature with.
    NoFrom,
    /// Several From fields or addresses: a receiver cannot tell which one DMARC checks.
    SeveralFrom,
    /// No key for the From domain or any of its parents.
    NoKey { domain: String },
}

impl std::fmt::Display for Unsigned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unsigned::NoFrom => f.write_str("no From address"),
            Unsigned::SeveralFrom => f.write_str("several From addresses"),
            Unsigned::NoKey { domain } => write!(f, "no key for {domain}"),
        }
    }
}

impl Signer {
    /// Reads every key of `settings` from `{secrets_dir}/{name}/{key}`. A key that
    /// fails is kept as its error (and logged here, once): messages that need it are
    /// refused for now, others are signed with the keys that loaded.
    pub fn load(settings: &SigningSettings, secrets_dir: Option<&Path>) -> Signer {
        let load = |k: &KeySettings| {
            let key = read_key(k, secrets_dir).map(|k| SharedKey(Arc::new(k)));
            if let Err(e) = &key {
                tracing::error!(domain = %k.domain, selector = %k.selector, error = %e, "signing key not loaded");
            }
            key.map_err(Arc::new)
        };
        Signer {
            dkim: settings
                .dkim
                .iter()
                .map(|k| DkimEntry {
                    domain: k.domain.clone(),
                    selector: k.selector.clone(),
                    expiration_secs: k.expiration_secs,
                    key: load(k),
                })
                .collect(),
            arc: settings.arc.as_ref().map(|k| {
                load(k).map(|key| ArcKey {
                    domain: k.domain.clone(),
                    selector: k.selector.clone(),
                    key,
                })
            }),
        }
    }

    /// Whether any key failed to load.
    pub fn has_errors(&self) -> bool {
        self.dkim.iter().any(|e| e.key.is_err()) || matches!(self.arc, Some(Err(_)))
    }

    /// The DKIM-Signature fields to prepend to `message`; empty when no key applies.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        match self.sign_message(message)? {
            Signed::Headers { headers, .. } => Ok(headers),
            Signed::Unsigned(_) => Ok(Vec::new()),
        }
    }

    /// [`Signer::sign`], saying which domain signed or why none did.
    pub fn sign_message(&self, message: &[u8]) -> Result<Signed, SignError> {
        let fields = HeaderFields::scan(message);
        let from = match from_domain(message, fields.count("From")) {
            Ok(domain) => domain,
            Err(why) => return Ok(Signed::Unsigned(why)),
        };
        let Some(domain) = self.key_domain(&from) else {
            return Ok(Signed::Unsigned(Unsigned::NoKey { domain: from }));
        };
        let names = fields.signed_names();
        let mut headers = Vec::new();
        let mut selectors = Vec::new();
        for entry in self.dkim.iter().filter(|e| e.domain == domain) {
            let failed = |source| SignError::Sign {
                domain: entry.domain.clone(),
                selector: entry.selector.clone(),
                source,
            };
            let key = entry.key.as_ref().map_err(|e| SignError::Key {
                domain: entry.domain.clone(),
                selector: entry.selector.clone(),
                source: e.clone(),
            })?;
            let mut signer = DkimSigner::from_key(key.clone())
                .domain(entry.domain.as_str())
                .selector(entry.selector.as_str())
                .headers(names.iter().copied())
                .header_canonicalization(Canonicalization::Relaxed)
                .body_canonicalization(Canonicalization::Relaxed);
            if let Some(secs) = entry.expiration_secs {
                signer = signer.expiration(secs);
            }
            let signature = signer.sign(message).map_err(failed)?;
            headers.extend_from_slice(signature.to_header().as_bytes());
            selectors.push(entry.selector.clone());
        }
        Ok(Signed::Headers {
            domain: domain.to_string(),
            selectors,
            headers,
        })
    }

    /// The configured domain that signs for `from`: itself, else its closest parent.
    fn key_domain(&self, from: &str) -> Option<&str> {
        let mut candidate = from;
        loop {
            if let Some(entry) = self.dkim.iter().find(|e| e.domain == candidate) {
                return Some(&entry.domain);
            }
            candidate = candidate.split_once('.')?.1;
        }
    }

    /// The ARC sealing key, when configured and loaded.
    pub fn arc_key(&self) -> Option<&ArcKey> {
        self.arc.as_ref()?.as_ref().ok()
    }

    /// Why the configured ARC key is not loaded.
    pub fn arc_error(&self) -> Option<&KeyError> {
        match &self.arc {
            Some(Err(e)) => Some(e),
            _ => None,
        }
    }
}

/// The names of the header section's fields, in order; unfolded lines only.
struct HeaderFields<'a> {
    names: Vec<&'a [u8]>,
}

impl<'a> HeaderFields<'a> {
    fn scan(message: &'a [u8]) -> Self {
        let mut names = Vec::new();
        for line in message.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                break;
            }
            if line[0] == b' ' || line[0] == b'\t' {
                continue;
            }
            if let Some(colon) = line.iter().position(|b| *b == b':') {
                names.push(line[..colon].trim_ascii());
            }
        }
        HeaderFields { names }
    }

    fn count(&self, name: &str) -> usize {
        self.names
            .iter()
            .filter(|n| n.eq_ignore_ascii_case(name.as_bytes()))
            .count()
    }

    /// RFC 6376 5.4.1's fields that are present, and `From` once more (oversigning:
    /// mail-auth signs every occurrence of a listed name and lists a name it does not
    /// find as signed-absent, so the second `From` stands for "no further From").
    fn signed_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = SIGNED_HEADERS
            .iter()
            .copied()
            .filter(|name| self.count(name) > 0)
            .collect();
        names.push("From");
        names
    }
}

/// The lower-case ASCII domain of the message's one From address.
fn from_domain(message: &[u8], from_fields: usize) -> Result<String, Unsigned> {
    match from_fields {
        0 => return Err(Unsigned::NoFrom),
        1 => {}
        _ => return Err(Unsigned::SeveralFrom),
    }
    let parsed = mail_parser::MessageParser::new()
        .parse_headers(message)
        .ok_or(Unsigned::NoFrom)?;
    let from = parsed.from().ok_or(Unsigned::NoFrom)?;
    let mut addresses = from.iter().filter_map(|a| a.address());
    let address = addresses.next().ok_or(Unsigned::NoFrom)?;
    if addresses.next().is_some() {
        return Err(Unsigned::SeveralFrom);
    }
    let domain = address
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('.'))
        .filter(|d| !d.is_empty())
        .ok_or(Unsigned::NoFrom)?;
    // An internationalised domain signs as its A-label, which is how `d=` is written.
    idna::domain_to_ascii(domain)
        .map(|d| d.to_ascii_lowercase())
        .map_err(|_| Unsigned::NoFrom)
}

fn read_key(k: &KeySettings, secrets_dir: Option<&Path>) -> Result<DkimKey, KeyError> {
    let r = &k.key_secret_ref;
    let dir = secrets_dir.ok_or_else(|| KeyError::NoSecretsDir {
        name: r.name.clone(),
        key: r.key.clone(),
    })?;
    // The names were checked by compilation (no '/', not '..'): one file below `dir`.
    let path = dir.join(&r.name).join(&r.key);
    let read = |source| KeyError::Read {
        path: path.clone(),
        source,
    };
    let len = std::fs::metadata(&path).map_err(read)?.len();
    if len > MAX_KEY_FILE {
        return Err(KeyError::TooLarge { path });
    }
    let pem = std::fs::read(&path).map_err(read)?;
    parse_key(&pem).map_err(|e| e.at(path))
}

/// A key parse failure before its path is known.
#[derive(Debug)]
pub enum ParseError {
    NotPem,
    Unsupported,
    RsaSize(String),
    Invalid(String),
}

impl ParseError {
    fn at(self, path: PathBuf) -> KeyError {
        match self {
            ParseError::NotPem => KeyError::NotPem { path },
            ParseError::Unsupported => KeyError::Unsupported { path },
            ParseError::RsaSize(reason) => KeyError::RsaSize { path, reason },
            ParseError::Invalid(reason) => KeyError::Invalid { path, reason },
        }
    }
}

/// A PEM private key: PKCS#8 (RSA or Ed25519, v1 or v2) or PKCS#1 (`RSA PRIVATE KEY`).
pub fn parse_key(pem: &[u8]) -> Result<DkimKey, ParseError> {
    let der = PrivateKeyDer::from_pem_slice(pem).map_err(|_| ParseError::NotPem)?;
    let rsa = |der| {
        RsaKey::<Sha256>::from_key_der(der)
            .map(DkimKey::Rsa)
            .map_err(|e| {
                let reason = e.to_string();
                // ring's KeyRejected reasons for a modulus outside 2048..=4096 bits.
                if reason.contains("TooSmall") || reason.contains("TooLarge") {
                    ParseError::RsaSize(reason)
                } else {
                    ParseError::Invalid(reason)
                }
            })
    };
    match der {
        PrivateKeyDer::Pkcs1(_) => rsa(der),
        PrivateKeyDer::Pkcs8(ref pkcs8) => {
            // OpenSSL writes Ed25519 keys as PKCS#8 v1 (no public key), which ring's
            // checked parser refuses; the unchecked one derives the public key.
            match Ed25519Key::from_pkcs8_maybe_unchecked_der(pkcs8.secret_pkcs8_der()) {
                Ok(key) => Ok(DkimKey::Ed25519(key)),
                Err(_) => rsa(der),
            }
        }
        PrivateKeyDer::Sec1(_) => Err(ParseError::Unsupported),
        _ => Err(ParseError::NotPem),
    }
}

/// The public key as DKIM's `p=` publishes it (RFC 6376 3.6.1): for RSA the
/// SubjectPublicKeyInfo that `openssl rsa -pubout` gives and every verifier reads (ring
/// hands out the bare RSAPublicKey inside it); for Ed25519 the raw 32 octets (RFC 8463).
pub fn public_key(key: &DkimKey) -> Result<Vec<u8>, String> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::pkcs8::EncodePublicKey;
    match key {
        DkimKey::Rsa(k) => {
            let public =
                rsa::RsaPublicKey::from_pkcs1_der(&k.public_key()).map_err(|e| e.to_string())?;
            let der = public.to_public_key_der().map_err(|e| e.to_string())?;
            Ok(der.as_bytes().to_vec())
        }
        DkimKey::Ed25519(k) => Ok(k.public_key()),
    }
}

#[cfg(test)]
#[path = "signing_tests.rs"]
mod tests;

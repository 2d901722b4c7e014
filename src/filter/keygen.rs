//! DKIM key pairs for `sluice dkim keygen`: a private key in PEM PKCS#8, as the
//! signing keys are read ([`super::signing::parse_key`]), and the TXT record that
//! publishes its public key at `{selector}._domainkey.{domain}`.
//!
//! Ed25519 keys come from ring, which signs; RSA keys from the `rsa` crate, because
//! ring loads RSA keys but cannot make them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mail_auth::common::crypto::DkimKey;

use super::signing::{parse_key, public_key};

/// The RSA sizes ring signs with; 2048 is what RFC 8301 recommends and what fits a
/// TXT record without trouble.
pub const RSA_BITS: [usize; 3] = [2048, 3072, 4096];
/// The most octets of one character-string in a TXT record (RFC 1035 3.3).
pub const TXT_STRING_MAX: usize = 255;

/// The kind of key to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    Rsa { bits: usize },
    Ed25519,
}

#[derive(Debug, thiserror::Error)]
pub enum KeygenError {
    #[error("RSA keys of {bits} bits are not signed with; use 2048, 3072 or 4096")]
    RsaBits { bits: usize },
    #[error("cannot generate the key: {0}")]
    Generate(String),
    #[error("the new key does not load back: {0}")]
    Reload(String),
}

/// A new private key, PEM-encoded PKCS#8.
pub fn generate(algorithm: KeyAlgorithm) -> Result<String, KeygenError> {
    match algorithm {
        KeyAlgorithm::Rsa { bits } => {
            use rsa::pkcs8::{EncodePrivateKey, LineEnding};
            if !RSA_BITS.contains(&bits) {
                return Err(KeygenError::RsaBits { bits });
            }
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits)
                .map_err(|e| KeygenError::Generate(e.to_string()))?;
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| KeygenError::Generate(e.to_string()))?;
            Ok(pem.to_string())
        }
        KeyAlgorithm::Ed25519 => {
            // ring's Ed25519KeyPair::generate_pkcs8, through mail-auth.
            let der = mail_auth::common::crypto::Ed25519Key::generate_pkcs8()
                .map_err(|e| KeygenError::Generate(e.to_string()))?;
            Ok(pem("PRIVATE KEY", &ed25519_pkcs8_v1(&der)?))
        }
    }
}

/// The start of an Ed25519 PKCS#8 document up to the 32-octet seed (RFC 8410 7): a
/// SEQUENCE, the version, the algorithm 1.3.101.112, the OCTET STRING of the seed.
const ED25519_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// ring writes PKCS#8 v2 (RFC 5958, the public key inside), which OpenSSL 3.0 refuses
/// to read; the v1 form OpenSSL itself writes (`openssl genpkey -algorithm ed25519`)
/// holds only the seed, and signing loads either. Same prefix but for the length and
/// the version, then the seed.
fn ed25519_pkcs8_v1(v2: &[u8]) -> Result<Vec<u8>, KeygenError> {
    let same_shape = v2.len() >= 48
        && v2[0] == 0x30
        && v2[2..4] == ED25519_V1_PREFIX[2..4]
        && v2[5..16] == ED25519_V1_PREFIX[5..16];
    if !same_shape {
        return Err(KeygenError::Generate(
            "unexpected Ed25519 PKCS#8 layout from ring".into(),
        ));
    }
    let mut v1 = ED25519_V1_PREFIX.to_vec();
    v1.extend_from_slice(&v2[16..48]);
    Ok(v1)
}

fn pem(label: &str, der: &[u8]) -> String {
    let text = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DNS record that publishes a key's public half.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    /// `{selector}._domainkey.{domain}.`
    pub name: String,
    /// `v=DKIM1; k=rsa; p=...` whole, as a resolver returns it joined.
    pub value: String,
}

impl DnsRecord {
    /// The record of the private key `pem` (which must load as signing loads it).
    pub fn for_key(domain: &str, selector: &str, pem: &[u8]) -> Result<DnsRecord, KeygenError> {
        let key = parse_key(pem).map_err(|e| KeygenError::Reload(format!("{e:?}")))?;
        let k = match key {
            DkimKey::Rsa(_) => "rsa",
            DkimKey::Ed25519(_) => "ed25519",
        };
        let public = public_key(&key).map_err(KeygenError::Reload)?;
        Ok(DnsRecord {
            name: format!(
                "{selector}._domainkey.{}.",
                domain.trim_end_matches('.').to_ascii_lowercase()
            ),
            value: format!("v=DKIM1; k={k}; p={}", STANDARD.encode(public)),
        })
    }

    /// The value as quoted character-strings of at most 255 octets each, which a
    /// resolver joins back into one (RFC 6376 3.6.2.2).
    pub fn strings(&self) -> Vec<String> {
        self.value
            .as_bytes()
            .chunks(TXT_STRING_MAX)
            .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
            .collect()
    }

    /// One line for a zone file: `name IN TXT "..." "..."`.
    pub fn zone_line(&self) -> String {
        format!("{} IN TXT {}", self.name, self.strings().join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_keys_load_back_and_publish_32_octets() {
        let pem = generate(KeyAlgorithm::Ed25519).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = STANDARD.decode(body).unwrap();
        assert_eq!(der.len(), 48, "PKCS#8 v1: the seed only");
        assert_eq!(der[..16], ED25519_V1_PREFIX);
        let record = DnsRecord::for_key("Example.com.", "s1", pem.as_bytes()).unwrap();
        assert_eq!(record.name, "s1._domainkey.example.com.");
        let p = record.value.strip_prefix("v=DKIM1; k=ed25519; p=").unwrap();
        assert_eq!(STANDARD.decode(p).unwrap().len(), 32);
        assert_eq!(record.strings().len(), 1);
    }

    #[test]
    fn rsa_keys_load_back_and_split_into_strings() {
        assert!(matches!(
            generate(KeyAlgorithm::Rsa { bits: 1024 }),
            Err(KeygenError::RsaBits { bits: 1024 })
        ));
        let pem = generate(KeyAlgorithm::Rsa { bits: 2048 }).unwrap();
        let record = DnsRecord::for_key("example.com", "r", pem.as_bytes()).unwrap();
        assert!(
            record
                .value
                .starts_with("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"),
            "an SPKI of 2048 bits: {}",
            record.value
        );
        let strings = record.strings();
        assert_eq!(strings.len(), 2);
        assert!(strings.iter().all(|s| s.len() <= TXT_STRING_MAX + 2));
        let joined: String = strings.iter().map(|s| s.trim_matches('"')).collect();
        assert_eq!(joined, record.value);
        assert!(
            record
                .zone_line()
                .starts_with("r._domainkey.example.com. IN TXT \"v=DKIM1")
        );
    }
}

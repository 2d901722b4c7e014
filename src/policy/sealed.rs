//! Secrets inside the snapshot. The operator reads smarthost credentials and webhook
//! signing keys from Kubernetes Secrets, and workers must use them, but the snapshot
//! travels through NATS, where ingress pods (and anyone with read access) can see it. So
//! these values are sealed with XChaCha20-Poly1305 under a key that only the operator
//! and the workers hold (`--secrets-key-file`, a mounted Secret); client passwords are
//! not sealed but hashed (argon2id), since only a hash is ever needed to check them.
//!
//! Sealing is deterministic: the nonce is derived (HMAC-SHA-256) from the key, the
//! context and the plaintext, like SIV. The same Secret thus gives the same snapshot and
//! the same revision after an operator restart or on the other replica, instead of a new
//! snapshot for every reconcile; the cost is that equal values under equal contexts give
//! equal ciphertexts, which reveals nothing else. The context names where the value may
//! be used (`smarthost mx.example:587 password`) and is authenticated: a sealed password
//! moved to another route in a forged snapshot does not open.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::fmt;
use std::path::Path;

/// Key material shorter than this is refused: 32 bytes is the cipher's key size.
pub const MIN_KEY_BYTES: usize = 32;

/// The key the operator seals with and workers open with, read from a file of at least
/// 32 bytes (for example `openssl rand -base64 48`). Separate keys for encryption,
/// nonces and password salts are derived from it.
pub struct SecretsKey {
    cipher: XChaCha20Poly1305,
    nonce_key: [u8; 32],
    salt_key: [u8; 32],
    id: String,
}

/// Why a key file or a sealed value is not usable.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot read the secrets key file {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("the secrets key file {path} holds {len} bytes; at least {MIN_KEY_BYTES} are needed")]
    TooShort { path: String, len: usize },
    #[error("sealed with key {sealed_with}, but this process holds key {held}")]
    WrongKey { sealed_with: String, held: String },
    #[error("the sealed value is malformed or was not sealed for {context:?}")]
    Corrupt { context: String },
}

impl SecretsKey {
    /// Key material from a file; trailing white space (a newline from `echo`) is not key.
    pub fn from_file(path: &Path) -> Result<SecretsKey, SealError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|error| SealError::Read {
            path: shown.clone(),
            error,
        })?;
        let material = bytes.trim_ascii_end();
        if material.len() < MIN_KEY_BYTES {
            return Err(SealError::TooShort {
                path: shown,
                len: material.len(),
            });
        }
        Ok(SecretsKey::from_material(material))
    }

    /// Key material as bytes (at least [`MIN_KEY_BYTES`]; not checked here).
    pub fn from_material(material: &[u8]) -> SecretsKey {
        let cipher = XChaCha20Poly1305::new(&derive(material, b"sluice seal v1").into());
        let id: String = derive(material, b"sluice key id v1")[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        SecretsKey {
            cipher,
            nonce_key: derive(material, b"sluice nonce v1"),
            salt_key: derive(material, b"sluice password salt v1"),
            id,
        }
    }

    /// A short fingerprint of the key, stored beside each sealed value so that a worker
    /// holding another key says so, rather than "corrupt".
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `plaintext` for use in `context`.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Sealed {
        let mut mac = hmac(&self.nonce_key);
        mac.update(&(context.len() as u64).to_be_bytes());
        mac.update(context.as_bytes());
        mac.update(plaintext);
        let digest = mac.finalize().into_bytes();
        let nonce = XNonce::from_slice(&digest[..24]);
        let payload = Payload {
            msg: plaintext,
            aad: context.as_bytes(),
        };
        // Encryption fails only for messages beyond the cipher's length limit (256 GiB);
        // Secrets are at most 1 MiB.
        let ciphertext = self.cipher.encrypt(nonce, payload).unwrap_or_default();
        Sealed {
            key: self.id.clone(),
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(ciphertext),
        }
    }

    /// Opens a value sealed for `context`.
    pub fn open(&self, context: &str, sealed: &Sealed) -> Result<Vec<u8>, SealError> {
        if sealed.key != self.id {
            return Err(SealError::WrongKey {
                sealed_with: sealed.key.clone(),
                held: self.id.clone(),
            });
        }
        let corrupt = || SealError::Corrupt {
            context: context.to_string(),
        };
        let nonce = B64.decode(&sealed.nonce).map_err(|_| corrupt())?;
        let ciphertext = B64.decode(&sealed.ciphertext).map_err(|_| corrupt())?;
        if nonce.len() != 24 {
            return Err(corrupt());
        }
        let payload = Payload {
            msg: &ciphertext,
            aad: context.as_bytes(),
        };
        self.cipher
            .decrypt(XNonce::from_slice(&nonce), payload)
            .map_err(|_| corrupt())
    }

    /// The argon2 salt for a password at `context`: fixed for a given key, place and
    /// password (so hashes, and the snapshot, are stable), different for each user.
    pub fn password_salt(&self, context: &str, password: &str) -> [u8; 16] {
        let mut mac = hmac(&self.salt_key);
        mac.update(&(context.len() as u64).to_be_bytes());
        mac.update(context.as_bytes());
        mac.update(password.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&digest[..16]);
        salt
    }
}

impl fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretsKey({}, redacted)", self.id)
    }
}

/// A sealed value as it sits in the snapshot. Debug shows only the key id.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// [`SecretsKey::id`] of the key it was sealed with.
    pub key: String,
    pub nonce: String,
    pub ciphertext: String,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealed(key {}, redacted)", self.key)
    }
}

/// The sealing contexts, written in one place because the operator seals and the worker
/// opens with them.
pub mod context {
    /// A smarthost credential; `part` is `username` or `password`.
    pub fn smarthost(host: &str, port: u16, part: &str) -> String {
        format!("smarthost {host}:{port} {part}")
    }

    /// A webhook's signing key.
    pub fn webhook(url: &str) -> String {
        format!("webhook {url}")
    }
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    <HmacSha256 as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key"))
}

fn derive(material: &[u8], label: &[u8]) -> [u8; 32] {
    let mut mac = hmac(material);
    mac.update(label);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretsKey {
        SecretsKey::from_material(&[byte; 40])
    }

    #[test]
    fn sealed_values_open_only_in_their_context_and_with_their_key() {
        let k = key(1);
        let ctx = context::smarthost("mx.example", 587, "password");
        let sealed = k.seal(&ctx, b"hunter2");
        assert_eq!(k.open(&ctx, &sealed).unwrap(), b"hunter2");
        assert!(!sealed.ciphertext.contains("hunter2"));
        let elsewhere = context::smarthost("evil.example", 587, "password");
        assert!(matches!(
            k.open(&elsewhere, &sealed),
            Err(SealError::Corrupt { .. })
        ));
        assert!(matches!(
            key(2).open(&ctx, &sealed),
            Err(SealError::WrongKey { .. })
        ));
        let mut forged = sealed.clone();
        forged.ciphertext = B64.encode(b"0123456789abcdef0123456789");
        assert!(k.open(&ctx, &forged).is_err());
    }

    #[test]
    fn sealing_and_salts_are_deterministic_per_key_context_and_value() {
        let k = key(1);
        let ctx = context::webhook("https://h.example/in");
        assert_eq!(k.seal(&ctx, b"a"), k.seal(&ctx, b"a"));
        assert_ne!(k.seal(&ctx, b"a"), k.seal(&ctx, b"b"));
        assert_ne!(k.seal(&ctx, b"a").nonce, k.seal("other", b"a").nonce);
        assert_ne!(k.seal(&ctx, b"a"), key(2).seal(&ctx, b"a"));
        assert_eq!(k.password_salt("u", "p"), k.password_salt("u", "p"));
        assert_ne!(k.password_salt("u", "p"), k.password_salt("v", "p"));
        assert_ne!(k.password_salt("u", "p"), k.password_salt("u", "q"));
    }

    #[test]
    fn key_files_must_hold_enough_material() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "too short\n").unwrap();
        assert!(matches!(
            SecretsKey::from_file(&short),
            Err(SealError::TooShort { len: 9, .. })
        ));
        let good = dir.path().join("good");
        std::fs::write(&good, format!("{}\n", "k".repeat(44))).unwrap();
        let a = SecretsKey::from_file(&good).unwrap();
        assert_eq!(
            a.id(),
            SecretsKey::from_material("k".repeat(44).as_bytes()).id()
        );
        assert!(!format!("{a:?}").contains('k'.to_string().repeat(8).as_str()));
        assert!(SecretsKey::from_file(&dir.path().join("missing")).is_err());
    }
}

//! Password hashes: making new ones (argon2id), verifying the formats admins bring from
//! elsewhere (argon2 PHC, bcrypt, SHA-512-crypt), validating them at compile time, and
//! `StoredHash`, which keeps a hash out of Debug output and logs.
//!
//! Plain-text passwords never enter the policy; only these hashes do.

use std::fmt;
use std::sync::LazyLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};

/// OWASP's recommended argon2id parameters (Password Storage Cheat Sheet): 19 MiB, 2
/// iterations, 1 lane.
const ARGON2_M_KIB: u32 = 19_456;
const ARGON2_T: u32 = 2;
const ARGON2_P: u32 = 1;

/// Upper bounds on work factors accepted from a policy. A hash is verified on every AUTH,
/// so an absurd factor (by mistake or copied from elsewhere) would turn each login into a
/// denial of service, or, for argon2 memory, an out-of-memory abort.
const MAX_ARGON2_M_KIB: u32 = 1024 * 1024;
const MAX_ARGON2_T: u32 = 64;
const MAX_ARGON2_P: u32 = 16;
const MAX_BCRYPT_COST: u32 = 16;
const MAX_SHA_CRYPT_ROUNDS: usize = 10_000_000;

/// The hash formats Sluice can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashScheme {
    Argon2id,
    Argon2i,
    Argon2d,
    Bcrypt,
    Sha512Crypt,
}

impl fmt::Display for HashScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HashScheme::Argon2id => "argon2id",
            HashScheme::Argon2i => "argon2i",
            HashScheme::Argon2d => "argon2d",
            HashScheme::Bcrypt => "bcrypt",
            HashScheme::Sha512Crypt => "sha512-crypt",
        })
    }
}

/// A password hash as stored in a policy. Debug shows only the scheme: a hash is not a
/// password, but it is offline-crackable material that has no business in logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StoredHash(String);

impl StoredHash {
    pub fn new(hash: impl Into<String>) -> Self {
        StoredHash(hash.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// In the CRD: a crypt-style string (`$argon2id$…`, `$2b$…`, `$6$…`); which schemes and
/// parameters are acceptable is checked when compiling, and reported in status.
impl schemars::JsonSchema for StoredHash {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StoredHash".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": 512,
            "pattern": "^\\$",
        })
    }
}

impl fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match scheme_of(&self.0) {
            Some(s) => write!(f, "StoredHash({s}, redacted)"),
            None => f.write_str("StoredHash(unrecognised, redacted)"),
        }
    }
}

/// Hashes a new password with argon2id and the OWASP parameters, as a PHC string.
pub fn hash_password(password: &str) -> String {
    hash_password_with_salt(password, &rand::random())
}

/// Like [`hash_password`] with a given salt. The operator derives the salt from its key
/// and the password's place (see `sealed.rs`), so that the same Secret gives the same
/// hash after a restart or on another replica, and the snapshot's revision stays put.
pub fn hash_password_with_salt(password: &str, salt_bytes: &[u8; 16]) -> String {
    // Encoding 16 bytes and hashing with valid constant parameters cannot fail;
    // the fallbacks keep this function total without a panic path.
    let Ok(salt) = SaltString::encode_b64(salt_bytes) else {
        return String::new();
    };
    match owasp_argon2().hash_password(password.as_bytes(), &salt) {
        Ok(hash) => hash.to_string(),
        Err(_) => String::new(),
    }
}

fn owasp_argon2() -> Argon2<'static> {
    let params = Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Checks a password against a hash of any supported format. An unknown or malformed
/// hash verifies nothing.
pub fn verify_hash(hash: &str, password: &str) -> bool {
    match scheme_of(hash) {
        Some(HashScheme::Argon2id | HashScheme::Argon2i | HashScheme::Argon2d) => {
            verify_argon2(hash, password)
        }
        Some(HashScheme::Bcrypt) => bcrypt::verify(password, hash).unwrap_or(false),
        Some(HashScheme::Sha512Crypt) => sha_crypt::sha512_check(password, hash).is_ok(),
        None => false,
    }
}

fn verify_argon2(hash: &str, password: &str) -> bool {
    // The verifier takes algorithm, version and parameters from the PHC string itself.
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// The hash an unknown user's password is verified against, so that the time spent
/// does not reveal whether the user exists: one with the scheme and work factors most
/// common among `hashes` (the real users'), which takes as long to verify as theirs.
/// It is a real user's hash with its digest replaced, so it verifies no password, and
/// making it costs no hashing (which would itself show on the first unknown user).
pub(crate) fn unknown_user_hash<'a>(hashes: impl Iterator<Item = &'a str>) -> String {
    let mut counts: std::collections::HashMap<&str, (usize, &str)> = Default::default();
    for hash in hashes.filter(|h| scheme_of(h).is_some()) {
        counts.entry(work_factors(hash)).or_insert((0, hash)).0 += 1;
    }
    // Ties go to the smaller signature, so that the choice does not vary between runs.
    let most_common = counts
        .into_iter()
        .max_by(|a, b| a.1.0.cmp(&b.1.0).then(b.0.cmp(a.0)));
    match most_common {
        Some((_, (_, like))) => without_digest(like),
        None => OWASP_DUMMY.clone(),
    }
}

/// Without users there is nothing to match: an argon2id hash with the parameters of new
/// hashes.
static OWASP_DUMMY: LazyLock<String> = LazyLock::new(|| hash_password("sluice timing dummy"));

/// The scheme and work factors of a hash, without its salt and digest: equal for hashes
/// that take equally long to verify (`$argon2id$v=19$m=19456,t=2,p=1`, `$2b$12`,
/// `$6$rounds=10000`).
pub fn work_factors(hash: &str) -> &str {
    match scheme_of(hash) {
        Some(HashScheme::Bcrypt) => hash.get(..6).unwrap_or(hash),
        // `…$salt$digest`
        Some(_) => hash
            .rmatch_indices('$')
            .nth(1)
            .map_or(hash, |(i, _)| &hash[..i]),
        None => hash,
    }
}

/// `hash` with every character of its digest replaced by the zero digit of its base64
/// alphabet: still well formed, verified at the same cost, matching no password.
fn without_digest(hash: &str) -> String {
    let (keep, digest_len, zero) = match scheme_of(hash) {
        // `$2b$NN$` + 22 characters of salt + 31 of digest.
        Some(HashScheme::Bcrypt) => (hash.len().saturating_sub(31), 31, '.'),
        Some(HashScheme::Sha512Crypt) => {
            let at = hash.rfind('$').map_or(hash.len(), |i| i + 1);
            (at, hash.len() - at, '.')
        }
        _ => {
            let at = hash.rfind('$').map_or(hash.len(), |i| i + 1);
            (at, hash.len() - at, 'A')
        }
    };
    let mut out = hash.get(..keep).unwrap_or_default().to_string();
    out.extend(std::iter::repeat_n(zero, digest_len));
    out
}

/// The scheme a hash claims by its prefix, without checking the rest.
pub fn scheme_of(hash: &str) -> Option<HashScheme> {
    let prefixes = [
        ("$argon2id$", HashScheme::Argon2id),
        ("$argon2i$", HashScheme::Argon2i),
        ("$argon2d$", HashScheme::Argon2d),
        ("$2a$", HashScheme::Bcrypt),
        ("$2b$", HashScheme::Bcrypt),
        ("$2y$", HashScheme::Bcrypt),
        ("$6$", HashScheme::Sha512Crypt),
    ];
    prefixes
        .iter()
        .find(|(p, _)| hash.starts_with(p))
        .map(|(_, s)| *s)
}

/// Checks at compile time that a hash is well formed and its work factor is sane, so that
/// a broken hash is a policy error rather than a user who silently can never log in.
pub fn validate_hash(hash: &str) -> Result<HashScheme, String> {
    let scheme = scheme_of(hash).ok_or_else(|| {
        "unrecognised password hash format; expected an argon2 PHC string ($argon2id$...), bcrypt ($2b$...) or SHA-512-crypt ($6$...)".to_string()
    })?;
    match scheme {
        HashScheme::Bcrypt => validate_bcrypt(hash),
        HashScheme::Sha512Crypt => validate_sha512_crypt(hash),
        _ => validate_argon2(hash),
    }?;
    Ok(scheme)
}

fn validate_argon2(hash: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(hash).map_err(|e| format!("malformed argon2 hash: {e}"))?;
    let params = Params::try_from(&parsed).map_err(|e| format!("bad argon2 parameters: {e}"))?;
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err("malformed argon2 hash: no salt or no output".into());
    }
    if params.m_cost() > MAX_ARGON2_M_KIB
        || params.t_cost() > MAX_ARGON2_T
        || params.p_cost() > MAX_ARGON2_P
    {
        return Err(format!(
            "argon2 work factors m={}, t={}, p={} exceed the limits m<={MAX_ARGON2_M_KIB}, t<={MAX_ARGON2_T}, p<={MAX_ARGON2_P}",
            params.m_cost(),
            params.t_cost(),
            params.p_cost()
        ));
    }
    Ok(())
}

/// `$2b$NN$` + 22 characters of salt + 31 of hash, in bcrypt's base64 alphabet.
fn validate_bcrypt(hash: &str) -> Result<(), String> {
    let bad = || "malformed bcrypt hash; expected $2b$<cost>$<53 characters>".to_string();
    let mut parts = hash.split('$').skip(2);
    let (Some(cost), Some(rest), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let cost: u32 = match cost.len() {
        2 => cost.parse().map_err(|_| bad())?,
        _ => return Err(bad()),
    };
    if rest.len() != 53
        || !rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
    {
        return Err(bad());
    }
    if !(4..=MAX_BCRYPT_COST).contains(&cost) {
        return Err(format!(
            "bcrypt cost {cost} is outside 4..={MAX_BCRYPT_COST}"
        ));
    }
    Ok(())
}

/// `$6$[rounds=N$]salt$hash`, with an 86-character hash.
fn validate_sha512_crypt(hash: &str) -> Result<(), String> {
    let bad = || {
        "malformed SHA-512-crypt hash; expected $6$[rounds=N$]<salt>$<86 characters>".to_string()
    };
    let mut parts: Vec<&str> = hash.split('$').skip(2).collect();
    if let Some(rounds) = parts.first().and_then(|p| p.strip_prefix("rounds=")) {
        let n: usize = rounds.parse().map_err(|_| bad())?;
        if !(sha_crypt::ROUNDS_MIN..=MAX_SHA_CRYPT_ROUNDS).contains(&n) {
            return Err(format!(
                "SHA-512-crypt rounds={n} is outside {}..={MAX_SHA_CRYPT_ROUNDS}",
                sha_crypt::ROUNDS_MIN
            ));
        }
        parts.remove(0);
    }
    let [salt, digest] = parts.as_slice() else {
        return Err(bad());
    };
    let crypt_b64 = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'/';
    if salt.contains(':')
        || salt.contains('\n')
        || digest.len() != 86
        || !digest.bytes().all(crypt_b64)
    {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From Drepper's SHA-crypt specification (and glibc's test suite).
    const DREPPER_SHA512: &str = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
    const DREPPER_SHA512_ROUNDS: &str = "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.";

    #[test]
    fn new_hashes_are_owasp_argon2id_and_verify() {
        let hash = hash_password("correct horse");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(verify_hash(&hash, "correct horse"));
        assert!(!verify_hash(&hash, "correct horse "));
        assert!(!verify_hash(&hash, ""));
        assert_ne!(hash, hash_password("correct horse"), "salts must differ");
        assert_eq!(validate_hash(&hash), Ok(HashScheme::Argon2id));
    }

    #[test]
    fn argon2i_and_argon2d_verify() {
        for alg in [Algorithm::Argon2i, Algorithm::Argon2d] {
            let params = Params::new(1024, 1, 1, None).unwrap();
            let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
            let hash = Argon2::new(alg, Version::V0x13, params)
                .hash_password(b"pw", &salt)
                .unwrap()
                .to_string();
            assert!(verify_hash(&hash, "pw"), "{hash}");
            assert!(!verify_hash(&hash, "pW"));
            assert!(validate_hash(&hash).is_ok());
        }
    }

    #[test]
    fn bcrypt_hashes_verify() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        assert!(hash.starts_with("$2b$04$"));
        assert!(verify_hash(&hash, "s3cret"));
        assert!(!verify_hash(&hash, "s3cre"));
        assert_eq!(validate_hash(&hash), Ok(HashScheme::Bcrypt));
        // htpasswd and PHP write $2y$, older tools $2a$: same algorithm.
        for prefix in ["$2y$", "$2a$"] {
            let other = hash.replacen("$2b$", prefix, 1);
            assert!(verify_hash(&other, "s3cret"), "{other}");
            assert!(validate_hash(&other).is_ok());
        }
        // $2x$ is the broken pre-2011 variant; we do not accept it.
        assert!(!verify_hash(&hash.replacen("$2b$", "$2x$", 1), "s3cret"));
    }

    #[test]
    fn sha512_crypt_hashes_verify() {
        assert!(verify_hash(DREPPER_SHA512, "Hello world!"));
        assert!(!verify_hash(DREPPER_SHA512, "Hello world"));
        assert!(verify_hash(DREPPER_SHA512_ROUNDS, "Hello world!"));
        assert!(validate_hash(DREPPER_SHA512).is_ok());
        assert!(validate_hash(DREPPER_SHA512_ROUNDS).is_ok());
        let params = sha_crypt::Sha512Params::new(5_000).unwrap();
        let fresh = sha_crypt::sha512_simple("tr0ub4dor", &params).unwrap();
        assert!(verify_hash(&fresh, "tr0ub4dor"));
        assert!(!verify_hash(&fresh, "tr0ub4dor&3"));
        assert_eq!(validate_hash(&fresh), Ok(HashScheme::Sha512Crypt));
    }

    #[test]
    fn unknown_and_malformed_hashes_verify_nothing() {
        for hash in [
            "",
            "secret",
            "$1$abc$def",
            "$5$salt$hash",
            "$argon2id$garbage",
            "$2b$04$short",
            "$6$salt$short",
        ] {
            assert!(!verify_hash(hash, "secret"), "{hash:?}");
            assert!(validate_hash(hash).is_err(), "{hash:?}");
        }
    }

    #[test]
    fn excessive_work_factors_are_rejected() {
        let huge_m = "$argon2id$v=19$m=4194304,t=2,p=1$MDEyMzQ1Njc4OWFiY2RlZg$YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXowMTIzNDU";
        assert!(validate_hash(huge_m).unwrap_err().contains("exceed"));
        let bcrypt31 = format!("$2b$31${}", "a".repeat(53));
        assert!(validate_hash(&bcrypt31).unwrap_err().contains("cost 31"));
        let rounds = DREPPER_SHA512.replacen("$6$", "$6$rounds=999999999$", 1);
        assert!(validate_hash(&rounds).unwrap_err().contains("rounds"));
    }

    #[test]
    fn debug_does_not_show_the_hash() {
        let shown = format!("{:?}", StoredHash::new(DREPPER_SHA512));
        assert_eq!(shown, "StoredHash(sha512-crypt, redacted)");
    }

    #[test]
    fn unknown_users_are_verified_against_the_kind_and_work_factors_of_real_users() {
        let argon2_light = {
            let params = Params::new(1024, 1, 1, None).unwrap();
            let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
            Argon2::new(Algorithm::Argon2i, Version::V0x13, params)
                .hash_password(b"pw", &salt)
                .unwrap()
                .to_string()
        };
        let bcrypt4 = bcrypt::hash("s3cret", 4).unwrap();
        let cases = [
            (
                vec![bcrypt4.clone(), bcrypt4.clone(), argon2_light.clone()],
                &bcrypt4,
            ),
            (vec![argon2_light.clone()], &argon2_light),
            (
                vec![DREPPER_SHA512_ROUNDS.to_string()],
                &DREPPER_SHA512_ROUNDS.to_string(),
            ),
            (
                vec![DREPPER_SHA512.to_string()],
                &DREPPER_SHA512.to_string(),
            ),
        ];
        for (users, like) in cases {
            let dummy = unknown_user_hash(users.iter().map(String::as_str));
            assert_eq!(scheme_of(&dummy), scheme_of(like), "{dummy}");
            assert_eq!(work_factors(&dummy), work_factors(like), "{dummy}");
            assert_eq!(dummy.len(), like.len(), "{dummy}");
            assert!(validate_hash(&dummy).is_ok(), "{dummy}");
            for password in ["s3cret", "pw", "Hello world!", ""] {
                assert!(!verify_hash(&dummy, password), "{dummy} {password}");
            }
        }
        assert_eq!(work_factors(&bcrypt4), "$2b$04");
        assert_eq!(work_factors(DREPPER_SHA512_ROUNDS), "$6$rounds=10000");
        assert_eq!(work_factors(&argon2_light), "$argon2i$v=19$m=1024,t=1,p=1");
        // Without users (AUTH is then not offered): the parameters of new hashes.
        let none = unknown_user_hash(std::iter::empty());
        assert_eq!(work_factors(&none), "$argon2id$v=19$m=19456,t=2,p=1");
    }
}

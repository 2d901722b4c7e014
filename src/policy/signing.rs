//! The `signing:` section of a RelayPolicy: DKIM keys for the mail the relay sends for
//! its own users and networks, and the key that ARC seals with ([`SigningSpec`]), and
//! their compilation into the [`SigningSettings`] of the policy snapshot.
//!
//! ```yaml
//! signing:
//!   dkim:
//!     - domain: example.com
//!       selector: s2026r
//!       keySecretRef: {name: dkim-example-com, key: rsa.pem}
//!     - domain: example.com
//!       selector: s2026e
//!       keySecretRef: {name: dkim-example-com, key: ed25519.pem}
//!   arc:
//!     domain: relay.example.net
//!     selector: arc2026
//!     keySecretRef: {name: arc-relay, key: private.pem}
//! ```
//!
//! Only references reach the snapshot: the private keys are read by the ingress from its
//! secrets directory (`filter::signing`), never sealed into NATS. Several policies: at
//! most one may carry a `signing:` section unless they say the same (`merge.rs`), since
//! two lists of keys for one domain would sign twice with no one having chosen that.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::error::{Location, PolicyError};
use super::model::SecretKeyRef;
use crate::filter::settings::{KeySettings, SecretRef, SigningSettings};

/// The most DKIM keys one policy snapshot signs with.
pub const MAX_DKIM_KEYS: usize = 64;
/// The longest selector (one DNS label's length: `s._domainkey.d` must stay a name).
pub const MAX_SELECTOR: usize = 63;
/// The longest `x=` lifetime: a year; longer is no expiry in practice.
pub const MAX_EXPIRATION_SECS: u64 = 366 * 86_400;

/// Keys the ingress signs with.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SigningSpec {
    /// DKIM keys by domain and selector. A message whose RFC 5322.From domain (or its
    /// closest parent domain listed here) has keys is signed with each of them: an RSA
    /// and an Ed25519 key of one domain give two signatures (RFC 8463).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub dkim: Vec<KeySpec>,
    /// The key that ARC sets (RFC 8617) are sealed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arc: Option<KeySpec>,
}

/// One signing key: who signs (`d=`), where the public key is published (`s=`), and the
/// Secret key holding the private key (PEM: PKCS#8 RSA or Ed25519, or PKCS#1 RSA).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeySpec {
    #[schemars(length(min = 1, max = 253))]
    pub domain: String,
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub selector: String,
    pub key_secret_ref: SecretKeyRef,
    /// Signatures expire this long after signing (`x=`): `7d`. None by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16), regex(pattern = r"^([0-9]+[dhms])+$"))]
    pub expiration: Option<String>,
}

/// Validates a policy's `signing:`; errors name `spec.signing.dkim[i].field`.
pub fn compile(at: &Location, spec: &SigningSpec) -> Result<SigningSettings, PolicyError> {
    let invalid = |field: String, reason: String| PolicyError::InvalidField {
        at: at.clone(),
        field,
        reason,
    };
    if spec.dkim.len() > MAX_DKIM_KEYS {
        return Err(invalid(
            "spec.signing.dkim".into(),
            format!("{} keys, at most {MAX_DKIM_KEYS}", spec.dkim.len()),
        ));
    }
    let mut dkim: Vec<KeySettings> = Vec::with_capacity(spec.dkim.len());
    for (i, key) in spec.dkim.iter().enumerate() {
        let path = format!("spec.signing.dkim[{i}]");
        let settings = compile_key(key).map_err(|(f, r)| invalid(format!("{path}{f}"), r))?;
        if dkim
            .iter()
            .any(|k| k.domain == settings.domain && k.selector == settings.selector)
        {
            return Err(invalid(
                format!("{path}.selector"),
                format!(
                    "a second key for selector {} of {}: one selector publishes one key",
                    settings.selector, settings.domain
                ),
            ));
        }
        dkim.push(settings);
    }
    let arc = match &spec.arc {
        Some(key) => {
            Some(compile_key(key).map_err(|(f, r)| invalid(format!("spec.signing.arc{f}"), r))?)
        }
        None => None,
    };
    Ok(SigningSettings { dkim, arc })
}

fn compile_key(spec: &KeySpec) -> Result<KeySettings, (&'static str, String)> {
    let domain = signing_domain(&spec.domain).map_err(|r| (".domain", r))?;
    selector(&spec.selector).map_err(|r| (".selector", r))?;
    let r = &spec.key_secret_ref;
    secret_ref(&r.name, &r.key).map_err(|r| (".keySecretRef", r))?;
    let expiration_secs = match &spec.expiration {
        Some(text) => {
            let secs = super::parse::duration_secs(text).map_err(|r| (".expiration", r))?;
            if secs == 0 || secs > MAX_EXPIRATION_SECS {
                return Err((".expiration", "from 1s to 366d".into()));
            }
            Some(secs)
        }
        None => None,
    };
    Ok(KeySettings {
        domain,
        selector: spec.selector.clone(),
        key_secret_ref: SecretRef {
            name: r.name.clone(),
            key: r.key.clone(),
        },
        expiration_secs,
    })
}

/// Checks compiled settings read from elsewhere (a snapshot in the NATS KV bucket) as
/// compilation checked them: the names become file paths and DNS names.
pub fn check(settings: Option<&SigningSettings>) -> Result<(), String> {
    let Some(settings) = settings else {
        return Ok(());
    };
    if settings.dkim.len() > MAX_DKIM_KEYS {
        return Err(format!("signing.dkim: more than {MAX_DKIM_KEYS} keys"));
    }
    let key = |k: &KeySettings| -> Result<(), String> {
        match signing_domain(&k.domain) {
            Ok(d) if d == k.domain => {}
            Ok(_) => return Err(".domain: not in its compiled form".into()),
            Err(e) => return Err(format!(".domain: {e}")),
        }
        selector(&k.selector).map_err(|e| format!(".selector: {e}"))?;
        let r = &k.key_secret_ref;
        secret_ref(&r.name, &r.key).map_err(|e| format!(".keySecretRef: {e}"))?;
        if k.expiration_secs
            .is_some_and(|s| s == 0 || s > MAX_EXPIRATION_SECS)
        {
            return Err(".expiration: out of range".into());
        }
        Ok(())
    };
    for (i, k) in settings.dkim.iter().enumerate() {
        key(k).map_err(|e| format!("signing.dkim[{i}]{e}"))?;
        if settings.dkim[..i]
            .iter()
            .any(|o| o.domain == k.domain && o.selector == k.selector)
        {
            return Err(format!(
                "signing.dkim[{i}]: a duplicate domain and selector"
            ));
        }
    }
    if let Some(arc) = &settings.arc {
        key(arc).map_err(|e| format!("signing.arc{e}"))?;
    }
    Ok(())
}

/// A DNS name in ASCII: `d=` goes into a DNS query and a header, where a U-label would
/// need encoding that a verifier may not undo the same way.
fn signing_domain(input: &str) -> Result<String, String> {
    if !input.is_ascii() {
        return Err(format!(
            "{input:?}: write an internationalised domain as its A-label (xn--...)"
        ));
    }
    super::parse::domain(input)
}

/// RFC 6376 3.1: `selector = sub-domain *( "." sub-domain )`, here lower-case.
pub fn selector(input: &str) -> Result<(), String> {
    let why =
        "1 to 63 of a-z, 0-9 and '-', in dot-separated labels that neither start nor end with '-'";
    if input.is_empty() || input.len() > MAX_SELECTOR {
        return Err(why.into());
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if input.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(why.into())
    }
}

/// A Secret name and key that make one path below the secrets directory.
fn secret_ref(name: &str, key: &str) -> Result<(), String> {
    let safe = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s != "."
            && s != ".."
            && !s.contains(['/', '\\', '\0'])
            && !s.chars().any(char::is_control)
    };
    if safe(name) && safe(key) {
        Ok(())
    } else {
        Err("name and key must each be 1 to 253 characters, without '/' or control characters, and not '.' or '..'".into())
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::PolicyError;
    use crate::policy::tests::{compile, policy};

    fn signing(body: &str) -> String {
        policy("mail/a", &format!("  signing:\n{body}"))
    }

    const KEY: &str = "keySecretRef: {name: dkim, key: rsa.pem}";

    #[test]
    fn keys_compile_lower_case_with_their_references() {
        let doc = signing(&format!(
            "    dkim:\n    - {{domain: Example.COM, selector: s2026r, {KEY}}}\n    - {{domain: example.com, selector: s2026e.sub, {KEY}, expiration: 7d}}\n    arc: {{domain: relay.example.net, selector: arc, {KEY}}}\n"
        ));
        let snap = compile(&[&doc]).unwrap();
        let s = snap.signing().expect("signing");
        assert_eq!(s.dkim.len(), 2);
        assert_eq!(s.dkim[0].domain, "example.com");
        assert_eq!(s.dkim[1].expiration_secs, Some(7 * 86_400));
        assert_eq!(s.arc.as_ref().unwrap().selector, "arc");
        assert!(s.dkim[0].describe().contains("secret dkim, key rsa.pem"));
    }

    fn field_of(body: &str) -> String {
        match compile(&[&signing(body)]).unwrap_err() {
            PolicyError::InvalidField { field, .. } => field,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (format!("    dkim: [{{domain: 'bad domain', selector: s, {KEY}}}]\n"), "spec.signing.dkim[0].domain"),
            (format!("    dkim: [{{domain: 'b\u{fc}cher.example', selector: s, {KEY}}}]\n"), "spec.signing.dkim[0].domain"),
            (format!("    dkim: [{{domain: a.example, selector: s, {KEY}}}, {{domain: a.example, selector: Bad_, {KEY}}}]\n"), "spec.signing.dkim[1].selector"),
            (format!("    dkim: [{{domain: a.example, selector: s, {KEY}}}, {{domain: A.example, selector: s, {KEY}}}]\n"), "spec.signing.dkim[1].selector"),
            ("    dkim: [{domain: a.example, selector: s, keySecretRef: {name: '..', key: k}}]\n".to_string(), "spec.signing.dkim[0].keySecretRef"),
            (format!("    dkim: [{{domain: a.example, selector: s, {KEY}, expiration: 0s}}]\n"), "spec.signing.dkim[0].expiration"),
            (format!("    arc: {{domain: a.example, selector: '-x', {KEY}}}\n"), "spec.signing.arc.selector"),
        ];
        for (body, field) in cases {
            assert_eq!(field_of(&body), field, "{body}");
        }
        let many: String = (0..65)
            .map(|i| format!("    - {{domain: a.example, selector: s{i}, {KEY}}}\n"))
            .collect();
        assert_eq!(field_of(&format!("    dkim:\n{many}")), "spec.signing.dkim");
    }

    #[test]
    fn two_policies_may_sign_only_alike() {
        let body = format!("    dkim: [{{domain: a.example, selector: s, {KEY}}}]\n");
        let a = policy("mail/a", &format!("  signing:\n{body}"));
        let same = policy("mail/b", &format!("  signing:\n{body}"));
        let other = policy(
            "mail/c",
            &format!("  signing:\n    dkim: [{{domain: b.example, selector: s, {KEY}}}]\n"),
        );
        let none = policy("mail/d", "  relayDomains: [r.example]");
        assert!(compile(&[&a, &same, &none]).unwrap().signing().is_some());
        assert!(compile(&[&none]).unwrap().signing().is_none());
        match compile(&[&a, &other]).unwrap_err() {
            PolicyError::Conflict { what, .. } => assert!(what.contains("signing"), "{what}"),
            e => panic!("{e}"),
        }
    }

    #[test]
    fn a_snapshot_with_bad_signing_settings_is_refused() {
        use super::{KeySettings, SigningSettings, check};
        use crate::filter::settings::SecretRef;
        let key = |domain: &str, selector: &str, name: &str| KeySettings {
            domain: domain.into(),
            selector: selector.into(),
            key_secret_ref: SecretRef {
                name: name.into(),
                key: "k".into(),
            },
            expiration_secs: None,
        };
        let ok = SigningSettings {
            dkim: vec![key("a.example", "s", "n")],
            arc: None,
        };
        assert!(check(Some(&ok)).is_ok());
        for bad in [
            key("A.example", "s", "n"),
            key("a.example", "S", "n"),
            key("a.example", "s", "../etc"),
        ] {
            let settings = SigningSettings {
                dkim: vec![bad],
                arc: None,
            };
            assert!(check(Some(&settings)).is_err());
        }
        let twice = SigningSettings {
            dkim: vec![key("a.example", "s", "n"), key("a.example", "s", "m")],
            arc: None,
        };
        assert!(check(Some(&twice)).is_err());
    }
}

//! Unit tests of `filter::signing`: which header fields, which key, which key files.

use super::*;
use crate::filter::keygen::{DnsRecord, KeyAlgorithm, generate};
use crate::filter::settings::{KeySettings, SecretRef};
use std::sync::OnceLock;

/// One RSA key for the whole module: generating one takes a while even optimised.
fn rsa_pem() -> &'static str {
    static PEM: OnceLock<String> = OnceLock::new();
    PEM.get_or_init(|| generate(KeyAlgorithm::Rsa { bits: 2048 }).unwrap())
}

fn key(domain: &str, selector: &str, file: &str) -> KeySettings {
    KeySettings {
        domain: domain.into(),
        selector: selector.into(),
        key_secret_ref: SecretRef {
            name: "dkim".into(),
            key: file.into(),
        },
        expiration_secs: None,
    }
}

/// A secrets directory with `dkim/rsa.pem`, `dkim/ed.pem` and `dkim/garbage.pem`.
fn secrets() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("dkim");
    std::fs::create_dir(&keys).unwrap();
    std::fs::write(keys.join("rsa.pem"), rsa_pem()).unwrap();
    std::fs::write(
        keys.join("ed.pem"),
        generate(KeyAlgorithm::Ed25519).unwrap(),
    )
    .unwrap();
    std::fs::write(
        keys.join("garbage.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    dir
}

fn signer(dir: &tempfile::TempDir, keys: Vec<KeySettings>) -> Signer {
    let settings = SigningSettings {
        dkim: keys,
        arc: None,
    };
    Signer::load(&settings, Some(dir.path()))
}

const MESSAGE: &[u8] = b"Received: from x\r\nFrom: Ann <ann@mail.Example.COM>\r\nTo: bob@example.net\r\nsubject: hi\r\nX-Other: 1\r\nMessage-ID: <1@x>\r\n\r\nbody\r\n";

#[test]
fn only_present_fields_are_signed_and_from_once_more() {
    let fields = HeaderFields::scan(MESSAGE);
    assert_eq!(fields.count("from"), 1);
    assert_eq!(
        fields.signed_names(),
        ["From", "Subject", "To", "Message-ID", "From"]
    );
    let folded =
        b"From: a@b.example\nTo: x@y.example,\n  Cc: not-a-field@y.example\n\nCc: body@y.example\n";
    assert_eq!(
        HeaderFields::scan(folded).signed_names(),
        ["From", "To", "From"]
    );
}

#[test]
fn the_from_domain_needs_exactly_one_address() {
    let one = |m: &[u8]| from_domain(m, HeaderFields::scan(m).count("From"));
    assert_eq!(one(MESSAGE).unwrap(), "mail.example.com");
    assert_eq!(one(b"To: a@b.example\r\n\r\n"), Err(Unsigned::NoFrom));
    assert_eq!(
        one(b"From: a@b.example, c@d.example\r\n\r\n"),
        Err(Unsigned::SeveralFrom)
    );
    assert_eq!(
        one(b"From: a@b.example\r\nFrom: c@d.example\r\n\r\n"),
        Err(Unsigned::SeveralFrom)
    );
    assert_eq!(one(b"From: undisclosed\r\n\r\n"), Err(Unsigned::NoFrom));
    assert_eq!(
        one("From: a@b\u{fc}cher.example\r\n\r\n".as_bytes()).unwrap(),
        "xn--bcher-kva.example"
    );
}

#[test]
fn the_closest_configured_parent_signs() {
    let dir = secrets();
    let s = signer(
        &dir,
        vec![
            key("example.com", "r", "rsa.pem"),
            key("example.com", "e", "ed.pem"),
            key("other.example", "e", "ed.pem"),
        ],
    );
    assert_eq!(s.key_domain("example.com"), Some("example.com"));
    assert_eq!(s.key_domain("mail.example.com"), Some("example.com"));
    assert_eq!(s.key_domain("notexample.com"), None);
    assert_eq!(s.key_domain("com"), None);
    match s.sign_message(MESSAGE).unwrap() {
        Signed::Headers {
            domain,
            selectors,
            headers,
        } => {
            assert_eq!(domain, "example.com");
            assert_eq!(selectors, ["r", "e"], "both keys of the domain sign");
            let text = String::from_utf8(headers).unwrap();
            assert_eq!(text.matches("DKIM-Signature: ").count(), 2, "{text}");
            assert!(text.contains("a=rsa-sha256") && text.contains("a=ed25519-sha256"));
            assert!(text.contains("c=relaxed/relaxed") && text.contains("t="));
            assert!(!text.contains("l=") && !text.contains("x="), "{text}");
            assert!(text.ends_with("\r\n"));
        }
        other => panic!("{other:?}"),
    }
    let foreign = b"From: a@elsewhere.example\r\n\r\nx\r\n";
    assert!(s.sign(foreign).unwrap().is_empty());
}

#[test]
fn expiration_adds_x() {
    let dir = secrets();
    let mut k = key("example.com", "e", "ed.pem");
    k.expiration_secs = Some(3600);
    let text = String::from_utf8(signer(&dir, vec![k]).sign(MESSAGE).unwrap()).unwrap();
    assert!(text.contains("x="), "{text}");
}

#[test]
fn a_key_that_does_not_load_refuses_only_its_domain() {
    let dir = secrets();
    let s = signer(
        &dir,
        vec![
            key("example.com", "bad", "garbage.pem"),
            key("ok.example", "e", "ed.pem"),
            key("gone.example", "e", "missing.pem"),
        ],
    );
    assert!(s.has_errors());
    assert!(matches!(s.sign(MESSAGE), Err(SignError::Key { .. })));
    let gone = b"From: a@gone.example\r\n\r\nx\r\n";
    match s.sign(gone).unwrap_err() {
        SignError::Key { source, .. } => assert!(matches!(*source, KeyError::Read { .. })),
        e => panic!("{e}"),
    }
    assert!(
        !s.sign(b"From: a@ok.example\r\n\r\nx\r\n")
            .unwrap()
            .is_empty()
    );
    let none = Signer::load(
        &SigningSettings {
            dkim: vec![key("ok.example", "e", "ed.pem")],
            arc: None,
        },
        None,
    );
    assert!(none.has_errors(), "no secrets directory");
}

#[test]
fn key_files_parse_as_pkcs8_and_pkcs1_only() {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    assert!(matches!(
        parse_key(rsa_pem().as_bytes()),
        Ok(DkimKey::Rsa(_))
    ));
    let ed = generate(KeyAlgorithm::Ed25519).unwrap();
    assert!(matches!(parse_key(ed.as_bytes()), Ok(DkimKey::Ed25519(_))));
    let rsa = rsa::RsaPrivateKey::from_pkcs8_pem(rsa_pem()).unwrap();
    let pkcs1 = rsa.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap();
    assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    assert!(matches!(parse_key(pkcs1.as_bytes()), Ok(DkimKey::Rsa(_))));
    // OpenSSL's Ed25519 PKCS#8 v1 (`openssl genpkey -algorithm ed25519`).
    let v1 = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+9yLMhz4YcSvVXkGmMLH2SlZJ1W1IlxEvBOq3Uhj7o\n-----END PRIVATE KEY-----\n";
    assert!(matches!(parse_key(v1.as_bytes()), Ok(DkimKey::Ed25519(_))));
    let small = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
    let small = small.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap();
    assert!(
        matches!(parse_key(small.as_bytes()), Err(ParseError::RsaSize(_))),
        "{:?}",
        parse_key(small.as_bytes()).err()
    );
    assert!(matches!(parse_key(b"not a key"), Err(ParseError::NotPem)));
    let ec = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBYr6J0rUq0N3o5n+Yg0dFw1uJ1bQ0RjX8b8v3bYp2QYoAoGCCqGSM49\nAwEHoUQDQgAEy1yJ5xQz7XHqv0mJbFh0q4o2m7wO4k2c1M0v3l6g9sD1cN5n9Q2r\nQb6m6lJ8S8c5n0hQYkqZr3Y9sGvX0bT1uQ==\n-----END EC PRIVATE KEY-----\n";
    assert!(matches!(
        parse_key(ec.as_bytes()),
        Err(ParseError::Unsupported)
    ));
}

#[test]
fn a_generated_key_loads_into_the_signer_and_matches_its_record() {
    let dir = secrets();
    let pem = std::fs::read(dir.path().join("dkim/ed.pem")).unwrap();
    let record = DnsRecord::for_key("example.com", "e", &pem).unwrap();
    let s = signer(&dir, vec![key("example.com", "e", "ed.pem")]);
    let Some(Ok(entry)) = s.dkim.first().map(|e| e.key.as_ref()) else {
        panic!("loaded");
    };
    let public = public_key(&entry.0).unwrap();
    assert!(record.value.ends_with(&base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        public
    )));
}

#[test]
fn the_arc_key_loads_like_dkim_keys() {
    let dir = secrets();
    let settings = SigningSettings {
        dkim: Vec::new(),
        arc: Some(key("relay.example", "arc", "rsa.pem")),
    };
    let s = Signer::load(&settings, Some(dir.path()));
    let arc = s.arc_key().expect("loaded");
    assert_eq!(
        (arc.domain.as_str(), arc.selector.as_str()),
        ("relay.example", "arc")
    );
    assert_eq!(arc.key.algorithm(), Algorithm::RsaSha256);
    let broken = SigningSettings {
        dkim: Vec::new(),
        arc: Some(key("relay.example", "arc", "garbage.pem")),
    };
    let s = Signer::load(&broken, Some(dir.path()));
    assert!(s.arc_key().is_none() && s.arc_error().is_some());
}

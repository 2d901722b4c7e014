//! Fuzzes AUTH PLAIN and LOGIN (RFC 4954, 4616): the SASL decoders on their own and the
//! exchange through a session, with the client's responses built from the input. The
//! first byte picks the mechanism, where the response goes (initial response or after
//! the 334) and how it is written; the rest is the decoded response, with 0x00 and
//! 0x01 as the field separators so that the fuzzer reaches the field rules, or, in the
//! raw mode, the response text itself mapped onto the base64 alphabet and its neighbours.
//!
//! Invariants checked:
//! - `decode_plain` / `decode_login_field` never panic and agree with a model written
//!   from RFC 4616 2 and the module's rules (exactly three fields, authcid and passwd
//!   non-empty, authzid empty or equal to authcid, UTF-8; LOGIN: non-empty, no NUL);
//! - padding left out and blanks around the response change nothing; `*` cancels;
//! - through the session, a well-formed exchange asks to verify exactly the decoded
//!   credentials, and everything else is a 501 (or 504 for an unknown mechanism), with
//!   the session out of the exchange afterwards.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use libfuzzer_sys::fuzz_target;
use sluice::policy::PolicySnapshot;
use sluice::smtp::sasl::{Credentials, SaslError, decode_login_field, decode_plain};
use sluice::smtp::session::{
    ConnectionInfo, ListenerKind, ReceivedUser, SessionConfig, Step, SystemEnv, TlsInfo,
};
use std::sync::{Arc, OnceLock};

/// The bytes a raw response is made of: the base64 alphabet, padding, blanks, the
/// cancel star and a few that are none of these.
const RAW: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/==  \t*-_!\xc3";

fn utf8(bytes: &[u8]) -> Result<String, SaslError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| SaslError::Malformed)
}

/// RFC 4616 2, in the order the decoder checks.
fn model_plain(raw: &[u8]) -> Result<Credentials, SaslError> {
    let fields: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
    let [authzid, authcid, passwd] = fields[..] else {
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

fn model_login(raw: &[u8]) -> Result<String, SaslError> {
    if raw.is_empty() || raw.contains(&0) {
        return Err(SaslError::Malformed);
    }
    utf8(raw)
}

/// The ways a client writes the base64 of `raw`: padded, unpadded, with blanks around.
fn encodings(raw: &[u8]) -> [String; 3] {
    let padded = STANDARD.encode(raw);
    [
        padded.clone(),
        STANDARD_NO_PAD.encode(raw),
        format!(" \t{padded} "),
    ]
}

fn policy() -> Arc<PolicySnapshot> {
    static POLICY: OnceLock<Arc<PolicySnapshot>> = OnceLock::new();
    POLICY
        .get_or_init(|| {
            let yaml = format!(
                "apiVersion: sluice.dev/v1alpha1\nkind: RelayPolicy\nmetadata: {{name: fuzz}}\nspec:\n  \
                 users:\n    - name: alice\n      passwordHash: \"{}\"\n",
                sluice::policy::hash_password("secret")
            );
            Arc::new(PolicySnapshot::from_yaml(&[("fuzz".into(), yaml)]).expect("policy"))
        })
        .clone()
}

type Session = sluice::smtp::session::Session<PolicySnapshot>;

/// A submission session over TLS, after EHLO: where AUTH is allowed.
fn session() -> Session {
    let config = Arc::new(SessionConfig {
        hostname: "relay.fuzz".into(),
        kind: ListenerKind::Submission,
        tls_available: true,
        allow_plaintext_auth: false,
        max_message_size: 1000,
        max_recipients: 10,
        max_data_line: 998,
        max_received_headers: 100,
        bare_line_endings: Default::default(),
        max_errors: 10,
        received_user: ReceivedUser::Named,
    });
    let conn = ConnectionInfo {
        client_ip: "192.0.2.1".parse().unwrap(),
        tls: Some(TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_128_GCM_SHA256".into(),
        }),
    };
    let mut s = Session::new(config, policy(), Arc::new(SystemEnv), conn);
    let ehlo = s.command(b"EHLO client.fuzz");
    assert!(matches!(ehlo, Step::Reply(r) if r.code == 250));
    s
}

/// The reply code of a step that must be a plain reply.
fn code(step: &Step) -> u16 {
    match step {
        Step::Reply(r) => r.code,
        other => panic!("expected a reply, got {other:?}"),
    }
}

/// After a refused response the exchange is over: the next line is a command again.
fn assert_out_of_exchange(s: &mut Session) {
    assert!(!s.in_auth_exchange());
    assert_eq!(code(&s.command(b"NOOP")), 250);
}

/// AUTH PLAIN with `response` as the initial response (`initial`) or after the 334.
fn plain_through_session(response: &str, initial: bool, want: &Result<Credentials, SaslError>) {
    let mut s = session();
    let step = match initial {
        true => s.command(format!("AUTH PLAIN {response}").as_bytes()),
        false => {
            assert_eq!(code(&s.command(b"AUTH PLAIN")), 334);
            s.command(response.as_bytes())
        }
    };
    check_verdict(&mut s, step, want.as_ref().map(|c| c.clone()));
}

/// AUTH LOGIN with the username initial or after the 334, then the password.
fn login_through_session(user: &str, pass: &str, initial: bool, want: Result<Credentials, ()>) {
    let mut s = session();
    let step = match initial {
        true => s.command(format!("AUTH LOGIN {user}").as_bytes()),
        false => {
            assert_eq!(code(&s.command(b"AUTH LOGIN")), 334);
            s.command(user.as_bytes())
        }
    };
    let user_ok = decode_login_field(user).is_ok();
    let step = match code_or_verify(&step) {
        Some(334) if user_ok => s.command(pass.as_bytes()),
        _ => step,
    };
    check_verdict(&mut s, step, want.map_err(|_| &SaslError::Malformed));
}

fn code_or_verify(step: &Step) -> Option<u16> {
    match step {
        Step::Reply(r) => Some(r.code),
        _ => None,
    }
}

fn check_verdict(s: &mut Session, step: Step, want: Result<Credentials, &SaslError>) {
    match (step, want) {
        (Step::VerifyCredentials { username, password }, Ok(c)) => {
            assert_eq!((username, password), (c.username, c.password));
            assert!(
                matches!(s.auth_result(sluice::smtp::session::AuthOutcome::Rejected), Step::Reply(r) if r.code == 535)
            );
            assert_out_of_exchange(s);
        }
        (Step::Reply(r), Err(_)) => {
            assert_eq!(r.code, 501, "{r:?}");
            assert_out_of_exchange(s);
        }
        (step, want) => panic!("session gave {step:?}, the model {want:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // 0x01 is a second NUL: two separators within reach of the byte-level mutations.
    let raw: Vec<u8> = rest.iter().map(|&b| if b == 1 { 0 } else { b }).collect();
    let initial = mode & 1 == 1;
    match mode >> 1 & 3 {
        0 => {
            let want = model_plain(&raw);
            for response in encodings(&raw) {
                assert_eq!(decode_plain(&response), want, "{response:?}");
            }
            // An empty initial response is written `=` (RFC 4954 4), not as nothing.
            if !raw.is_empty() {
                plain_through_session(&encodings(&raw)[0], initial, &want);
            }
        }
        1 => {
            // Username and password, split at the first NUL of the input.
            let cut = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            let (user, pass) = (&raw[..cut], raw.get(cut + 1..).unwrap_or_default());
            for (field, text) in [(user, &encodings(user)), (pass, &encodings(pass))] {
                for response in text {
                    assert_eq!(decode_login_field(response), model_login(field));
                }
            }
            let want = match (model_login(user), model_login(pass)) {
                (Ok(username), Ok(password)) => Ok(Credentials { username, password }),
                _ => Err(()),
            };
            if !user.is_empty() {
                let (u, p) = (STANDARD.encode(user), STANDARD.encode(pass));
                login_through_session(&u, &p, initial, want);
            }
        }
        _ => {
            // Raw response text: whatever it is, no panic, and the session's verdict is
            // the decoder's.
            let text: String = rest
                .iter()
                .map(|&b| RAW[b as usize % RAW.len()] as char)
                .collect();
            let plain = decode_plain(&text);
            let login = decode_login_field(&text);
            if text.trim_matches([' ', '\t']) == "*" {
                assert_eq!(plain, Err(SaslError::Cancelled));
                assert_eq!(login, Err(SaslError::Cancelled));
            }
            if !initial && !text.trim().is_empty() {
                plain_through_session(&text, false, &plain);
            }
        }
    }
});

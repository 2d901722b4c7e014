//! The `sluice` command's tools: `policy check` answers with the rule and an exit code,
//! `policy hash-password` makes hashes the policy accepts.

mod common;

use common::sluice;
use std::io::Write;
use std::process::{Command, Stdio};

#[test]
fn policy_check_names_the_rule_and_exits_by_verdict() {
    let (dir, config, _) = common::prepare("{}");
    let config = config.to_str().unwrap();
    let check = |client: &str, user: Option<&str>, from: &str, to: &str| {
        let mut args = vec![
            "policy", "check", "--config", config, "--client", client, "--from", from, "--to", to,
        ];
        if let Some(user) = user {
            args.extend(["--user", user]);
        }
        sluice(&args)
    };
    let (code, text) = check("127.0.0.1", None, "a@b.test", "x@foreign.test");
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("trusted network 127.0.0.1/32"), "{text}");
    let (code, text) = check("192.0.2.1", None, "a@b.test", "x@foreign.test");
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("relay access denied"), "{text}");
    let (code, text) = check("192.0.2.1", None, "", "x@local.test");
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("local domain local.test"), "{text}");
    let (code, text) = check(
        "192.0.2.1",
        Some("alice"),
        "bob@local.test",
        "x@foreign.test",
    );
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("sender: reject: user alice may not send as"),
        "{text}"
    );
    let (code, text) = check(
        "192.0.2.1",
        Some("alice"),
        "alice@local.test",
        "x@foreign.test",
    );
    assert_eq!(code, 0, "{text}");
    let (code, text) = check("192.0.2.1", None, "a@b.test", "not an address");
    assert_eq!(code, 2, "{text}");
    drop(dir);
}

#[test]
fn policy_check_explains_unknown_recipients() {
    let policy = "apiVersion: sluice.dev/v1alpha1\nkind: RelayPolicy\nmetadata: {name: p, namespace: mail}\nspec:\n  localDomains:\n    - domain: local.test\n      delivery: { lmtp: { address: \"127.0.0.1:24\" } }\n      recipients: [alice@local.test]\n  relayDomains: [partner.test]\n  relayRecipients: [sales@partner.test]\n";
    let (dir, config, _) = common::prepare_with(&common::config_yaml("{}"), policy);
    let config = config.to_str().unwrap();
    let check = |to: &str| {
        sluice(&[
            "policy",
            "check",
            "--config",
            config,
            "--client",
            "192.0.2.1",
            "--from",
            "a@b.test",
            "--to",
            to,
        ])
    };
    let (code, text) = check("alice@local.test");
    assert_eq!(code, 0, "{text}");
    let (code, text) = check("mallory@local.test");
    assert_eq!(code, 1, "{text}");
    assert_eq!(
        text,
        "recipient: reject: user unknown: mallory@local.test is not in its local domain's recipients (policy mail/p)\n"
    );
    let (code, text) = check("bob@partner.test");
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("bob@partner.test is not in relayRecipients"),
        "{text}"
    );
    let (code, text) = check("Postmaster");
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("<Postmaster> goes to postmaster@local.test"),
        "{text}"
    );
    drop(dir);
}

#[test]
fn hash_password_reads_stdin_and_its_hash_verifies() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["policy", "hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"s3cret pass\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    let hash = hash.trim();
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    assert!(sluice::policy::verify_hash(hash, "s3cret pass"));
    assert!(!sluice::policy::verify_hash(hash, "s3cret pass\n"));
}

#[test]
fn standalone_refuses_to_start_on_an_invalid_policy() {
    let (dir, config, _) = common::prepare("{}");
    std::fs::write(dir.path().join("policy.yaml"), "apiVersion: sluice.dev/v1alpha1\nkind: RelayPolicy\nmetadata: {name: bad}\nspec:\n  mode: open\n  trustedNetworks: [\"10.1.2.3/8\"]\n").unwrap();
    let (code, text) = sluice(&["standalone", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("trustedNetworks") && text.contains("10.0.0.0/8"),
        "{text}"
    );
}

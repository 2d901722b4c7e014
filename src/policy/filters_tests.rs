//! `filters:` as written, compiled, merged, checked when read back, and judged by the
//! CRD's CEL rule the same way as by the compiler.

use super::*;
use crate::filter::attachments::Action;
use crate::policy::tests::{compile, error_of, policy};
use kube::CustomResourceExt;
use kube::core::cel::Validator;
use serde_json::{Map, Value, json};

fn filters(yaml: &str) -> Vec<CheckSettings> {
    let snapshot = compile(&[&policy(
        "p",
        &format!("  relayDomains: [r.example]\n  filters:\n{yaml}"),
    )]);
    match snapshot {
        Ok(s) => s.filters().to_vec(),
        Err(e) => panic!("{yaml}: {e}"),
    }
}

fn refused(yaml: &str) -> String {
    error_of(&format!("  filters:\n{yaml}"))
}

#[test]
fn checks_compile_in_order_with_their_defaults() {
    let checks = filters(
        "    - attachments: {everyAttachment: {action: strip}, encryptedArchives: null}\n      exempt: [trusted-networks, authenticated, authenticated]\n    - rspamd: {url: 'http://rspamd:11333'}\n      failMode: open\n      mode: tag\n    - name: clamd-b\n      clamav: {addresses: ['clamd:3310', 'unix:/run/clamd.sock']}\n      timeout: 1m\n",
    );
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["attachments", "rspamd", "clamd-b"]);
    let CheckKind::Attachments(rules) = &checks[0].kind else {
        panic!("{:?}", checks[0].kind);
    };
    assert_eq!(
        rules.every_attachment.as_ref().map(|r| r.action),
        Some(Action::Strip)
    );
    assert_eq!(rules.encrypted_archives, None, "null turns a rule off");
    assert!(
        rules.blocked_extensions.is_some(),
        "omitted takes the default"
    );
    assert_eq!(
        checks[0].exempt,
        [Exemption::Authenticated, Exemption::TrustedNetworks]
    );
    assert_eq!(
        (checks[0].fail_mode, checks[0].mode, checks[0].timeout_ms),
        (FailMode::Closed, FilterMode::Enforce, 10_000)
    );
    assert_eq!(
        (checks[1].fail_mode, checks[1].mode),
        (FailMode::Open, FilterMode::Tag)
    );
    assert_eq!(checks[2].timeout_ms, 60_000);
    assert_eq!(
        checks[2].kind,
        CheckKind::Clamav {
            addresses: vec!["clamd:3310".into(), "unix:/run/clamd.sock".into()]
        }
    );
    assert!(check(&checks).is_ok());
}

#[test]
fn bad_checks_are_refused_naming_the_field() {
    for (yaml, words) in [
        (
            "    - {}\n",
            "spec.filters[0]: exactly one of attachments, rspamd, clamav, senderAuth is required; none",
        ),
        (
            "    - {attachments: {}, clamav: {addresses: ['c:1']}}\n",
            "several are given",
        ),
        (
            "    - {attachments: {}}\n    - {attachments: {}}\n",
            "spec.filters[1].name: a second check named \"attachments\"",
        ),
        (
            "    - {attachments: {}, timeout: 10m}\n",
            "spec.filters[0].timeout: from 1s to 5m",
        ),
        (
            "    - {attachments: {}, timeout: soon}\n",
            "spec.filters[0].timeout",
        ),
        (
            "    - {clamav: {addresses: ['clamd']}}\n",
            "spec.filters[0].clamav.addresses: \"clamd\": expected host:port",
        ),
        (
            "    - {clamav: {addresses: ['unix:relative']}}\n",
            "must be absolute",
        ),
        ("    - {clamav: {addresses: []}}\n", "from 1 to 8 addresses"),
        (
            "    - {rspamd: {url: 'ftp://x'}}\n",
            "spec.filters[0].rspamd.url",
        ),
        (
            "    - {rspamd: {url: 'http://x'}, name: Bad_Name}\n",
            "spec.filters[0].name",
        ),
        (
            "    - {attachments: {blockedExtension: {action: reject, extensions: [exe]}}}\n",
            "unknown field `blockedExtension`",
        ),
        (
            "    - {attachments: {maxTotalSize: {action: reject, max: lots}}}\n",
            "lots",
        ),
        (
            "    - {attachments: {}, failMode: maybe}\n",
            "unknown variant `maybe`",
        ),
    ] {
        let error = refused(yaml);
        assert!(error.contains(words), "{yaml}: {error}");
    }
    let many = "    - {clamav: {addresses: ['c:1']}}\n".repeat(MAX_CHECKS + 1);
    assert!(refused(&many).contains("at most 16"), "{}", refused(&many));
    let long = format!(
        "    - {{attachments: {{blockedExtensions: {{action: reject, extensions: [{}]}}}}}}\n",
        vec!["x"; 257].join(",")
    );
    assert!(refused(&long).contains("blockedExtensions.extensions"));
}

#[test]
fn policies_with_different_filters_conflict() {
    let a = policy(
        "a",
        "  relayDomains: [a.example]\n  filters: [{attachments: {}}]",
    );
    let same = policy(
        "b",
        "  relayDomains: [b.example]\n  filters: [{attachments: {}}]",
    );
    let none = policy("c", "  relayDomains: [c.example]");
    let other = policy(
        "d",
        "  relayDomains: [d.example]\n  filters: [{attachments: {}, failMode: open}]",
    );
    let merged = compile(&[&none, &a, &same]).unwrap();
    assert_eq!(
        merged.filters().len(),
        1,
        "one section, said twice, and none"
    );
    let error = compile(&[&a, &other]).unwrap_err().to_string();
    assert!(
        error.contains("two policies have different filters"),
        "{error}"
    );
}

#[test]
fn settings_read_back_are_checked_like_compiled_ones() {
    let good = filters("    - {rspamd: {url: 'http://rspamd:11333'}}\n");
    let mut bad = good.clone();
    bad[0].kind = CheckKind::Rspamd {
        url: "gopher://x".into(),
    };
    assert!(check(&bad).unwrap_err().contains("filters[0].rspamd.url"));
    let mut bad = good.clone();
    bad[0].timeout_ms = MAX_TIMEOUT_MS + 1;
    assert!(check(&bad).is_err());
    let twice = [good.clone(), good.clone()].concat();
    assert!(check(&twice).unwrap_err().contains("filters[1].name"));
    let mut bad = good;
    bad[0].kind = CheckKind::Clamav {
        addresses: vec!["nope".into()],
    };
    assert!(check(&bad).is_err());
}

/// The CRD's rule and the compiler agree on every subset of the four kinds, with the
/// absent ones left out or written as null (the API server treats a null as absent).
#[test]
fn exactly_one_kind_rule_and_compiler_agree() {
    let crd = serde_json::to_value(crate::policy::model::RelayPolicyResource::crd()).unwrap();
    let node = crd
        .pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/filters/items")
        .cloned()
        .expect("the filters item schema");
    let kinds = [
        ("attachments", json!({})),
        ("rspamd", json!({"url": "http://rspamd:11333"})),
        ("clamav", json!({"addresses": ["clamd:3310"]})),
        ("senderAuth", json!({})),
    ];
    for mask in 0..16u8 {
        let mut case = Map::new();
        for (i, (name, value)) in kinds.iter().enumerate() {
            if mask & (1 << i) != 0 {
                case.insert(name.to_string(), value.clone());
            }
        }
        let spec: FilterSpec = serde_json::from_value(Value::Object(case.clone())).unwrap();
        let compiled = kind(&spec);
        let cel = Validator::new().validate(&node, &Value::Object(case.clone()), None);
        assert_eq!(compiled.is_ok(), mask.count_ones() == 1, "{case:?}");
        assert_eq!(
            cel.is_ok(),
            compiled.is_ok(),
            "CEL and compiler disagree on {case:?}"
        );
    }
}

//! `dnsbl:` as written, compiled with its defaults, refused with the field named,
//! merged, and checked when read back from a snapshot.

use super::*;
use crate::policy::tests::{compile, error_of, policy};

fn dnsbl(yaml: &str) -> DnsblSettings {
    let snapshot = compile(&[&policy(
        "p",
        &format!("  relayDomains: [r.example]\n  dnsbl:\n{yaml}"),
    )]);
    match snapshot {
        Ok(s) => s.dnsbl().cloned().expect("a dnsbl section"),
        Err(e) => panic!("{yaml}: {e}"),
    }
}

fn refused(yaml: &str) -> String {
    error_of(&format!("  dnsbl:\n{yaml}"))
}

#[test]
fn zones_compile_with_their_defaults() {
    let s = dnsbl(
        "    zones:\n      - {zone: ZEN.Spamhaus.org., weight: 2, answers: ['127.0.0.2', '127.0.0.4/30']}\n      - zone: bl.spamcop.net\n    threshold: 2\n",
    );
    assert_eq!(s.zones[0].zone, "zen.spamhaus.org");
    assert_eq!(s.zones[0].weight, 2);
    assert_eq!(
        s.zones[0].answers,
        [
            "127.0.0.2/32".parse::<Ipv4Net>().unwrap(),
            "127.0.0.4/30".parse().unwrap()
        ]
    );
    assert_eq!((s.zones[1].weight, s.zones[1].answers.len()), (1, 0));
    assert_eq!(s.threshold, 2);
    assert_eq!(s.timeout_ms, DEFAULT_TIMEOUT_MS);
    assert_eq!(s.fail_mode, FailMode::Open);
    assert_eq!(
        s.exempt,
        [Exemption::Authenticated, Exemption::TrustedNetworks]
    );
    let s = dnsbl(
        "    zones: [{zone: a.test}]\n    timeout: 1500ms\n    failMode: closed\n    exempt: []\n",
    );
    assert_eq!(
        (s.threshold, s.timeout_ms, s.fail_mode),
        (1, 1_500, FailMode::Closed)
    );
    assert!(s.exempt.is_empty());
    assert!(
        s.describe().contains("a.test (weight 1); threshold 1"),
        "{}",
        s.describe()
    );
    let none = compile(&[&policy("p", "  relayDomains: [r.example]")]).unwrap();
    assert!(none.dnsbl().is_none());
}

#[test]
fn bad_values_are_refused_naming_the_field() {
    let cases = [
        ("    zones: []\n", "spec.dnsbl.zones"),
        (
            "    zones: [{zone: 'bad_zone.test'}]\n",
            "spec.dnsbl.zones[0].zone",
        ),
        (
            "    zones: [{zone: 'bl.ex\u{e4}mple'}]\n",
            "spec.dnsbl.zones[0].zone",
        ),
        (
            "    zones: [{zone: a.test}, {zone: A.test}]\n",
            "spec.dnsbl.zones[1].zone",
        ),
        (
            "    zones: [{zone: a.test, weight: 0}]\n",
            "spec.dnsbl.zones[0].weight",
        ),
        (
            "    zones: [{zone: a.test, weight: 101}]\n",
            "spec.dnsbl.zones[0].weight",
        ),
        (
            "    zones: [{zone: a.test, answers: ['10.0.0.1']}]\n",
            "spec.dnsbl.zones[0].answers[0]",
        ),
        (
            "    zones: [{zone: a.test, answers: ['127.0.0.5/30']}]\n",
            "spec.dnsbl.zones[0].answers[0]",
        ),
        (
            "    zones: [{zone: a.test, answers: ['nope']}]\n",
            "spec.dnsbl.zones[0].answers[0]",
        ),
        (
            "    zones: [{zone: a.test}]\n    threshold: 2\n",
            "spec.dnsbl.threshold",
        ),
        (
            "    zones: [{zone: a.test}]\n    threshold: 0\n",
            "spec.dnsbl.threshold",
        ),
        (
            "    zones: [{zone: a.test}]\n    timeout: 31s\n",
            "spec.dnsbl.timeout",
        ),
        (
            "    zones: [{zone: a.test}]\n    timeout: soon\n",
            "spec.dnsbl.timeout",
        ),
    ];
    for (yaml, field) in cases {
        let error = refused(yaml);
        assert!(error.contains(field), "{yaml}: {error}");
    }
    let long = format!(
        "    zones: [{{zone: {}.test}}]\n",
        vec!["a".repeat(60); 4].join(".")
    );
    assert!(refused(&long).contains("253"), "{}", refused(&long));
    let many: String = (0..17).map(|i| format!("{{zone: z{i}.test}},")).collect();
    assert!(refused(&format!("    zones: [{many}]\n")).contains("spec.dnsbl.zones"));
    assert!(refused("    zones: [{zone: a.test}]\n    extra: 1\n").contains("extra"));
}

#[test]
fn several_policies_have_one_section_or_the_same() {
    let with = |name: &str, zone: &str| {
        policy(
            name,
            &format!("  relayDomains: [{name}.example]\n  dnsbl: {{zones: [{{zone: {zone}}}]}}"),
        )
    };
    let none = policy("c", "  relayDomains: [c.example]");
    let merged = compile(&[&none, &with("a", "x.test"), &with("b", "x.test")]).unwrap();
    assert_eq!(merged.dnsbl().unwrap().zones[0].zone, "x.test");
    let error = compile(&[&with("a", "x.test"), &with("b", "y.test")])
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("two policies have different dnsbl sections"),
        "{error}"
    );
    assert!(
        error.contains("policy a") && error.contains("policy b"),
        "{error}"
    );
}

#[test]
fn settings_read_back_are_checked_like_compiled_ones() {
    let good = dnsbl("    zones: [{zone: a.test, weight: 2}, {zone: b.test}]\n    threshold: 3\n");
    assert_eq!(check(&good), Ok(()));
    let bad = |change: &dyn Fn(&mut DnsblSettings)| {
        let mut s = good.clone();
        change(&mut s);
        check(&s).unwrap_err()
    };
    assert!(bad(&|s| s.zones[0].zone = "A.test".into()).contains("zones[0]"));
    assert!(bad(&|s| s.zones[1].zone = "a.test".into()).contains("zones[1]"));
    assert!(bad(&|s| s.zones[0].weight = 0).contains("zones[0]"));
    assert!(bad(&|s| s.zones[0].answers = vec!["10.0.0.0/8".parse().unwrap()]).contains("answers"));
    assert!(bad(&|s| s.threshold = 4).contains("threshold"));
    assert!(bad(&|s| s.timeout_ms = 0).contains("timeout"));
    assert!(bad(&|s| s.zones.clear()).contains("zones"));
    let snapshot = compile(&[&policy("p", "  dnsbl: {zones: [{zone: a.test}]}")]).unwrap();
    let mut rules = snapshot.rules().clone();
    assert_eq!(
        crate::policy::check::check(snapshot.revision(), &rules),
        Ok(())
    );
    if let Some(d) = rules.dnsbl.as_mut() {
        d.threshold = 9;
    }
    assert!(crate::policy::check::check(snapshot.revision(), &rules).is_err());
}

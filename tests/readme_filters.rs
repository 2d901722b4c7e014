//! The README's "Filtering" examples are policies that compile: a newcomer copies them,
//! so a schema change that breaks one must fail here rather than in their cluster.

use sluice::filter::settings::{CheckKind, FilterMode};
use sluice::policy::PolicySnapshot;

/// The ```yaml blocks of the README section `## Filtering`.
fn examples() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## Filtering\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a Filtering section in the README");
    section
        .split("```yaml\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn the_filtering_examples_compile_to_what_they_say() {
    let examples = examples();
    assert_eq!(
        examples.len(),
        4,
        "front-end, reject, tag-only, verify-and-sign"
    );
    let compiled: Vec<PolicySnapshot> = examples
        .iter()
        .enumerate()
        .map(|(i, yaml)| {
            match PolicySnapshot::from_yaml(&[(format!("example {i}"), yaml.clone())]) {
                Ok(snapshot) => snapshot,
                Err(e) => panic!("README example {i} does not compile: {e}\n{yaml}"),
            }
        })
        .collect();
    let kinds = |s: &PolicySnapshot| {
        s.filters()
            .iter()
            .map(|c| c.kind.label())
            .collect::<Vec<_>>()
    };
    assert_eq!(kinds(&compiled[0]), ["attachments"]);
    let CheckKind::Attachments(rules) = &compiled[0].filters()[0].kind else {
        unreachable!()
    };
    assert!(
        rules.every_attachment.is_some(),
        "the front-end filter strips every attachment"
    );
    assert_eq!(kinds(&compiled[1]), ["attachments", "rspamd", "clamav"]);
    let dnsbl = compiled[1]
        .dnsbl()
        .expect("the reject example has block lists");
    let zones: Vec<(&str, u32)> = dnsbl
        .zones
        .iter()
        .map(|z| (z.zone.as_str(), z.weight))
        .collect();
    assert_eq!(
        zones,
        [
            ("zen.spamhaus.org", 2),
            ("bl.spamcop.net", 1),
            ("b.barracudacentral.org", 1)
        ]
    );
    assert_eq!(dnsbl.threshold, 2);
    assert!(compiled[0].dnsbl().is_none() && compiled[2].dnsbl().is_none());
    assert!(
        compiled[1]
            .filters()
            .iter()
            .all(|c| c.mode == FilterMode::Enforce)
    );
    assert_eq!(kinds(&compiled[2]), ["attachments", "rspamd", "clamav"]);
    assert!(
        compiled[2]
            .filters()
            .iter()
            .all(|c| c.mode == FilterMode::Tag)
    );
    assert_eq!(
        kinds(&compiled[3]),
        ["sender-auth"],
        "verifies inbound mail"
    );
    let signing = compiled[3].signing().expect("the signing example has keys");
    let selectors: Vec<&str> = signing.dkim.iter().map(|k| k.selector.as_str()).collect();
    assert_eq!(selectors, ["s2026r", "s2026e"], "dual signing");
    assert!(signing.dkim.iter().all(|k| k.domain == "example.com"));
    assert_eq!(
        signing.arc.as_ref().map(|a| a.domain.as_str()),
        Some("relay.example.net")
    );
}

//! A bad `filters:` section: `sluice policy check` and `sluice standalone` refuse it and
//! name the item and field (`spec.filters[1].timeout`).

use super::support::policy;
use crate::common::{self, sluice};

#[test]
fn a_bad_filter_item_is_named_by_check_and_standalone() {
    let good = "    - attachments: {}\n      name: first\n";
    let bad = [
        (
            "    - attachments: {}\n      clamav: {addresses: [\"127.0.0.1:3310\"]}\n",
            "spec.filters[1]",
            "exactly one of attachments, rspamd, clamav, senderAuth",
        ),
        (
            "    - attachments: {}\n      colour: blue\n",
            "spec.filters[1]",
            "colour",
        ),
        (
            "    - attachments: {}\n      timeout: 10m\n",
            "spec.filters[1].timeout",
            "5m",
        ),
        (
            "    - clamav: {addresses: [\"no port here\"]}\n",
            "spec.filters[1].clamav.addresses",
            "",
        ),
    ];
    for (item, field, words) in bad {
        let yaml = policy(2525, &format!("{good}{item}"));
        let (dir, config, _) = common::prepare_with(&common::config_yaml("{}"), &yaml);
        let config = config.to_str().unwrap();
        let (code, text) = sluice(&[
            "policy",
            "check",
            "--config",
            config,
            "--client",
            "127.0.0.1",
            "--from",
            "a@client.example",
            "--to",
            "b@sink.test",
        ]);
        assert_eq!(code, 2, "{item}: {text}");
        assert!(
            text.contains(field) && text.contains(words),
            "{item}: {text}"
        );
        let (code, text) = sluice(&["standalone", "--config", config]);
        assert_eq!(code, 2, "{item}: {text}");
        assert!(text.contains(field), "{item}: {text}");
        drop(dir);
    }
    // The good one alone passes.
    let (dir, config, _) = common::prepare_with(&common::config_yaml("{}"), &policy(2525, good));
    let (code, text) = sluice(&[
        "policy",
        "check",
        "--config",
        config.to_str().unwrap(),
        "--client",
        "127.0.0.1",
        "--from",
        "a@client.example",
        "--to",
        "b@sink.test",
    ]);
    assert_eq!(code, 0, "{text}");
    drop(dir);
}

//! Real Rspamd and clamd behind `sluice standalone`: refusals with the scanner's words,
//! tag mode, forged tags removed, scanners down or silent with either fail mode.

use super::support::{
    self, Client, UNTRUSTED, assert_reply, delivered, header_values, metric, relay, send,
};
use crate::common::scanners::{Clamd, EICAR_FOUND, Rspamd, free_port};
use std::time::{Duration, Instant};

/// One Rspamd and one clamd, started side by side, for every scanner case in turn.
#[tokio::test]
async fn rspamd_and_clamd_refuse_tag_and_fail_by_mode() {
    let clamd = tokio::task::spawn_blocking(Clamd::start);
    let rspamd = Rspamd::start().await;
    let clamd = clamd.await.unwrap();
    println!(
        "start-up: rspamd {:?}, clamd {:?}",
        rspamd.startup, clamd.startup
    );
    rspamd_enforce(&rspamd).await;
    rspamd_tag(&rspamd).await;
    clamd_enforce(&clamd).await;
    scanners_down().await;
}

async fn rspamd_enforce(rspamd: &Rspamd) {
    let filters = format!("    - rspamd: {{url: \"{}\"}}\n", rspamd.url());
    let (relay, sink) = relay(&filters).await;
    let from = Client::From(UNTRUSTED);
    let gtube = send(&relay, from, "gtube").await;
    assert_eq!(gtube, (550, "5.7.1 Gtube pattern".to_string()));
    assert_reply(&send(&relay, from, "clean").await, 250, &[]);
    assert_reply(&send(&relay, from, "forged").await, 250, &[]);
    let got = delivered(&sink, &["clean", "forged"]).await;
    // The forged tag is gone, and no check wrote one (enforce mode).
    assert_eq!(
        header_values(&got["forged"], "X-Sluice-Filter"),
        Vec::<String>::new()
    );
    assert!(header_values(&got["clean"], "X-Spam-Flag").is_empty());
    let count = |result: &'static str| {
        let label = format!("result=\"{result}\"");
        let admin = relay.admin;
        async move {
            metric(
                admin,
                "sluice_filter_verdicts_total",
                &["check=\"rspamd\"", &label],
            )
            .await
        }
    };
    assert_eq!(count("reject").await, 1.0);
    assert_eq!(count("accept").await, 2.0);
}

async fn rspamd_tag(rspamd: &Rspamd) {
    let filters = format!(
        "    - rspamd: {{url: \"{}\"}}\n      mode: tag\n",
        rspamd.url()
    );
    let (relay, sink) = relay(&filters).await;
    let from = Client::From(UNTRUSTED);
    assert_reply(&send(&relay, from, "gtube").await, 250, &[]);
    assert_reply(&send(&relay, from, "gtube_forged").await, 250, &[]);
    let got = delivered(&sink, &["gtube", "gtube_forged"]).await;
    for (case, data) in &got {
        assert_eq!(header_values(data, "X-Spam-Flag"), ["YES"], "{case}");
        let tags = header_values(data, "X-Sluice-Filter");
        assert_eq!(tags.len(), 1, "{case}: {tags:?}");
        assert!(
            tags[0].starts_with("rspamd; reject; score "),
            "{case}: {tags:?}"
        );
        assert!(tags[0].contains("GTUBE"), "{case}: {tags:?}");
        assert!(!tags[0].contains("forged"), "{case}: {tags:?}");
        let status = header_values(data, "X-Spam-Status");
        assert!(
            status.len() == 1 && status[0].starts_with("Yes, score="),
            "{status:?}"
        );
    }
}

async fn clamd_enforce(clamd: &Clamd) {
    let filters = format!("    - clamav: {{addresses: [\"{}\"]}}\n", clamd.address());
    let (relay, sink) = relay(&filters).await;
    let from = Client::From(UNTRUSTED);
    let refusal = format!("5.7.1 Message refused: malware found ({EICAR_FOUND})");
    for case in ["eicar_zip", "eicar_base64"] {
        let reply = send(&relay, from, case).await;
        assert_eq!(reply, (550, refusal.clone()), "{case}");
    }
    assert_reply(&send(&relay, from, "clean").await, 250, &[]);
    delivered(&sink, &["clean"]).await;
    let found = metric(
        relay.admin,
        "sluice_filter_verdicts_total",
        &["check=\"clamav\"", "result=\"reject\""],
    )
    .await;
    assert_eq!(found, 2.0);
}

/// Scanners at ports nobody listens on: fail closed (the default) answers 451, fail
/// open accepts unchecked.
async fn scanners_down() {
    let (rspamd, clamd) = (free_port(), free_port());
    let closed =
        format!("    - rspamd: {{url: \"http://127.0.0.1:{rspamd}\"}}\n      failMode: closed\n");
    let (relay, _sink) = relay(&closed).await;
    let reply = send(&relay, Client::From(UNTRUSTED), "clean").await;
    assert_eq!(
        reply,
        (451, "4.7.1 Spam check unavailable, try again later".into())
    );
    let clamav = format!("    - clamav: {{addresses: [\"127.0.0.1:{clamd}\"]}}\n");
    let (relay, _sink) = support::relay(&clamav).await;
    let reply = send(&relay, Client::From(UNTRUSTED), "eicar_zip").await;
    assert_eq!(
        reply,
        (451, "4.7.1 Virus check unavailable, try again later".into())
    );
    let open = format!(
        "    - rspamd: {{url: \"http://127.0.0.1:{rspamd}\"}}\n      failMode: open\n{}      failMode: open\n",
        clamav
    );
    let (relay, sink) = support::relay(&open).await;
    assert_reply(
        &send(&relay, Client::From(UNTRUSTED), "clean").await,
        250,
        &[],
    );
    delivered(&sink, &["clean"]).await;
    let errors = metric(
        relay.admin,
        "sluice_filter_verdicts_total",
        &["result=\"error\""],
    )
    .await;
    assert_eq!(errors, 2.0);
}

/// A scanner that takes the connection and never answers: the check's time limit
/// decides, within a few seconds, by its fail mode.
#[tokio::test]
async fn a_silent_scanner_is_bounded_by_the_timeout() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut streams = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            // Kept open, never read from or answered.
            streams.push(stream);
        }
    });
    for (mode, code) in [("closed", 451), ("open", 250)] {
        let filters = format!(
            "    - clamav: {{addresses: [\"{address}\"]}}\n      timeout: 1s\n      failMode: {mode}\n"
        );
        let (relay, sink) = relay(&filters).await;
        let started = Instant::now();
        let reply = send(&relay, Client::From(UNTRUSTED), "clean").await;
        let took = started.elapsed();
        assert_eq!(reply.0, code, "{mode}: {reply:?}");
        if code == 451 {
            assert_eq!(reply.1, "4.7.1 Virus check unavailable, try again later");
        } else {
            delivered(&sink, &["clean"]).await;
        }
        assert!(
            took >= Duration::from_secs(1),
            "{mode}: answered in {took:?}"
        );
        assert!(
            took < Duration::from_secs(5),
            "{mode}: answered in {took:?}"
        );
    }
    held.abort();
}

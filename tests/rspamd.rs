//! The Rspamd client (`sluice::filter::rspamd`) against a real `rspamd` (Debian's
//! package, installed by scripts/install-test-deps) started by this test binary on a
//! free loopback port (tests/common/scanners.rs), without Redis, from a configuration directory the test writes:
//! Rspamd's stock rules and a normal worker only, plus settings and a Lua prefilter
//! that give chosen recipients each action, so that every mapping meets the real thing. When the tests run as root, Rspamd
//! drops to `nobody`/`nogroup` (`-u`/`-g`). DNS points at a dead loopback port so that
//! no test depends on the network and lookups fail at once.
//!
//! Rspamd takes seconds to start (it compiles its rules), so one daemon serves the
//! whole binary: one test runs the verdicts in order and then stops it. A fake HTTP
//! server shows that an oversized answer is refused.

mod common;

use common::scanners::{GTUBE, Rspamd, RspamdLocal};
use sluice::filter::rspamd::{self, RspamdAction, RspamdConfig};
use sluice::filter::scan::{FailMode, ScanContext, ScanError, ScanTls, Verdict};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

/// Per-recipient (and per-user) actions, so that the one daemon shows every mapping.
const SETTINGS: &str = r#"
tag_user { priority = high; user = "tagged"; apply { actions { "add header" = -100; } } }
subject { priority = high; rcpt = "subject@example.net"; apply { actions { "rewrite subject" = -100; } } }
grey { priority = high; rcpt = "grey@example.net"; apply { actions { greylist = -100; } } }
"#;
const ACTIONS: &str = "subject = \"***SPAM*** %s\";\n";
/// "soft reject" is no score threshold, so a prefilter sets it, with a hostile message;
/// another one echoes the request headers back in a reject message; the tagged user
/// gets a milter header with a line break in its value.
const LUA: &str = r#"
rspamd_config:register_symbol({
  name = 'SLUICE_TEST', type = 'prefilter', priority = 10,
  callback = function(task)
    for _, r in ipairs(task:get_recipients('smtp') or {}) do
      if r.addr == 'soft@example.net' then
        task:set_pre_result('soft reject', 'Busy, said the test\r\n250 fake')
      elseif r.addr == 'echo@example.net' then
        local function h(name) return tostring(task:get_request_header(name)) end
        task:set_pre_result('reject', string.format('ip=%s helo=%s user=%s queue=%s tls=%s/%s',
          tostring(task:get_from_ip()), tostring(task:get_helo()), tostring(task:get_user()),
          tostring(task:get_queue_id()), h('TLS-Version'), h('TLS-Cipher')))
      end
    end
    if task:get_user() == 'tagged' then
      task:set_milter_reply({ add_headers = { ['X-Sluice-Test'] = 'tagged\r\nBcc: evil@example.org' } })
    end
  end,
})
"#;
async fn start() -> Rspamd {
    Rspamd::start_with(RspamdLocal {
        settings: SETTINGS,
        actions: ACTIONS,
        lua: LUA,
    })
    .await
}

fn config(rspamd: &Rspamd) -> RspamdConfig {
    RspamdConfig::new(&rspamd.url(), rspamd::DEFAULT_TIMEOUT).unwrap()
}

fn context() -> ScanContext {
    ScanContext {
        mail_from: "alice@example.com".into(),
        recipients: vec!["bob@example.net".into(), "carol@example.net".into()],
        client_ip: "127.0.0.1".parse().unwrap(),
        helo: "client.example.com".into(),
        user: None,
        queue_id: "TESTQUEUEID".into(),
        tls: None,
    }
}

fn message(body: &str, size: usize) -> Vec<u8> {
    let mut message = concat!(
        // Carol is a Bcc, only in the envelope.
        "From: Alice <alice@example.com>\r\nTo: Bob <bob@example.net>\r\n",
        "Subject: Lunch on Friday\r\n",
        "Date: Mon, 7 Dec 2026 08:00:00 +0000\r\nMessage-ID: <lunch.1@example.com>\r\n",
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    )
    .as_bytes()
    .to_vec();
    message.extend_from_slice(body.as_bytes());
    message.extend_from_slice(b"\r\n");
    while message.len() < size {
        message.extend_from_slice(b"Shall we meet at the usual place at noon on Friday?\r\n");
    }
    message
}

#[tokio::test]
async fn gtube_ordinary_mail_every_action_then_a_stopped_rspamd_fails_fast() {
    let mut rspamd = start().await;
    let cfg = config(&rspamd);

    let answer = rspamd::check(&cfg, &message(GTUBE, 0), &context()).await;
    let answer = answer.unwrap();
    assert_eq!(answer.action, RspamdAction::Reject, "{answer:?}");
    let Verdict::Reject(reply) = &answer.verdict else {
        panic!("GTUBE must be rejected: {answer:?}");
    };
    assert_eq!(reply.to_bytes(), b"550 5.7.1 Gtube pattern\r\n");

    let ordinary = message("Hi Bob, hi Carol.", 0);
    let answer = rspamd::check(&cfg, &ordinary, &context()).await.unwrap();
    assert_eq!(answer.action, RspamdAction::NoAction, "{answer:?}");
    assert_eq!(answer.verdict, Verdict::Accept);
    // Rspamd saw the envelope: the To recipient is among the Rcpt headers (without them
    // there is no TO_MATCH_ENVRCPT_ALL), the header From matches the envelope's.
    assert!(
        answer.symbols.iter().any(|s| s == "TO_MATCH_ENVRCPT_ALL"),
        "{answer:?}"
    );
    assert!(
        answer.symbols.iter().any(|s| s == "FROM_EQ_ENVFROM"),
        "{answer:?}"
    );

    actions_map_to_verdicts(&cfg).await;

    // Figures: the median of 100 checks of a 4 KiB ordinary message.
    let four_k = message("Hi Bob.", 4096);
    let mut times = Vec::new();
    for _ in 0..100 {
        let started = Instant::now();
        let answer = rspamd::check(&cfg, &four_k, &context()).await.unwrap();
        times.push(started.elapsed());
        assert_eq!(answer.verdict, Verdict::Accept);
    }
    times.sort();
    println!(
        "rspamd: start-up {:?}, 4 KiB check median {:?}, p99 {:?} (100 checks)",
        rspamd.startup, times[50], times[98]
    );

    rspamd.stop();
    let started = Instant::now();
    let result = rspamd::check(&cfg, &ordinary, &context()).await;
    assert!(
        matches!(result, Err(ScanError::Connect { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(matches!(
        rspamd::verdict(&result, FailMode::Closed),
        Verdict::Tempfail(r) if r.code == 451
    ));
    assert_eq!(rspamd::verdict(&result, FailMode::Open), Verdict::Accept);
}

/// Every action Rspamd can recommend, from the settings and the Lua prefilter above.
async fn actions_map_to_verdicts(cfg: &RspamdConfig) {
    let lunch = message("Hi Bob.", 0);
    let to = |rcpt: &str| ScanContext {
        recipients: vec![rcpt.to_owned()],
        ..context()
    };

    let tagged = ScanContext {
        user: Some("tagged".into()),
        ..context()
    };
    let answer = rspamd::check(cfg, &lunch, &tagged).await.unwrap();
    assert_eq!(answer.action, RspamdAction::AddHeader, "{answer:?}");
    let Verdict::Rewrite(rewrite) = &answer.verdict else {
        panic!("add header must rewrite: {answer:?}");
    };
    let added: Vec<String> = rewrite
        .add_headers
        .iter()
        .map(|(n, v)| format!("{n}: {v}"))
        .collect();
    let status = format!(
        "X-Spam-Status: Yes, score={:.2} required={:.2}",
        answer.score, answer.required_score
    );
    assert_eq!(added[0], status);
    assert_eq!(added[1], format!("X-Spam-Score: {:.2}", answer.score));
    assert_eq!(added[2], "X-Spam-Flag: YES");
    // The milter header, its line break flattened: no header injection.
    assert_eq!(added[3..], ["X-Sluice-Test: tagged Bcc: evil@example.org"]);
    assert!(rewrite.remove_headers.contains(&("X-Spam".to_owned(), 0)));

    let answer = rspamd::check(cfg, &lunch, &to("subject@example.net"))
        .await
        .unwrap();
    assert_eq!(answer.action, RspamdAction::RewriteSubject, "{answer:?}");
    let Verdict::Rewrite(rewrite) = &answer.verdict else {
        panic!("rewrite subject must rewrite: {answer:?}");
    };
    assert_eq!(
        rewrite.subject.as_deref(),
        Some("***SPAM*** Lunch on Friday")
    );

    let answer = rspamd::check(cfg, &lunch, &to("grey@example.net"))
        .await
        .unwrap();
    assert_eq!(answer.action, RspamdAction::Greylist, "{answer:?}");
    let Verdict::Tempfail(reply) = &answer.verdict else {
        panic!("greylist must tempfail: {answer:?}");
    };
    assert_eq!((reply.code, reply.status), (451, Some("4.7.1")));

    let answer = rspamd::check(cfg, &lunch, &to("soft@example.net"))
        .await
        .unwrap();
    assert_eq!(answer.action, RspamdAction::SoftReject, "{answer:?}");
    let Verdict::Tempfail(reply) = &answer.verdict else {
        panic!("soft reject must tempfail: {answer:?}");
    };
    // Rspamd's message, its CR LF flattened: no reply injection.
    assert_eq!(
        reply.to_bytes(),
        b"451 4.7.1 Busy, said the test 250 fake\r\n"
    );

    // The request headers arrive: Rspamd's Lua echoes them.
    let echo = ScanContext {
        user: Some("echoed".into()),
        tls: Some(ScanTls {
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_256_GCM_SHA384".into(),
        }),
        ..to("echo@example.net")
    };
    let answer = rspamd::check(cfg, &lunch, &echo).await.unwrap();
    let Verdict::Reject(reply) = &answer.verdict else {
        panic!("the echo must reject: {answer:?}");
    };
    assert_eq!(
        reply.lines,
        [
            "ip=127.0.0.1 helo=client.example.com user=echoed queue=TESTQUEUEID \
          tls=TLSv1.3/TLS13_AES_256_GCM_SHA384"
        ]
    );
}

#[tokio::test]
async fn an_oversized_or_late_answer_is_an_error() {
    // Announces and sends an answer one octet over the cap.
    let big = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let big_addr = big.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = big.accept() {
            let mut request = [0u8; 65536];
            let _ = s.read(&mut request);
            // Valid JSON (trailing spaces are allowed): only the cap can refuse it.
            let mut body = br#"{"action":"no action"}"#.to_vec();
            body.resize(rspamd::MAX_RESPONSE + 1, b' ');
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    let cfg = RspamdConfig::new(&format!("http://{big_addr}"), Duration::from_secs(5)).unwrap();
    let result = rspamd::check(&cfg, &message("hi", 0), &context()).await;
    assert!(matches!(result, Err(ScanError::Protocol(_))), "{result:?}");

    // Takes the request and never answers.
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let silent_addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = silent.accept() {
            let mut sink = [0u8; 65536];
            while s.read(&mut sink).is_ok_and(|n| n > 0) {}
        }
    });
    let url = format!("http://{silent_addr}");
    let cfg = RspamdConfig::new(&url, Duration::from_millis(500)).unwrap();
    let started = Instant::now();
    let result = rspamd::check(&cfg, &message("hi", 0), &context()).await;
    assert!(matches!(result, Err(ScanError::Timeout(_))), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// A one-shot HTTP server that reads the request head and answers `response`.
fn fake_rspamd(response: Vec<u8>) -> RspamdConfig {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut request = [0u8; 65536];
            let _ = s.read(&mut request);
            let _ = s.write_all(&response);
        }
    });
    RspamdConfig::new(&format!("http://{address}"), Duration::from_secs(5)).unwrap()
}

#[tokio::test]
async fn a_chunked_answer_is_read_and_an_http_error_is_an_error() {
    let json = br#"{"action":"reject","messages":{"smtp_message":"Chunked no"}}"#;
    let (a, b) = json.split_at(20);
    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for part in [a, b] {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let result = rspamd::check(&fake_rspamd(chunked), &message("hi", 0), &context()).await;
    let verdict = result.unwrap().verdict;
    assert_eq!(
        verdict,
        Verdict::Reject(sluice::smtp::reply::Reply::new(550, "5.7.1", "Chunked no"))
    );

    let error = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 26\r\n\r\n\
                  {\"action\":\"no action\"}    "
        .to_vec();
    let result = rspamd::check(&fake_rspamd(error), &message("hi", 0), &context()).await;
    assert!(matches!(result, Err(ScanError::Protocol(_))), "{result:?}");
}

//! Password guessing against a running relay with Python's smtplib as the client: the
//! failure delay and lockout per client address that survive reconnecting, the lockout
//! per user name, and whether `Received:` names the SASL user.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

/// `attempts PORT CAFILE IP:USER:PASSWORD...`: one new session (STARTTLS, AUTH PLAIN)
/// per attempt, printing the reply code and the milliseconds from AUTH to the reply.
/// `until PORT CAFILE IP:USER:PASSWORD SECONDS`: the same every 100 ms until a 235 or
/// the deadline. `send PORT CAFILE IP:USER:PASSWORD`: one attempt, then a message.
const SMTPLIB_SCRIPT: &str = r#"
import smtplib, ssl, sys, time
mode, port, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile)

def attempt(spec, send=False):
    ip, user, password = spec.split(":", 2)
    with smtplib.SMTP("localhost", port, timeout=30, source_address=(ip, 0)) as s:
        s.ehlo("python.test")
        s.starttls(context=ctx)
        s.ehlo("python.test")
        s.user, s.password = user, password
        started = time.monotonic()
        try:
            code, _ = s.auth("PLAIN", s.auth_plain)
        except smtplib.SMTPAuthenticationError as e:
            code = e.smtp_code
        ms = int((time.monotonic() - started) * 1000)
        if send and code == 235:
            s.sendmail(user + "@local.test", ["carol@foreign.test"], b"Subject: t\r\n\r\nhi\r\n")
    return code, ms

if mode == "attempts":
    for spec in sys.argv[4:]:
        print(*attempt(spec), flush=True)
elif mode == "until":
    deadline = time.monotonic() + float(sys.argv[5])
    while True:
        code, ms = attempt(sys.argv[4])
        print(code, ms, flush=True)
        if code == 235 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
elif mode == "send":
    print(*attempt(sys.argv[4], send=True))
"#;

/// Runs the script against `port`; returns (code, milliseconds) per attempt.
async fn smtplib(relay: &common::Relay, port: u16, mode: &str, args: &[&str]) -> Vec<(u16, u64)> {
    let cafile = relay.dir.path().join("cert.pem");
    let mut argv = vec![
        "-c".to_string(),
        SMTPLIB_SCRIPT.to_string(),
        mode.to_string(),
        port.to_string(),
        cafile.to_str().unwrap().to_string(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(argv)
            .output()
            .expect("python3")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|line| {
            let (code, ms) = line.split_once(' ').expect(line);
            (code.parse().unwrap(), ms.parse().unwrap())
        })
        .collect()
}

async fn metrics(relay: &common::Relay) -> String {
    common::roles::http_get(relay.admin, "/metrics")
        .await
        .expect("metrics")
        .1
}

fn codes(results: &[(u16, u64)]) -> Vec<u16> {
    results.iter().map(|(code, _)| *code).collect()
}

#[tokio::test]
async fn guesses_over_reconnects_slow_down_then_lock_out_the_address_but_not_another() {
    let relay = common::start(
        "{authFailureDelay: 200ms, authFailuresPerIp: 4, authFailuresPerUser: 100, authLockout: 1h}",
    )
    .await;
    let port = relay.submission.port();
    let wrong: Vec<String> = (0..6)
        .map(|i| format!("127.0.0.2:alice:wrong{i}"))
        .collect();
    let wrong: Vec<&str> = wrong.iter().map(String::as_str).collect();
    let guesses = smtplib(&relay, port, "attempts", &wrong).await;
    assert_eq!(
        codes(&guesses),
        [535, 535, 535, 535, 454, 454],
        "{guesses:?}"
    );
    // Each guess in its own session, yet each waits longer: 0, 200, 400, 800 ms.
    for (i, least) in [(1, 200), (2, 400), (3, 800)] {
        assert!(guesses[i].1 >= least, "guess {i}: {guesses:?}");
    }
    // Locked out: answered at once, without the delay or a check.
    assert!(guesses[4].1 < 800, "{guesses:?}");

    let right = format!("127.0.0.2:alice:{}", common::PASSWORD);
    let from_other = format!("127.0.0.3:alice:{}", common::PASSWORD);
    let after = smtplib(&relay, port, "attempts", &[&right, &from_other]).await;
    assert_eq!(codes(&after), [454, 235], "{after:?}");

    let text = metrics(&relay).await;
    assert!(
        text.contains("\nsluice_auth_lockouts_total{scope=\"ip\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("\nsluice_auth_total{result=\"locked_out\"} 3\n"));
    assert!(text.contains("\nsluice_auth_total{result=\"failure\"} 4\n"));
}

#[tokio::test]
async fn a_locked_out_user_is_refused_even_with_the_right_password_until_the_lockout_ends() {
    let lockout = Duration::from_secs(3);
    let relay = common::start(
        "{authFailureDelay: 10ms, authFailuresPerUser: 3, authFailuresPerIp: 100, authLockout: 3s}",
    )
    .await;
    let port = relay.submission.port();
    let wrong = "127.0.0.2:alice:wrong";
    let first = smtplib(&relay, port, "attempts", &[wrong, wrong]).await;
    assert_eq!(codes(&first), [535, 535]);
    let before_lockout = Instant::now();
    let third = smtplib(&relay, port, "attempts", &[wrong]).await;
    assert_eq!(codes(&third), [535]);

    // From another address: the right password for alice is not even checked; another
    // (unknown) user is.
    let right = format!("127.0.0.3:alice:{}", common::PASSWORD);
    let other_user = "127.0.0.3:bob:whatever";
    let during = smtplib(&relay, port, "attempts", &[&right, other_user]).await;
    assert_eq!(codes(&during), [454, 535], "{during:?}");

    let retries = smtplib(&relay, port, "until", &[&right, "20"]).await;
    let (last, earlier) = retries.split_last().unwrap();
    assert_eq!(last.0, 235, "{retries:?}");
    assert!(earlier.iter().all(|(code, _)| *code == 454), "{retries:?}");
    assert!(before_lockout.elapsed() >= lockout, "{retries:?}");

    let text = metrics(&relay).await;
    assert!(
        text.contains("\nsluice_auth_lockouts_total{scope=\"user\"} 1\n"),
        "{text}"
    );
}

/// Sends one authenticated message through each listener and returns the spool's
/// Received headers, relay port first.
async fn received_headers(config: &str) -> Vec<String> {
    let relay = common::start_with(config, &common::policy_yaml()).await;
    let spec = format!("127.0.0.2:alice:{}", common::PASSWORD);
    for port in [relay.relay.port(), relay.submission.port()] {
        let sent = smtplib(&relay, port, "send", &[&spec]).await;
        assert_eq!(codes(&sent), [235]);
    }
    let mut spool = relay.stop_and_list().await;
    spool.sort_by_key(|(entry, _)| entry.envelope.id.to_string());
    assert_eq!(spool.len(), 2);
    spool
        .iter()
        .map(|(_, body)| {
            let text = String::from_utf8_lossy(body);
            text.split("\r\nSubject:").next().unwrap().to_string()
        })
        .collect()
}

#[tokio::test]
async fn received_names_the_sasl_user_on_submission_and_on_the_relay_port_only_if_asked() {
    let headers = received_headers(&common::config_yaml("{}")).await;
    assert!(
        !headers[0].contains("alice") && headers[0].contains("with ESMTPSA id"),
        "relay port: {}",
        headers[0]
    );
    assert!(
        headers[1].contains("(authenticated as alice)"),
        "{}",
        headers[1]
    );

    let asked =
        common::config_yaml("{}").replace("kind: relay }", "kind: relay, receivedAuthUser: true }");
    let headers = received_headers(&asked).await;
    assert!(
        headers[0].contains("(authenticated as alice)"),
        "{}",
        headers[0]
    );
}

//! SIGTERM with a drain delay, through the real `sluice standalone` binary: in
//! Kubernetes a terminating pod stays in the Service's endpoints for a few seconds after
//! SIGTERM, so the process must stop being ready at once (`/readyz` 503) but go on
//! accepting and serving connections for `limits.drainDelay`; only then does the drain
//! start (no new connections, idle sessions told 421, exit). A second SIGTERM cuts the
//! delay short, as an impatient operator expects.

mod common;

use common::roles::http_get;
use common::smtp::Client;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

/// A `sluice standalone` process on the test configuration, killed when dropped.
struct Standalone {
    child: Child,
    smtp: SocketAddr,
    admin: SocketAddr,
}

impl Standalone {
    async fn start(config: &Path, args: &[&str]) -> Standalone {
        let ports = config.with_file_name("ports.json");
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("standalone")
            .arg("--config")
            .arg(config)
            .arg("--ports-file")
            .arg(&ports)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sluice");
        let deadline = Instant::now() + Duration::from_secs(20);
        let read = |name: &str| -> Option<SocketAddr> {
            let text = std::fs::read_to_string(&ports).ok()?;
            let map: std::collections::HashMap<String, SocketAddr> =
                serde_json::from_str(&text).ok()?;
            map.get(name).copied()
        };
        let (smtp, admin) = loop {
            if let (Some(smtp), Some(admin)) = (read("smtp"), read("admin")) {
                break (smtp, admin);
            }
            assert!(Instant::now() < deadline, "no listeners within 20 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut process = Standalone { child, smtp, admin };
        process.until_readyz(200, deadline).await;
        process
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Polls `/readyz` until it answers `status`; panics at `deadline`.
    async fn until_readyz(&mut self, status: u16, deadline: Instant) -> String {
        loop {
            let answer = http_get(self.admin, "/readyz").await;
            if let Some((code, body)) = &answer
                && *code == status
            {
                return body.clone();
            }
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "sluice exited while /readyz was awaited"
            );
            assert!(
                Instant::now() < deadline,
                "/readyz never answered {status}: last {answer:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) for the process to exit and returns whether it exited 0.
    async fn exits_cleanly(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(Instant::now() < deadline, "still running after {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One message through a new connection; panics unless it gets its 250.
async fn send_through_new_connection(addr: SocketAddr, subject: &str) {
    let mut c = Client::connect(addr).await;
    c.cmd("EHLO client.test", "250 ").await;
    c.cmd("MAIL FROM:<a@sender.test>", "250").await;
    c.cmd("RCPT TO:<b@foreign.test>", "250").await;
    c.cmd("DATA", "354").await;
    c.send(format!("Subject: {subject}\r\n\r\nhi\r\n.\r\n").as_bytes())
        .await;
    c.expect("250 2.0.0").await;
    c.cmd("QUIT", "221").await;
}

#[tokio::test]
async fn during_the_drain_delay_new_connections_are_served_while_unready() {
    // Long enough for the checks below on a loaded machine; they assert that they
    // finished within it.
    let delay = Duration::from_secs(4);
    let (dir, config, _) = common::prepare("{shutdownGrace: 10s}");
    let mut sluice = Standalone::start(&config, &["--drain-delay", "4s"]).await;
    let mut idle = Client::connect(sluice.smtp).await;
    idle.cmd("EHLO client.test", "250 ").await;

    let signalled = Instant::now();
    sluice.terminate();
    let body = sluice.until_readyz(503, signalled + delay).await;
    assert!(body.starts_with("draining\n"), "{body}");
    let unready_after = signalled.elapsed();

    // Unready, yet a new connection is greeted and its message queued, and a session
    // opened before SIGTERM is served as usual rather than told to go away.
    send_through_new_connection(sluice.smtp, "after SIGTERM").await;
    idle.cmd("NOOP", "250").await;
    let served_until = signalled.elapsed();
    assert!(
        served_until < delay,
        "the checks took {served_until:?}, longer than the delay: they prove nothing"
    );

    // Then the drain proper: the idle session is told 421, new connections refused.
    idle.expect("421 4.3.2").await;
    let deadline = signalled + delay + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(sluice.smtp).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting 10 s after the delay"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused_after = signalled.elapsed();
    assert!(
        refused_after >= delay,
        "refused connections {refused_after:?} after SIGTERM, before the {delay:?} delay"
    );
    assert!(sluice.exits_cleanly(Duration::from_secs(10)).await);
    let spool = common::spool_contents(&dir.path().join("spool")).await;
    assert_eq!(
        spool.len(),
        1,
        "the message sent during the delay is queued"
    );
    assert!(
        String::from_utf8_lossy(&spool[0].1).contains("Subject: after SIGTERM"),
        "{:?}",
        spool[0].0
    );
    println!("unready {unready_after:?} after SIGTERM; refusing {refused_after:?} after it");
}

#[tokio::test]
async fn a_second_sigterm_cuts_the_drain_delay_short() {
    // Set in the file this time (the first test sets it by flag).
    let (_dir, config, _) = common::prepare("{drainDelay: 60s, shutdownGrace: 10s}");
    let mut sluice = Standalone::start(&config, &[]).await;
    let signalled = Instant::now();
    sluice.terminate();
    sluice
        .until_readyz(503, signalled + Duration::from_secs(10))
        .await;
    // The delay is in force: still greeting new connections.
    Client::connect(sluice.smtp).await.cmd("QUIT", "221").await;
    sluice.terminate();
    assert!(sluice.exits_cleanly(Duration::from_secs(10)).await);
    assert!(
        signalled.elapsed() < Duration::from_secs(20),
        "exited only after {:?}",
        signalled.elapsed()
    );
    assert!(tokio::net::TcpStream::connect(sluice.smtp).await.is_err());
}

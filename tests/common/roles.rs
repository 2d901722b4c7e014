//! The real `sluice` binary as the Kubernetes roles run it: `sluice ingress` and
//! `sluice worker` processes on port 0 with a ports file, their log (stderr) kept in a
//! file for failure messages, `sluice policy push` into the NATS bucket, and a small HTTP
//! client for the admin listener. Every process is SIGKILLed when its handle drops, so a
//! failing test leaves nothing behind.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;
use tempfile::TempDir;
use tokio::time::Instant;

/// How long a role may take to become ready: NATS connection, stream and bucket set-up
/// and the policy, on a loaded machine running debug builds.
pub const READY_WITHIN: Duration = Duration::from_secs(30);

/// One `sluice ingress` or `sluice worker` process.
pub struct RoleProcess {
    pub name: String,
    child: Option<Child>,
    dir: TempDir,
    pub admin: SocketAddr,
}

impl RoleProcess {
    /// `sluice ingress` on `--smtp 127.0.0.1:0`, with `args` added (e.g. `--nats-ack-wait`).
    pub async fn ingress(name: &str, nats_url: &str, args: &[&str]) -> RoleProcess {
        let mut all = vec!["--smtp", "127.0.0.1:0", "--hostname", "relay.test"];
        all.extend_from_slice(args);
        RoleProcess::start(name, "ingress", nats_url, &all).await
    }

    pub async fn worker(name: &str, nats_url: &str, args: &[&str]) -> RoleProcess {
        let mut all = vec!["--hostname", "relay.test"];
        all.extend_from_slice(args);
        RoleProcess::start(name, "worker", nats_url, &all).await
    }

    /// Spawns `sluice ROLE` and waits for its admin address in the ports file (bound
    /// before anything else, so that probes answer while NATS or the policy is awaited).
    pub async fn start(name: &str, role: &str, nats_url: &str, args: &[&str]) -> RoleProcess {
        RoleProcess::start_with_env(name, role, nats_url, args, &[]).await
    }

    /// [`RoleProcess::start`] with environment variables (`KUBECONFIG` for the operator).
    pub async fn start_with_env(
        name: &str,
        role: &str,
        nats_url: &str,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> RoleProcess {
        let dir = tempfile::tempdir().expect("role directory");
        let log = std::fs::File::create(dir.path().join("log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg(role)
            .args(["--admin", "127.0.0.1:0", "--nats-url", nats_url])
            .arg("--ports-file")
            .arg(dir.path().join("ports.json"))
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sluice");
        let mut process = RoleProcess {
            name: name.to_string(),
            child: Some(child),
            dir,
            admin: "0.0.0.0:0".parse().unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        process.admin = loop {
            if let Some(admin) = process.port("admin") {
                break admin;
            }
            process.assert_running();
            process.fail_if(
                Instant::now() > deadline,
                "no admin address in the ports file",
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        process
    }

    /// One address from the ports file, once the process has written it.
    pub fn port(&self, name: &str) -> Option<SocketAddr> {
        let text = std::fs::read_to_string(self.dir.path().join("ports.json")).ok()?;
        let ports: std::collections::HashMap<String, SocketAddr> =
            serde_json::from_str(&text).ok()?;
        ports.get(name).copied()
    }

    /// The relay listener of an ingress; panics if it is not bound yet.
    pub fn smtp(&self) -> SocketAddr {
        self.port("smtp")
            .unwrap_or_else(|| self.fail("no smtp address in the ports file"))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let answer = self.readyz().await;
            if matches!(answer, Some((200, _))) {
                return;
            }
            self.assert_running();
            self.fail_if(
                Instant::now() > deadline,
                &format!("not ready within {within:?}: last /readyz {answer:?}"),
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `/readyz` as (status, body); `None` when the admin listener does not answer.
    pub async fn readyz(&self) -> Option<(u16, String)> {
        http_get(self.admin, "/readyz").await
    }

    /// `/metrics`; `None` when it does not answer.
    pub async fn metrics(&self) -> Option<String> {
        http_get(self.admin, "/metrics").await.map(|(_, body)| body)
    }

    /// SIGKILL, as the kernel's OOM killer or a node failure would: nothing runs after it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, as Kubernetes sends on scale-down or rollout.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Waits (bounded) for the process to exit; `None` if it is still running.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            let child = self.child.as_mut().expect("running");
            if let Some(status) = child.try_wait().expect("process status") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// The last lines of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn assert_running(&mut self) {
        let exited = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if let Some(status) = exited {
            self.fail(&format!("exited early: {status}"));
        }
    }

    pub fn fail_if(&self, condition: bool, what: &str) {
        if condition {
            self.fail(what);
        }
    }

    pub fn fail(&self, what: &str) -> ! {
        panic!(
            "{}: {what}\n--- log of {} ---\n{}",
            self.name,
            self.name,
            self.log_tail()
        )
    }
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `GET` against an admin listener (reqwest, as `sluice queue` does): (status,
/// body), `None` on any failure or after 5 s (a probe that hangs is as bad as one that
/// fails).
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    super::http::get(addr, path, Duration::from_secs(5)).await
}

/// The sum of the samples of `name` that carry every one of `labels` (`check="rspamd"`)
/// on the admin `/metrics` at `admin`; 0 when there is none.
pub async fn metric(admin: SocketAddr, name: &str, labels: &[&str]) -> f64 {
    let (_, page) = http_get(admin, "/metrics").await.expect("/metrics");
    page.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The sum of one metric's samples (all label sets) in a Prometheus text page; `None`
/// when the page does not have the metric.
pub fn metric_sum(page: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        found = Some(found.unwrap_or(0.0) + value);
    }
    found
}

/// A RelayPolicy that trusts `trusted` (CIDRs) and sends `sink.test` to a smarthost on
/// loopback at `sink_port` (the test sink offers no STARTTLS, hence opportunistic).
pub fn route_policy(trusted: &[&str], sink_port: u16) -> String {
    let trusted: Vec<String> = trusted.iter().map(|n| format!("\"{n}\"")).collect();
    format!(
        r#"apiVersion: sluice.dev/v1alpha1
kind: RelayPolicy
metadata: {{ name: roles, namespace: mail }}
spec:
  trustedNetworks: [{}]
  routes:
    - domains: ["sink.test"]
      smarthost: {{ host: 127.0.0.1, port: {sink_port}, tls: opportunistic }}
"#,
        trusted.join(", ")
    )
}

/// Writes `policy_yaml` and a process configuration naming it into `dir` (the
/// configuration also needs listeners and a spool to load); returns the configuration.
pub fn policy_config(dir: &Path, policy_yaml: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("policy.yaml"), policy_yaml).unwrap();
    let config = dir.join("sluice.yaml");
    std::fs::write(
        &config,
        "listeners: [{name: smtp, address: '127.0.0.1:0', kind: relay}]\nspool: spool\npolicies: [policy.yaml]\n",
    )
    .unwrap();
    config
}

/// `sluice policy push`: compiles the policy of `config` into the NATS bucket; panics
/// with the tool's output if it fails.
pub async fn policy_push(config: &Path, nats_url: &str, extra: &[&str]) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["policy", "push", "--config"])
        .arg(config)
        .args(["--nats-url", nats_url])
        .args(extra)
        .output()
        .await
        .expect("run sluice policy push");
    assert!(
        output.status.success(),
        "sluice policy push failed: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Heavy tests (several processes each) run one at a time within a test binary: on a
/// small machine, parallel fleets would starve each other into timeouts.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    HEAVY.lock().await
}

//! Shared test fixtures: a relay started in-process on loopback with generated TLS
//! certificates and a known policy, and a raw SMTP client for transcripts.
#![allow(dead_code)]

pub mod chart;
pub mod dns;
pub mod fleet;
pub mod hook;
pub mod http;
pub mod kube;
pub mod mail;
pub mod nats;
pub mod roles;
pub mod scanners;
pub mod scripted;
pub mod sink;
pub mod smtp;

use sluice::config::Config;
use sluice::config::Role;
use sluice::policy::hash_password;
use sluice::roles::Running;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tempfile::TempDir;

pub const PASSWORD: &str = "correct horse battery staple";

/// One argon2 hash per test binary: hashing is slow on purpose.
pub fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| hash_password(PASSWORD))
}

/// The RelayPolicy of the tests: 127.0.0.1 is trusted (127.0.0.2 is not), `local.test` is
/// ours, `partner.test` is a relay domain, alice may send as alice@local.test.
pub fn policy_yaml() -> String {
    format!(
        r#"apiVersion: sluice.dev/v1alpha1
kind: RelayPolicy
metadata:
  name: test
  namespace: mail
spec:
  trustedNetworks: ["127.0.0.1/32", "::1/128"]
  localDomains:
    - domain: local.test
      delivery:
        maildir: {{ path: /tmp/sluice-test-maildir }}
  relayDomains: ["partner.test"]
  users:
    - name: alice
      passwordHash: "{}"
      allowedSenders: ["alice@local.test", "@alice.test"]
"#,
        password_hash()
    )
}

/// A test relay's files and addresses.
pub struct Relay {
    pub dir: TempDir,
    pub running: Option<Running>,
    pub relay: SocketAddr,
    pub submission: SocketAddr,
    pub submissions: SocketAddr,
    pub admin: SocketAddr,
    pub ca_pem: String,
}

/// Writes a self-signed certificate for `localhost` and returns its PEM.
pub fn write_certificate(dir: &Path) -> String {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("generate certificate");
    let pem = cert.cert.pem();
    std::fs::write(dir.join("cert.pem"), &pem).unwrap();
    std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
    pem
}

/// The process configuration with every listener on an ephemeral loopback port;
/// `limits` is YAML for the `limits:` mapping (e.g. `{maxErrors: 3}`). Delivery is off:
/// most tests look at what the ingress queued.
pub fn config_yaml(limits: &str) -> String {
    config_yaml_with(limits, "{ enabled: false }")
}

/// The same with `delivery` as YAML for the `delivery:` mapping.
pub fn config_yaml_with(limits: &str, delivery: &str) -> String {
    format!(
        r#"hostname: relay.test
listeners:
  - {{ name: smtp, address: "127.0.0.1:0", kind: relay }}
  - {{ name: submission, address: "127.0.0.1:0", kind: submission }}
  - {{ name: submissions, address: "127.0.0.1:0", kind: submissions }}
tls: {{ certFile: cert.pem, keyFile: key.pem }}
spool: spool
admin: "127.0.0.1:0"
policies: [policy.yaml]
limits: {limits}
delivery: {delivery}
"#
    )
}

/// Writes config, policy and certificate into a new temporary directory.
pub fn prepare(limits: &str) -> (TempDir, PathBuf, String) {
    prepare_with(&config_yaml(limits), &policy_yaml())
}

pub fn prepare_with(config_yaml: &str, policy_yaml: &str) -> (TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let ca_pem = write_certificate(dir.path());
    std::fs::write(dir.path().join("policy.yaml"), policy_yaml).unwrap();
    let config = dir.path().join("sluice.yaml");
    std::fs::write(&config, config_yaml).unwrap();
    (dir, config, ca_pem)
}

pub async fn start(limits: &str) -> Relay {
    start_with(&config_yaml(limits), &policy_yaml()).await
}

/// A relay from the given process configuration and policy (YAML texts).
pub async fn start_with(config_yaml: &str, policy_yaml: &str) -> Relay {
    start_as(
        config_yaml,
        policy_yaml,
        Role::Standalone { jetstream: false },
    )
    .await
}

/// `sluice standalone --jetstream` on the NATS server at `url`, delivery off.
pub async fn start_on_jetstream(limits: &str, url: &str) -> Relay {
    let config = format!("{}nats: {{ url: \"{url}\" }}\n", config_yaml(limits));
    start_as(
        &config,
        &policy_yaml(),
        Role::Standalone { jetstream: true },
    )
    .await
}

pub async fn start_as(config_yaml: &str, policy_yaml: &str, role: Role) -> Relay {
    start_on_disk(config_yaml, policy_yaml, role, None).await
}

/// `start_as` with the spool on a disk that `disk` can make full.
pub async fn start_on_disk(
    config_yaml: &str,
    policy_yaml: &str,
    role: Role,
    disk: Option<sluice::queue::spool::DiskFullSwitch>,
) -> Relay {
    let (dir, config_path, ca_pem) = prepare_with(config_yaml, policy_yaml);
    let config = Config::read(&config_path).expect("config");
    let running = sluice::roles::start_with_disk(config, role, disk)
        .await
        .expect("start relay");
    let addr = |name: &str| {
        running
            .listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .unwrap()
    };
    Relay {
        relay: addr("smtp"),
        submission: addr("submission"),
        submissions: addr("submissions"),
        admin: running.admin.unwrap(),
        running: Some(running),
        dir,
        ca_pem,
    }
}

impl Relay {
    pub fn spool_dir(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// Stops the relay and returns the messages in its spool.
    pub async fn stop_and_list(mut self) -> Vec<(sluice::queue::QueueEntry, Vec<u8>)> {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
        spool_contents(&self.spool_dir()).await
    }
}

/// Every message in a spool that nobody else has open, with its content.
pub async fn spool_contents(dir: &Path) -> Vec<(sluice::queue::QueueEntry, Vec<u8>)> {
    use sluice::queue::QueueAdmin;
    let spool = sluice::queue::spool::Spool::open(dir)
        .await
        .expect("open spool");
    let mut out = Vec::new();
    for entry in spool.list().await.unwrap() {
        let (entry, body) = spool.inspect(&entry.envelope.id).await.unwrap().unwrap();
        out.push((entry, body));
    }
    spool.close().await;
    out
}

/// Runs the `sluice` binary with `args`: its exit code and its stdout and stderr together.
pub fn sluice(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

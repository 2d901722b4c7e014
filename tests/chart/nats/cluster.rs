//! The chart's own NATS run for real: the nats-server configuration, the passwords and the
//! route URLs exactly as the chart renders them (ConfigMap, Secret, StatefulSet env), with
//! only what a laptop cannot have rewritten: the listen addresses become free loopback
//! ports, the pods' DNS names in the routes become those ports, the store and pid file go
//! to temporary directories. Each server gets the environment its pod would get.

use crate::common::chart::Rendered;
use base64::Engine;
use serde_json::Value;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;
use tokio::time::Instant;

/// One server per StatefulSet replica, killed on drop.
pub struct RenderedCluster {
    servers: Vec<Child>,
    dir: TempDir,
    pub client_ports: Vec<u16>,
    pub monitor_ports: Vec<u16>,
    pub route_ports: Vec<u16>,
    /// The StatefulSet's name, which is also the NATS cluster's.
    pub name: String,
    /// The Secret's values by key (`ingress-password`, …).
    pub secret: HashMap<String, String>,
}

/// The decoded data of the chart's NATS auth Secret.
pub fn secret_values(rendered: &Rendered) -> HashMap<String, String> {
    let secret = rendered.one("Secret", "-nats-auth");
    secret["data"]
        .as_object()
        .expect("the Secret has data")
        .iter()
        .map(|(k, v)| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .expect("base64");
            (k.clone(), String::from_utf8(bytes).unwrap())
        })
        .collect()
}

/// The rendered nats-server configuration.
pub fn config_text(rendered: &Rendered) -> String {
    rendered.one("ConfigMap", "-nats-config")["data"]["nats.conf"]
        .as_str()
        .expect("nats.conf in the ConfigMap")
        .to_string()
}

/// Distinct free loopback ports, held together while picked.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Replaces `from` (which must be there: a template change then shows here) with `to`.
fn rewrite(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} is not in:\n{text}");
    text.replace(from, to)
}

impl RenderedCluster {
    /// Starts the StatefulSet's servers and waits (bounded) until every one reports
    /// JetStream healthy and the meta group has a leader.
    pub async fn start(rendered: &Rendered, within: Duration) -> RenderedCluster {
        let sts = rendered.one("StatefulSet", "-nats");
        let name = sts["metadata"]["name"].as_str().unwrap().to_string();
        let service = sts["spec"]["serviceName"].as_str().unwrap().to_string();
        let replicas = sts["spec"]["replicas"].as_u64().unwrap() as usize;
        let secret = secret_values(rendered);
        let container = &sts["spec"]["template"]["spec"]["containers"][0];
        let ports = free_ports(3 * replicas);
        let (client_ports, rest) = ports.split_at(replicas);
        let (route_ports, monitor_ports) = rest.split_at(replicas);
        let dir = tempfile::tempdir().unwrap();
        let config = config_text(rendered);
        let mut servers = Vec::new();
        for i in 0..replicas {
            let pod = format!("{name}-{i}");
            let store = dir.path().join(&pod);
            std::fs::create_dir_all(&store).unwrap();
            let mut text = rewrite(
                &config,
                "listen: 0.0.0.0:4222",
                &format!("listen: 127.0.0.1:{}", client_ports[i]),
            );
            text = rewrite(
                &text,
                "http: 0.0.0.0:8222",
                &format!("http: 127.0.0.1:{}", monitor_ports[i]),
            );
            text = rewrite(
                &text,
                "store_dir: /data",
                &format!("store_dir: {:?}", store.join("js")),
            );
            text = rewrite(
                &text,
                "pid_file: /var/run/nats/nats.pid",
                &format!("pid_file: {:?}", store.join("nats.pid")),
            );
            if replicas > 1 {
                text = rewrite(
                    &text,
                    "listen: 0.0.0.0:6222",
                    &format!("listen: 127.0.0.1:{}", route_ports[i]),
                );
            }
            let file = store.join("nats.conf");
            std::fs::write(&file, text).unwrap();
            let env = pod_env(container, &pod, &secret, &service, route_ports);
            let log = std::fs::File::create(store.join("log")).unwrap();
            let child = Command::new("nats-server")
                .arg("-c")
                .arg(&file)
                .env_clear()
                .envs(env)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("nats-server on PATH (scripts/install-test-deps installs it)");
            servers.push(child);
        }
        let mut cluster = RenderedCluster {
            servers,
            dir,
            client_ports: client_ports.to_vec(),
            monitor_ports: monitor_ports.to_vec(),
            route_ports: route_ports.to_vec(),
            name,
            secret,
        };
        cluster.wait_healthy(within).await;
        cluster
    }

    /// Every server's client URL, comma-separated, as `--nats-url` takes them.
    pub fn url(&self) -> String {
        self.url_list().join(",")
    }

    pub fn url_list(&self) -> Vec<String> {
        self.client_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect()
    }

    pub fn password(&self, role: &str) -> String {
        self.secret[&format!("{role}-password")].clone()
    }

    /// Connects as `role`'s user, with the role's inbox prefix `_INBOX_<role>` (the
    /// only reply subjects its user may subscribe to; env.rs proves the chart gives the
    /// roles that prefix).
    pub async fn connect(&self, role: &str) -> async_nats::Client {
        async_nats::ConnectOptions::with_user_and_password(role.into(), self.password(role))
            .custom_inbox_prefix(format!("_INBOX_{role}"))
            .connect(self.url_list())
            .await
            .unwrap_or_else(|e| panic!("connecting as {role}: {e}"))
    }

    /// The servers' logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            let log = std::fs::read_to_string(entry.path().join("log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            all += &format!("--- {:?}\n", entry.file_name());
            all += &tail.into_iter().rev().collect::<Vec<_>>().join("\n");
            all += "\n";
        }
        all
    }

    /// What a server's route port answers to a route that logs in with `credentials`
    /// (`"user":"route","pass":…` or nothing), then pings: the first line after INFO.
    pub fn route_answer(&self, credentials: &str) -> String {
        use std::io::{BufRead, BufReader, Write};
        let stream = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, self.route_ports[0]))
            .expect("route port");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("INFO"), "{line}");
        let connect = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"tls_required\":false,\"name\":\"rogue\",\"cluster\":\"{}\"{credentials}}}\r\nPING\r\n",
            self.name
        );
        (&stream).write_all(connect.as_bytes()).unwrap();
        line.clear();
        let _ = reader.read_line(&mut line);
        line.trim().to_string()
    }

    /// The permission violations the servers logged so far (nats-server logs each
    /// refused publish or subscription as an error).
    pub fn violations(&self) -> Vec<String> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            let log = std::fs::read_to_string(entry.path().join("log")).unwrap_or_default();
            found.extend(
                log.lines()
                    .filter(|l| l.contains("Violation"))
                    .map(str::to_string),
            );
        }
        found
    }

    async fn wait_healthy(&mut self, within: Duration) {
        use crate::common::roles::http_get;
        let deadline = Instant::now() + within;
        loop {
            for child in &mut self.servers {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("nats-server exited at start: {status}\n{}", self.logs());
                }
            }
            let mut healthy = 0;
            let mut leader = false;
            for port in &self.monitor_ports {
                let addr = (Ipv4Addr::LOCALHOST, *port).into();
                if let Some((200, _)) = http_get(addr, "/healthz?js-enabled-only=true").await
                    && let Some((200, _)) = http_get(addr, "/healthz").await
                {
                    healthy += 1;
                }
                if let Some((200, jsz)) = http_get(addr, "/jsz").await {
                    let jsz: Value = serde_json::from_str(&jsz).unwrap_or_default();
                    let single = self.servers.len() == 1 && jsz["config"].is_object();
                    leader |= single || jsz["meta_cluster"]["leader"].is_string();
                }
            }
            if healthy == self.servers.len() && leader {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{healthy} of {} servers healthy, meta leader {leader}, after {within:?}\n{}",
                self.servers.len(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The environment the container of pod `pod` gets: fieldRef POD_NAME, secretKeyRefs
/// from the Secret, plain values with Kubernetes's `$(VAR)` expansion; the route URLs'
/// pod names then become the loopback route ports.
fn pod_env(
    container: &Value,
    pod: &str,
    secret: &HashMap<String, String>,
    service: &str,
    route_ports: &[u16],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for var in container["env"].as_array().expect("env") {
        let name = var["name"].as_str().unwrap().to_string();
        let value = if let Some(key) = var["valueFrom"]["secretKeyRef"]["key"].as_str() {
            secret
                .get(key)
                .unwrap_or_else(|| panic!("{name}: no key {key} in the Secret"))
                .clone()
        } else if var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            pod.to_string()
        } else {
            let mut value = var["value"].as_str().expect("a value").to_string();
            for (earlier, v) in &env {
                value = value.replace(&format!("$({earlier})"), v);
            }
            value
        };
        env.push((name, value));
    }
    for (name, value) in env.iter_mut() {
        if let Some(i) = name
            .strip_prefix("NATS_ROUTE_")
            .and_then(|i| i.parse::<usize>().ok())
        {
            let sts = pod.rsplit_once('-').unwrap().0;
            let host = format!("@{sts}-{i}.{service}.mail.svc:6222");
            *value = rewrite(value, &host, &format!("@127.0.0.1:{}", route_ports[i]));
        }
    }
    // nats-server is found on the pip scripts PATH (scripts/install-test-deps).
    env.push(("PATH".into(), crate::nats_path()));
    env
}

impl Drop for RenderedCluster {
    fn drop(&mut self) {
        for child in &mut self.servers {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

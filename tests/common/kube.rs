//! An emulated Kubernetes API server for one test: `tests/kube_emulator.py` (kmock from
//! PyPI, which `scripts/install-test-deps` installs, plus what kube-rs needs on top of it;
//! its header lists how it differs from a real API server) on a free loopback port, with
//! a kubeconfig pointing at it, killed on drop. No real kube-apiserver can run here; the
//! operator's end-to-end tests run `sluice operator` against this.
#![allow(dead_code)]

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use sluice::policy::model::RelayPolicyResource;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The namespace of the kubeconfig's context: where the tests keep their objects.
pub const NAMESPACE: &str = "mail";

/// The field manager of the tests' own server-side applies (as `kubectl apply
/// --server-side` would be), distinct from the operator's `sluice-operator`.
pub const TEST_MANAGER: &str = "sluice-test";

const START_WITHIN: Duration = Duration::from_secs(30);

/// One emulated API server.
pub struct KubeEmulator {
    child: Child,
    /// Held open: the emulator exits when it closes, so it dies with the test binary
    /// even when that is killed and no `Drop` runs.
    _lifeline: ChildStdin,
    port: u16,
    dir: TempDir,
}

impl KubeEmulator {
    /// Starts the emulator and waits (30 s at most) until it answers `GET /version`.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let port_file = dir.path().join("port");
        let log = std::fs::File::create(dir.path().join("emulator.log")).expect("log file");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kube_emulator.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .args(["--host", "127.0.0.1", "--port", "0", "--exit-on-stdin-eof"])
            .arg("--port-file")
            .arg(&port_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("python3 on PATH");
        let lifeline = child.stdin.take().expect("piped stdin");
        let deadline = Instant::now() + START_WITHIN;
        let port = loop {
            if let Some(status) = child.try_wait().expect("emulator status") {
                panic!(
                    "the Kubernetes API emulator exited at start ({status}); is kmock installed \
                     (scripts/install-test-deps)? Its log:\n{}",
                    read_log(dir.path())
                );
            }
            let port = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|text| text.trim().parse::<u16>().ok());
            if let Some(port) = port
                && answers(port).await
            {
                break port;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "the Kubernetes API emulator did not answer within {START_WITHIN:?}; its log:\n{}",
                    read_log(dir.path())
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        let emulator = KubeEmulator {
            child,
            _lifeline: lifeline,
            port,
            dir,
        };
        std::fs::write(emulator.kubeconfig_path(), emulator.kubeconfig())
            .expect("write kubeconfig");
        emulator
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A kubeconfig file (no authentication, namespace [`NAMESPACE`]) for `KUBECONFIG`.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    fn kubeconfig(&self) -> String {
        format!(
            r#"apiVersion: v1
kind: Config
clusters:
  - name: emulator
    cluster: {{ server: "{}" }}
users:
  - name: emulator
    user: {{}}
contexts:
  - name: emulator
    context: {{ cluster: emulator, user: emulator, namespace: {NAMESPACE} }}
current-context: emulator
"#,
            self.url()
        )
    }

    /// A client from the kubeconfig, as the operator would build it from `KUBECONFIG`.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = Kubeconfig::read_from(self.kubeconfig_path()).expect("read kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("kubeconfig");
        kube::Client::try_from(config).expect("client")
    }

    /// Every request the emulator served so far, one line each, with its errors.
    pub fn log(&self) -> String {
        read_log(self.dir.path())
    }

    /// Applies a RelayPolicy from YAML text (server-side, field manager
    /// [`TEST_MANAGER`], as `kubectl apply --server-side` would): creates it or replaces
    /// its spec. Its namespace is the document's, else [`NAMESPACE`].
    pub async fn apply_policy(&self, yaml: &str) -> RelayPolicyResource {
        let document: serde_json::Value = serde_saphyr::from_str(yaml).expect("policy YAML");
        let name = document["metadata"]["name"]
            .as_str()
            .expect("metadata.name")
            .to_string();
        let namespace = document["metadata"]["namespace"]
            .as_str()
            .unwrap_or(NAMESPACE)
            .to_string();
        let api: Api<RelayPolicyResource> = Api::namespaced(self.client().await, &namespace);
        api.patch(
            &name,
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(&document),
        )
        .await
        .unwrap_or_else(|e| panic!("apply RelayPolicy {namespace}/{name}: {e}"))
    }

    /// Deletes the RelayPolicy `name` in [`NAMESPACE`] (finalizers may hold it a while).
    pub async fn delete_policy(&self, name: &str) {
        let api: Api<RelayPolicyResource> = Api::namespaced(self.client().await, NAMESPACE);
        api.delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete RelayPolicy {name}: {e}"));
    }

    /// Creates the Secret `name` in [`NAMESPACE`] with exactly these keys, or updates it
    /// to them (server-side apply, field manager [`TEST_MANAGER`]).
    pub async fn put_secret(&self, name: &str, data: &[(&str, &[u8])]) -> Secret {
        let data: BTreeMap<String, ByteString> = data
            .iter()
            .map(|(key, value)| (key.to_string(), ByteString(value.to_vec())))
            .collect();
        let secret = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": { "name": name },
            "type": "Opaque",
            "data": data,
        });
        let api: Api<Secret> = Api::namespaced(self.client().await, NAMESPACE);
        api.patch(
            name,
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .unwrap_or_else(|e| panic!("apply Secret {name}: {e}"))
    }

    pub async fn delete_secret(&self, name: &str) {
        let api: Api<Secret> = Api::namespaced(self.client().await, NAMESPACE);
        api.delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete Secret {name}: {e}"));
    }
}

impl Drop for KubeEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("emulator.log")).unwrap_or_default()
}

/// Whether an HTTP server on the port answers `GET /version` with 200 within 2 s.
async fn answers(port: u16) -> bool {
    let addr = (Ipv4Addr::LOCALHOST, port).into();
    let answer = super::http::get(addr, "/version", Duration::from_secs(2)).await;
    matches!(answer, Some((200, _)))
}

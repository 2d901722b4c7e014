//! The chart's operator RBAC against the calls the real operator makes: `sluice
//! operator` runs against the emulated API server (tests/kube_emulator.py, which logs
//! every request it serves) with a policy that needs a Secret, elects itself with the
//! Lease, renews it, writes a status and an Event, and releases the Lease on SIGTERM.
//! Every request must be granted by the rendered ClusterRole and Roles (per namespace),
//! and every grant but those a short run cannot provoke must have been used.

use crate::common::chart::render;
use crate::common::kube::KubeEmulator;
use crate::common::nats::NatsServer;
use crate::common::roles::{READY_WITHIN, RoleProcess};
use serde_json::Value;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::time::Duration;
use tokio::time::Instant;

/// (namespace or "" for the cluster, API group, resource, verb).
type Call = (String, String, String, String);

/// Grants that the run cannot be expected to use: an Event is patched only when the
/// same Event recurs (kube's Recorder counts repeats by patching), which takes minutes.
const NOT_PROVOKED: [(&str, &str, &str); 1] = [("events.k8s.io", "events", "patch")];

/// One request line of the emulator's log ("GET /apis/g/v/namespaces/ns/r/name?watch=true")
/// as the call RBAC sees; `None` for lines that are not requests.
fn call(line: &str) -> Option<Call> {
    let (method, target) = line.split_once(' ')?;
    if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method) {
        return None;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => panic!("not a resource request: {line}"),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (*ns, rest),
        rest => ("", rest),
    };
    let (resource, named) = match rest {
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, sub] => (format!("{resource}/{sub}"), true),
        _ => panic!("not a resource request: {line}"),
    };
    let watch = query
        .split('&')
        .any(|q| q == "watch=true" || q == "watch=1");
    let verb = match (method, named, watch) {
        ("GET", _, true) => "watch",
        ("GET", false, false) => "list",
        ("GET", true, false) => "get",
        ("POST", ..) => "create",
        ("PUT", ..) => "update",
        ("PATCH", ..) => "patch",
        ("DELETE", ..) => "delete",
        _ => unreachable!(),
    };
    Some((namespace.into(), group.into(), resource, verb.into()))
}

/// What the rendered ClusterRoles (namespace "") and Roles grant.
fn grants(objects: &[Value]) -> BTreeSet<Call> {
    let mut out = BTreeSet::new();
    for o in objects {
        let namespace = match o["kind"].as_str() {
            Some("ClusterRole") => "",
            Some("Role") => o["metadata"]["namespace"].as_str().unwrap(),
            _ => continue,
        };
        for rule in o["rules"].as_array().unwrap() {
            let each = |k: &str| -> Vec<String> {
                rule[k]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect()
            };
            for group in each("apiGroups") {
                for resource in each("resources") {
                    for verb in each("verbs") {
                        out.insert((namespace.into(), group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
    }
    out
}

/// Whether a ClusterRole, or a Role in the call's namespace, grants `call`.
fn granted(grants: &BTreeSet<Call>, call: &Call) -> bool {
    let (namespace, group, resource, verb) = call;
    let cluster = (String::new(), group.clone(), resource.clone(), verb.clone());
    grants.contains(&cluster) || (!namespace.is_empty() && grants.contains(call))
}

fn policy() -> &'static str {
    "apiVersion: sluice.dev/v1alpha1
kind: RelayPolicy
metadata: { name: corp, namespace: mail }
spec:
  users:
    - name: app
      passwordSecretRef: { name: relay-users, key: app }
      allowedSenders: ['@corp.test']
"
}

/// Waits (bounded) until the emulator's log has a line starting with `prefix`.
async fn served(kube: &KubeEmulator, prefix: &str, operator: &RoleProcess) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !kube.log().lines().any(|l| l.starts_with(prefix)) {
        assert!(
            Instant::now() < deadline,
            "no {prefix} within 20 s:\n{}\n{}",
            kube.log(),
            operator.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_call_of_the_real_operator_is_granted_by_the_charts_rbac() {
    let _heavy = crate::common::roles::exclusive().await;
    let nats = NatsServer::start();
    let kube = KubeEmulator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("secrets-key");
    std::fs::write(&key, "k3y-material-for-the-rbac-test-0123456789abcdef\n").unwrap();
    kube.put_secret("relay-users", &[("app", b"app-password")])
        .await;
    kube.apply_policy(policy()).await;
    // The operator as the chart runs it: its arguments from the rendered Deployment (the
    // key file where this test keeps it), its namespace and name as the downward API
    // gives them, a second policy namespace.
    let rendered = render("operator: {policyNamespaces: [mail, helpdesk]}");
    let deployment = rendered.one("Deployment", "-operator");
    let rendered_args: Vec<String> =
        deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
    let (role, rest) = rendered_args.split_first().unwrap();
    assert_eq!(role, "operator");
    assert_eq!(rest[..2], ["--config", "/etc/sluice/sluice.yaml"]);
    let key = key.to_str().unwrap().to_string();
    let args: Vec<&str> = rest[2..]
        .iter()
        .map(|a| {
            if a == "/run/sluice/secrets-key/key" {
                key.as_str()
            } else {
                a.as_str()
            }
        })
        .collect();
    let lease_name = rest
        .iter()
        .skip_while(|a| *a != "--lease-name")
        .nth(1)
        .expect("the chart names the Lease");
    let kubeconfig = kube.kubeconfig_path();
    let env = [
        ("KUBECONFIG", kubeconfig.as_os_str()),
        ("POD_NAME", OsStr::new("operator-0")),
        ("POD_NAMESPACE", OsStr::new("mail")),
    ];
    let requests_before = kube.log().lines().count();
    let mut operator =
        RoleProcess::start_with_env("operator-0", "operator", &nats.url(), &args, &env).await;
    operator.wait_ready(READY_WITHIN).await;
    let lease = format!("/apis/coordination.k8s.io/v1/namespaces/mail/leases/{lease_name}");
    served(
        &kube,
        "PATCH /apis/sluice.dev/v1alpha1/namespaces/mail/relaypolicies/corp/status",
        &operator,
    )
    .await;
    served(
        &kube,
        "POST /apis/events.k8s.io/v1/namespaces/mail/events",
        &operator,
    )
    .await;
    // A renewal (every 5 s), then the release on SIGTERM.
    served(&kube, &format!("PUT {lease}"), &operator).await;
    operator.terminate();
    let status = operator.wait_exit(Duration::from_secs(15)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "{}",
        operator.log_tail()
    );

    let log = kube.log();
    let calls: BTreeSet<Call> = log.lines().skip(requests_before).filter_map(call).collect();
    let grants = grants(&rendered.objects);
    let refused: Vec<&Call> = calls.iter().filter(|c| !granted(&grants, c)).collect();
    assert!(
        refused.is_empty(),
        "calls the chart's RBAC does not grant: {refused:#?}\n{log}"
    );
    let unused: Vec<&Call> = grants
        .iter()
        .filter(|g| {
            !calls
                .iter()
                .any(|c| granted(&BTreeSet::from([(*g).clone()]), c))
        })
        .filter(|(_, group, resource, verb)| {
            !NOT_PROVOKED.contains(&(group.as_str(), resource.as_str(), verb.as_str()))
        })
        .collect();
    assert!(
        unused.is_empty(),
        "grants the operator never used: {unused:#?}\n{calls:#?}"
    );
}

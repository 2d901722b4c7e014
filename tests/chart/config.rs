//! The process configuration each role's ConfigMap holds, read by the real config code
//! (`sluice::config::Config::read`, as `--config` reads it, then `validate` for the role)
//! with the NATS URL from the pod's environment as the binary would take it; and what the
//! chart's values put in it: shared limits, listeners, TLS, PROXY protocol, the name.

use super::{all_sets, render_set};
use crate::common::chart::{Rendered, render};
use serde_json::Value as Yaml;
use sluice::config::ListenerRole;
use sluice::config::{Config, Role};
use std::path::Path;

fn read(dir: &Path, text: &str) -> Result<Config, String> {
    let path = dir.join("sluice.yaml");
    std::fs::write(&path, text).unwrap();
    Config::read(&path).map_err(|e| e.to_string())
}

fn text_of<'a>(rendered: &'a Rendered, role: &str) -> &'a str {
    rendered.one("ConfigMap", &format!("-{role}"))["data"]["sluice.yaml"]
        .as_str()
        .unwrap()
}

/// A role's configuration as the binary would have it: the file, then SLUICE_NATS_URL.
pub fn config_of(rendered: &Rendered, role: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let mut config = read(dir.path(), text_of(rendered, role))
        .unwrap_or_else(|e| panic!("{role}: {e}\n{}", text_of(rendered, role)));
    let deployment = rendered.one("Deployment", &format!("-{role}"));
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    let url = env
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "SLUICE_NATS_URL")
        .and_then(|e| e["value"].as_str());
    config.nats.url = url.map(str::to_string);
    config
}

#[test]
fn every_roles_configuration_is_one_the_binary_accepts() {
    for (set, rendered) in all_sets() {
        let ingress = config_of(&rendered, "ingress");
        assert_eq!(ingress.validate(Role::Ingress), Ok(()), "{set}");
        let worker = config_of(&rendered, "worker");
        assert_eq!(worker.validate(Role::Worker), Ok(()), "{set}");
        // The operator reads the file without a role check (src/cli/mod.rs).
        let operator = config_of(&rendered, "operator");
        for config in [&ingress, &worker, &operator] {
            assert_eq!(config.admin.unwrap().to_string(), "0.0.0.0:9090", "{set}");
            assert!(
                config.admin_token_file.is_some(),
                "{set}: the queue API needs a token"
            );
            assert!(
                config
                    .admin_allowed_hosts
                    .contains(&"mail-sluice-admin.mail.svc.cluster.local:9090".to_string()),
                "{set}: the admin Service's name is an allowed Host"
            );
        }
        assert!(!worker.delivery.allow_private_destinations, "{set}");
        assert!(worker.delivery.secrets_key_file.is_some(), "{set}");
        assert!(ingress.delivery.secrets_key_file.is_none(), "{set}");
    }
}

#[test]
fn ingress_and_worker_take_the_same_message_limits_from_one_value() {
    for (set, rendered) in all_sets() {
        let (i, w) = (
            config_of(&rendered, "ingress"),
            config_of(&rendered, "worker"),
        );
        assert_eq!(
            i.limits.max_message_size, w.limits.max_message_size,
            "{set}"
        );
        assert_eq!(i.limits.max_recipients, w.limits.max_recipients, "{set}");
        assert_eq!(i.limits.shutdown_grace, w.limits.shutdown_grace, "{set}");
    }
    let rendered = render("limits: {maxMessageSize: 10Mi, maxRecipients: 50}");
    for role in ["ingress", "worker"] {
        let config = config_of(&rendered, role);
        assert_eq!(config.limits.max_message_size, 10 << 20, "{role}");
        assert_eq!(config.limits.max_recipients, 50, "{role}");
    }
}

fn listeners(config: &Config) -> Vec<(String, String, ListenerRole)> {
    config
        .listeners
        .iter()
        .map(|l| (l.name.clone(), l.address.to_string(), l.kind))
        .collect()
}

#[test]
fn submission_listeners_and_tls_are_there_only_with_a_certificate() {
    let plain = config_of(&render("tls: {selfSigned: false}"), "ingress");
    assert_eq!(
        listeners(&plain),
        [("smtp".into(), "0.0.0.0:2525".into(), ListenerRole::Relay)]
    );
    assert!(plain.tls.is_none());
    for set in ["defaults", "clusterip-proxy", "cert-manager"] {
        let config = config_of(&render_set(set), "ingress");
        assert_eq!(
            listeners(&config),
            [
                ("smtp".into(), "0.0.0.0:2525".into(), ListenerRole::Relay),
                (
                    "submission".into(),
                    "0.0.0.0:2587".into(),
                    ListenerRole::Submission
                ),
                (
                    "submissions".into(),
                    "0.0.0.0:2465".into(),
                    ListenerRole::Submissions
                ),
            ],
            "{set}"
        );
        let tls = config.tls.unwrap();
        assert_eq!(tls.cert_file, Path::new("/run/sluice/tls/tls.crt"), "{set}");
        assert_eq!(tls.key_file, Path::new("/run/sluice/tls/tls.key"), "{set}");
    }
    let only_submission = render(
        "tls: {secretName: t}\ningress: {listeners: {smtp: {enabled: false}, submissions: {enabled: false}}}",
    );
    let config = config_of(&only_submission, "ingress");
    assert_eq!(
        listeners(&config),
        [(
            "submission".into(),
            "0.0.0.0:2587".into(),
            ListenerRole::Submission
        )]
    );
}

#[test]
fn the_cert_manager_certificate_writes_the_secret_the_ingress_mounts() {
    let rendered = render_set("cert-manager");
    let certificate = rendered.one("Certificate", "-ingress");
    assert_eq!(certificate["apiVersion"], "cert-manager.io/v1");
    assert_eq!(
        certificate["spec"]["dnsNames"],
        serde_json::json!(["mx.example.com", "smtp.example.com"])
    );
    assert_eq!(certificate["spec"]["issuerRef"]["name"], "letsencrypt");
    assert_eq!(certificate["spec"]["issuerRef"]["kind"], "ClusterIssuer");
    let pod = &rendered.one("Deployment", "-ingress")["spec"]["template"]["spec"];
    let tls = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tls")
        .unwrap();
    assert_eq!(
        tls["secret"]["secretName"],
        certificate["spec"]["secretName"]
    );
    let own = render_set("clusterip-proxy");
    assert!(own.of_kind("Certificate").is_empty());
    let pod = &own.one("Deployment", "-ingress")["spec"]["template"]["spec"];
    assert!(
        pod["volumes"]
            .to_string()
            .contains("\"secretName\":\"relay-tls\"")
    );
}

#[test]
fn proxy_protocol_values_render_every_listeners_settings() {
    let text = text_of(&render_set("clusterip-proxy"), "ingress").to_string();
    let yaml: Yaml = serde_saphyr::from_str(&text).unwrap();
    let listeners = yaml["listeners"].as_array().unwrap();
    assert_eq!(listeners.len(), 3);
    for l in listeners {
        assert_eq!(l["proxyProtocol"], Yaml::Bool(true), "{text}");
        let proxies: Vec<&str> = l["trustedProxies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert_eq!(proxies, ["10.0.0.0/8", "fd00::/8"]);
    }
    let off: Yaml = serde_saphyr::from_str(text_of(&render_set("defaults"), "ingress")).unwrap();
    assert!(off["listeners"][0]["proxyProtocol"].is_null());
    assert!(off["listeners"][0]["trustedProxies"].is_null());
}

#[test]
fn the_relay_is_named_by_hostname_else_its_certificate_else_its_service() {
    for (values, expected) in [
        ("", "mail-sluice-ingress.mail.svc.cluster.local"),
        ("hostname: mx.example.com", "mx.example.com"),
        (
            "tls: {certManager: {enabled: true, issuerRef: {name: i}, dnsNames: [smtp.example.org]}}",
            "smtp.example.org",
        ),
    ] {
        let rendered = render(values);
        for role in ["ingress", "worker", "operator"] {
            assert_eq!(
                config_of(&rendered, role).hostname,
                expected,
                "{values:?} {role}"
            );
        }
        assert_eq!(
            rendered.notes.contains("hostname is not set"),
            values.is_empty(),
            "{values:?}: NOTES warn about the default name"
        );
    }
}

#[test]
fn the_notes_show_a_first_policy_and_a_test_message() {
    let notes = render_set("defaults").notes;
    for needle in [
        "kind: RelayPolicy",
        "passwordSecretRef: { name: relay-users, key: app }",
        "credentialsSecretRef: { name: provider-smtp",
        "kubectl -n mail port-forward svc/mail-sluice-ingress 2525:25",
        "swaks --server 127.0.0.1:2525",
        "kubectl apply --server-side -f crds/",
    ] {
        assert!(notes.contains(needle), "{needle}:\n{notes}");
    }
    // The policy in the notes is one the CRD's model reads.
    let start = notes.find("apiVersion: sluice.dev").unwrap();
    let end = notes.find("  POLICY").unwrap();
    let policy: String = notes[start..end]
        .lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let resource: sluice::policy::model::RelayPolicyResource =
        serde_saphyr::from_str(&policy).unwrap_or_else(|e| panic!("{e}\n{policy}"));
    assert_eq!(resource.spec.users.len(), 1);
}

/// Without a certificate of the user's, the chart makes a self-signed one for the relay's
/// name, as a `kubernetes.io/tls` Secret the ingress mounts, and the binary's own loader
/// takes it; with a certificate given, there is none.
#[test]
fn a_default_install_gets_a_self_signed_certificate_for_its_hostname() {
    use base64::Engine;
    let rendered = render("hostname: mx.example.com");
    let secret = rendered.one("Secret", "-tls");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let decode = |key: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(secret["data"][key].as_str().unwrap())
            .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, decode("tls.crt")).unwrap();
    std::fs::write(&key, decode("tls.key")).unwrap();
    sluice::ingress::tls::load_acceptor(&cert, &key).expect("the ingress loads it");
    let pem = String::from_utf8(decode("tls.crt")).unwrap();
    let der = base64::engine::general_purpose::STANDARD
        .decode(
            pem.lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap();
    assert!(
        der.windows(b"mx.example.com".len())
            .any(|w| w == b"mx.example.com"),
        "the certificate names the relay's hostname"
    );
    let ingress = rendered.one("Deployment", "-ingress");
    let volumes = ingress["spec"]["template"]["spec"]["volumes"].to_string();
    assert!(
        volumes.contains(secret["metadata"]["name"].as_str().unwrap()),
        "{volumes}"
    );

    for values in [
        "tls: {secretName: mine}",
        "tls: {certManager: {enabled: true, issuerRef: {name: le}, dnsNames: [mx.example.com]}}",
        "tls: {selfSigned: false}",
    ] {
        let rendered = render(values);
        assert!(
            !rendered
                .of_kind("Secret")
                .iter()
                .any(|s| s["type"] == "kubernetes.io/tls"),
            "{values}"
        );
    }
}

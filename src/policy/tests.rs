//! Fixtures shared by the unit tests of the policy files: the example RelayPolicy of the
//! design notes, adapted to use `passwordHash` only, and small helpers to compile YAML.

use std::sync::LazyLock;

use super::{PolicyError, PolicySnapshot};

/// Drepper's SHA-512-crypt vector: the password is "Hello world!".
pub const BILLING_HASH: &str = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
pub const BILLING_PASSWORD: &str = "Hello world!";
pub const PRINTER_PASSWORD: &str = "printer-pw";

/// bcrypt at the lowest cost, generated once per test run.
pub static PRINTER_HASH: LazyLock<String> =
    LazyLock::new(|| bcrypt::hash(PRINTER_PASSWORD, 4).unwrap_or_default());

/// The example policy of `relaypolicy.example.yaml`, with hashes instead of Secrets and a
/// few extra entries (a maildir domain, a bare trusted address, a subdomain route).
pub static EXAMPLE: LazyLock<String> = LazyLock::new(|| {
    format!(
        r#"
apiVersion: sluice.dev/v1alpha1
kind: RelayPolicy
metadata:
  name: corp
  namespace: mail
spec:
  mode: authenticated
  trustedNetworks: ["10.0.0.0/8", "fd00::/8", "192.0.2.7"]
  localDomains:
    - domain: Corp.Example
      delivery:
        lmtp: {{ address: "dovecot.mail.svc:24" }}
    - domain: tickets.corp.example
      delivery:
        webhook: {{ url: "http://helpdesk.apps.svc/inbound", signingSecretRef: {{ name: helpdesk-hook, key: key }} }}
    - domain: archive.corp.example
      delivery:
        maildir: {{ path: /var/mail/archive }}
  relayDomains: ["partner.example"]
  users:
    - name: billing-app
      passwordHash: "{BILLING_HASH}"
      allowedSenders: ["Billing@Corp.Example", "@notifications.corp.example"]
    - name: legacy-printer
      passwordHash: "{printer}"
  routes:
    - domains: ["partner.example"]
      smarthost: {{ host: "mx.partner.example", port: 25, tls: starttls-required }}
    - domains: ["*.partner.example"]
      smarthost: {{ host: "10.9.8.7", port: 2525, tls: opportunistic }}
    - domains: ["*"]
      smarthost:
        host: "smtp.provider.example"
        port: 587
        tls: starttls-required
        credentialsSecretRef: {{ name: provider-smtp, usernameKey: username, passwordKey: password }}
  limits:
    maxMessageSize: 25Mi
    maxRecipients: 100
  retry:
    maxLifetime: 5d
"#,
        printer = *PRINTER_HASH
    )
});

/// Compiles YAML texts named `a.yaml`, `b.yaml`, ...
pub fn compile(texts: &[&str]) -> Result<PolicySnapshot, PolicyError> {
    let sources: Vec<(String, String)> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (
                format!("{}.yaml", char::from(b'a' + i as u8)),
                t.to_string(),
            )
        })
        .collect();
    PolicySnapshot::from_yaml(&sources)
}

/// A RelayPolicy document with the given name (`namespace/name` or `name`) and spec
/// body, the body indented as under `spec:`.
pub fn policy(id: &str, spec: &str) -> String {
    let (ns, name) = match id.split_once('/') {
        Some((ns, name)) => (format!("\n  namespace: {ns}"), name),
        None => (String::new(), id),
    };
    let spec = if spec.trim().is_empty() {
        " {}".to_string()
    } else {
        format!("\n{spec}")
    };
    format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: RelayPolicy\nmetadata:\n  name: {name}{ns}\nspec:{spec}\n"
    )
}

/// The example compiled; tests that only read it share this.
pub fn example() -> PolicySnapshot {
    match compile(&[&EXAMPLE]) {
        Ok(s) => s,
        Err(e) => panic!("the example must compile: {e}"),
    }
}

/// The error of compiling one document with this spec body, as the admin would read it.
pub fn error_of(spec: &str) -> String {
    match compile(&[&policy("mail/t", spec)]) {
        Ok(_) => panic!("expected an error for spec:\n{spec}"),
        Err(e) => e.to_string(),
    }
}

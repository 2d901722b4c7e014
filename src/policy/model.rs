//! The RelayPolicy resource as written by an admin: the serde types of the
//! `sluice.dev/v1alpha1` `RelayPolicy` document. The CRD spec is also the file format of
//! `sluice standalone`, so these types are the one schema for both.
//!
//! These types only describe the shape of the input; `compile.rs` validates the values
//! (domains, CIDRs, hashes, quantities) and turns them into the compiled rules.

use serde::{Deserialize, Serialize};

use super::password::StoredHash;

/// The API group and version every RelayPolicy document must carry.
pub const API_VERSION: &str = "sluice.dev/v1alpha1";
/// The kind every RelayPolicy document must carry.
pub const KIND: &str = "RelayPolicy";

/// One RelayPolicy document.
///
/// The top level rejects unknown fields except `status`, which the API server adds and a
/// `kubectl get -o yaml` dump carries; it is ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RelayPolicy {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: RelayPolicySpec,
    #[serde(default, skip_serializing)]
    pub status: Option<serde_yaml::Value>,
}

/// The part of Kubernetes object metadata that policy uses. Other metadata (labels,
/// annotations, uid, ...) is accepted and ignored, since the API server adds plenty.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The rules of one RelayPolicy. Unknown fields are rejected so that a typo (say
/// `trustedNetwork`) is an error rather than a silently missing rule.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RelayPolicySpec {
    /// Defaults to `authenticated`: an open relay has to be written out.
    #[serde(default)]
    pub mode: Mode,
    /// CIDRs or bare addresses (a bare address is a /32 or /128).
    #[serde(default)]
    pub trusted_networks: Vec<String>,
    #[serde(default)]
    pub local_domains: Vec<LocalDomainSpec>,
    #[serde(default)]
    pub relay_domains: Vec<String>,
    #[serde(default)]
    pub users: Vec<UserSpec>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    #[serde(default)]
    pub limits: LimitsSpec,
    #[serde(default)]
    pub retry: RetrySpec,
}

/// Who may relay to foreign domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Foreign domains only for authenticated sessions and trusted networks.
    #[default]
    Authenticated,
    /// Anyone may relay anywhere.
    Open,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Authenticated => "authenticated",
            Mode::Open => "open",
        })
    }
}

/// A domain whose mail is ours, and how it is handed to local software.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalDomainSpec {
    pub domain: String,
    pub delivery: DeliverySpec,
}

/// Exactly one of the fields must be set. It is a struct of options rather than a serde
/// enum so that "two kinds given" and "none given" get a clear error of our own.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliverySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lmtp: Option<LmtpSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maildir: Option<MaildirSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
}

/// LMTP delivery: `host:port` or the absolute path of a Unix socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LmtpSpec {
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaildirSpec {
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookSpec {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret_ref: Option<SecretKeyRef>,
}

/// A key in a Secret of the policy's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

/// A SASL user. Exactly one of `passwordHash` / `passwordSecretRef`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<StoredHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// Full addresses or `@domain`. Empty means any sender (see `compile.rs`).
    #[serde(default)]
    pub allowed_senders: Vec<String>,
}

/// Recipient domains sent through one smarthost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    /// `example.com`, `*.example.com` (subdomains only) or `*` (everything).
    pub domains: Vec<String>,
    pub smarthost: SmarthostSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SmarthostSpec {
    pub host: String,
    /// Required: 25, 465 and 587 are all common, so no default would be right for most.
    pub port: u16,
    /// Defaults to `starttls-required`: credentials and mail should not leave in clear
    /// text unless someone asked for it.
    #[serde(default)]
    pub tls: TlsMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<CredentialsSecretRef>,
}

/// Outbound TLS requirement towards a smarthost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    #[default]
    StarttlsRequired,
    ImplicitTls,
    Opportunistic,
}

/// Username and password of a smarthost, as two keys of one Secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialsSecretRef {
    pub name: String,
    pub username_key: String,
    pub password_key: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsSpec {
    /// A Kubernetes quantity: `25Mi`, `10M` or a plain byte count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_size: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_recipients: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetrySpec {
    /// `5d`, `12h`, `30m`, `90s` or combinations such as `1d12h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lifetime: Option<String>,
}

/// A quantity as YAML gives it: `1048576` arrives as a number, `25Mi` as a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Quantity {
    Number(u64),
    Text(String),
}

/// Written by hand rather than `#[serde(untagged)]`, whose error ("did not match any
/// variant") would not tell the admin what a quantity looks like.
impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(QuantityVisitor)
    }
}

struct QuantityVisitor;

impl serde::de::Visitor<'_> for QuantityVisitor {
    type Value = Quantity;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a byte count or a quantity like 10M or 25Mi")
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
        Ok(Quantity::Number(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
        Ok(Quantity::Text(v.to_string()))
    }
}

impl RelayPolicy {
    /// `namespace/name`, or just `name` for a document without a namespace.
    pub fn id(&self) -> String {
        match &self.metadata.namespace {
            Some(ns) if !ns.is_empty() => format!("{ns}/{}", self.metadata.name),
            _ => self.metadata.name.clone(),
        }
    }
}

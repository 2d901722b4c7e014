//! The RelayPolicy resource as written by an admin: the serde types of the
//! `sluice.dev/v1alpha1` `RelayPolicy` document. The CRD spec is also the file format of
//! `sluice standalone`, so these types are the one schema for both.
//!
//! These types only describe the shape of the input; `compile.rs` validates the values
//! (domains, CIDRs, hashes, quantities) and turns them into the compiled rules.
//!
//! The same types generate the `relaypolicies.sluice.dev` CustomResourceDefinition
//! (`sluice crd`): [`RelayPolicySpec`] derives kube's `CustomResource`, which makes
//! [`RelayPolicyResource`], the object the operator reads from the API server. The schema
//! refuses what it can before an object is stored (enums, required fields, lengths, list
//! sizes, and CEL rules for "exactly one of"); what it cannot (CIDR syntax, hash formats,
//! conflicts across policies) `compile.rs` and the operator report.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
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
    pub status: Option<serde_json::Value>,
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
/// `trustedNetwork`) is an error rather than a silently missing rule; the API server's
/// structural schema prunes them instead, so `kubectl apply` of a typo warns there.
///
/// List sizes are bounded in the schema so that no single object can make the operator
/// or the snapshot unreasonably large; the API server's own object size limit (about
/// 1.5 MiB) comes first for most of them anyway.
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "RelayPolicy",
    root = "RelayPolicyResource",
    namespaced,
    status = "RelayPolicyStatus",
    shortname = "rp",
    category = "sluice",
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Users","type":"integer","jsonPath":".status.users"}"#,
    printcolumn = r#"{"name":"Domains","type":"integer","jsonPath":".status.domains"}"#,
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".status.revision"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RelayPolicySpec {
    /// Defaults to `authenticated`: an open relay has to be written out.
    #[serde(default)]
    pub mode: Mode,
    /// CIDRs or bare addresses (a bare address is a /32 or /128).
    #[serde(default)]
    #[schemars(length(max = 256), inner(length(min = 1, max = 43)))]
    pub trusted_networks: Vec<String>,
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub local_domains: Vec<LocalDomainSpec>,
    #[serde(default)]
    #[schemars(length(max = 1024), inner(length(min = 1, max = 254)))]
    pub relay_domains: Vec<String>,
    /// Addresses of this policy's relay domains that are accepted (Postfix's
    /// `relay_recipient_maps`); `@domain` accepts every address of it. A relay domain
    /// with an entry here refuses other addresses at RCPT with `550 5.1.1`; one without
    /// any entry accepts every address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10000), inner(length(min = 1, max = 320)))]
    pub relay_recipients: Vec<String>,
    #[serde(default)]
    #[schemars(length(max = 2048))]
    pub users: Vec<UserSpec>,
    #[serde(default)]
    #[schemars(length(max = 128))]
    pub routes: Vec<RouteSpec>,
    #[serde(default)]
    pub limits: LimitsSpec,
    #[serde(default)]
    pub retry: RetrySpec,
    /// Whether mail to address literals (`user@[192.0.2.1]`) is accepted and delivered.
    /// Refused by default: a literal skips DNS and with it every check on where mail may
    /// go. Several policies: allowed when any of them allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_literals: Option<AddressLiterals>,
    /// The checks between end of DATA and the reply, in order (see
    /// `policy::filters`). Several policies: at most one may have them, or all the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub filters: Option<Vec<super::filters::FilterSpec>>,
    /// DNS block lists asked about unauthenticated, untrusted clients at their first
    /// RCPT (see `policy::dnsbl`). Several policies: at most one may have them, or all
    /// the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dnsbl: Option<super::dnsbl::DnsblSpec>,
    /// DKIM keys the ingress signs authenticated and trusted mail with, and the key of
    /// ARC seals (see `policy::signing`). Several policies: at most one may have them,
    /// or all the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<super::signing::SigningSpec>,
}

/// What to do with recipients whose domain is an address literal (RFC 5321 4.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AddressLiterals {
    /// `550 5.7.1` at RCPT, and a bounce for one that reaches a worker anyway.
    #[default]
    Refuse,
    /// Accepted (for a client that may relay) and delivered to the address named.
    Allow,
}

/// Who may relay to foreign domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalDomainSpec {
    #[schemars(length(min = 1, max = 254))]
    pub domain: String,
    pub delivery: DeliverySpec,
    /// The addresses this domain accepts (Postfix's `local_recipient_maps`); `@domain`
    /// accepts every local part. Others are refused at RCPT with `550 5.1.1`, rather than
    /// accepted and bounced when delivery refuses them. Empty or omitted: every local part
    /// (that the delivery can take at all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10000), inner(length(min = 1, max = 320)))]
    pub recipients: Vec<String>,
}

/// Exactly one of the fields must be set. It is a struct of options rather than a serde
/// enum so that "two kinds given" and "none given" get a clear error of our own; in the
/// CRD a CEL rule says the same before the object is stored.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new(EXACTLY_ONE_DELIVERY).message("exactly one of lmtp, maildir, webhook must be set"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliverySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lmtp: Option<LmtpSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maildir: Option<MaildirSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
}

/// The CEL rule of [`DeliverySpec`]; `has()` on an absent optional field is false.
pub const EXACTLY_ONE_DELIVERY: &str =
    "(has(self.lmtp) ? 1 : 0) + (has(self.maildir) ? 1 : 0) + (has(self.webhook) ? 1 : 0) == 1";

/// The CEL rule of [`UserSpec`].
pub const EXACTLY_ONE_PASSWORD: &str = "has(self.passwordHash) != has(self.passwordSecretRef)";

/// The CEL rule of [`SmarthostSpec`]: the schema already requires both fields; this also
/// refuses the empty host and port 0 that a generated manifest tends to produce.
pub const SMARTHOST_HOST_AND_PORT: &str = "size(self.host) > 0 && self.port > 0";

/// LMTP delivery: `host:port` or the absolute path of a Unix socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LmtpSpec {
    #[schemars(length(min = 1, max = 4096))]
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaildirSpec {
    #[schemars(length(min = 1, max = 4096))]
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookSpec {
    #[schemars(length(max = 2048), regex(pattern = r"^https?://[^/\s]"))]
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret_ref: Option<SecretKeyRef>,
}

/// A key in a Secret of the policy's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A SASL user. Exactly one of `passwordHash` / `passwordSecretRef`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new(EXACTLY_ONE_PASSWORD).message("exactly one of passwordHash and passwordSecretRef must be set"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserSpec {
    /// The SASL user name: no spaces or control characters.
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[^\s\x00-\x1f\x7f]+$"))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<StoredHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// Full addresses or `@domain`. Empty means any sender (see `compile.rs`).
    #[serde(default)]
    #[schemars(length(max = 256), inner(length(min = 1, max = 320)))]
    pub allowed_senders: Vec<String>,
}

/// Recipient domains sent through one smarthost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    /// `example.com`, `*.example.com` (subdomains only) or `*` (everything).
    #[schemars(length(min = 1, max = 256), inner(length(min = 1, max = 256)))]
    pub domains: Vec<String>,
    pub smarthost: SmarthostSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new(SMARTHOST_HOST_AND_PORT).message("a smarthost needs a host and a port from 1 to 65535"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SmarthostSpec {
    #[schemars(length(min = 1, max = 255))]
    pub host: String,
    /// Required: 25, 465 and 587 are all common, so no default would be right for most.
    // Described as an int32: the API server knows only int32 and int64 as integer formats
    // and warns about the `uint16` schemars would write (likewise for the other integers).
    #[schemars(with = "i32", range(min = 1, max = 65535))]
    pub port: u16,
    /// Defaults to `starttls-required`: credentials and mail should not leave in clear
    /// text unless someone asked for it.
    #[serde(default)]
    pub tls: TlsMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<CredentialsSecretRef>,
}

/// Outbound TLS requirement towards a smarthost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    #[default]
    StarttlsRequired,
    ImplicitTls,
    Opportunistic,
}

/// Username and password of a smarthost, as two keys of one Secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialsSecretRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 253))]
    pub username_key: String,
    #[schemars(length(min = 1, max = 253))]
    pub password_key: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsSpec {
    /// A Kubernetes quantity: `25Mi`, `10M` or a plain byte count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_size: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i64>", range(min = 1))]
    pub max_recipients: Option<u64>,
    /// The most of a message a bounce returns (Postfix's `bounce_size_limit`), a
    /// quantity; 50000 bytes when omitted. A larger message comes back as its header
    /// only, whatever RET says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounce_size_limit: Option<Quantity>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetrySpec {
    /// `5d`, `12h`, `30m`, `90s` or combinations such as `1d12h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^([0-9]+[dhms])+$"))]
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

/// In the CRD, an int-or-string as Kubernetes writes quantities. Only the marker: kube's
/// structural rewrite strips the `type` of `anyOf` branches, so an `anyOf` of integer and
/// string would reach the CRD as an empty `anyOf: [{}, {}]` that says nothing.
impl JsonSchema for Quantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quantity".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "x-kubernetes-int-or-string": true,
        })
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

/// What the operator reports on each RelayPolicy (written by server-side apply under the
/// field manager `sluice-operator`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RelayPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (True when the policy's rules are in the snapshot in force), and
    /// `Conflict` while another policy disagrees with it.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Users the policy defines.
    #[serde(default)]
    #[schemars(with = "i64", range(min = 0))]
    pub users: u32,
    /// Local and relay domains the policy defines.
    #[serde(default)]
    #[schemars(with = "i64", range(min = 0))]
    pub domains: u32,
    /// The revision of the snapshot in force that includes this policy's rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// A status condition, as Kubernetes' `metav1.Condition` spells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase word a program can match on.
    pub reason: String,
    /// What a person should know, and do.
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// RFC 3339; when `status` last changed.
    pub last_transition_time: String,
}

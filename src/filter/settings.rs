//! The filter checks as compiled from a RelayPolicy's `filters:` and carried in the
//! policy snapshot: one [`CheckSettings`] per check, in the policy's order. Validated
//! by `policy::filters` before they get here, so building a pipeline from them cannot
//! fail on their values.

use super::attachments::Rules;
use super::scan::FailMode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Who skips a check.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Exemption {
    /// Sessions that authenticated (SASL).
    Authenticated,
    /// Clients in a trusted network of the policy.
    TrustedNetworks,
}

/// What a check's verdict is allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FilterMode {
    /// Verdicts take effect: refusals are refused, attachments cut.
    #[default]
    Enforce,
    /// Nothing is refused or cut: what the check would have done is written into an
    /// `X-Sluice-Filter` header (Rspamd's own headers are added as in `enforce`).
    Tag,
}

/// One compiled check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckSettings {
    /// Unique within the pipeline; in logs, metrics, events and `X-Sluice-Filter`.
    pub name: String,
    pub kind: CheckKind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exempt: Vec<Exemption>,
    pub timeout_ms: u64,
    pub fail_mode: FailMode,
    pub mode: FilterMode,
}

/// What a check runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CheckKind {
    Attachments(Rules),
    Rspamd {
        /// Rspamd's normal worker or proxy, e.g. `http://rspamd:11333`.
        url: String,
    },
    Clamav {
        /// `host:port` or `unix:/path`, tried in order until one answers.
        addresses: Vec<String>,
    },
    /// SPF, DKIM, ARC and DMARC (`filter::verify`).
    SenderAuth(SenderAuthSettings),
}

/// What sender authentication does beyond writing `Authentication-Results`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SenderAuthSettings {
    /// For a message that fails DMARC of a domain publishing `p=reject`.
    #[serde(default = "DmarcAction::reject")]
    pub dmarc_reject: DmarcAction,
    /// For a message that fails DMARC of a domain publishing `p=quarantine`.
    #[serde(default = "DmarcAction::tag")]
    pub dmarc_quarantine: DmarcAction,
}

impl Default for SenderAuthSettings {
    fn default() -> Self {
        SenderAuthSettings {
            dmarc_reject: DmarcAction::Reject,
            dmarc_quarantine: DmarcAction::Tag,
        }
    }
}

/// What becomes of a message that fails DMARC, for a domain policy that asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DmarcAction {
    /// Refuse it: `550 5.7.1`.
    Reject,
    /// Keep it in quarantine and deliver nothing.
    Quarantine,
    /// Deliver it with an `X-Sluice-Filter` header saying so.
    Tag,
    /// Deliver it; the `Authentication-Results` header still tells.
    Ignore,
}

impl DmarcAction {
    fn reject() -> DmarcAction {
        DmarcAction::Reject
    }
    fn tag() -> DmarcAction {
        DmarcAction::Tag
    }

    pub fn name(self) -> &'static str {
        match self {
            DmarcAction::Reject => "reject",
            DmarcAction::Quarantine => "quarantine",
            DmarcAction::Tag => "tag",
            DmarcAction::Ignore => "ignore",
        }
    }
}

impl CheckKind {
    /// The kind's name: the default check name and the `check` metric label.
    pub fn label(&self) -> &'static str {
        match self {
            CheckKind::Attachments(_) => "attachments",
            CheckKind::Rspamd { .. } => "rspamd",
            CheckKind::Clamav { .. } => "clamav",
            CheckKind::SenderAuth(_) => "sender-auth",
        }
    }

    /// The time limit when the policy gives none: above Rspamd's own 8 s task timeout
    /// so that it answers first; clamd takes a while on large archives.
    pub fn default_timeout_ms(&self) -> u64 {
        match self {
            CheckKind::Attachments(_) => 10_000,
            CheckKind::Rspamd { .. } => super::rspamd::DEFAULT_TIMEOUT.as_millis() as u64,
            CheckKind::Clamav { .. } => 30_000,
            // SPF alone may take ten lookups in turn (RFC 7208 4.6.4), DMARC and DKIM more.
            CheckKind::SenderAuth(_) => 20_000,
        }
    }
}

impl CheckSettings {
    /// One line for `sluice policy check`: the name, what it runs, how it fails.
    pub fn describe(&self) -> String {
        let target = match &self.kind {
            CheckKind::Attachments(_) => "attachment rules".to_string(),
            CheckKind::Rspamd { url } => format!("Rspamd at {url}"),
            CheckKind::Clamav { addresses } => format!("clamd at {}", addresses.join(", ")),
            CheckKind::SenderAuth(s) => format!(
                "SPF, DKIM, ARC, DMARC; p=reject: {}, p=quarantine: {}",
                s.dmarc_reject.name(),
                s.dmarc_quarantine.name()
            ),
        };
        let mode = match self.mode {
            FilterMode::Enforce => "enforce",
            FilterMode::Tag => "tag only",
        };
        let fail = match self.fail_mode {
            FailMode::Open => "fail open",
            FailMode::Closed => "fail closed",
        };
        format!(
            "{} ({target}; {mode}, {fail}, timeout {} ms)",
            self.name, self.timeout_ms
        )
    }

    /// Whether a sender of this trust skips the check.
    pub fn exempts(&self, trust: crate::envelope::SenderTrust) -> bool {
        use crate::envelope::SenderTrust;
        self.exempt.iter().any(|e| match e {
            Exemption::Authenticated => trust == SenderTrust::Authenticated,
            Exemption::TrustedNetworks => trust == SenderTrust::TrustedNetwork,
        })
    }
}

/// The compiled `signing:` section of a policy (`policy::signing` validates and compiles
/// it): the DKIM keys and the ARC key, each read by [`super::signing`] from a mounted Secret.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SigningSettings {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dkim: Vec<KeySettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arc: Option<KeySettings>,
}

/// One compiled key: the domain lower-case ASCII, the selector checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeySettings {
    pub domain: String,
    pub selector: String,
    pub key_secret_ref: SecretRef,
    /// Seconds from signing to `x=`; `None`: no `x=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_secs: Option<u64>,
}

impl KeySettings {
    /// One line for `sluice policy check`: what signs, and where its key comes from.
    pub fn describe(&self) -> String {
        let expiry = match self.expiration_secs {
            Some(secs) => format!(", expires after {secs} s"),
            None => String::new(),
        };
        format!(
            "d={} s={} (key: secret {}, key {}{expiry})",
            self.domain, self.selector, self.key_secret_ref.name, self.key_secret_ref.key
        )
    }
}

/// A key in a Secret mounted below the secrets directory: `{secretsDir}/{name}/{key}`.
/// Compilation checked both names (no '/', not '..'), so they make one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRef {
    pub name: String,
    pub key: String,
}

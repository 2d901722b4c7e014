//! The `filters:` section of a RelayPolicy: its schema ([`FilterSpec`], one item per
//! check, in order) and its compilation into the [`CheckSettings`] the ingress runs.
//!
//! ```yaml
//! filters:
//!   - attachments: {everyAttachment: {action: strip}}
//!     exempt: [authenticated]
//!   - rspamd: {url: "http://rspamd:11333"}
//!     failMode: open
//!   - clamav: {addresses: ["clamd-0.clamd:3310", "clamd-1.clamd:3310"]}
//!     timeout: 60s
//!   - senderAuth: {dmarcReject: reject, dmarcQuarantine: tag}
//! ```
//!
//! Several policies: at most one may carry a `filters:` section unless they say the
//! same (`merge.rs`); checks do not merge item by item, since their order decides which
//! refusal a client hears.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::error::{Location, PolicyError};
use crate::filter::attachments::Rules as AttachmentRules;
use crate::filter::clamd::ClamdAddress;
use crate::filter::rspamd::RspamdConfig;
use crate::filter::scan::FailMode;
use crate::filter::settings::{
    CheckKind, CheckSettings, Exemption, FilterMode, SenderAuthSettings,
};

/// The most checks one pipeline runs.
pub const MAX_CHECKS: usize = 16;
/// The longest time limit a check may have: the client waits for the reply that long,
/// and RFC 5321 4.5.3.2.6 gives it 10 minutes in all.
pub const MAX_TIMEOUT_MS: u64 = 300_000;

/// One check. Exactly one of `attachments`, `rspamd`, `clamav`, `senderAuth`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new(EXACTLY_ONE_CHECK).message("exactly one of attachments, rspamd, clamav, senderAuth must be set"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterSpec {
    /// For logs, metrics, events and the `X-Sluice-Filter` header; the check's kind
    /// when omitted. Unique within the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: Option<String>,
    /// Attachment rules; every rule left out takes its default (blocked executables,
    /// double extensions, disguised names, archives, zip bombs), `null` turns one off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<AttachmentRules>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rspamd: Option<RspamdSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clamav: Option<ClamavSpec>,
    /// SPF, DKIM, ARC and DMARC of mail from the Internet, recorded in an
    /// `Authentication-Results` header; DMARC failures handled as given here. Always
    /// skipped for authenticated senders and trusted networks (their mail is ours to
    /// sign, not to verify).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_auth: Option<SenderAuthSettings>,
    /// Senders that skip this check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    pub exempt: Vec<Exemption>,
    /// How long the check may take: `10s`, `2m`. Defaults: attachments 10s, rspamd 10s
    /// (above Rspamd's own 8 s task timeout), clamav 30s, senderAuth 20s; at most 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16), regex(pattern = r"^([0-9]+[dhms])+$"))]
    pub timeout: Option<String>,
    /// When the check gives no verdict (scanner down, error, timeout): `closed`
    /// (default) answers 451 4.7.1, `open` accepts the message unchecked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_mode: Option<FailMode>,
    /// `enforce` (default) or `tag`: only add headers, never refuse or cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<FilterMode>,
}

/// The CEL rule of [`FilterSpec`].
pub const EXACTLY_ONE_CHECK: &str = "(has(self.attachments) ? 1 : 0) + (has(self.rspamd) ? 1 : 0) + (has(self.clamav) ? 1 : 0) + (has(self.senderAuth) ? 1 : 0) == 1";

/// Rspamd's HTTP protocol (`/checkv2`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RspamdSpec {
    /// Rspamd's normal worker or proxy: `http://rspamd:11333`.
    #[schemars(length(max = 2048), regex(pattern = r"^https?://[^/\s]"))]
    pub url: String,
}

/// clamd's `zINSTREAM`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClamavSpec {
    /// `host:port` or `unix:/path`; the next is tried when one cannot be reached.
    #[schemars(length(min = 1, max = 8), inner(length(min = 1, max = 1024)))]
    pub addresses: Vec<String>,
}

/// Validates a policy's checks; `field` errors name `spec.filters[i]....`.
pub fn compile(at: &Location, specs: &[FilterSpec]) -> Result<Vec<CheckSettings>, PolicyError> {
    let invalid = |field: String, reason: String| PolicyError::InvalidField {
        at: at.clone(),
        field,
        reason,
    };
    if specs.len() > MAX_CHECKS {
        return Err(invalid(
            "spec.filters".into(),
            format!("{} checks, at most {MAX_CHECKS}", specs.len()),
        ));
    }
    let mut checks: Vec<CheckSettings> = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let field = |name: &str| format!("spec.filters[{i}]{name}");
        let kind = kind(spec).map_err(|(name, reason)| invalid(field(name), reason))?;
        let name = spec
            .name
            .clone()
            .unwrap_or_else(|| kind.label().to_string());
        if !valid_name(&name) {
            return Err(invalid(
                field(".name"),
                "lower-case letters, digits and dashes, at most 63".into(),
            ));
        }
        if checks.iter().any(|c| c.name == name) {
            return Err(invalid(
                field(".name"),
                format!("a second check named {name:?}: give each its own name"),
            ));
        }
        let timeout_ms = match &spec.timeout {
            None => kind.default_timeout_ms(),
            Some(text) => crate::units::parse_duration(text)
                .map(|d| d.as_millis() as u64)
                .map_err(|e| invalid(field(".timeout"), e))?,
        };
        if timeout_ms == 0 || timeout_ms > MAX_TIMEOUT_MS {
            return Err(invalid(
                field(".timeout"),
                "from 1s to 5m: the client is waiting for the reply".into(),
            ));
        }
        let mut exempt = spec.exempt.clone();
        if matches!(kind, CheckKind::SenderAuth(_)) {
            exempt = vec![Exemption::Authenticated, Exemption::TrustedNetworks];
        }
        exempt.sort();
        exempt.dedup();
        let check = CheckSettings {
            name,
            kind,
            exempt,
            timeout_ms,
            fail_mode: spec.fail_mode.unwrap_or_default(),
            mode: spec.mode.unwrap_or_default(),
        };
        bounded(&check).map_err(|(name, reason)| invalid(field(name), reason))?;
        checks.push(check);
    }
    Ok(checks)
}

/// Checks compiled settings read from elsewhere (a snapshot in the NATS KV bucket) as
/// compilation checked them: hostile until then, since they steer where message
/// content is sent and how much work each message costs.
pub fn check(checks: &[CheckSettings]) -> Result<(), String> {
    if checks.len() > MAX_CHECKS {
        return Err(format!(
            "filters: {} checks, at most {MAX_CHECKS}",
            checks.len()
        ));
    }
    for (i, check) in checks.iter().enumerate() {
        let fail = |(field, reason): (&str, String)| format!("filters[{i}]{field}: {reason}");
        if !valid_name(&check.name) || checks[..i].iter().any(|c| c.name == check.name) {
            return Err(fail((".name", "not a unique check name".into())));
        }
        if check.timeout_ms == 0 || check.timeout_ms > MAX_TIMEOUT_MS {
            return Err(fail((".timeout", "out of range".into())));
        }
        match &check.kind {
            CheckKind::Rspamd { url } => {
                RspamdConfig::new(url, std::time::Duration::from_secs(1))
                    .map_err(|e| fail((".rspamd.url", e.to_string())))?;
            }
            CheckKind::Clamav { addresses } => {
                if addresses.is_empty() || addresses.len() > 8 {
                    return Err(fail((".clamav.addresses", "from 1 to 8 addresses".into())));
                }
                for address in addresses {
                    ClamdAddress::parse(address).map_err(|e| fail((".clamav.addresses", e)))?;
                }
            }
            CheckKind::SenderAuth(_) => {
                if check.exempt.len() != 2 {
                    return Err(fail((
                        ".exempt",
                        "sender authentication exempts authenticated and trusted senders".into(),
                    )));
                }
            }
            CheckKind::Attachments(_) => {}
        }
        bounded(check).map_err(fail)?;
    }
    Ok(())
}

/// The list sizes the CRD schema bounds, for files and snapshots that skip the schema.
fn bounded(check: &CheckSettings) -> Result<(), (&'static str, String)> {
    let CheckKind::Attachments(rules) = &check.kind else {
        return Ok(());
    };
    let too_long = |list: &[String], max_len: usize| {
        list.len() > 256
            || list
                .iter()
                .any(|item| item.is_empty() || item.len() > max_len)
    };
    if let Some(rule) = &rules.blocked_extensions
        && too_long(&rule.extensions, 32)
    {
        return Err((
            ".attachments.blockedExtensions.extensions",
            "at most 256, each of 1 to 32 characters".into(),
        ));
    }
    if let Some(rule) = &rules.blocked_real_types
        && too_long(&rule.types, 128)
    {
        return Err((
            ".attachments.blockedRealTypes.types",
            "at most 256, each of 1 to 128 characters".into(),
        ));
    }
    Ok(())
}

/// The check's kind, or the field and reason it is refused for.
fn kind(spec: &FilterSpec) -> Result<CheckKind, (&'static str, String)> {
    const ONE: &str = "exactly one of attachments, rspamd, clamav, senderAuth is required";
    match (
        &spec.attachments,
        &spec.rspamd,
        &spec.clamav,
        &spec.sender_auth,
    ) {
        (Some(rules), None, None, None) => Ok(CheckKind::Attachments(rules.clone())),
        (None, None, None, Some(settings)) => Ok(CheckKind::SenderAuth(*settings)),
        (None, Some(rspamd), None, None) => {
            RspamdConfig::new(&rspamd.url, std::time::Duration::from_secs(1))
                .map_err(|e| (".rspamd.url", e.to_string()))?;
            Ok(CheckKind::Rspamd {
                url: rspamd.url.clone(),
            })
        }
        (None, None, Some(clamav), None) => {
            if clamav.addresses.is_empty() || clamav.addresses.len() > 8 {
                return Err((".clamav.addresses", "from 1 to 8 addresses".into()));
            }
            for address in &clamav.addresses {
                ClamdAddress::parse(address).map_err(|e| (".clamav.addresses", e))?;
            }
            Ok(CheckKind::Clamav {
                addresses: clamav.addresses.clone(),
            })
        }
        (None, None, None, None) => Err(("", format!("{ONE}; none is given"))),
        _ => Err(("", format!("{ONE}; several are given"))),
    }
}

fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

#[cfg(test)]
#[path = "filters_tests.rs"]
mod tests;

//! The attachment rules (to sit under `filters:` in a RelayPolicy) and their
//! evaluation against an [`Analysis`].
//!
//! Each rule is optional (`null` turns it off; a missing field takes the default) and
//! carries the [`Action`] to take when it matches. Names are compared in their
//! canonical form ([`names::canonical`]), so `INVOICE.EXE.` and `invoice\u{202E}fdp.exe`
//! match `exe`.

use super::{Analysis, ArchiveStop, Attachment, MessageStop, PartRange, names};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// What to do with a message a rule matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Refuse the message (a 5xx at end of DATA).
    Reject,
    /// Replace the matched attachment with a notice.
    Strip,
    /// Keep the message aside for review.
    Quarantine,
    /// Replace every attachment of the message with notices.
    StripAll,
}

/// A rule that only needs an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActionRule {
    pub action: Action,
}

/// Extensions (without the dot, any case) that may not be attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionRule {
    pub action: Action,
    #[schemars(length(max = 256), inner(length(min = 1, max = 32)))]
    pub extensions: Vec<String>,
}

/// MIME types, as found by magic bytes, that may not be attached whatever the name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TypeRule {
    pub action: Action,
    #[schemars(length(max = 256), inner(length(min = 1, max = 128)))]
    pub types: Vec<String>,
}

/// A size above which the rule matches: octets, or a quantity such as `10Mi`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SizeRule {
    pub action: Action,
    #[serde(deserialize_with = "size")]
    #[schemars(with = "crate::units::IntOrString")]
    pub max: u64,
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Octets(u64),
        Quantity(String),
    }
    match Size::deserialize(d)? {
        Size::Octets(n) => Ok(n),
        Size::Quantity(text) => crate::units::parse_size(&text).map_err(serde::de::Error::custom),
    }
}

/// The big providers' list of extensions Windows runs or installs (Gmail's and
/// Microsoft 365's common attachment filter, merged).
pub const DEFAULT_BLOCKED_EXTENSIONS: &[&str] = &[
    "ade",
    "adp",
    "app",
    "appx",
    "appxbundle",
    "bat",
    "cab",
    "chm",
    "cmd",
    "com",
    "cpl",
    "dll",
    "dmg",
    "exe",
    "gadget",
    "hta",
    "inf",
    "ins",
    "iso",
    "isp",
    "jar",
    "js",
    "jse",
    "lib",
    "lnk",
    "mde",
    "msc",
    "msi",
    "msix",
    "msixbundle",
    "msp",
    "mst",
    "nsh",
    "pif",
    "ps1",
    "reg",
    "scr",
    "sct",
    "shb",
    "sys",
    "vb",
    "vbe",
    "vbs",
    "vhd",
    "vhdx",
    "vxd",
    "wsc",
    "wsf",
    "wsh",
    "xll",
];

/// Executables by magic bytes (the names `infer` gives them): PE (Windows .exe and
/// .dll), ELF and Mach-O.
pub const DEFAULT_BLOCKED_TYPES: &[&str] = &[
    "application/vnd.microsoft.portable-executable",
    "application/x-executable",
    "application/x-mach-binary",
];

/// The attachment rules. `Rules::default()` is what a policy gets without `filters:`
/// settings of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Rules {
    /// Every attachment and named inline part, whatever it is: with `strip`, the
    /// front-end filter that passes text only. Default: off.
    pub every_attachment: Option<ActionRule>,
    /// Default: reject [`DEFAULT_BLOCKED_EXTENSIONS`].
    pub blocked_extensions: Option<ExtensionRule>,
    /// Default: reject [`DEFAULT_BLOCKED_TYPES`].
    pub blocked_real_types: Option<TypeRule>,
    /// A blocked extension after another one (`invoice.pdf.exe`). Default: reject.
    pub double_extensions: Option<ActionRule>,
    /// Names with bidi or zero-width characters or trailing dots or spaces.
    /// Default: reject.
    pub disguised_names: Option<ActionRule>,
    /// Apply the extension and type lists to the entries of zip archives, nested ones
    /// included. Default: reject.
    pub inside_archives: Option<ActionRule>,
    /// Archives with an encrypted entry (which no scanner can look into).
    /// Default: quarantine.
    pub encrypted_archives: Option<ActionRule>,
    /// A limit stopped the analysis: a zip bomb, too many entries, nesting too deep,
    /// an unreadable archive, or a MIME tree too deep or too wide. Default: reject.
    pub limits_reached: Option<ActionRule>,
    /// Decoded size of any one attachment. Default: off.
    pub max_attachment_size: Option<SizeRule>,
    /// Decoded size of all attachments together. Default: off.
    pub max_total_size: Option<SizeRule>,
}

impl Default for Rules {
    fn default() -> Self {
        let reject = || {
            Some(ActionRule {
                action: Action::Reject,
            })
        };
        Self {
            blocked_extensions: Some(ExtensionRule {
                action: Action::Reject,
                extensions: DEFAULT_BLOCKED_EXTENSIONS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            }),
            blocked_real_types: Some(TypeRule {
                action: Action::Reject,
                types: DEFAULT_BLOCKED_TYPES
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            }),
            double_extensions: reject(),
            disguised_names: reject(),
            inside_archives: reject(),
            encrypted_archives: Some(ActionRule {
                action: Action::Quarantine,
            }),
            limits_reached: reject(),
            max_attachment_size: None,
            max_total_size: None,
            every_attachment: None,
        }
    }
}

/// Which rule matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Rule {
    EveryAttachment,
    BlockedExtension,
    BlockedRealType,
    DoubleExtension,
    DisguisedName,
    InsideArchive,
    EncryptedArchive,
    LimitsReached,
    MaxAttachmentSize,
    MaxTotalSize,
}

/// One rule matched by one file (or by the whole message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The file: the attachment's name, `archive.zip/dir/entry.exe` for an archive
    /// entry, `""` for the message as a whole or a part without a name.
    pub file: String,
    pub rule: Rule,
    pub action: Action,
    /// What matched, for logs and notices: the extension, the type, the limit.
    pub detail: String,
    /// The part to cut for `strip`; `None` when the finding is about the message.
    pub range: Option<PartRange>,
}

/// Every finding of `rules` on `analysis`, in attachment order.
pub fn evaluate(analysis: &Analysis, rules: &Rules) -> Vec<Finding> {
    let mut findings = Vec::new();
    for attachment in &analysis.attachments {
        per_attachment(attachment, rules, &mut findings);
    }
    if let (Some(stop), Some(rule)) = (analysis.stopped, &rules.limits_reached) {
        let detail = match stop {
            MessageStop::TooDeep => "MIME parts nested too deep",
            MessageStop::TooManyParts => "too many MIME parts",
            MessageStop::Unparseable => "MIME structure the parser cannot read",
        };
        findings.push(finding("", Rule::LimitsReached, rule.action, detail, None));
    }
    if let Some(rule) = &rules.max_total_size {
        let total: u64 = analysis.attachments.iter().map(|a| a.size).sum();
        if total > rule.max {
            let detail = format!("attachments total {total} octets, over {}", rule.max);
            findings.push(finding("", Rule::MaxTotalSize, rule.action, &detail, None));
        }
    }
    findings
}

fn finding(
    file: &str,
    rule: Rule,
    action: Action,
    detail: &str,
    range: Option<PartRange>,
) -> Finding {
    Finding {
        file: file.to_string(),
        rule,
        action,
        detail: detail.to_string(),
        range,
    }
}

fn per_attachment(a: &Attachment, rules: &Rules, out: &mut Vec<Finding>) {
    let file = a.name.clone().unwrap_or_default();
    let range = a.range;
    let mut push = |rule: Rule, action: Action, detail: &str| {
        out.push(finding(&file, rule, action, detail, range));
    };
    if let Some(rule) = &rules.every_attachment {
        push(Rule::EveryAttachment, rule.action, "attachment");
    }
    if let Some(name) = &a.name {
        let canonical = names::canonical(name);
        let extensions = names::extensions(&canonical);
        if let (Some(rule), Some(last)) = (&rules.blocked_extensions, extensions.first())
            && is_listed(&rule.extensions, last)
        {
            push(Rule::BlockedExtension, rule.action, &format!(".{last}"));
            if let (Some(double), Some(before)) = (&rules.double_extensions, extensions.get(1)) {
                push(
                    Rule::DoubleExtension,
                    double.action,
                    &format!(".{before}.{last}"),
                );
            }
        }
        if let Some(rule) = &rules.disguised_names
            && names::is_disguised(name)
        {
            push(
                Rule::DisguisedName,
                rule.action,
                "hidden characters or trailing dots",
            );
        }
    }
    if let (Some(rule), Some(real)) = (&rules.blocked_real_types, a.real_type)
        && is_listed(&rule.types, real)
    {
        push(Rule::BlockedRealType, rule.action, real);
    }
    if let Some(rule) = &rules.max_attachment_size
        && a.size > rule.max
    {
        let detail = format!("{} octets, over {}", a.size, rule.max);
        push(Rule::MaxAttachmentSize, rule.action, &detail);
    }
    let Some(archive) = &a.archive else {
        return;
    };
    if let Some(rule) = &rules.inside_archives {
        archive.walk(&mut |entry| {
            let canonical = names::canonical(&entry.name);
            let blocked_ext = names::extensions(&canonical)
                .first()
                .copied()
                .filter(|ext| {
                    rules
                        .blocked_extensions
                        .as_ref()
                        .is_some_and(|r| is_listed(&r.extensions, ext))
                });
            let blocked_type = entry.real_type.filter(|t| {
                rules
                    .blocked_real_types
                    .as_ref()
                    .is_some_and(|r| is_listed(&r.types, t))
            });
            let detail = match (blocked_ext, blocked_type) {
                (Some(ext), _) => format!(".{ext}"),
                (None, Some(t)) => t.to_string(),
                (None, None) => return,
            };
            out.push(finding(
                &format!("{file}/{}", entry.name),
                Rule::InsideArchive,
                rule.action,
                &detail,
                range,
            ));
        });
    }
    if let Some(rule) = &rules.encrypted_archives {
        let mut encrypted = false;
        archive.walk(&mut |entry| encrypted |= entry.encrypted);
        if encrypted {
            out.push(finding(
                &file,
                Rule::EncryptedArchive,
                rule.action,
                "encrypted entries",
                range,
            ));
        }
    }
    if let (Some(rule), Some(stop)) = (&rules.limits_reached, archive.any_stop()) {
        let detail = match stop {
            ArchiveStop::TooManyEntries => "archive with too many entries",
            ArchiveStop::TooLarge => "archive too large when decompressed (zip bomb)",
            ArchiveStop::TooDeep => "archives nested too deep",
            ArchiveStop::Unreadable => "unreadable archive",
        };
        out.push(finding(
            &file,
            Rule::LimitsReached,
            rule.action,
            detail,
            range,
        ));
    }
}

fn is_listed(list: &[String], value: &str) -> bool {
    list.iter()
        .any(|item| item.trim_start_matches('.').eq_ignore_ascii_case(value))
}

//! Each kind of check, run on one message: what it found, as a [`Found`] that the
//! pipeline combines. Scanner failures come back as errors; the pipeline applies the
//! check's fail mode, its time limit and its tag mode.

use super::attachments::{self, Action, Analysis, Finding, PartRange, Rule, Rules};
use super::clamd::{self, ClamVerdict, ClamdAddress};
use super::rspamd::{self, RspamdAction, RspamdConfig};
use super::scan::{Rewrite, ScanContext, ScanError, Verdict, reply_text};
use crate::smtp::reply::Reply;
use std::time::Duration;

/// What one check found.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    Clean,
    /// Refuse the message: the reply, and a line for logs.
    Reject(Reply, String),
    /// Refuse it for now.
    Tempfail(Reply, String),
    /// Change its header section (Rspamd's `add header` and `rewrite subject`).
    Headers(Rewrite, String),
    /// Replace these parts with notices; `hold` keeps the original in quarantine.
    Cut {
        cuts: Vec<(PartRange, String)>,
        hold: bool,
        detail: String,
    },
    /// Keep the whole message in quarantine and deliver nothing: a quarantine rule
    /// matched the message as a whole (no part to cut).
    HoldAll(String),
}

impl Found {
    /// The `result` metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Found::Clean => "accept",
            Found::Reject(..) => "reject",
            Found::Tempfail(..) => "tempfail",
            Found::Headers(..) => "rewrite",
            Found::Cut { hold: false, .. } => "strip",
            Found::Cut { hold: true, .. } | Found::HoldAll(_) => "quarantine",
        }
    }

    /// A line for logs, events and `X-Sluice-Filter`.
    pub fn detail(&self) -> &str {
        match self {
            Found::Clean => "",
            Found::Reject(_, d)
            | Found::Tempfail(_, d)
            | Found::Headers(_, d)
            | Found::Cut { detail: d, .. }
            | Found::HoldAll(d) => d,
        }
    }
}

/// The attachment rules on `message`. CPU only, bounded by the analyser's limits.
pub fn attachments(message: &[u8], rules: &Rules, queue_id: &str) -> Found {
    let analysis = attachments::analyse(message, &attachments::Limits::default());
    let findings = attachments::evaluate(&analysis, rules);
    judge(&analysis, &findings, queue_id)
}

/// The findings as one verdict. A refusal wins over everything; `strip` or `strip-all`
/// of the message as a whole (a single-part message is its own attachment: there is
/// no part to cut without rewriting its header) is a refusal too.
fn judge(analysis: &Analysis, findings: &[Finding], queue_id: &str) -> Found {
    let Some(first) = findings.first() else {
        return Found::Clean;
    };
    let strip_all = findings.iter().any(|f| f.action == Action::StripAll);
    let whole = |f: &&Finding| {
        f.action == Action::Reject
            || (matches!(f.action, Action::Strip | Action::StripAll) && f.range.is_none())
    };
    let unsplittable = strip_all && analysis.attachments.iter().any(|a| a.range.is_none());
    if let Some(f) = findings
        .iter()
        .find(whole)
        .or(unsplittable.then_some(first))
    {
        let text = format!("Message refused: {}", describe(f));
        return Found::Reject(Reply::new(550, "5.7.1", reply_text(&text)), describe(f));
    }
    if let Some(f) = findings
        .iter()
        .find(|f| f.action == Action::Quarantine && f.range.is_none())
    {
        return Found::HoldAll(describe(f));
    }
    let hold = findings.iter().any(|f| f.action == Action::Quarantine);
    let notice = |what: &str, why: &str| {
        let mut text = format!("The attachment {what:?} was removed by the mail relay: {why}.");
        if hold {
            text.push_str(&format!(
                " The original message is held in quarantine as {queue_id}."
            ));
        }
        text.push_str("\r\n");
        text
    };
    let mut cuts: Vec<(PartRange, String)> = findings
        .iter()
        .filter(|f| matches!(f.action, Action::Strip | Action::Quarantine))
        .filter_map(|f| f.range.map(|r| (r, notice(part_name(f), &rule_text(f)))))
        .collect();
    if strip_all {
        for a in &analysis.attachments {
            if let Some(range) = a.range
                && !cuts.iter().any(|(r, _)| *r == range)
            {
                let name = a.name.as_deref().unwrap_or("(no name)");
                cuts.push((range, notice(name, "every attachment is removed")));
            }
        }
    }
    let detail = findings.iter().map(describe).collect::<Vec<_>>().join("; ");
    Found::Cut { cuts, hold, detail }
}

fn part_name(f: &Finding) -> &str {
    // An archive entry's finding cuts the archive: name the archive.
    let name = f.file.split('/').next().unwrap_or_default();
    if name.is_empty() { "(no name)" } else { name }
}

fn rule_text(f: &Finding) -> String {
    let rule = match f.rule {
        Rule::EveryAttachment => return "every attachment is removed".into(),
        Rule::BlockedExtension => "blocked file type",
        Rule::BlockedRealType => "blocked content",
        Rule::DoubleExtension => "double extension",
        Rule::DisguisedName => "disguised file name",
        Rule::InsideArchive => "blocked file inside an archive",
        Rule::EncryptedArchive => "encrypted archive",
        Rule::LimitsReached => "cannot be examined",
        Rule::MaxAttachmentSize => "attachment too large",
        Rule::MaxTotalSize => "attachments too large",
    };
    format!("{rule} ({})", f.detail)
}

fn describe(f: &Finding) -> String {
    if f.file.is_empty() {
        rule_text(f)
    } else {
        format!("attachment {:?}: {}", f.file, rule_text(f))
    }
}

/// Rspamd's answer. A refusal keeps Rspamd's `smtp_message`; in tag mode the pipeline
/// needs the spam headers too, so they come with it ([`spam_headers`]).
pub async fn rspamd(
    cfg: &RspamdConfig,
    message: &[u8],
    context: &ScanContext,
) -> Result<(Found, Rewrite), ScanError> {
    let answer = rspamd::check(cfg, message, context).await?;
    let detail = format!(
        "score {:.2}/{:.2} {}",
        answer.score,
        answer.required_score,
        answer.symbols.join(",")
    );
    let detail = detail.chars().take(400).collect::<String>();
    let tag = spam_headers(answer.score, answer.required_score);
    let found = match answer.verdict {
        Verdict::Accept => Found::Clean,
        Verdict::Reject(reply) => Found::Reject(reply, detail),
        Verdict::Tempfail(reply) => Found::Tempfail(reply, detail),
        Verdict::Rewrite(rewrite) => Found::Headers(rewrite, detail),
    };
    let tag = match answer.action {
        RspamdAction::Reject | RspamdAction::SoftReject | RspamdAction::Greylist => tag,
        _ => Rewrite::default(),
    };
    Ok((found, tag))
}

/// The headers Rspamd's `add header` action maps to, for a refusal in tag mode.
fn spam_headers(score: f64, required: f64) -> Rewrite {
    Rewrite {
        add_headers: vec![
            (
                "X-Spam-Status".into(),
                format!("Yes, score={score:.2} required={required:.2}"),
            ),
            ("X-Spam-Score".into(), format!("{score:.2}")),
            ("X-Spam-Flag".into(), "YES".into()),
        ],
        ..Rewrite::default()
    }
}

/// clamd's answer: a signature found is a refusal naming it.
pub async fn clamav(
    addresses: &[ClamdAddress],
    message: &[u8],
    timeout: Duration,
) -> Result<Found, ScanError> {
    Ok(match clamd::scan(addresses, message, timeout).await? {
        ClamVerdict::Clean => Found::Clean,
        ClamVerdict::Infected(signature) => {
            let text = format!("Message refused: malware found ({signature})");
            Found::Reject(
                Reply::new(550, "5.7.1", reply_text(&text)),
                format!("malware {signature}"),
            )
        }
    })
}

//! The filter pipeline: the policy's checks run on a message between the end of its
//! content and the reply, and their verdicts combined into one [`Outcome`].
//!
//! Every check sees the message as received, so none depends on another and they all
//! run at once: the slowest one bounds the latency, and each has its own time limit.
//! The policy's order is the order of precedence:
//! - a refusal (550) by any check wins, the first in order giving the reply; else
//! - a deferral (451: a soft verdict, or a check that failed closed); else
//! - the message is accepted, with the changes of every check applied in order: parts
//!   cut by the first attachment check that cuts, then each check's header changes.
//!
//! A check in `tag` mode never refuses or cuts: what it would have done is written
//! into an `X-Sluice-Filter` header. Incoming `X-Sluice-Filter` fields are removed
//! whenever a check runs, so a sender cannot forge one.

use super::checks::{self, Found};
use super::clamd::ClamdAddress;
use super::rewrite;
use super::rspamd::RspamdConfig;
use super::scan::{FailMode, Rewrite, ScanContext, header_value};
use super::settings::{CheckKind, CheckSettings, FilterMode};
use super::verify::{Verified, Verifier};
use crate::envelope::SenderTrust;
use crate::smtp::reply::Reply;
use bytes::Bytes;
use std::time::{Duration, Instant};

/// The header that records checks in tag mode.
pub const TAG_HEADER: &str = "X-Sluice-Filter";

/// Messages at least this large are analysed on a blocking thread: below it the
/// analysis takes microseconds and a thread hand-off would cost more than it saves.
const BLOCKING_ABOVE: usize = 256 * 1024;

/// The compiled checks, ready to run; built once per policy snapshot.
#[derive(Debug, Default)]
pub struct Pipeline {
    checks: Vec<Check>,
    /// Our host name when a sender-authentication check is configured: fields of
    /// `Authentication-Results` claiming it are removed from every message, exempt
    /// senders' too, since no sender can have been given a result of ours.
    results_id: Option<String>,
    /// Seals the results of sender authentication into an ARC set over the message as
    /// it leaves (`filter::seal`), when the policy has an ARC key.
    sealer: Option<super::seal::Sealer>,
}

/// What the checks need from the process besides their settings.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// The relay's host name: the `authserv-id` of `Authentication-Results`.
    pub hostname: String,
    /// DNS for sender authentication; `None` makes such a check fail (its fail mode).
    pub dns: Option<hickory_resolver::TokioResolver>,
}

#[derive(Debug)]
struct Check {
    settings: CheckSettings,
    runner: Runner,
}

#[derive(Debug)]
enum Runner {
    Attachments(super::attachments::Rules),
    Rspamd(RspamdConfig),
    Clamav(Vec<ClamdAddress>),
    /// Boxed: the resolver inside is large, and built once per policy revision.
    SenderAuth(Box<Verifier>),
    /// Settings that do not build (a snapshot from a newer or broken writer): every
    /// run fails with this reason, and the check's fail mode decides.
    Broken(String),
}

/// One check's result, for logs, metrics and events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub name: String,
    /// The check's kind: the `check` metric label.
    pub kind: &'static str,
    /// `accept`, `reject`, `tempfail`, `rewrite`, `strip`, `quarantine`, `exempt`,
    /// `error` (no verdict; the fail mode applied) or `tag` (a verdict only tagged).
    pub result: &'static str,
    pub detail: String,
    pub elapsed: Duration,
}

/// What becomes of the message.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// Queue it: `content` when the checks changed it, else the message as received.
    Accept { content: Option<Vec<u8>> },
    /// Answer this 5xx or 4xx reply.
    Refuse(Reply),
}

/// The pipeline's answer for one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub disposition: Disposition,
    /// Keep the original in quarantine, with this reason, before answering 250.
    pub hold: Option<String>,
    /// Whether the (possibly changed) message goes to its recipients; false when a
    /// quarantine rule held the message as a whole.
    pub deliver: bool,
    pub results: Vec<CheckResult>,
}

impl Pipeline {
    /// Builds the checks of a snapshot. Settings were validated when the policy was
    /// compiled and when the snapshot was read; one that still cannot be built is kept
    /// as a check that fails (`Runner::Broken`), never dropped silently.
    pub fn new(settings: &[CheckSettings], env: &Environment) -> Pipeline {
        let checks = settings
            .iter()
            .map(|s| Check {
                settings: s.clone(),
                runner: runner(s, env),
            })
            .collect();
        let results_id = settings
            .iter()
            .any(|s| matches!(s.kind, CheckKind::SenderAuth(_)))
            .then(|| env.hostname.clone());
        Pipeline {
            checks,
            results_id,
            sealer: None,
        }
    }

    /// The pipeline sealing verified messages with `sealer`.
    pub fn with_sealer(mut self, sealer: Option<super::seal::Sealer>) -> Pipeline {
        self.sealer = sealer;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    /// Runs every check that applies to this sender on `message` and combines them.
    pub async fn run(&self, message: &Bytes, context: &ScanContext, trust: SenderTrust) -> Outcome {
        // Sender authentication parses the message its own way; once, for every such
        // check, and only when one applies to this sender.
        let verifies = self
            .checks
            .iter()
            .any(|c| matches!(c.runner, Runner::SenderAuth(_)) && !c.settings.exempts(trust));
        let parsed = if verifies {
            Verifier::parse(message)
        } else {
            None
        };
        let runs = self
            .checks
            .iter()
            .map(|check| check.run(message, parsed.as_ref(), context, trust));
        let found = futures_util::future::join_all(runs).await;
        let forged = self
            .results_id
            .as_deref()
            .map(|id| super::verify::forged_results(message, id))
            .unwrap_or_default();
        let mut outcome = combine(message, &found, forged);
        self.seal(&mut outcome, message, &found, context);
        outcome
    }

    /// Puts an ARC set over an accepted, verified message's final form. A message that
    /// cannot be sealed goes on without one: ARC is an aid to receivers further on, and
    /// the message stands on its own results without it.
    fn seal(&self, outcome: &mut Outcome, message: &[u8], ran: &[Ran<'_>], context: &ScanContext) {
        let Some(sealer) = &self.sealer else { return };
        let Disposition::Accept { content } = &mut outcome.disposition else {
            return;
        };
        if !outcome.deliver {
            return;
        }
        let verified =
            self.checks
                .iter()
                .zip(ran)
                .find_map(|(check, r)| match (&check.runner, &r.verified) {
                    (Runner::SenderAuth(verifier), Some(verified)) => Some((verifier, verified)),
                    _ => None,
                });
        let Some((verifier, verified)) = verified else {
            return;
        };
        let current = content.as_deref().unwrap_or(message);
        match sealer.seal(verifier, verified, context, current) {
            Ok(set) => {
                let mut sealed = Vec::with_capacity(set.len() + current.len());
                sealed.extend_from_slice(set.as_bytes());
                sealed.extend_from_slice(current);
                *content = Some(sealed);
            }
            Err(e) => tracing::warn!(queue_id = %context.queue_id, error = %e, "not ARC-sealed"),
        }
    }
}

fn runner(s: &CheckSettings, env: &Environment) -> Runner {
    let timeout = Duration::from_millis(s.timeout_ms);
    match &s.kind {
        CheckKind::SenderAuth(settings) => match &env.dns {
            Some(dns) => Runner::SenderAuth(Box::new(Verifier::new(
                dns.clone(),
                &env.hostname,
                *settings,
            ))),
            None => Runner::Broken("no DNS resolver in this process".into()),
        },
        CheckKind::Attachments(rules) => Runner::Attachments(rules.clone()),
        CheckKind::Rspamd { url } => match RspamdConfig::new(url, timeout) {
            Ok(cfg) => Runner::Rspamd(cfg),
            Err(e) => Runner::Broken(e.to_string()),
        },
        CheckKind::Clamav { addresses } => {
            match addresses.iter().map(|a| ClamdAddress::parse(a)).collect() {
                Ok(addresses) => Runner::Clamav(addresses),
                Err(e) => Runner::Broken(e),
            }
        }
    }
}

/// One check's verdict as it takes effect: what it found after exemption, time limit,
/// fail mode and tag mode, and the header changes that go with it.
struct Ran<'m> {
    found: Found,
    headers: Rewrite,
    result: CheckResult,
    /// Sender authentication's results, kept for an ARC seal over the final message.
    verified: Option<Verified<'m>>,
}

/// What a check's runner found: the verdict, the headers that go with a verdict that
/// tag mode only tags (Rspamd's spam headers), and the headers added whatever the mode
/// (`Authentication-Results`).
struct Finding<'m> {
    found: Found,
    tag: Rewrite,
    always: Rewrite,
    verified: Option<Verified<'m>>,
}

impl<'m> Finding<'m> {
    fn plain(found: Found) -> Finding<'m> {
        Finding {
            found,
            tag: Rewrite::default(),
            always: Rewrite::default(),
            verified: None,
        }
    }
}

impl Check {
    async fn run<'m>(
        &self,
        message: &Bytes,
        parsed: Option<&'m mail_auth::AuthenticatedMessage<'m>>,
        context: &ScanContext,
        trust: SenderTrust,
    ) -> Ran<'m> {
        let s = &self.settings;
        let started = Instant::now();
        let result = |result: &'static str, detail: String| CheckResult {
            name: s.name.clone(),
            kind: s.kind.label(),
            result,
            detail,
            elapsed: started.elapsed(),
        };
        if s.exempts(trust) {
            return Ran::clean(result("exempt", String::new()));
        }
        let limit = Duration::from_millis(s.timeout_ms);
        let ran = tokio::time::timeout(limit, self.find(message, parsed, context, limit)).await;
        let Finding {
            found,
            tag,
            always,
            verified,
        } = match ran {
            Ok(Ok(finding)) => finding,
            Ok(Err(error)) => return failed(s, error.to_string(), result),
            Err(_) => return failed(s, format!("no verdict within {limit:?}"), result),
        };
        let label = found.label();
        let detail = found.detail().to_string();
        let (found, mut headers, result) = match (s.mode, found) {
            (FilterMode::Enforce, Found::Headers(headers, d)) => {
                (Found::Clean, headers, result(label, d))
            }
            (FilterMode::Enforce, found) => (found, Rewrite::default(), result(label, detail)),
            (FilterMode::Tag, Found::Clean) => {
                (Found::Clean, Rewrite::default(), result(label, detail))
            }
            (FilterMode::Tag, found) => {
                let mut headers = match found {
                    Found::Headers(headers, _) => headers,
                    _ => tag,
                };
                let value = header_value(&format!("{}; {label}; {detail}", s.name));
                headers.add_headers.push((TAG_HEADER.to_string(), value));
                (Found::Clean, headers, result("tag", detail))
            }
        };
        headers.merge(always);
        Ran {
            found,
            headers,
            result,
            verified,
        }
    }

    async fn find<'m>(
        &self,
        message: &Bytes,
        parsed: Option<&'m mail_auth::AuthenticatedMessage<'m>>,
        context: &ScanContext,
        limit: Duration,
    ) -> Result<Finding<'m>, super::scan::ScanError> {
        match &self.runner {
            Runner::Attachments(rules) => {
                if message.len() < BLOCKING_ABOVE {
                    let found = checks::attachments(message, rules, &context.queue_id);
                    return Ok(Finding::plain(found));
                }
                let (message, rules, id) =
                    (message.clone(), rules.clone(), context.queue_id.clone());
                let found =
                    tokio::task::spawn_blocking(move || checks::attachments(&message, &rules, &id))
                        .await
                        .map_err(|e| {
                            super::scan::ScanError::Protocol(format!("the analysis failed: {e}"))
                        })?;
                Ok(Finding::plain(found))
            }
            Runner::Rspamd(cfg) => {
                let (found, tag) = checks::rspamd(cfg, message, context).await?;
                Ok(Finding {
                    tag,
                    ..Finding::plain(found)
                })
            }
            Runner::Clamav(addresses) => Ok(Finding::plain(
                checks::clamav(addresses, message, limit).await?,
            )),
            Runner::SenderAuth(verifier) => {
                let verified = verifier.verify(parsed, context).await;
                let (found, always) = verifier.judge(&verified);
                Ok(Finding {
                    always,
                    verified: Some(verified),
                    ..Finding::plain(found)
                })
            }
            Runner::Broken(why) => Err(super::scan::ScanError::Config(why.clone())),
        }
    }
}

impl Ran<'_> {
    fn clean(result: CheckResult) -> Self {
        Ran {
            found: Found::Clean,
            headers: Rewrite::default(),
            result,
            verified: None,
        }
    }
}

/// A check without a verdict: its fail mode decides (a tag-mode check never defers).
fn failed<'m>(
    s: &CheckSettings,
    why: String,
    result: impl Fn(&'static str, String) -> CheckResult,
) -> Ran<'m> {
    let what = match s.kind {
        CheckKind::Attachments(_) => "Attachment",
        CheckKind::Rspamd { .. } => "Spam",
        CheckKind::Clamav { .. } => "Virus",
        CheckKind::SenderAuth(_) => "Sender authentication",
    };
    let found = match (s.fail_mode, s.mode) {
        (FailMode::Closed, FilterMode::Enforce) => match s.fail_mode.verdict(what) {
            super::scan::Verdict::Tempfail(reply) => Found::Tempfail(reply, why.clone()),
            _ => Found::Clean,
        },
        _ => Found::Clean,
    };
    Ran {
        found,
        result: result("error", why),
        ..Ran::clean(result("error", String::new()))
    }
}

/// The verdicts in policy order as one outcome (see the module notes).
fn combine(message: &[u8], ran: &[Ran<'_>], forged: Vec<i32>) -> Outcome {
    let results: Vec<CheckResult> = ran.iter().map(|r| r.result.clone()).collect();
    let refusal = ran
        .iter()
        .find_map(|r| match &r.found {
            Found::Reject(reply, _) => Some(reply.clone()),
            _ => None,
        })
        .or_else(|| {
            ran.iter().find_map(|r| match &r.found {
                Found::Tempfail(reply, _) => Some(reply.clone()),
                _ => None,
            })
        });
    if let Some(reply) = refusal {
        return Outcome {
            disposition: Disposition::Refuse(reply),
            hold: None,
            deliver: false,
            results,
        };
    }
    let mut hold: Option<String> = None;
    let mut deliver = true;
    let mut content: Option<Vec<u8>> = None;
    for r in ran {
        match &r.found {
            Found::HoldAll(why) => {
                hold.get_or_insert_with(|| format!("{}: {why}", r.result.name));
                deliver = false;
            }
            Found::Cut {
                cuts,
                hold: keep,
                detail,
            } if content.is_none() => {
                if *keep {
                    hold.get_or_insert_with(|| format!("{}: {detail}", r.result.name));
                }
                content = Some(super::attachments::strip::splice(message, cuts.clone()));
            }
            _ => {}
        }
    }
    let mut headers = Rewrite::default();
    if rewrite::has_field(content.as_deref().unwrap_or(message), TAG_HEADER) {
        headers.remove_headers.push((TAG_HEADER.to_string(), 0));
    }
    headers.remove_headers.extend(
        forged
            .into_iter()
            .map(|n| (super::verify::RESULTS_HEADER.to_string(), n)),
    );
    for r in ran {
        headers.merge(r.headers.clone());
    }
    if headers != Rewrite::default() {
        content = Some(rewrite::apply(
            content.as_deref().unwrap_or(message),
            &headers,
        ));
    }
    Outcome {
        disposition: Disposition::Accept { content },
        hold,
        deliver,
        results,
    }
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;

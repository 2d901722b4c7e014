//! The junk check: the message and its envelope POSTed to Rspamd's `/checkv2` (Rspamd
//! protocol, <https://rspamd.com/doc/developers/protocol.html>), its JSON answer read
//! with bounds and mapped to a [`Verdict`] from the `action` alone, never from
//! comparing scores: Rspamd's own thresholds and settings decide.
//!
//! The HTTP exchange is the relay's outbound client ([`crate::http`], on reqwest, with
//! pooled connections, shared with the webhook), which reads the body bounded by
//! [`MAX_RESPONSE`].

use super::scan::{
    FailMode, Rewrite, ScanContext, ScanError, Verdict, header_name, header_value, reply_text,
};
use crate::http::{self, HttpError, Url};
use crate::smtp::reply::Reply;
use rustls::RootCertStore;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Rspamd's own `task_timeout` is 8 s by default; ours must be longer so that Rspamd
/// answers (with whatever its rules found in time) before we give up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most JSON taken from Rspamd: with every symbol's options a large answer is a
/// few tens of KiB.
pub const MAX_RESPONSE: usize = 512 * 1024;
/// At most this many symbol names are kept, each at most [`MAX_SYMBOL`] characters.
pub const MAX_SYMBOLS: usize = 256;
pub const MAX_SYMBOL: usize = 128;
/// At most this many headers to add or remove are taken from the milter block.
pub const MAX_MILTER_HEADERS: usize = 32;
/// The reply when Rspamd rejects without an `smtp_message`.
pub const DEFAULT_REJECT_TEXT: &str = "Message rejected as spam";
/// The reply when Rspamd defers without an `smtp_message`.
pub const DEFAULT_TEMPFAIL_TEXT: &str = "Try again later";

/// Where Rspamd listens and how to talk to it.
#[derive(Debug, Clone)]
pub struct RspamdConfig {
    url: Url,
    /// Sent as the `Password` header, for Rspamd set up to ask for one.
    pub password: Option<String>,
    pub timeout: Duration,
    /// The CAs trusted for an `https://` URL.
    pub roots: Arc<RootCertStore>,
}

impl RspamdConfig {
    /// `base` is Rspamd's normal worker or proxy, e.g. `http://rspamd:11333`; the check
    /// posts to `/checkv2` under it.
    pub fn new(base: &str, timeout: Duration) -> Result<Self, ScanError> {
        let mut url = http::parse_url(base).map_err(|e| ScanError::Config(e.to_string()))?;
        if url.target.contains('?') {
            return Err(ScanError::Config("the Rspamd URL has a query".into()));
        }
        url.target = format!("{}/checkv2", url.target.trim_end_matches('/'));
        Ok(RspamdConfig {
            url,
            password: None,
            timeout,
            roots: no_roots(),
        })
    }
}

/// The roots of a config that was given none, one store for all of them, so that every
/// check shares one pooled client ([`http::client`] keys on the store).
fn no_roots() -> Arc<RootCertStore> {
    static NONE: std::sync::OnceLock<Arc<RootCertStore>> = std::sync::OnceLock::new();
    NONE.get_or_init(|| Arc::new(RootCertStore::empty()))
        .clone()
}

/// Rspamd's recommended action (`action` in its answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RspamdAction {
    NoAction,
    Greylist,
    AddHeader,
    RewriteSubject,
    SoftReject,
    Reject,
}

impl RspamdAction {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "no action" => RspamdAction::NoAction,
            "greylist" => RspamdAction::Greylist,
            "add header" => RspamdAction::AddHeader,
            "rewrite subject" => RspamdAction::RewriteSubject,
            "soft reject" => RspamdAction::SoftReject,
            "reject" => RspamdAction::Reject,
            _ => return None,
        })
    }
}

/// Rspamd's answer as far as the relay uses it, with the verdict it maps to.
#[derive(Debug, Clone, PartialEq)]
pub struct RspamdVerdict {
    pub action: RspamdAction,
    /// For logs and headers only; the verdict never depends on them.
    pub score: f64,
    pub required_score: f64,
    /// The names of the symbols that matched (no options, no descriptions).
    pub symbols: Vec<String>,
    pub verdict: Verdict,
}

/// Asks Rspamd about `message`. An answer that is not a 200 with a JSON object naming
/// a known action is an error, for the caller's [`FailMode`].
pub async fn check(
    cfg: &RspamdConfig,
    message: &[u8],
    envelope: &ScanContext,
) -> Result<RspamdVerdict, ScanError> {
    let headers = request_headers(cfg, envelope);
    let posted = http::post_for_body(
        &cfg.url,
        &headers,
        message,
        &cfg.roots,
        cfg.timeout,
        MAX_RESPONSE,
    )
    .await;
    let (status, body) = posted.map_err(|e| match e {
        HttpError::Connect { authority, source } => ScanError::Connect {
            address: authority,
            source,
        },
        HttpError::Timeout(t) => ScanError::Timeout(t),
        other => ScanError::Protocol(other.to_string()),
    })?;
    if status.code != 200 {
        return Err(ScanError::Protocol(format!(
            "HTTP {} {}",
            status.code, status.reason
        )));
    }
    parse_answer(&body)
}

/// The [`Verdict`] for a check's result under `fail`.
pub fn verdict(result: &Result<RspamdVerdict, ScanError>, fail: FailMode) -> Verdict {
    match result {
        Ok(answer) => answer.verdict.clone(),
        Err(_) => fail.verdict("Spam"),
    }
}

/// Rspamd's request headers (protocol "Rspamd HTTP request"). Values that could break
/// the request head (control characters) are cleaned; empty ones are left out.
fn request_headers(cfg: &RspamdConfig, ctx: &ScanContext) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        // Rspamd reads `<>` as the null sender.
        (
            "From",
            match ctx.mail_from.as_str() {
                "" => "<>".to_owned(),
                from => from.to_owned(),
            },
        ),
        ("IP", ctx.client_ip.to_string()),
        ("Helo", ctx.helo.clone()),
        ("Queue-Id", ctx.queue_id.clone()),
    ];
    headers.extend(ctx.recipients.iter().map(|r| ("Rcpt", r.clone())));
    if let Some(user) = &ctx.user {
        headers.push(("User", user.clone()));
    }
    if let Some(tls) = &ctx.tls {
        headers.push(("TLS-Version", tls.version.clone()));
        headers.push(("TLS-Cipher", tls.cipher.clone()));
    }
    if let Some(password) = &cfg.password {
        headers.push(("Password", password.clone()));
    }
    headers
        .into_iter()
        .map(|(name, value)| (name, header_value(&value)))
        .filter(|(_, value)| !value.is_empty())
        .collect()
}

/// Reads Rspamd's JSON answer (at most [`MAX_RESPONSE`] octets, already enforced).
pub fn parse_answer(body: &[u8]) -> Result<RspamdVerdict, ScanError> {
    let bad = |why: &str| ScanError::Protocol(why.to_owned());
    let json: Value = serde_json::from_slice(body).map_err(|e| bad(&format!("not JSON: {e}")))?;
    let action_text = json["action"].as_str().ok_or_else(|| bad("no action"))?;
    let action = RspamdAction::parse(action_text)
        .ok_or_else(|| bad(&format!("unknown action {:?}", reply_text(action_text))))?;
    let score = json["score"].as_f64().unwrap_or(0.0);
    let required_score = json["required_score"].as_f64().unwrap_or(0.0);
    let symbols = json["symbols"]
        .as_object()
        .map(|symbols| {
            let names = symbols.keys().take(MAX_SYMBOLS);
            names.map(|name| reply_text(name).chars().take(MAX_SYMBOL).collect())
        })
        .into_iter()
        .flatten()
        .collect();
    let smtp_message = json["messages"]["smtp_message"]
        .as_str()
        .map(reply_text)
        .filter(|text| !text.is_empty());
    let milter = milter_rewrite(&json["milter"]);
    let verdict = match action {
        RspamdAction::NoAction => Verdict::Accept,
        RspamdAction::Reject => Verdict::Reject(Reply::new(
            550,
            "5.7.1",
            smtp_message.unwrap_or_else(|| DEFAULT_REJECT_TEXT.into()),
        )),
        RspamdAction::SoftReject | RspamdAction::Greylist => Verdict::Tempfail(Reply::new(
            451,
            "4.7.1",
            smtp_message.unwrap_or_else(|| DEFAULT_TEMPFAIL_TEXT.into()),
        )),
        RspamdAction::AddHeader => {
            let mut rewrite = milter;
            let spam = [
                (
                    "X-Spam-Status",
                    format!("Yes, score={score:.2} required={required_score:.2}"),
                ),
                ("X-Spam-Score", format!("{score:.2}")),
                ("X-Spam-Flag", "YES".to_owned()),
            ];
            let spam = spam.into_iter().map(|(n, v)| (n.to_owned(), v));
            rewrite.add_headers.splice(0..0, spam);
            Verdict::Rewrite(rewrite)
        }
        RspamdAction::RewriteSubject => {
            let mut rewrite = milter;
            rewrite.subject = json["subject"]
                .as_str()
                .map(header_value)
                .filter(|s| !s.is_empty());
            Verdict::Rewrite(rewrite)
        }
    };
    Ok(RspamdVerdict {
        action,
        score,
        required_score,
        symbols,
        verdict,
    })
}

/// The `milter` block: `add_headers` maps a name to a value, an object with a `value`,
/// or a list of either; `remove_headers` maps a name to an occurrence number. Invalid
/// names are dropped; values are cleaned; at most [`MAX_MILTER_HEADERS`] of each.
fn milter_rewrite(milter: &Value) -> Rewrite {
    let mut rewrite = Rewrite::default();
    if let Some(add) = milter["add_headers"].as_object() {
        for (name, spec) in add {
            let Some(name) = header_name(name) else {
                continue;
            };
            let specs = match spec {
                Value::Array(list) => list.iter().collect(),
                one => vec![one],
            };
            for spec in specs {
                let value = spec.as_str().or_else(|| spec["value"].as_str());
                if let Some(value) = value
                    && rewrite.add_headers.len() < MAX_MILTER_HEADERS
                {
                    rewrite
                        .add_headers
                        .push((name.to_owned(), header_value(value)));
                }
            }
        }
    }
    if let Some(remove) = milter["remove_headers"].as_object() {
        let named = remove.iter().filter_map(|(name, n)| {
            let occurrence = i32::try_from(n.as_i64().unwrap_or(0)).unwrap_or(0);
            header_name(name).map(|name| (name.to_owned(), occurrence))
        });
        rewrite.remove_headers = named.take(MAX_MILTER_HEADERS).collect();
    }
    rewrite
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict_of(json: &str) -> Verdict {
        parse_answer(json.as_bytes()).unwrap().verdict
    }

    #[test]
    fn actions_map_to_verdicts() {
        let reject = r#"{"action":"reject","score":20,"required_score":15,
            "messages":{"smtp_message":"Spam\r\n250 ok"}}"#;
        assert_eq!(
            verdict_of(reject),
            Verdict::Reject(Reply::new(550, "5.7.1", "Spam 250 ok"))
        );
        let bare = r#"{"action":"reject"}"#;
        assert_eq!(
            verdict_of(bare),
            Verdict::Reject(Reply::new(550, "5.7.1", DEFAULT_REJECT_TEXT))
        );
        for soft in ["soft reject", "greylist"] {
            let json = format!(r#"{{"action":"{soft}"}}"#);
            let Verdict::Tempfail(reply) = verdict_of(&json) else {
                panic!("{soft} must tempfail");
            };
            assert_eq!((reply.code, reply.status), (451, Some("4.7.1")));
        }
        // A score over the threshold does not turn "no action" into anything else.
        let calm = r#"{"action":"no action","score":99,"required_score":1}"#;
        assert_eq!(verdict_of(calm), Verdict::Accept);
        assert!(parse_answer(br#"{"action":"explode"}"#).is_err());
        assert!(parse_answer(b"[1,2").is_err());
    }

    #[test]
    fn add_header_and_rewrite_subject() {
        let json = r#"{"action":"add header","score":6.5,"required_score":15,
            "symbols":{"A":{},"B":{}},
            "milter":{"add_headers":{"X-Extra":{"value":"v\r\nBcc: x","order":0},
                "Bad Name":"x","X-Two":["a",{"value":"b"}]},
                "remove_headers":{"X-Spam":0,"X-Old":2}}}"#;
        let answer = parse_answer(json.as_bytes()).unwrap();
        assert_eq!(answer.symbols, ["A", "B"]);
        let Verdict::Rewrite(rewrite) = answer.verdict else {
            panic!("add header must rewrite");
        };
        let added: Vec<_> = rewrite
            .add_headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}"))
            .collect();
        assert_eq!(
            added,
            [
                "X-Spam-Status: Yes, score=6.50 required=15.00",
                "X-Spam-Score: 6.50",
                "X-Spam-Flag: YES",
                "X-Extra: v Bcc: x",
                "X-Two: a",
                "X-Two: b",
            ]
        );
        let mut removed = rewrite.remove_headers.clone();
        removed.sort();
        assert_eq!(removed, [("X-Old".to_owned(), 2), ("X-Spam".to_owned(), 0)]);
        let json = r#"{"action":"rewrite subject","subject":"***SPAM*** hi\r\n"}"#;
        let Verdict::Rewrite(rewrite) = verdict_of(json) else {
            panic!("rewrite subject must rewrite");
        };
        assert_eq!(rewrite.subject.as_deref(), Some("***SPAM*** hi"));
    }

    #[test]
    fn request_headers_are_clean() {
        let mut cfg = RspamdConfig::new("http://127.0.0.1:11333/", DEFAULT_TIMEOUT).unwrap();
        assert_eq!(cfg.url.target, "/checkv2");
        cfg.password = Some("pw".into());
        let ctx = ScanContext {
            mail_from: String::new(),
            recipients: vec!["a@x.example".into(), "b@x.example\r\nX: y".into()],
            client_ip: "192.0.2.1".parse().unwrap(),
            helo: "client.example".into(),
            user: Some("alice".into()),
            queue_id: "Q1".into(),
            tls: None,
        };
        let headers = request_headers(&cfg, &ctx);
        let text: Vec<_> = headers.iter().map(|(n, v)| format!("{n}: {v}")).collect();
        assert_eq!(
            text,
            [
                "From: <>",
                "IP: 192.0.2.1",
                "Helo: client.example",
                "Queue-Id: Q1",
                "Rcpt: a@x.example",
                "Rcpt: b@x.example X: y",
                "User: alice",
                "Password: pw",
            ]
        );
    }
}

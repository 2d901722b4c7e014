//! `sluice policy status`: the snapshot in force in the NATS KV bucket, as the running
//! pods see it (the newest valid value), for a person or a script to check what a push
//! or the operator left there.
//!
//! The lines are `key value…`, one key per line and a fixed order, so that
//! `awk '$1 == "revision" {print $2}'` keeps working; `--json` gives the same as one
//! object. The tool only reads: it never creates the bucket, which the NATS user of a
//! person checking may not be allowed to.

use super::NatsArgs;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sluice::config::Config;
use sluice::nats::NatsConfig;
use sluice::policy::PolicyCounts;
use sluice::policy::bucket::{BUCKET, InForce, PolicyBucket, Writer};
use sluice::policy::model::Mode;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// How long reading the bucket may take once connected (connecting has its own bound):
/// a tool answers promptly or says that NATS does not.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

pub fn run(config: Option<&Path>, nats: &NatsArgs, json: bool) -> anyhow::Result<ExitCode> {
    let mut nats_config = match config {
        Some(path) => Config::read(path)?.nats,
        None => NatsConfig::default(),
    };
    nats.apply(&mut nats_config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let Some(found) = runtime.block_on(in_force(&nats_config))? else {
        eprintln!(
            "sluice: no policy in the NATS KV bucket {BUCKET} (`sluice policy push` or the operator writes it)"
        );
        return Ok(ExitCode::from(1));
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&Status::of(&found))?);
    } else {
        print!("{}", lines(&found));
    }
    Ok(ExitCode::SUCCESS)
}

async fn in_force(config: &NatsConfig) -> anyhow::Result<Option<InForce>> {
    let client = config.connect_now("sluice policy status").await?;
    let js = async_nats::jetstream::new(client);
    let read = async {
        match PolicyBucket::open_existing(&js).await? {
            Some(bucket) => bucket.in_force().await,
            None => Ok(None),
        }
    };
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(result) => result,
        Err(_) => anyhow::bail!("no answer from NATS JetStream within {READ_TIMEOUT:?}"),
    }
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The report for people and `grep`.
fn lines(found: &InForce) -> String {
    let snapshot = &found.snapshot;
    let writer = match &found.writer {
        Some(w) => format!("{} {} {}", w.kind, w.identity, time(w.at)),
        // Written by a sluice from before writers were recorded.
        None => "unknown".to_string(),
    };
    let mut out = format!(
        "revision     {}\nkv-revision  {}\ncreated      {}\nwriter       {writer}\nmode         {}\n",
        snapshot.revision(),
        found.kv_revision,
        time(found.created),
        snapshot.mode(),
    );
    for c in snapshot.rules().counts() {
        out += &format!(
            "policy       {} users={} local-domains={} relay-domains={}\n",
            c.policy, c.users, c.local_domains, c.relay_domains
        );
    }
    out
}

/// The report for programs.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Status<'a> {
    revision: &'a str,
    kv_revision: u64,
    created: DateTime<Utc>,
    writer: Option<&'a Writer>,
    mode: Mode,
    policies: Vec<PolicyCounts>,
}

impl<'a> Status<'a> {
    fn of(found: &'a InForce) -> Self {
        Status {
            revision: found.snapshot.revision(),
            kv_revision: found.kv_revision,
            created: found.created,
            writer: found.writer.as_ref(),
            mode: found.snapshot.mode(),
            policies: found.snapshot.rules().counts(),
        }
    }
}

//! `sluice quarantine list|show|release|delete`: the messages a quarantine rule held
//! (issue 11), through the admin listener of the role that manages them (standalone or
//! a worker), as `sluice queue` does for the queue.
//!
//! Exit status: 0 done, 1 no such held message, 2 usage, connection or server errors.

mod format;
#[cfg(test)]
mod tests;

use super::queue::{Target, call, queue_id};
use anyhow::Context;
use clap::Subcommand;
use format::{list_table, show_text};
use serde::Deserialize;
use sluice::envelope::QueueId;
use sluice::queue::quarantine::HeldMessage;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum QuarantineCommand {
    /// List the held messages, oldest first: id, size, when held, sender, the reason in
    /// parentheses, recipients.
    List {
        #[command(flatten)]
        target: Target,
        /// Print the admin API's JSON as it is.
        #[arg(long)]
        json: bool,
    },
    /// Print one held message: its record, then the original content.
    Show {
        /// The queue id it was held under.
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Queue the original to its recipients (under a new queue id) and forget it here.
    Release {
        /// The queue id it was held under.
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Forget a held message; nothing is sent.
    Delete {
        /// The queue id it was held under.
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

pub fn run(command: QuarantineCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(dispatch(command))
}

async fn dispatch(command: QuarantineCommand) -> anyhow::Result<ExitCode> {
    let (target, method, path) = match &command {
        QuarantineCommand::List { target, .. } => (target, "GET", "/quarantine".to_string()),
        QuarantineCommand::Show { id, target } => {
            (target, "GET", format!("/quarantine/{}", queue_id(id)?))
        }
        QuarantineCommand::Release { id, target } => (
            target,
            "POST",
            format!("/quarantine/{}/release", queue_id(id)?),
        ),
        QuarantineCommand::Delete { id, target } => {
            (target, "DELETE", format!("/quarantine/{}", queue_id(id)?))
        }
    };
    let Some(body) = call(target, method, &path).await? else {
        return Ok(ExitCode::from(1));
    };
    match command {
        QuarantineCommand::List { json: true, .. } => print!("{body}"),
        QuarantineCommand::List { .. } => {
            let held: Vec<HeldMessage> =
                serde_json::from_str(&body).context("unreadable quarantine listing")?;
            print!("{}", list_table(&held));
        }
        QuarantineCommand::Show { .. } => {
            let shown: Shown = serde_json::from_str(&body).context("unreadable message")?;
            print!("{}", show_text(&shown));
        }
        QuarantineCommand::Release { .. } => {
            let released: Released = serde_json::from_str(&body).context("unreadable answer")?;
            println!("{}: released, queued as {}", released.id, released.queued);
        }
        QuarantineCommand::Delete { .. } => {
            let deleted: Deleted = serde_json::from_str(&body).context("unreadable answer")?;
            println!("{}: deleted", deleted.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Deserialize)]
pub(super) struct Shown {
    held: HeldMessage,
    message: String,
}

#[derive(Deserialize)]
struct Released {
    id: QueueId,
    queued: QueueId,
}

#[derive(Deserialize)]
struct Deleted {
    id: QueueId,
}

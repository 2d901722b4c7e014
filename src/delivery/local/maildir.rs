//! Delivery into Maildir mailboxes (<https://cr.yp.to/proto/maildir.html>) under the
//! root a local domain's policy names.
//!
//! Choices the policy leaves open:
//! - One mailbox per recipient, at `{root}/{local part in lower case}/`, so that each user
//!   has their own, as with Dovecot's `mail_location = maildir:/var/mail/%Ln`. The local
//!   part is taken whole (no `+detail` stripping) and refused (5.1.3) when it could
//!   leave the root or name a hidden entry: empty, a leading dot (`.`, `..`), `/`, `\`,
//!   control characters (NUL included), or longer than a file name may be.
//! - The root itself must exist: creating it would, on a volume that failed to mount,
//!   put mail into the container's throw-away filesystem. The mailbox and its `tmp`,
//!   `new`, `cur` are created as needed, group-shared (0770 directories, 0660 files) so
//!   that an IMAP server in the same Pod (same `fsGroup`) can read them.
//! - One file per recipient, since each copy carries its own `Delivered-To`.
//! - `Return-Path: <sender>` then `Delivered-To: rcpt` go on top, as Postfix's local(8)
//!   writes them, with the line ending of the message's first line; the message
//!   follows byte for byte.
//! - Every I/O failure defers. The queue is at-least-once: a failure after the rename
//!   (the fsync of `new/`) also defers, so a crash-safe copy may come twice, never zero.

use super::LocalError;
use crate::delivery::Outcome;
use crate::delivery::outcome::Handoff;
use crate::envelope::Envelope;
use crate::policy::maildir_safe;
use crate::smtp::address::{Mailbox, Recipient, display_reverse_path};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// Delivers `message` into each recipient's mailbox under `root`. The file system work
/// runs on the blocking pool, so a slow volume does not stall other deliveries.
pub async fn deliver_maildir(
    root: &Path,
    envelope: &Envelope,
    recipients: &[Recipient],
    message: &[u8],
) -> Vec<Outcome> {
    let root = root.to_owned();
    let sender = display_reverse_path(&envelope.reverse_path);
    let rcpts: Vec<Mailbox> = recipients.iter().map(|r| r.address.clone()).collect();
    let count = rcpts.len();
    let message = message.to_vec();
    let job = tokio::task::spawn_blocking(move || {
        rcpts
            .iter()
            .map(|rcpt| deliver_one(&root, &sender, rcpt, &message))
            .collect::<Vec<_>>()
    });
    match job.await {
        Ok(outcomes) => outcomes,
        Err(e) => {
            let reply = format!("maildir delivery did not complete: {e}");
            let outcome = Outcome::Deferred {
                remote_mta: None,
                reply,
            };
            vec![outcome; count]
        }
    }
}

fn deliver_one(root: &Path, sender: &str, rcpt: &Mailbox, message: &[u8]) -> Outcome {
    match write_message(root, sender, rcpt, message) {
        Ok(path) => Outcome::Delivered {
            remote_mta: None,
            reply: format!("delivered to maildir {}", path.display()),
            handoff: Handoff::Final,
        },
        Err(e) => {
            tracing::warn!(rcpt = %rcpt, error = %e, "maildir delivery did not complete");
            e.into_outcome(None)
        }
    }
}

/// The Maildir protocol: write and fsync in `tmp/`, rename into `new/` (atomic, so a
/// reader never sees half a message), fsync `new/` so that the rename survives a crash.
fn write_message(
    root: &Path,
    sender: &str,
    rcpt: &Mailbox,
    message: &[u8],
) -> Result<PathBuf, LocalError> {
    let mailbox = root.join(mailbox_name(&rcpt.local)?);
    check_root(root)?;
    ensure_maildir(&mailbox)?;
    let content = with_trace_headers(sender, rcpt, message);
    let name = unique_name(content.len());
    let tmp = mailbox.join("tmp").join(&name);
    let new_dir = mailbox.join("new");
    let new = new_dir.join(&name);
    write_synced(&tmp, &content)?;
    if let Err(e) = fs::rename(&tmp, &new) {
        let _ = fs::remove_file(&tmp);
        return Err(LocalError::io("move the message into", new, e));
    }
    sync_dir(&new_dir)?;
    Ok(new)
}

/// The directory name of a local part, or `UnsafeLocalPart` (see the module comment).
/// The same predicate refuses such recipients at RCPT (`policy::maildir_safe`); this
/// check stays for messages queued before, or under a policy that changed since.
fn mailbox_name(local: &str) -> Result<String, LocalError> {
    if maildir_safe(local) {
        Ok(local.to_lowercase())
    } else {
        Err(LocalError::UnsafeLocalPart(local.to_owned()))
    }
}

fn check_root(root: &Path) -> Result<(), LocalError> {
    let meta = fs::metadata(root).map_err(|e| LocalError::io("use maildir root", root, e))?;
    if meta.is_dir() {
        Ok(())
    } else {
        let e = io::Error::new(io::ErrorKind::NotADirectory, "not a directory");
        Err(LocalError::io("use maildir root", root, e))
    }
}

fn ensure_maildir(mailbox: &Path) -> Result<(), LocalError> {
    ensure_dir(mailbox)?;
    for sub in ["tmp", "new", "cur"] {
        ensure_dir(&mailbox.join(sub))?;
    }
    Ok(())
}

/// Creates `dir` if missing; a new directory's entry in its parent is fsync'd too, or a
/// crash could lose the mailbox together with the messages renamed into it.
fn ensure_dir(dir: &Path) -> Result<(), LocalError> {
    match DirBuilder::new().mode(0o770).create(dir) {
        Ok(()) => match dir.parent() {
            Some(parent) => sync_dir(parent),
            None => Ok(()),
        },
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(LocalError::io("create directory", dir, e)),
    }
}

/// Writes a new file and fsyncs it; removes it again if anything fails, so that no
/// partial message stays in `tmp/`.
fn write_synced(path: &Path, content: &[u8]) -> Result<(), LocalError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o660)
        .open(path)
        .map_err(|e| LocalError::io("create", path, e))?;
    let written = file.write_all(content).and_then(|()| file.sync_all());
    written.map_err(|e| {
        let _ = fs::remove_file(path);
        LocalError::io("write", path, e)
    })
}

fn sync_dir(dir: &Path) -> Result<(), LocalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LocalError::io("sync directory", dir, e))
}

/// `Return-Path` and `Delivered-To` on top of the message, ending their lines the way
/// the message's first line ends (CRLF when it has none).
fn with_trace_headers(sender: &str, rcpt: &Mailbox, message: &[u8]) -> Vec<u8> {
    let eol = match message.iter().position(|&b| b == b'\n') {
        Some(i) if i == 0 || message[i - 1] != b'\r' => "\n",
        _ => "\r\n",
    };
    let head = format!(
        "Return-Path: {}{eol}Delivered-To: {}{eol}",
        header_safe(sender),
        header_safe(&rcpt.to_string())
    );
    let mut out = Vec::with_capacity(head.len() + message.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(message);
    out
}

/// The SMTP parser admits no line breaks in addresses; this keeps it so even if a
/// queue backend hands over something odd, since a CR or LF would forge header lines.
fn header_safe(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).collect()
}

/// `{secs}.M{micros}P{pid}Q{n}.{host},S={size}`: the djb scheme (time, pid and a
/// per-process counter make it unique on this host, the host name across hosts sharing
/// the volume), plus Maildir++'s `S=` so that Dovecot need not stat for quotas.
fn unique_name(size: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}.M{}P{}Q{n}.{},S={size}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        hostname()
    )
}

/// The host name with `/` and `:` escaped as the Maildir specification asks (`:`
/// starts the info part of a name).
fn hostname() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let raw = gethostname::gethostname().to_string_lossy().into_owned();
        let name = raw.replace('/', "\\057").replace(':', "\\072");
        if name.is_empty() {
            "localhost".into()
        } else {
            name
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_parts_that_could_escape_the_root_are_refused() {
        for bad in [
            "", ".", "..", ".hidden", "../x", "a/b", "a\\b", "a\0b", "a\nb",
        ] {
            assert!(mailbox_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(mailbox_name(&"a".repeat(256)).is_err());
        assert_eq!(mailbox_name("Bob.Smith+tag").unwrap(), "bob.smith+tag");
        assert_eq!(mailbox_name("a..b").unwrap(), "a..b");
        assert_eq!(mailbox_name("ÉLODIE").unwrap(), "élodie");
    }

    #[test]
    fn trace_headers_follow_the_message_line_ending() {
        let rcpt = Mailbox::new("bob", "example.com");
        let crlf = with_trace_headers("<a@b>", &rcpt, b"Subject: x\r\n\r\nhi\r\n");
        assert!(crlf.starts_with(b"Return-Path: <a@b>\r\nDelivered-To: bob@example.com\r\n"));
        let lf = with_trace_headers("<>", &rcpt, b"Subject: x\n\nhi\n");
        assert_eq!(
            lf,
            b"Return-Path: <>\nDelivered-To: bob@example.com\nSubject: x\n\nhi\n"
        );
        let forged = with_trace_headers("<a\r\nX-Evil: 1@b>", &rcpt, b"");
        assert!(forged.starts_with(b"Return-Path: <aX-Evil: 1@b>\r\n"));
    }

    #[test]
    fn names_are_unique_and_carry_the_size() {
        let (a, b) = (unique_name(10), unique_name(10));
        assert_ne!(a, b);
        assert!(a.ends_with(",S=10"));
        assert!(!a.contains('/') && !a.contains(':'));
    }
}

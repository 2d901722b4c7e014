//! Where the content of the message being received goes: memory within the process's
//! [`MemoryBudget`] up to the spill threshold, then a temporary file, so that a session
//! holds at most the threshold in memory however large its message grows.
//!
//! Every byte kept in memory is reserved first. When the budget has no room, the content
//! is dropped (and the rest of it read and thrown away by the protocol as usual), and the
//! message is answered `451 4.3.1` at its end. A temporary file is removed when its
//! [`TempPath`] is dropped: after the queue took the message, after a refusal, and when
//! the connection ends mid-message.

use super::Shared;
use super::budget::Reservation;
use crate::envelope::Envelope;
use crate::queue::QueueError;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// Content of a spilled message is written in pieces of this size.
const WRITE_BUFFER: usize = 64 * 1024;

/// Memory held by a spilled message: our write buffer and the copy tokio's file makes
/// of each write while it runs on a blocking thread.
const SPILLED_MEMORY: u64 = 2 * WRITE_BUFFER as u64;

/// The first allocation for content in memory, within the threshold.
const FIRST_ALLOCATION: usize = 16 * 1024;

/// Where large messages go while they are received.
#[derive(Debug, Clone)]
pub struct SpillSettings {
    /// Content beyond this many bytes goes to a file.
    pub threshold: u64,
    /// The directory of the temporary files.
    pub dir: PathBuf,
}

/// The content of the message being received.
pub(super) struct Content {
    held: Reservation,
    state: State,
}

enum State {
    Memory(Vec<u8>),
    File(SpillFile),
    Dropped(Dropped),
}

struct SpillFile {
    file: tokio::fs::File,
    path: TempPath,
    buffer: Vec<u8>,
    len: u64,
}

/// Why content was dropped: the message gets 451 4.3.1.
#[derive(Debug, thiserror::Error)]
enum Dropped {
    #[error("the memory budget for message content is spent")]
    Budget,
    #[error("cannot write the message to {path}: {error}")]
    Disk {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// A complete message, ready for the queue.
pub(super) enum Body {
    /// In memory; the reservation is given back once the queue has it.
    Memory {
        content: Vec<u8>,
        _held: Reservation,
    },
    /// In a temporary file, removed when `path` is dropped.
    File { path: TempPath, len: u64 },
    /// Not kept: the reason, for the log.
    Dropped(String),
}

/// What became of a complete message.
pub(super) enum Stored {
    /// The queue's answer, and the message's size.
    Queue(Result<(), QueueError>, u64),
    /// Not offered to the queue: why.
    Dropped(String),
}

impl Body {
    /// Hands the message to the queue; the temporary file and the memory go once the
    /// queue has answered.
    pub(super) async fn store(self, envelope: &Envelope, shared: &Shared) -> Stored {
        match self {
            Body::Memory { content, _held } => {
                let result = shared.queue.enqueue(envelope, &content).await;
                Stored::Queue(result, content.len() as u64)
            }
            Body::File { path, len } => {
                // A queue that reads the file whole needs the memory for it now; messages
                // done receiving wait for it ahead of those still arriving.
                let mut held = shared.budget.reservation();
                let need = shared.queue.file_body_memory(len);
                if let Err(e) = held.grow(need, shared.timeouts.data).await {
                    return Stored::Dropped(format!("{len} bytes to queue: {e}"));
                }
                let result = shared.queue.enqueue_file(envelope, path.path(), len).await;
                Stored::Queue(result, len)
            }
            Body::Dropped(why) => Stored::Dropped(why),
        }
    }
}

/// A whole message in memory for the filters, with the memory it holds reserved.
pub(super) struct Loaded {
    pub(super) content: bytes::Bytes,
    pub(super) held: Reservation,
}

impl Body {
    /// The whole message in memory, with room reserved for `extra(len)` more octets (a
    /// changed copy): a spilled message is read back from its file within the budget,
    /// waiting for memory as long as the data timeout. `Err` is why it could not be.
    pub(super) async fn load(
        self,
        extra: impl Fn(u64) -> u64,
        shared: &Shared,
    ) -> Result<Loaded, String> {
        let wait = shared.timeouts.data;
        match self {
            Body::Memory { content, _held } => {
                let extra = extra(content.len() as u64);
                let mut held = _held;
                held.grow(extra, wait)
                    .await
                    .map_err(|e| format!("{extra} bytes to filter: {e}"))?;
                Ok(Loaded {
                    content: content.into(),
                    held,
                })
            }
            Body::File { path, len } => {
                let mut held = shared.budget.reservation();
                held.grow(len.saturating_add(extra(len)), wait)
                    .await
                    .map_err(|e| format!("{len} bytes to filter: {e}"))?;
                let content = crate::queue::read_body_file(path.path(), len)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Loaded {
                    content: content.into(),
                    held,
                })
            }
            Body::Dropped(why) => Err(why),
        }
    }
}

impl Loaded {
    /// The message to queue: `content` (the filters' copy, or the message as received)
    /// in memory, still within this reservation.
    pub(super) fn into_body(self, content: Option<Vec<u8>>) -> Body {
        let content = content.unwrap_or_else(|| Vec::from(self.content));
        Body::Memory {
            content,
            _held: self.held,
        }
    }
}

/// A temporary file, removed when this is dropped.
#[derive(Debug)]
pub(super) struct TempPath(PathBuf);

impl TempPath {
    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.0.display(), error = %e, "cannot remove a temporary message file");
        }
    }
}

impl Content {
    pub(super) fn new(shared: &Shared) -> Self {
        Content {
            held: shared.budget.reservation(),
            state: State::Memory(Vec::new()),
        }
    }

    /// Keeps `bytes`, in memory or in the file, or drops them when there is no room.
    pub(super) async fn push(&mut self, bytes: &[u8], shared: &Shared) {
        if bytes.is_empty() {
            return;
        }
        let next = match &mut self.state {
            State::Dropped(_) => return,
            State::File(file) => match file.write(bytes).await {
                Ok(()) => return,
                Err(dropped) => State::Dropped(dropped),
            },
            State::Memory(content) => {
                let total = content.len().saturating_add(bytes.len());
                if total as u64 > shared.spill.threshold {
                    let content = std::mem::take(content);
                    spill(&mut self.held, content, bytes, shared).await
                } else if grow(&mut self.held, content, bytes.len(), shared).is_ok() {
                    content.extend_from_slice(bytes);
                    return;
                } else {
                    State::Dropped(Dropped::Budget)
                }
            }
        };
        self.set(next);
    }

    fn set(&mut self, state: State) {
        if matches!(state, State::Dropped(_)) {
            self.held.shrink_to(0);
        }
        self.state = state;
    }

    /// Adds the last bytes and hands over the whole message.
    pub(super) async fn finish(mut self, tail: &[u8], shared: &Shared) -> Body {
        self.push(tail, shared).await;
        match self.state {
            State::Memory(content) => Body::Memory {
                content,
                _held: self.held,
            },
            State::File(mut file) => match file.complete().await {
                Ok(len) => Body::File {
                    path: file.path,
                    len,
                },
                Err(dropped) => Body::Dropped(dropped.to_string()),
            },
            State::Dropped(dropped) => Body::Dropped(dropped.to_string()),
        }
    }
}

/// Moves what is in memory and `bytes` to a new temporary file.
async fn spill(held: &mut Reservation, content: Vec<u8>, bytes: &[u8], shared: &Shared) -> State {
    // The write buffers must fit before the memory copy is given back.
    let extra = SPILLED_MEMORY.saturating_sub(held.bytes());
    if extra > 0 && held.try_grow(extra).is_err() {
        return State::Dropped(Dropped::Budget);
    }
    let mut file = match SpillFile::create(&shared.spill.dir).await {
        Ok(file) => file,
        Err(dropped) => return State::Dropped(dropped),
    };
    if let Err(dropped) = file.write_through(&content).await {
        return State::Dropped(dropped);
    }
    file.len = content.len() as u64;
    drop(content);
    held.shrink_to(SPILLED_MEMORY);
    shared.metrics.messages_spilled.inc();
    match file.write(bytes).await {
        Ok(()) => State::File(file),
        Err(dropped) => State::Dropped(dropped),
    }
}

/// Makes room for `more` bytes in `content`, reserving every byte of capacity first.
/// Capacity doubles (up to the threshold) so that a message is copied a few times only.
fn grow(
    held: &mut Reservation,
    content: &mut Vec<u8>,
    more: usize,
    shared: &Shared,
) -> Result<(), super::budget::BudgetError> {
    let needed = content.len() + more;
    if needed <= content.capacity() {
        return Ok(());
    }
    let threshold = usize::try_from(shared.spill.threshold).unwrap_or(usize::MAX);
    let doubled = (content.capacity() * 2)
        .max(FIRST_ALLOCATION)
        .min(threshold);
    let capacity = needed.max(doubled);
    let extra = (capacity as u64).saturating_sub(held.bytes());
    if extra > 0 {
        held.try_grow(extra)?;
    }
    content.reserve_exact(capacity - content.len());
    Ok(())
}

impl SpillFile {
    async fn create(dir: &Path) -> Result<SpillFile, Dropped> {
        let name = format!("sluice-body-{:016x}.tmp", rand::random::<u64>());
        let path = dir.join(name);
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|error| Dropped::Disk {
                path: path.clone(),
                error,
            })?;
        Ok(SpillFile {
            file,
            path: TempPath(path),
            buffer: Vec::with_capacity(WRITE_BUFFER),
            len: 0,
        })
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Dropped> {
        self.buffer.extend_from_slice(bytes);
        self.len += bytes.len() as u64;
        if self.buffer.len() >= WRITE_BUFFER {
            let buffer = std::mem::take(&mut self.buffer);
            self.write_through(&buffer).await?;
            self.buffer = buffer;
            self.buffer.clear();
        }
        Ok(())
    }

    /// Writes `bytes` to the file, past the buffer and its count. In pieces: tokio's
    /// file keeps a buffer as large as the largest write it was given.
    async fn write_through(&mut self, bytes: &[u8]) -> Result<(), Dropped> {
        for piece in bytes.chunks(WRITE_BUFFER) {
            self.file
                .write_all(piece)
                .await
                .map_err(|error| Dropped::Disk {
                    path: self.path.0.clone(),
                    error,
                })?;
        }
        Ok(())
    }

    /// Writes what is buffered and waits until the file has it all; no fsync: the file
    /// is only a staging place, the queue makes the message durable.
    async fn complete(&mut self) -> Result<u64, Dropped> {
        let buffer = std::mem::take(&mut self.buffer);
        self.write_through(&buffer).await?;
        self.file.flush().await.map_err(|error| Dropped::Disk {
            path: self.path.0.clone(),
            error,
        })?;
        Ok(self.len)
    }
}

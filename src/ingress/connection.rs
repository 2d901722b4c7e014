//! One SMTP connection: moves bytes between the socket and the [`Session`], applies the
//! session's [`Step`]s (TLS upgrade, credential checks, the queue hand-off), and enforces
//! the timeouts of RFC 5321 4.5.3.2.
//!
//! Replies are buffered and written when the connection is about to wait for input, which
//! is what RFC 2920 asks of a PIPELINING server and saves a write per command.

use super::content::{Content, Stored};
use super::dnsbl::Prefetch;
use super::filtering::{self, Filtered};
use super::io::Io;
use super::tls::tls_info;
use super::{Listener, Session, Shared};
use crate::events::DeliveryEvent;
use crate::queue::QueueError;
use crate::smtp::line::{Line, LineBuffer};
use crate::smtp::reply::Reply;
use crate::smtp::session::{ClientVerdict, ListenerKind, QueueFailure, Resources, Step};
use crate::telemetry::metrics::{Label, RejectReason, Verb};
use crate::telemetry::otel;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

const READ_CHUNK: usize = 4096;
/// Recipient domains named on a message's acceptance span; the count says if there were
/// more.
const MAX_DOMAINS: usize = 10;

/// Whether the connection goes on after a step.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
enum Flow {
    Continue,
    Close,
}

/// What ended a wait for input.
enum Input {
    Bytes(usize),
    Eof,
    Timeout,
    Drain,
}

pub(super) struct Connection {
    io: Io,
    session: Session,
    lines: LineBuffer,
    out: Vec<u8>,
    buf: Vec<u8>,
    listener: Arc<Listener>,
    shared: Arc<Shared>,
    peer: String,
    /// When the session took the policy it applies.
    policy_since: Instant,
    /// The content of the message being received, taken from the session as it comes.
    content: Option<Content>,
    /// The block lists asked about the client since the greeting, for its first RCPT.
    prefetch: Option<Prefetch>,
}

impl Connection {
    pub(super) fn new(
        io: Io,
        session: Session,
        listener: Arc<Listener>,
        shared: Arc<Shared>,
        peer: String,
    ) -> Self {
        Connection {
            io,
            session,
            lines: LineBuffer::new(shared.max_command_line),
            out: Vec::with_capacity(512),
            buf: Vec::new(),
            listener,
            shared,
            peer,
            policy_since: Instant::now(),
            content: None,
            prefetch: None,
        }
    }

    /// Runs the session to its end. `drain` asks idle sessions to close; `stop` closes
    /// every session at once.
    pub(super) async fn run(self, drain: CancellationToken, stop: CancellationToken) {
        let span = self.session_span();
        self.converse(drain, stop).instrument(span).await
    }

    /// The connection's span for export: the root of the trace of its messages.
    fn session_span(&self) -> tracing::Span {
        let peer: Option<std::net::SocketAddr> = self.peer.parse().ok();
        tracing::info_span!(
            target: otel::TARGET,
            "smtp.session",
            otel.kind = "server",
            network.protocol.name = "smtp",
            network.peer.address = peer.map(|p| p.ip().to_string()),
            network.peer.port = peer.map(|p| p.port()),
            sluice.listener = %self.listener.name,
        )
    }

    async fn converse(mut self, drain: CancellationToken, stop: CancellationToken) {
        let greeting = self.session.greeting();
        greeting.write_to(&mut self.out);
        self.prefetch = self.start_prefetch();
        let lifetime = self.shared.timeouts.session;
        tokio::select! {
            _ = self.serve(&drain) => {}
            _ = stop.cancelled() => {
                self.out.clear();
                self.session.shutting_down().write_to(&mut self.out);
                let _ = tokio::time::timeout(Duration::from_secs(1), self.flush()).await;
            }
            _ = tokio::time::sleep(lifetime) => {
                self.out.clear();
                self.session.timeout().write_to(&mut self.out);
                let _ = tokio::time::timeout(Duration::from_secs(1), self.flush()).await;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.io.shutdown()).await;
    }

    async fn serve(&mut self, drain: &CancellationToken) {
        loop {
            let flow = if self.session.receiving_message() {
                self.receive_message().await
            } else {
                self.next_command(drain).await
            };
            if flow == Flow::Close {
                let _ = self.flush().await;
                return;
            }
        }
    }

    async fn next_command(&mut self, drain: &CancellationToken) -> Flow {
        match self.lines.next_line() {
            Some(Line::Complete(line)) => {
                if let Some(reply) = self.refresh_policy() {
                    return self.close_with(reply).await;
                }
                if !self.session.in_auth_exchange() {
                    self.shared.metrics.commands.inc(Verb::of(&line));
                }
                self.session.set_resources(self.resources());
                let step = self.session.command(&line);
                self.apply(step).await
            }
            Some(Line::TooLong) => {
                let step = self.session.line_too_long();
                self.apply(step).await
            }
            None => {
                let timeout = self.shared.timeouts.command;
                let idle_drain = (!self.session.in_transaction()).then_some(drain);
                match self.read(timeout, idle_drain).await {
                    Input::Bytes(n) => {
                        self.lines.push(&self.buf[..n]);
                        Flow::Continue
                    }
                    Input::Eof => Flow::Close,
                    Input::Timeout => self.close_with(self.session.timeout()).await,
                    Input::Drain => self.close_with(self.session.shutting_down()).await,
                }
            }
        }
    }

    /// Past `limits.sessionPolicyMaxAge`, a session between transactions takes the
    /// policy in force: the reply, if any, is why the session must end.
    fn refresh_policy(&mut self) -> Option<Reply> {
        if self.session.in_transaction()
            || self.session.in_auth_exchange()
            || self.policy_since.elapsed() < self.shared.timeouts.policy_max_age
        {
            return None;
        }
        self.policy_since = Instant::now();
        let current = self.shared.policy.borrow().clone();
        if Arc::ptr_eq(&current, self.session.policy()) {
            return None;
        }
        self.session.adopt_policy(current)
    }

    /// Feeds message content to the session: first what is already buffered behind the
    /// DATA/BDAT command (pipelining), then what the socket brings.
    async fn receive_message(&mut self) -> Flow {
        let pending = self.lines.take_remaining();
        if !pending.is_empty() {
            return self.feed_message(&pending).await;
        }
        match self.read(self.shared.timeouts.data, None).await {
            Input::Bytes(n) => {
                let bytes = std::mem::take(&mut self.buf);
                let flow = self.feed_message(&bytes[..n]).await;
                self.buf = bytes;
                flow
            }
            Input::Eof => Flow::Close,
            Input::Timeout | Input::Drain => self.close_with(self.session.timeout()).await,
        }
    }

    async fn feed_message(&mut self, bytes: &[u8]) -> Flow {
        let mut offset = 0;
        while offset < bytes.len() && self.session.receiving_message() {
            let (n, step) = self.session.message_bytes(&bytes[offset..]);
            offset += n;
            self.take_content().await;
            if let Some(step) = step
                && self.apply(step).await == Flow::Close
            {
                return Flow::Close;
            }
        }
        // What follows the end of the content is the next pipelined commands.
        self.lines.push(&bytes[offset..]);
        Flow::Continue
    }

    /// Carries out a step and whatever steps follow from it.
    async fn apply(&mut self, step: Step) -> Flow {
        let mut next = Some(step);
        while let Some(step) = next.take() {
            self.account_rejection();
            next = match step {
                Step::Reply(reply) | Step::StartData(reply) => {
                    reply.write_to(&mut self.out);
                    None
                }
                Step::ReadChunk => None,
                Step::Close(reply) => return self.close_with(reply).await,
                Step::StartTls(reply) => {
                    reply.write_to(&mut self.out);
                    return self.start_tls().await;
                }
                Step::VerifyCredentials { username, password } => {
                    Some(self.verify(username, password).await)
                }
                Step::Enqueue(message) => {
                    let (envelope, tail) = *message;
                    Some(self.enqueue(envelope, tail).await)
                }
                Step::CheckClient => Some(self.check_client().await),
            };
        }
        self.account_rejection();
        if !self.session.content_in_progress() {
            // Refused, reset or queued: a spill file goes with it.
            self.content = None;
        }
        Flow::Continue
    }

    /// Whether a new message would find memory: at least the threshold a message may
    /// fill before it spills, so that one that starts now can also reach its file.
    fn resources(&self) -> Resources {
        let budget = &self.shared.budget;
        let need = self.shared.spill.threshold.min(budget.limit());
        if budget.available() < need {
            Resources::Exhausted
        } else {
            Resources::Available
        }
    }

    /// Moves the content the session received to where this message is kept.
    async fn take_content(&mut self) {
        let Some(buffer) = self.session.content_buffer() else {
            return;
        };
        if buffer.is_empty() {
            return;
        }
        let content = self
            .content
            .get_or_insert_with(|| Content::new(&self.shared));
        content.push(buffer, &self.shared).await;
        buffer.clear();
    }

    async fn close_with(&mut self, reply: Reply) -> Flow {
        reply.write_to(&mut self.out);
        let _ = self.flush().await;
        Flow::Close
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        // A client that never reads would otherwise hold the write, and the session, for
        // ever: every command and data wait has a timeout, and so has every write.
        let write = tokio::time::timeout(self.shared.timeouts.write, self.io.write_all(&self.out));
        let result = match write.await {
            Ok(result) => result,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        };
        self.out.clear();
        result
    }

    /// Writes pending replies, then waits for input.
    async fn read(&mut self, timeout: Duration, drain: Option<&CancellationToken>) -> Input {
        if self.flush().await.is_err() {
            return Input::Eof;
        }
        self.buf.resize(READ_CHUNK, 0);
        let never = CancellationToken::new();
        let drain = drain.unwrap_or(&never);
        tokio::select! {
            biased;
            _ = drain.cancelled() => Input::Drain,
            read = tokio::time::timeout(timeout, self.io.read(&mut self.buf)) => match read {
                Ok(Ok(0)) | Ok(Err(_)) => Input::Eof,
                Ok(Ok(n)) => Input::Bytes(n),
                Err(_) => Input::Timeout,
            },
        }
    }

    async fn start_tls(&mut self) -> Flow {
        if self.flush().await.is_err() {
            return Flow::Close;
        }
        // Commands pipelined behind STARTTLS were sent in clear text and must not be
        // acted upon inside the TLS session (CVE-2011-0411).
        let _ = self.lines.take_remaining();
        let Some(tls) = self.shared.tls.as_ref() else {
            return Flow::Close;
        };
        let Io::Plain(tcp) = std::mem::replace(&mut self.io, Io::Upgrading) else {
            return Flow::Close;
        };
        let handshake = tls.acceptor().accept(tcp);
        match tokio::time::timeout(self.shared.timeouts.command, handshake).await {
            Ok(Ok(stream)) => {
                self.session.tls_started(tls_info(stream.get_ref().1));
                self.io = Io::Tls(Box::new(stream));
                Flow::Continue
            }
            Ok(Err(e)) => {
                tracing::info!(client = %self.peer, error = %e, "STARTTLS handshake failed");
                Flow::Close
            }
            Err(_) => Flow::Close,
        }
    }

    /// Checks credentials through the process's AUTH guard: refused at once while the
    /// client's network or the user name is locked out, else after a pause that grows
    /// with their recent failures (across connections), on a blocking thread within the
    /// bound on concurrent checks (password hashing is slow on purpose).
    async fn verify(&mut self, username: String, password: String) -> Step {
        // The policy this session applies (see refresh_policy).
        let policy = self.session.policy().clone();
        let user = username.clone();
        let check = move || policy.verify_password(&user, &password);
        let ip = self.session.client_ip();
        let verdict = self.shared.auth.verify(ip, &username, check).await;
        let result = verdict.label();
        self.shared.metrics.auth.inc(verdict.metric_label());
        tracing::info!(client = %self.peer, user = ?username, result, "AUTH");
        for scope in verdict.lockouts() {
            self.shared.metrics.auth_lockouts.inc(scope.metric_label());
            tracing::warn!(client = %self.peer, user = ?username, scope = scope.label(), "AUTH lockout");
        }
        self.session.auth_result(verdict.outcome())
    }

    /// Starts the block-list lookups at the greeting where the first RCPT will most
    /// likely need them: on a relay port (submission ports require AUTH, which exempts),
    /// from a client outside the trusted networks.
    fn start_prefetch(&self) -> Option<Prefetch> {
        if self.listener.session.kind != ListenerKind::Relay {
            return None;
        }
        let policy = self.session.policy();
        let settings = policy.dnsbl()?;
        let ip = self.session.client_ip();
        let trust = match policy.trusted_network(ip) {
            Some(_) => crate::envelope::SenderTrust::TrustedNetwork,
            None => crate::envelope::SenderTrust::Untrusted,
        };
        if settings.exempts(trust) {
            return None;
        }
        Some(Prefetch::start(&self.shared, settings, ip))
    }

    /// The block lists' verdict for the session's first RCPT that needs it: the round
    /// started at the greeting if it ran under the policy the session applies now, else
    /// a new one.
    async fn check_client(&mut self) -> Step {
        let policy = self.session.policy().clone();
        let Some(settings) = policy.dnsbl() else {
            return self.session.client_checked(ClientVerdict::Clear);
        };
        let prefetched = match self.prefetch.take() {
            Some(prefetch) => prefetch.verdict(settings).await,
            None => None,
        };
        let verdict = match prefetched {
            Some(verdict) => verdict,
            None => {
                let (dns, ip) = (self.shared.dns.as_ref(), self.session.client_ip());
                let metrics = &self.shared.metrics;
                self.shared.dnsbl.check(dns, settings, ip, metrics).await
            }
        };
        let verdict = verdict.for_session(self.session.client_ip());
        self.session.client_checked(verdict)
    }

    /// The end of a message: its filters, the durable hand-off to the queue and the
    /// reply, in one span (the acceptance) with the checks and the enqueue as children.
    async fn enqueue(&mut self, envelope: crate::envelope::Envelope, tail: Vec<u8>) -> Step {
        let span = tracing::info_span!(
            target: otel::TARGET,
            "smtp.accept",
            sluice.queue_id = %envelope.id,
            sluice.recipient_domain = otel::domains(
                envelope.recipients.iter().map(|r| r.address.domain.as_str()),
                MAX_DOMAINS,
            ),
            sluice.recipient_count = envelope.recipients.len(),
            sluice.reply_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        let step = self
            .accept(envelope, tail, &span)
            .instrument(span.clone())
            .await;
        if let Step::Reply(reply) | Step::Close(reply) = &step {
            span.record("sluice.reply_code", reply.code);
            if reply.code >= 400 {
                span.record("error.type", reply.code);
            }
        }
        step
    }

    async fn accept(
        &mut self,
        mut envelope: crate::envelope::Envelope,
        tail: Vec<u8>,
        span: &tracing::Span,
    ) -> Step {
        let content = match self.content.take() {
            Some(content) => content,
            None => Content::new(&self.shared),
        };
        let body = content.finish(&tail, &self.shared).await;
        drop(tail);
        let session = filtering::Session {
            policy: self.session.policy(),
            tls: self.session.tls(),
            peer: &self.peer,
        };
        // The checks' names and results (`name=result`, from the policy), never what
        // they found in the message.
        let checks = tracing::info_span!(
            target: otel::TARGET,
            "sluice.filter",
            sluice.filter.results = tracing::field::Empty,
            sluice.filter.disposition = tracing::field::Empty,
        );
        let filtered = filtering::filter(&self.shared, session, &envelope, body)
            .instrument(checks.clone())
            .await;
        let disposition = match &filtered {
            Filtered::Queue(..) => "queue",
            Filtered::Held => "held",
            Filtered::Refused { .. } => "refused",
        };
        checks.record("sluice.filter.disposition", disposition);
        let (body, filters) = match filtered {
            Filtered::Queue(body, filters) => {
                if let Some(results) = &filters {
                    checks.record("sluice.filter.results", results.as_str());
                }
                (body, filters)
            }
            Filtered::Held => return self.session.enqueue_result(Ok(())),
            Filtered::Refused { reply, detail } => {
                return self.session.filter_refused(reply, detail);
            }
        };
        // The message's trace context is the acceptance span's, so that the worker's
        // spans hang below it; with export off it stays as the session made it.
        if let Some(trace) = otel::trace_parent(span) {
            envelope.trace = Some(trace);
        }
        let started = Instant::now();
        let store = tracing::info_span!(
            target: otel::TARGET,
            "sluice.enqueue",
            error.type = tracing::field::Empty,
        );
        let stored = body
            .store(&envelope, &self.shared)
            .instrument(store.clone())
            .await;
        match &stored {
            Stored::Queue(Err(e), _) => store.record("error.type", e.metric_label()),
            Stored::Dropped(_) => store.record("error.type", "dropped"),
            Stored::Queue(Ok(()), _) => &store,
        };
        let (result, size) = match stored {
            Stored::Queue(result, size) => (result, size),
            Stored::Dropped(why) => return self.session.content_dropped(why),
        };
        let metrics = &self.shared.metrics;
        metrics.enqueue_seconds.observe(started.elapsed());
        if result.is_ok() {
            let accepted_filters = filters.clone();
            let accepted = DeliveryEvent {
                filters,
                ..DeliveryEvent::accepted(&envelope, std::time::SystemTime::now())
            };
            self.shared.events.emit(accepted);
            metrics.messages_accepted.inc();
            metrics.received_bytes.inc_by(size);
            tracing::info!(
                queue_id = %envelope.id,
                from = %crate::smtp::address::display_reverse_path(&envelope.reverse_path),
                nrcpt = envelope.recipients.len(),
                size,
                client = %self.peer,
                listener = %self.listener.name,
                user = envelope.authenticated_user.as_deref().unwrap_or(""),
                trace_id = envelope.trace.map(|t| t.trace_id()).unwrap_or_default(),
                filters = accepted_filters.as_deref().unwrap_or(""),
                "accepted"
            );
        }
        self.session.enqueue_result(result.map_err(queue_failure))
    }

    fn account_rejection(&mut self) {
        if let Some(r) = self.session.take_rejection() {
            match RejectReason::from_label(r.reason) {
                Some(reason) => self.shared.metrics.messages_rejected.inc(reason),
                None => tracing::warn!(reason = r.reason, "a refusal without a metric label"),
            }
            let queue_id = r
                .queue_id
                .as_ref()
                .map(|id| id.to_string())
                .unwrap_or_default();
            tracing::info!(
                queue_id,
                client = %self.peer,
                listener = %self.listener.name,
                reason = r.reason,
                detail = %r.detail,
                "rejected"
            );
        }
    }
}

/// The queue's error as the session words it to the client: a full store is the mail
/// system's 4.3.1, anything else a failed write; either way the client retries later.
fn queue_failure(error: QueueError) -> QueueFailure {
    let detail = error.to_string();
    match error {
        QueueError::Full { .. } => QueueFailure::Full { detail },
        _ => QueueFailure::Failed { detail },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_is_told_apart_from_a_failed_write() {
        assert_eq!(
            queue_failure(QueueError::unavailable_because("I/O error")),
            QueueFailure::Failed {
                detail: QueueError::unavailable_because("I/O error").to_string()
            }
        );
        let full = QueueError::full("No space left on device", None);
        let detail = full.to_string();
        assert_eq!(queue_failure(full), QueueFailure::Full { detail });
    }
}

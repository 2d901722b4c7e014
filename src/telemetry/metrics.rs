//! Prometheus metrics, rendered in the text exposition format by [`Metrics::render`].
//!
//! | metric | type | labels | meaning |
//! | --- | --- | --- | --- |
//! | `sluice_connections_total` | counter | `listener` | connections accepted |
//! | `sluice_connections_active` | gauge | | sessions open now |
//! | `sluice_connections_refused_total` | counter | `reason` (`max_connections`, `max_per_ip`, `max_per_ipv6_prefix`, `queue_unavailable`, `draining`: answered 421; on a `proxyProtocol` listener, closed without a greeting: `proxy_untrusted` (peer not in `trustedProxies`), `proxy_header_invalid`, `proxy_header_timeout` (none within `proxyHeaderTimeout`), `proxy_header_incomplete` (closed or failed mid-header)) | connections refused before their session began |
//! | `sluice_commands_total` | counter | `verb` | command lines received, by verb (`invalid` for unparsable) |
//! | `sluice_messages_accepted_total` | counter | | messages answered 250 after DATA/BDAT |
//! | `sluice_messages_rejected_total` | counter | `reason` | refusals of messages, senders and recipients (`relay_denied`, `routing_denied`, `address_literal_denied`, `unknown_recipient`, `sender_not_owned`, `too_many_hops`, `message_too_big`, `line_too_long`, `bare_line_ending`, `queue_error`, `insufficient_storage`: the memory budget was spent or the spill file could not be written, `dnsbl`: the client is on the policy's block lists, `dnsbl_unavailable`: the lists gave no verdict and `dnsbl.failMode` is closed) |
//! | `sluice_received_bytes_total` | counter | | octets of accepted messages, Received header included |
//! | `sluice_auth_total` | counter | `result` (`success`, `failure`: checked and wrong, `locked_out`: refused 454 without a check while the client network or user name is locked out, `busy`: refused 454 because no password check was free within 10 s) | AUTH attempts |
//! | `sluice_auth_lockouts_total` | counter | `scope` (`ip`: a client address, an IPv6 /64; `user`: a user name) | lockouts started: failed AUTHs reached `limits.authFailuresPerIp` / `authFailuresPerUser` within `authFailureWindow` |
//! | `sluice_policy_reloads_total` | counter | `result` (`applied`, `invalid`) | policy reloads |
//! | `sluice_policy_revision_info` | gauge | `revision` (the snapshot's revision hash) | always 1, in exactly one series: the revision of the policy snapshot applied to new sessions and deliveries now; none before the first |
//! | `sluice_memory_budget_bytes` | gauge | | the ingress's budget of message bytes held in memory (`limits.memoryBudget`) |
//! | `sluice_memory_in_flight_bytes` | gauge | | message bytes the ingress holds in memory now, reserved from that budget |
//! | `sluice_messages_spilled_total` | counter | | messages whose content outgrew `limits.spillThreshold` and went to a temporary file while being received |
//! | `sluice_enqueue_seconds` | histogram | | time from the end of the message to the durable queue write, i.e. until the 250 |
//! | `sluice_filter_verdicts_total` | counter | `check` (`attachments`, `rspamd`, `clamav`: the check's kind), `result` (`accept`, `reject`, `tempfail`, `rewrite`: headers changed, `strip`, `quarantine`, `exempt`: the sender skips the check, `error`: no verdict, the check's `failMode` applied, `tag`: a verdict only written into `X-Sluice-Filter`) | filter checks run at the end of a message, by result |
//! | `sluice_dkim_signatures_total` | counter | `result` (`signed`: one DKIM-Signature per key of the From domain added, `unsigned`: no key for the From domain, or no single From address, `error`: a key not loaded or a signature failed, answered 451 4.7.1) | messages of authenticated sessions and trusted networks, under a policy with `signing:`, by signing result |
//! | `sluice_filter_seconds` | histogram | | time the filter pipeline adds before the reply (all checks, which run at once, and applying their changes) |
//! | `sluice_dnsbl_lookups_total` | counter | `zone` (a `dnsbl:` zone of the policy; `other` past 256 series), `result` (`listed`, `clear`: not listed, NXDOMAIN or a code outside the zone's `answers`, `error`: timeout, SERVFAIL, no DNS, an error code in 127.255.255.0/24 or an answer outside 127.0.0.0/8) | block-list answers about clients, from DNS or the cache of answers by TTL |
//! | `sluice_deliveries_total` | counter | `route` (`mx`, `smarthost`, `lmtp`, `maildir`, `webhook`), `status` (`sent`, `deferred`, `bounced`) | delivery attempts per recipient |
//! | `sluice_delivery_replies_total` | counter | `class` (`2xx`, `4xx`, `5xx`, `other`) | replies to delivery attempts by class (`other`: no SMTP reply, e.g. a connection failure or local delivery) |
//! | `sluice_delivery_tls_fallbacks_total` | counter | | outbound connections that went on in plaintext because the handshake of opportunistic STARTTLS failed (certificate not verified, TLS error, handshake timeout); `starttls-required` and `implicit-tls` never fall back |
//! | `sluice_delivery_seconds` | histogram | | from acceptance to successful delivery, per recipient |
//! | `sluice_queue_redeliveries_total` | counter | | messages handed out again after an earlier lease lapsed without ack or defer (its worker died or overran its lease); each may be delivered twice, when that worker died between the remote's 250 and the record of it |
//! | `sluice_delivery_duplicates_suppressed_total` | counter | | recipients of such messages not delivered again because a delivery event records them as delivered |
//! | `sluice_events_lost_total` | counter | `reason` (`backlog_full`, `publish_failed`, `closed`) | delivery events dropped: the publishing backlog was full, the events stream did not acknowledge them, or they came after the sink was closed |
//! | `sluice_queue_invalid_messages_total` | counter | `reason` (`undecodable`, `invalid`) | JetStream messages terminated undelivered: their headers do not decode, or their envelope is not one an ingress of ours can have written (a path or DSN parameter that does not parse, a control character, more recipients than `limits.maxRecipients`, a body over `limits.maxMessageSize` + 1 MiB) |
//! | `sluice_admin_requests_refused_total` | counter | `reason` (`host`, `token`, `disabled`) | admin requests refused: a `Host` not in `adminAllowedHosts`, a missing or wrong bearer token on the queue API, or the queue API off (no token on a non-loopback address) |
//! | `sluice_queue_messages` | gauge | | messages in the queue (waiting, deferred or being delivered) |
//! | `sluice_queue_oldest_age_seconds` | gauge | | how long the oldest queued message has been in the queue (by its queue id); 0 when the queue is empty |
//!
//! The queue gauges are set by whoever owns the queue view, the admin listener, just
//! before it renders a scrape ([`Metrics::set_queue`]), so they are as fresh as the
//! scrape and cost nothing in between.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// A counter family keyed by one label whose values are few and fixed in the code.
#[derive(Debug, Default)]
pub struct LabeledCounter {
    values: RwLock<BTreeMap<&'static str, AtomicU64>>,
}

impl LabeledCounter {
    pub fn inc(&self, label: &'static str) {
        self.add(label, 1);
    }

    pub fn add(&self, label: &'static str, n: u64) {
        if let Some(c) = self.read().get(label) {
            c.fetch_add(n, Ordering::Relaxed);
            return;
        }
        let mut map = self.values.write().unwrap_or_else(|e| e.into_inner());
        map.entry(label)
            .or_default()
            .fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self, label: &str) -> u64 {
        self.read()
            .get(label)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<&'static str, AtomicU64>> {
        self.values.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn render(&self, out: &mut String, name: &str, label: &str) {
        for (value, count) in self.read().iter() {
            let n = count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
        }
    }
}

/// A counter family with two labels, both with few values fixed in the code.
#[derive(Debug, Default)]
pub struct PairCounter {
    values: RwLock<BTreeMap<(&'static str, &'static str), AtomicU64>>,
}

impl PairCounter {
    pub fn inc(&self, first: &'static str, second: &'static str) {
        let key = (first, second);
        if let Some(c) = self.read().get(&key) {
            c.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut map = self.values.write().unwrap_or_else(|e| e.into_inner());
        map.entry(key).or_default().fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, first: &str, second: &str) -> u64 {
        let read = self.read();
        let found = read.iter().find(|((a, b), _)| *a == first && *b == second);
        found.map_or(0, |(_, c)| c.load(Ordering::Relaxed))
    }

    fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, BTreeMap<(&'static str, &'static str), AtomicU64>> {
        self.values.read().unwrap_or_else(|e| e.into_inner())
    }

    fn render(&self, out: &mut String, name: &str, labels: (&str, &str)) {
        for ((a, b), count) in self.read().iter() {
            let n = count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}{{{}=\"{a}\",{}=\"{b}\"}} {n}",
                labels.0, labels.1
            );
        }
    }
}

/// A counter family keyed by a name from the policy (a DNSBL zone) and a result fixed in
/// the code. A policy has 16 zones at most, but policies change: past
/// [`ZoneCounter::MAX_SERIES`] series, new names count under `other`.
#[derive(Debug, Default)]
pub struct ZoneCounter {
    values: RwLock<BTreeMap<(String, &'static str), AtomicU64>>,
}

impl ZoneCounter {
    pub const MAX_SERIES: usize = 256;

    pub fn inc(&self, zone: &str, result: &'static str) {
        let read = self.values.read().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = read.get(&(zone.to_string(), result)) {
            c.fetch_add(1, Ordering::Relaxed);
            return;
        }
        drop(read);
        let mut map = self.values.write().unwrap_or_else(|e| e.into_inner());
        let zone = if map.len() >= Self::MAX_SERIES {
            "other"
        } else {
            zone
        };
        map.entry((zone.to_string(), result))
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, zone: &str, result: &str) -> u64 {
        let read = self.values.read().unwrap_or_else(|e| e.into_inner());
        let found = read.iter().find(|((z, r), _)| z == zone && *r == result);
        found.map_or(0, |(_, c)| c.load(Ordering::Relaxed))
    }

    /// Zone names are validated DNS names: nothing in them needs escaping.
    fn render(&self, out: &mut String, name: &str) {
        let read = self.values.read().unwrap_or_else(|e| e.into_inner());
        for ((zone, result), count) in read.iter() {
            let n = count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{zone=\"{zone}\",result=\"{result}\"}} {n}");
        }
    }
}

/// An info metric: one series at most, valued 1, whose one label says what is current
/// (the policy revision applied). Setting it replaces the series, so that a scrape never
/// shows an old value beside the new one.
#[derive(Debug, Default)]
pub struct Info {
    value: RwLock<Option<String>>,
}

impl Info {
    pub fn set(&self, value: &str) {
        let mut current = self.value.write().unwrap_or_else(|e| e.into_inner());
        if current.as_deref() != Some(value) {
            *current = Some(value.to_string());
        }
    }

    pub fn get(&self) -> Option<String> {
        self.value.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The label values are ours (hex digests), never quotes or backslashes to escape.
    fn render(&self, out: &mut String, name: &str, label: &str) {
        if let Some(value) = self.get() {
            let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} 1");
        }
    }
}

/// Upper bounds in seconds: fsync latency lives between 100 µs and a few 100 ms.
pub const ENQUEUE_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// From microseconds (attachment rules alone) to the tens of seconds a scanner may take.
pub const FILTER_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Upper bounds in seconds for delivery: from milliseconds on loopback to days in retry.
pub const DELIVERY_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 14400.0, 86400.0, 432000.0,
];

#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str) {
        let mut cumulative = 0;
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

#[derive(Debug)]
pub struct Metrics {
    pub connections: LabeledCounter,
    pub connections_active: AtomicI64,
    pub connections_refused: LabeledCounter,
    pub commands: LabeledCounter,
    pub messages_accepted: AtomicU64,
    pub messages_rejected: LabeledCounter,
    pub received_bytes: AtomicU64,
    pub memory_budget_bytes: AtomicU64,
    pub memory_in_flight_bytes: AtomicU64,
    pub messages_spilled: AtomicU64,
    pub auth: LabeledCounter,
    pub auth_lockouts: LabeledCounter,
    pub policy_reloads: LabeledCounter,
    pub policy_revision: Info,
    pub enqueue_seconds: Histogram,
    pub filter_verdicts: PairCounter,
    pub filter_seconds: Histogram,
    pub dnsbl_lookups: ZoneCounter,
    pub dkim_signatures: LabeledCounter,
    pub deliveries: PairCounter,
    pub delivery_replies: LabeledCounter,
    pub delivery_seconds: Histogram,
    /// Shared with the outbound client, which counts (`ClientConfig::tls_fallbacks`).
    pub delivery_tls_fallbacks: Arc<AtomicU64>,
    pub queue_redeliveries: AtomicU64,
    pub delivery_duplicates_suppressed: AtomicU64,
    pub events_lost: LabeledCounter,
    pub queue_invalid_messages: LabeledCounter,
    pub admin_requests_refused: LabeledCounter,
    pub queue_messages: AtomicU64,
    pub queue_oldest_age_ms: AtomicU64,
    /// Only in `sluice operator` (see `telemetry::operator`).
    pub operator: Option<super::operator::OperatorMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            connections: LabeledCounter::default(),
            connections_active: AtomicI64::new(0),
            connections_refused: LabeledCounter::default(),
            commands: LabeledCounter::default(),
            messages_accepted: AtomicU64::new(0),
            messages_rejected: LabeledCounter::default(),
            received_bytes: AtomicU64::new(0),
            memory_budget_bytes: AtomicU64::new(0),
            memory_in_flight_bytes: AtomicU64::new(0),
            messages_spilled: AtomicU64::new(0),
            auth: LabeledCounter::default(),
            auth_lockouts: LabeledCounter::default(),
            policy_reloads: LabeledCounter::default(),
            policy_revision: Info::default(),
            enqueue_seconds: Histogram::new(ENQUEUE_BUCKETS),
            filter_verdicts: PairCounter::default(),
            filter_seconds: Histogram::new(FILTER_BUCKETS),
            dnsbl_lookups: ZoneCounter::default(),
            dkim_signatures: LabeledCounter::default(),
            deliveries: PairCounter::default(),
            delivery_replies: LabeledCounter::default(),
            delivery_seconds: Histogram::new(DELIVERY_BUCKETS),
            delivery_tls_fallbacks: Arc::default(),
            queue_redeliveries: AtomicU64::new(0),
            delivery_duplicates_suppressed: AtomicU64::new(0),
            events_lost: LabeledCounter::default(),
            queue_invalid_messages: LabeledCounter::default(),
            admin_requests_refused: LabeledCounter::default(),
            queue_messages: AtomicU64::new(0),
            queue_oldest_age_ms: AtomicU64::new(0),
            operator: None,
        }
    }
}

impl Metrics {
    /// Sets the queue gauges: `messages` queued, the oldest `oldest_age` old.
    pub fn set_queue(&self, messages: u64, oldest_age: Duration) {
        self.queue_messages.store(messages, Ordering::Relaxed);
        let ms = u64::try_from(oldest_age.as_millis()).unwrap_or(u64::MAX);
        self.queue_oldest_age_ms.store(ms, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        };
        counter(
            &mut out,
            "sluice_connections_total",
            "Connections accepted.",
        );
        self.connections
            .render(&mut out, "sluice_connections_total", "listener");
        let active = self.connections_active.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP sluice_connections_active Sessions open now.\n# TYPE sluice_connections_active gauge\nsluice_connections_active {active}"
        );
        counter(
            &mut out,
            "sluice_connections_refused_total",
            "Connections refused with 421.",
        );
        self.connections_refused
            .render(&mut out, "sluice_connections_refused_total", "reason");
        counter(&mut out, "sluice_commands_total", "Command lines by verb.");
        self.commands
            .render(&mut out, "sluice_commands_total", "verb");
        counter(
            &mut out,
            "sluice_messages_accepted_total",
            "Messages accepted.",
        );
        let accepted = self.messages_accepted.load(Ordering::Relaxed);
        let _ = writeln!(out, "sluice_messages_accepted_total {accepted}");
        counter(
            &mut out,
            "sluice_messages_rejected_total",
            "Refusals by reason.",
        );
        self.messages_rejected
            .render(&mut out, "sluice_messages_rejected_total", "reason");
        counter(
            &mut out,
            "sluice_received_bytes_total",
            "Octets of accepted messages.",
        );
        let bytes = self.received_bytes.load(Ordering::Relaxed);
        let _ = writeln!(out, "sluice_received_bytes_total {bytes}");
        let budget = self.memory_budget_bytes.load(Ordering::Relaxed);
        let in_flight = self.memory_in_flight_bytes.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP sluice_memory_budget_bytes Budget of message bytes held in memory.\n# TYPE sluice_memory_budget_bytes gauge\nsluice_memory_budget_bytes {budget}\n# HELP sluice_memory_in_flight_bytes Message bytes held in memory now.\n# TYPE sluice_memory_in_flight_bytes gauge\nsluice_memory_in_flight_bytes {in_flight}"
        );
        counter(
            &mut out,
            "sluice_messages_spilled_total",
            "Messages received into a temporary file.",
        );
        let spilled = self.messages_spilled.load(Ordering::Relaxed);
        let _ = writeln!(out, "sluice_messages_spilled_total {spilled}");
        counter(&mut out, "sluice_auth_total", "AUTH attempts by result.");
        self.auth.render(&mut out, "sluice_auth_total", "result");
        counter(
            &mut out,
            "sluice_auth_lockouts_total",
            "AUTH lockouts started, by scope.",
        );
        self.auth_lockouts
            .render(&mut out, "sluice_auth_lockouts_total", "scope");
        counter(
            &mut out,
            "sluice_policy_reloads_total",
            "Policy reloads by result.",
        );
        self.policy_reloads
            .render(&mut out, "sluice_policy_reloads_total", "result");
        let _ = writeln!(
            out,
            "# HELP sluice_policy_revision_info The revision of the policy applied now.\n# TYPE sluice_policy_revision_info gauge"
        );
        self.policy_revision
            .render(&mut out, "sluice_policy_revision_info", "revision");
        let _ = writeln!(
            out,
            "# HELP sluice_enqueue_seconds End of message to durable queue write.\n# TYPE sluice_enqueue_seconds histogram"
        );
        self.enqueue_seconds
            .render(&mut out, "sluice_enqueue_seconds");
        counter(
            &mut out,
            "sluice_filter_verdicts_total",
            "Filter checks by kind and result.",
        );
        self.filter_verdicts.render(
            &mut out,
            "sluice_filter_verdicts_total",
            ("check", "result"),
        );
        let _ = writeln!(
            out,
            "# HELP sluice_filter_seconds Time the filters add before the reply.\n# TYPE sluice_filter_seconds histogram"
        );
        self.filter_seconds
            .render(&mut out, "sluice_filter_seconds");
        counter(
            &mut out,
            "sluice_dnsbl_lookups_total",
            "Block-list answers about clients, by zone and result.",
        );
        self.dnsbl_lookups
            .render(&mut out, "sluice_dnsbl_lookups_total");
        counter(
            &mut out,
            "sluice_dkim_signatures_total",
            "Messages of our senders by DKIM signing result.",
        );
        self.dkim_signatures
            .render(&mut out, "sluice_dkim_signatures_total", "result");
        counter(
            &mut out,
            "sluice_deliveries_total",
            "Delivery attempts per recipient.",
        );
        self.deliveries
            .render(&mut out, "sluice_deliveries_total", ("route", "status"));
        counter(
            &mut out,
            "sluice_delivery_replies_total",
            "Delivery replies by class.",
        );
        self.delivery_replies
            .render(&mut out, "sluice_delivery_replies_total", "class");
        let _ = writeln!(
            out,
            "# HELP sluice_delivery_seconds Acceptance to delivery.\n# TYPE sluice_delivery_seconds histogram"
        );
        self.delivery_seconds
            .render(&mut out, "sluice_delivery_seconds");
        counter(
            &mut out,
            "sluice_delivery_tls_fallbacks_total",
            "Connections that went on in plaintext after a failed opportunistic TLS handshake.",
        );
        let fallbacks = self.delivery_tls_fallbacks.load(Ordering::Relaxed);
        let _ = writeln!(out, "sluice_delivery_tls_fallbacks_total {fallbacks}");
        counter(
            &mut out,
            "sluice_queue_redeliveries_total",
            "Messages handed out again after a lease lapsed.",
        );
        let redeliveries = self.queue_redeliveries.load(Ordering::Relaxed);
        let _ = writeln!(out, "sluice_queue_redeliveries_total {redeliveries}");
        counter(
            &mut out,
            "sluice_delivery_duplicates_suppressed_total",
            "Recipients not delivered again: an event records them as delivered.",
        );
        let suppressed = self.delivery_duplicates_suppressed.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "sluice_delivery_duplicates_suppressed_total {suppressed}"
        );
        counter(
            &mut out,
            "sluice_events_lost_total",
            "Delivery events dropped, by reason.",
        );
        self.events_lost
            .render(&mut out, "sluice_events_lost_total", "reason");
        counter(
            &mut out,
            "sluice_queue_invalid_messages_total",
            "Queue messages terminated undelivered as invalid, by reason.",
        );
        self.queue_invalid_messages.render(
            &mut out,
            "sluice_queue_invalid_messages_total",
            "reason",
        );
        counter(
            &mut out,
            "sluice_admin_requests_refused_total",
            "Admin requests refused, by reason.",
        );
        self.admin_requests_refused.render(
            &mut out,
            "sluice_admin_requests_refused_total",
            "reason",
        );
        let messages = self.queue_messages.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP sluice_queue_messages Messages in the queue.\n# TYPE sluice_queue_messages gauge\nsluice_queue_messages {messages}"
        );
        let age = self.queue_oldest_age_ms.load(Ordering::Relaxed) as f64 / 1e3;
        let _ = writeln!(
            out,
            "# HELP sluice_queue_oldest_age_seconds Age of the oldest queued message.\n# TYPE sluice_queue_oldest_age_seconds gauge\nsluice_queue_oldest_age_seconds {age}"
        );
        if let Some(operator) = &self.operator {
            operator.render(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_labels_and_cumulative_buckets() {
        let m = Metrics::default();
        m.messages_rejected.inc("relay_denied");
        m.messages_rejected.add("relay_denied", 2);
        m.enqueue_seconds.observe(Duration::from_micros(300));
        m.enqueue_seconds.observe(Duration::from_millis(20));
        m.delivery_tls_fallbacks.fetch_add(2, Ordering::Relaxed);
        let text = m.render();
        assert!(text.contains("sluice_delivery_tls_fallbacks_total 2\n"));
        assert!(text.contains("sluice_messages_rejected_total{reason=\"relay_denied\"} 3\n"));
        assert!(text.contains("sluice_enqueue_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("sluice_enqueue_seconds_bucket{le=\"0.025\"} 2\n"));
        assert!(text.contains("sluice_enqueue_seconds_count 2\n"));
        m.deliveries.inc("mx", "sent");
        m.deliveries.inc("mx", "sent");
        let text = m.render();
        assert!(text.contains("sluice_deliveries_total{route=\"mx\",status=\"sent\"} 2\n"));
        assert_eq!(m.deliveries.get("mx", "sent"), 2);
    }

    #[test]
    fn renders_the_redelivery_duplicate_and_event_loss_counters() {
        let m = Metrics::default();
        let text = m.render();
        assert!(
            text.contains("# TYPE sluice_queue_redeliveries_total counter\nsluice_queue_redeliveries_total 0\n"),
            "{text}"
        );
        assert!(text.contains("\nsluice_delivery_duplicates_suppressed_total 0\n"));
        m.queue_redeliveries.fetch_add(2, Ordering::Relaxed);
        m.delivery_duplicates_suppressed
            .fetch_add(3, Ordering::Relaxed);
        m.events_lost.inc("backlog_full");
        let text = m.render();
        assert!(
            text.contains("\nsluice_queue_redeliveries_total 2\n"),
            "{text}"
        );
        assert!(text.contains(
            "# TYPE sluice_delivery_duplicates_suppressed_total counter\nsluice_delivery_duplicates_suppressed_total 3\n"
        ));
        assert!(text.contains("\nsluice_events_lost_total{reason=\"backlog_full\"} 1\n"));
    }

    #[test]
    fn dnsbl_zones_are_labels_bounded_in_number() {
        let m = Metrics::default();
        m.dnsbl_lookups.inc("zen.example", "listed");
        m.dnsbl_lookups.inc("zen.example", "listed");
        m.dnsbl_lookups.inc("bl.example", "error");
        let text = m.render();
        assert!(
            text.contains(
                "\nsluice_dnsbl_lookups_total{zone=\"zen.example\",result=\"listed\"} 2\n"
            )
        );
        assert_eq!(m.dnsbl_lookups.get("bl.example", "error"), 1);
        for i in 0..ZoneCounter::MAX_SERIES {
            m.dnsbl_lookups.inc(&format!("z{i}.example"), "clear");
        }
        assert!(m.dnsbl_lookups.get("other", "clear") > 0);
        let series = m.render().matches("sluice_dnsbl_lookups_total{").count();
        assert!(series <= ZoneCounter::MAX_SERIES + 2, "{series}");
    }

    #[test]
    fn the_policy_revision_is_one_series_that_changes() {
        let m = Metrics::default();
        let text = m.render();
        assert!(
            text.contains("# TYPE sluice_policy_revision_info gauge\n# HELP"),
            "no series before a policy: {text}"
        );
        m.policy_revision.set("abc1");
        m.policy_revision.set("def2");
        let text = m.render();
        assert!(text.contains("\nsluice_policy_revision_info{revision=\"def2\"} 1\n"));
        assert_eq!(text.matches("sluice_policy_revision_info{").count(), 1);
        assert_eq!(m.policy_revision.get().as_deref(), Some("def2"));
    }

    #[test]
    fn renders_the_queue_gauges_in_seconds() {
        let m = Metrics::default();
        let text = m.render();
        assert!(text.contains("\nsluice_queue_messages 0\n"), "{text}");
        assert!(
            text.contains("\nsluice_queue_oldest_age_seconds 0\n"),
            "{text}"
        );
        m.set_queue(3, Duration::from_millis(90_250));
        let text = m.render();
        assert!(text.contains("# TYPE sluice_queue_messages gauge\nsluice_queue_messages 3\n"));
        assert!(text.contains(
            "# TYPE sluice_queue_oldest_age_seconds gauge\nsluice_queue_oldest_age_seconds 90.25\n"
        ));
    }
}

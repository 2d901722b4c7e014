//! Prometheus metrics on `prometheus-client`, rendered in the text exposition format
//! (version 0.0.4, as before: the same `Content-Type`, `# TYPE` lines that name counters
//! with their `_total`) by [`Metrics::render`].
//!
//! Each metric is defined once, in the [`metrics!`] invocation below: its field, its type
//! with its labels (enums from [`labels`], never strings), the name it is scraped under and
//! its help text. The README's metrics table documents them, with the values of each
//! label; a test fails when that table and the registered families differ, and another
//! when the names and types differ from those dashboards were built on.
//!
//! The queue gauges are set by whoever owns the queue view, the admin listener, just
//! before it renders a scrape ([`Metrics::set_queue`]), so they are as fresh as the
//! scrape and cost nothing in between.

mod family;
mod labels;
#[cfg(test)]
mod tests;

pub use family::{Counters, Label, One, RevisionInfo, Two, ZoneCounters};
pub use labels::*;

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeMetric;
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

use super::operator::OperatorMetrics;

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

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

/// A gauge of a value that is not a whole number (seconds).
pub type FloatGauge = Gauge<f64, AtomicU64>;

/// A histogram of durations, observed in seconds.
#[derive(Debug, Clone)]
pub struct Seconds(Histogram);

impl Seconds {
    fn new(bounds: &[f64]) -> Self {
        Seconds(Histogram::new(bounds.iter().copied()))
    }

    pub fn observe(&self, d: Duration) {
        self.0.observe(d.as_secs_f64());
    }
}

impl EncodeMetric for Seconds {
    fn encode(&self, encoder: prometheus_client::encoding::MetricEncoder) -> std::fmt::Result {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Registers `metric` under the name it is scraped under: `prometheus-client` adds the
/// `_total` of a counter itself, and the `.` that ends a help text.
pub(super) fn register(registry: &mut Registry, name: &str, doc: &[&str], metric: impl Metric) {
    let name = match metric.metric_type() {
        MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    };
    let help: Vec<&str> = doc.iter().map(|line| line.trim()).collect();
    let help = help.join(" ");
    registry.register(name, help.trim_end_matches('.'), metric);
}

/// Declares the metrics: each field's doc comment is its help text, the string after `=>`
/// the name it is scraped under, the expression before it its initial value.
macro_rules! metrics {
    ($( $(#[doc = $doc:literal])* $field:ident: $ty:ty = $init:expr => $name:literal; )+) => {
        #[derive(Debug)]
        pub struct Metrics {
            $( $(#[doc = $doc])* pub $field: $ty, )+
            /// Only in `sluice operator` (see `telemetry::operator`).
            pub operator: Option<OperatorMetrics>,
            registry: Registry,
        }

        impl Metrics {
            fn build(operator: Option<OperatorMetrics>) -> Self {
                let mut registry = Registry::default();
                $(
                    let $field: $ty = $init;
                    register(&mut registry, $name, &[$($doc),*], $field.clone());
                )+
                if let Some(operator) = &operator {
                    operator.register(&mut registry);
                }
                Metrics { $($field,)+ operator, registry }
            }
        }
    };
}

metrics! {
    /// Connections accepted, by listener kind.
    connections: Counters<One<ListenerLabel>> = Counters::default() => "sluice_connections_total";
    /// Sessions open now.
    connections_active: Gauge = Gauge::default() => "sluice_connections_active";
    /// Connections refused before their session began, by reason.
    connections_refused: Counters<One<ConnectionRefusal>> = Counters::default()
        => "sluice_connections_refused_total";
    /// Command lines by verb.
    commands: Counters<One<Verb>> = Counters::default() => "sluice_commands_total";
    /// Messages accepted.
    messages_accepted: Counter = Counter::default() => "sluice_messages_accepted_total";
    /// Refusals of messages, senders and recipients, by reason.
    messages_rejected: Counters<One<RejectReason>> = Counters::default()
        => "sluice_messages_rejected_total";
    /// Octets of accepted messages.
    received_bytes: Counter = Counter::default() => "sluice_received_bytes_total";
    /// Budget of message bytes held in memory.
    memory_budget_bytes: Gauge = Gauge::default() => "sluice_memory_budget_bytes";
    /// Message bytes held in memory now.
    memory_in_flight_bytes: Gauge = Gauge::default() => "sluice_memory_in_flight_bytes";
    /// Messages received into a temporary file.
    messages_spilled: Counter = Counter::default() => "sluice_messages_spilled_total";
    /// AUTH attempts by result.
    auth: Counters<One<AuthResult>> = Counters::default() => "sluice_auth_total";
    /// AUTH lockouts started, by scope.
    auth_lockouts: Counters<One<LockoutScope>> = Counters::default()
        => "sluice_auth_lockouts_total";
    /// Policy reloads by result.
    policy_reloads: Counters<One<ReloadResult>> = Counters::default()
        => "sluice_policy_reloads_total";
    /// The revision of the policy applied now.
    policy_revision: RevisionInfo = RevisionInfo::default()
        => "sluice_policy_revision_info";
    /// End of message to durable queue write.
    enqueue_seconds: Seconds = Seconds::new(ENQUEUE_BUCKETS) => "sluice_enqueue_seconds";
    /// Filter checks by kind and result.
    filter_verdicts: Counters<Two<FilterCheck, FilterResult>> = Counters::default()
        => "sluice_filter_verdicts_total";
    /// Time the filters add before the reply.
    filter_seconds: Seconds = Seconds::new(FILTER_BUCKETS) => "sluice_filter_seconds";
    /// Block-list answers about clients, by zone and result.
    dnsbl_lookups: ZoneCounters<DnsblResult> = ZoneCounters::default()
        => "sluice_dnsbl_lookups_total";
    /// Messages of our senders by DKIM signing result.
    dkim_signatures: Counters<One<SigningResult>> = Counters::default()
        => "sluice_dkim_signatures_total";
    /// Delivery attempts per recipient.
    deliveries: Counters<Two<RouteLabel, DeliveryStatus>> = Counters::default()
        => "sluice_deliveries_total";
    /// Delivery replies by class.
    delivery_replies: Counters<One<ReplyClass>> = Counters::default()
        => "sluice_delivery_replies_total";
    /// Acceptance to delivery.
    delivery_seconds: Seconds = Seconds::new(DELIVERY_BUCKETS) => "sluice_delivery_seconds";
    /// Connections that went on in plaintext after a failed opportunistic TLS handshake.
    delivery_tls_fallbacks: Counter = Counter::default() => "sluice_delivery_tls_fallbacks_total";
    /// Messages handed out again after a lease lapsed.
    queue_redeliveries: Counter = Counter::default() => "sluice_queue_redeliveries_total";
    /// Recipients not delivered again: an event records them as delivered.
    delivery_duplicates_suppressed: Counter = Counter::default()
        => "sluice_delivery_duplicates_suppressed_total";
    /// Delivery events dropped, by reason.
    events_lost: Counters<One<EventLoss>> = Counters::default() => "sluice_events_lost_total";
    /// Queue messages terminated undelivered as invalid, by reason.
    queue_invalid_messages: Counters<One<InvalidMessage>> = Counters::default()
        => "sluice_queue_invalid_messages_total";
    /// Admin requests refused, by reason.
    admin_requests_refused: Counters<One<AdminRefusal>> = Counters::default()
        => "sluice_admin_requests_refused_total";
    /// Messages in the queue.
    queue_messages: Gauge = Gauge::default() => "sluice_queue_messages";
    /// Age of the oldest queued message.
    queue_oldest_age_seconds: FloatGauge = FloatGauge::default()
        => "sluice_queue_oldest_age_seconds";
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::build(None)
    }
}

impl Metrics {
    /// The metrics of `sluice operator`: the common ones and [`OperatorMetrics`].
    pub fn operator() -> Self {
        Metrics::build(Some(OperatorMetrics::default()))
    }

    /// Sets the queue gauges: `messages` queued, the oldest `oldest_age` old.
    pub fn set_queue(&self, messages: u64, oldest_age: Duration) {
        self.queue_messages
            .set(i64::try_from(messages).unwrap_or(i64::MAX));
        self.queue_oldest_age_seconds.set(oldest_age.as_secs_f64());
    }

    /// The exposition, in the text format of [`CONTENT_TYPE`].
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail, and our encoders return no error of their own.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

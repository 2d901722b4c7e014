//! The shapes our metrics take on top of `prometheus-client`: label values that are enums
//! ([`Label`], declared with [`label_values!`]), counter families keyed by one or two of
//! them ([`Counters`]), the DNSBL counter whose zone comes from the policy and is bounded
//! in series ([`ZoneCounters`]), and the info gauge that names the policy revision in one
//! series at most ([`RevisionInfo`]).

use std::fmt::{self, Debug};
use std::hash::Hash;
use std::sync::{Arc, Mutex, RwLock};

use prometheus_client::encoding::{
    EncodeLabelKey, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelSetEncoder, MetricEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::{MetricType, TypedMetric};

/// A label's values: an enum whose variants are the only values the label can take, so
/// that no call site can invent one and the set of series stays bounded.
pub trait Label: Copy + Eq + Hash + Debug + Send + Sync + 'static {
    /// The label's name (`reason`, `result`, ...).
    const NAME: &'static str;
    /// Every value, in the order the docs list them.
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;

    /// The value spelled `label`, for the few layers below telemetry that still name
    /// their reasons with strings (the SMTP session's refusals, the filters' results).
    fn from_label(label: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == label)
    }
}

/// Declares a [`Label`] enum: `label_values! { pub enum Verb as "verb" { Ehlo = "EHLO", ... } }`.
/// `derive(EncodeLabelValue)` would write the variants' Rust names, which would force
/// `relay_denied`-style variants on us; the values are spelled out here instead.
macro_rules! label_values {
    ($(#[$meta:meta])* $vis:vis enum $name:ident as $label:literal {
        $($(#[$vmeta:meta])* $variant:ident = $value:literal,)+
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $crate::telemetry::metrics::Label for $name {
            const NAME: &'static str = $label;
            const ALL: &'static [Self] = &[$($name::$variant,)+];
            fn as_str(self) -> &'static str {
                match self { $($name::$variant => $value,)+ }
            }
        }

        impl ::prometheus_client::encoding::EncodeLabelValue for $name {
            fn encode(
                &self,
                encoder: &mut ::prometheus_client::encoding::LabelValueEncoder,
            ) -> ::std::fmt::Result {
                use ::std::fmt::Write as _;
                encoder.write_str($crate::telemetry::metrics::Label::as_str(*self))
            }
        }
    };
}
pub(crate) use label_values;

fn encode_label(
    encoder: &mut LabelSetEncoder,
    name: &str,
    value: &impl EncodeLabelValue,
) -> fmt::Result {
    let mut label = encoder.encode_label();
    let mut key = label.encode_label_key()?;
    EncodeLabelKey::encode(&name, &mut key)?;
    let mut value_encoder = key.encode_label_value()?;
    value.encode(&mut value_encoder)?;
    value_encoder.finish()
}

/// The label set of a family with one label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct One<A>(pub A);

impl<A: Label> EncodeLabelSet for One<A> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        encode_label(encoder, A::NAME, &self.0.as_str())
    }
}

/// The label set of a family with two labels, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Two<A, B>(pub A, pub B);

impl<A: Label, B: Label> EncodeLabelSet for Two<A, B> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        encode_label(encoder, A::NAME, &self.0.as_str())?;
        encode_label(encoder, B::NAME, &self.1.as_str())
    }
}

/// A counter family keyed by label enums (`S` is [`One`] or [`Two`]). A series appears at
/// its first increment, as before.
#[derive(Debug, Clone)]
pub struct Counters<S: Clone + Hash + Eq>(Family<S, Counter>);

impl<S: Clone + Hash + Eq> Default for Counters<S> {
    fn default() -> Self {
        Counters(Family::default())
    }
}

impl<A: Label> Counters<One<A>> {
    pub fn inc(&self, a: A) {
        self.add(a, 1);
    }

    pub fn add(&self, a: A, n: u64) {
        self.0.get_or_create(&One(a)).inc_by(n);
    }

    pub fn get(&self, a: A) -> u64 {
        self.0.get(&One(a)).map_or(0, |c| c.get())
    }
}

impl<A: Label, B: Label> Counters<Two<A, B>> {
    pub fn inc(&self, a: A, b: B) {
        self.0.get_or_create(&Two(a, b)).inc();
    }

    pub fn get(&self, a: A, b: B) -> u64 {
        self.0.get(&Two(a, b)).map_or(0, |c| c.get())
    }
}

impl<S> EncodeMetric for Counters<S>
where
    S: Clone + Hash + Eq + EncodeLabelSet + Debug + Send + Sync + 'static,
{
    fn encode(&self, encoder: MetricEncoder) -> fmt::Result {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        Counter::<u64>::TYPE
    }

    fn is_empty(&self) -> bool {
        EncodeMetric::is_empty(&self.0)
    }
}

/// The labels of `sluice_dnsbl_lookups_total`: a zone named by the policy, and a result.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ZoneLabels<R> {
    zone: String,
    result: R,
}

impl<R: Label> EncodeLabelSet for ZoneLabels<R> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        encode_label(encoder, "zone", &self.zone.as_str())?;
        encode_label(encoder, R::NAME, &self.result.as_str())
    }
}

/// A counter family keyed by a name from the policy (a DNSBL zone) and a result fixed in
/// the code. A policy has 16 zones at most, but policies change: past
/// [`ZoneCounters::MAX_SERIES`] series, new names count under `other`.
#[derive(Debug, Clone)]
pub struct ZoneCounters<R: Label> {
    family: Family<ZoneLabels<R>, Counter>,
    /// The number of series, counted while holding the lock under which series are
    /// added, so that two new zones cannot both take the last place under the cap.
    series: Arc<Mutex<usize>>,
}

impl<R: Label> Default for ZoneCounters<R> {
    fn default() -> Self {
        ZoneCounters {
            family: Family::default(),
            series: Arc::default(),
        }
    }
}

impl<R: Label> ZoneCounters<R> {
    pub const MAX_SERIES: usize = 256;

    pub fn inc(&self, zone: &str, result: R) {
        let labels = ZoneLabels {
            zone: zone.to_string(),
            result,
        };
        if let Some(counter) = self.family.get(&labels) {
            counter.inc();
            return;
        }
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let labels = if *series >= Self::MAX_SERIES && self.family.get(&labels).is_none() {
            ZoneLabels {
                zone: "other".to_string(),
                result,
            }
        } else {
            labels
        };
        if self.family.get(&labels).is_none() {
            *series += 1;
        }
        self.family.get_or_create(&labels).inc();
    }

    pub fn get(&self, zone: &str, result: R) -> u64 {
        let labels = ZoneLabels {
            zone: zone.to_string(),
            result,
        };
        self.family.get(&labels).map_or(0, |c| c.get())
    }
}

impl<R: Label> EncodeMetric for ZoneCounters<R> {
    fn encode(&self, encoder: MetricEncoder) -> fmt::Result {
        self.family.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        Counter::<u64>::TYPE
    }

    fn is_empty(&self) -> bool {
        EncodeMetric::is_empty(&self.family)
    }
}

/// An info gauge: one series at most, valued 1, whose `revision` label says what is
/// current. Setting it replaces the series under one lock, so that a scrape never shows
/// an old value beside the new one (a `Family` would need a remove and an insert). Its
/// `HELP` and `TYPE` lines are written before the first value too.
#[derive(Debug, Default, Clone)]
pub struct RevisionInfo {
    value: Arc<RwLock<Option<String>>>,
}

#[derive(Debug)]
struct RevisionLabel<'a>(&'a str);

impl EncodeLabelSet for RevisionLabel<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        encode_label(encoder, "revision", &self.0)
    }
}

impl RevisionInfo {
    pub fn set(&self, value: &str) {
        let mut current = self.value.write().unwrap_or_else(|e| e.into_inner());
        if current.as_deref() != Some(value) {
            *current = Some(value.to_string());
        }
    }

    pub fn get(&self) -> Option<String> {
        self.value.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl EncodeMetric for RevisionInfo {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        let value = self.value.read().unwrap_or_else(|e| e.into_inner());
        if let Some(revision) = value.as_deref() {
            encoder
                .encode_family(&RevisionLabel(revision))?
                .encode_gauge(&1i64)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

//! Trace export over OTLP/HTTP (protobuf): the SMTP session, each message's acceptance
//! and each delivery attempt become OpenTelemetry spans, and the W3C `traceparent` that
//! the envelope carries through the queue joins the ingress's and the worker's spans of
//! one message into one trace.
//!
//! Export is on when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_ENDPOINT`
//! or the configuration's `telemetry.otlpEndpoint` names a collector, and
//! `OTEL_SDK_DISABLED` is not `true`. The standard variables are honoured:
//! `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` (the role's name, `sluice-ingress`,
//! `sluice-worker` or `sluice`, otherwise), `OTEL_TRACES_SAMPLER` and
//! `OTEL_TRACES_SAMPLER_ARG`, `OTEL_BSP_*` for batching, `OTEL_EXPORTER_OTLP_HEADERS`.
//!
//! The spans have the target [`TARGET`]: the OpenTelemetry layer takes only those, and
//! the log layer none of them, so the log lines stay as they are. With export off no
//! layer wants the target, and its spans are disabled call sites that cost a cached
//! interest check.

use crate::envelope::TraceParent;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::{Context, Value};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use std::sync::Arc;
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;

/// The target of every span meant for export (and of nothing else).
pub const TARGET: &str = "sluice::otel";

/// The collector's default timeout for one export (the OTLP default).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    #[error("TLS for the OTLP exporter: {0}")]
    Tls(#[source] rustls::Error),
    #[error("the OTLP exporter's HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("the OTLP exporter: {0}")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
}

/// Where the exporter sends spans.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    /// The standard variables name it; the exporter reads them itself.
    FromEnvironment,
    /// The configuration's base URL, with the signal's path added.
    Url(String),
}

/// What the configuration file says about export (`telemetry:`); the `OTEL_*` variables
/// win over it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExportSettings {
    /// The OTLP/HTTP base URL (`/v1/traces` is added).
    pub otlp_endpoint: Option<String>,
    /// The share of new traces kept, 0.0 to 1.0.
    pub sample_ratio: Option<f64>,
}

/// The running export: a tracer provider with a batch processor on the tokio runtime.
pub struct Export {
    provider: SdkTracerProvider,
}

impl Export {
    /// Starts the export if the environment or `config` asks for it (`Ok(None)` when
    /// not). Must run inside the tokio runtime, which the batch processor runs on.
    pub fn start(
        default_service: &'static str,
        config: &ExportSettings,
    ) -> Result<Option<Export>, OtelError> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if disabled(&env) {
            return Ok(None);
        }
        let Some(endpoint) = endpoint(&env, config) else {
            return Ok(None);
        };
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_http_client(http_client(timeout(&env))?);
        if let Endpoint::Url(url) = endpoint {
            exporter = exporter.with_endpoint(url);
        }
        let exporter = exporter.build().map_err(OtelError::Exporter)?;
        let mut resource = Resource::builder();
        if service_name(&env).is_none() {
            resource = resource.with_service_name(default_service);
        }
        let mut provider = SdkTracerProvider::builder()
            .with_resource(resource.build())
            .with_span_processor(BatchSpanProcessor::builder(exporter, Tokio).build());
        if let Some(sampler) = sampler(&env, config) {
            provider = provider.with_sampler(sampler);
        }
        Ok(Some(Export {
            provider: provider.build(),
        }))
    }

    /// The layer that turns the spans of [`TARGET`] into OpenTelemetry spans.
    pub fn layer<S>(&self) -> impl Layer<S>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        let tracer = self.provider.tracer("sluice");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            // Only our spans: log events inside them would otherwise become span events
            // carrying whatever the log line says (addresses, user names).
            .with_filter(filter_fn(|meta| meta.target() == TARGET))
    }

    /// Exports what is still batched and stops. Blocks until done (or the exporter's
    /// timeout): call it outside the runtime's tasks, with the runtime still running.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "exporting the last spans failed");
        }
    }
}

/// The HTTP client for the exporter: rustls on ring with the system's roots (never
/// aws-lc-rs), within the export timeout.
fn http_client(timeout: Duration) -> Result<reqwest::Client, OtelError> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(OtelError::Tls)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .build()
        .map_err(OtelError::Client)
}

/// `OTEL_SDK_DISABLED=true` turns export off whatever else says.
fn disabled(env: &dyn Fn(&str) -> Option<String>) -> bool {
    env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

fn endpoint(env: &dyn Fn(&str) -> Option<String>, config: &ExportSettings) -> Option<Endpoint> {
    if env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
    {
        return Some(Endpoint::FromEnvironment);
    }
    let base = config.otlp_endpoint.as_deref()?.trim();
    if base.is_empty() {
        return None;
    }
    Some(Endpoint::Url(format!(
        "{}/v1/traces",
        base.trim_end_matches('/')
    )))
}

/// The service name the environment gives, if any (the SDK reads it itself).
fn service_name(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    if let Some(name) = env("OTEL_SERVICE_NAME") {
        return Some(name);
    }
    env("OTEL_RESOURCE_ATTRIBUTES")?
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| key.trim() == "service.name")
        .map(|(_, value)| value.trim().to_string())
}

/// The configuration's ratio, parent-based, unless `OTEL_TRACES_SAMPLER` says otherwise
/// (the SDK reads that itself); `None` leaves the SDK's default, parent-based always-on.
fn sampler(env: &dyn Fn(&str) -> Option<String>, config: &ExportSettings) -> Option<Sampler> {
    if env("OTEL_TRACES_SAMPLER").is_some() {
        return None;
    }
    let ratio = config.sample_ratio?;
    let ratio = if ratio.is_finite() {
        ratio.clamp(0.0, 1.0)
    } else {
        1.0
    };
    Some(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
        ratio,
    ))))
}

/// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` or `OTEL_EXPORTER_OTLP_TIMEOUT`, in milliseconds.
fn timeout(env: &dyn Fn(&str) -> Option<String>) -> Duration {
    env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
        .or_else(|| env("OTEL_EXPORTER_OTLP_TIMEOUT"))
        .and_then(|ms| ms.trim().parse::<u64>().ok())
        .map_or(EXPORT_TIMEOUT, Duration::from_millis)
}

/// The OpenTelemetry context of a `traceparent` received with a message: the remote
/// parent of the spans that work on it.
pub fn remote_context(parent: &TraceParent) -> Context {
    let flags = match parent.sampled() {
        true => TraceFlags::SAMPLED,
        false => TraceFlags::default(),
    };
    let span = SpanContext::new(
        TraceId::from_bytes(parent.trace_id_bytes()),
        SpanId::from_bytes(parent.parent_id_bytes()),
        flags,
        true,
        TraceState::default(),
    );
    Context::new().with_remote_span_context(span)
}

/// The `traceparent` naming `span`, for the envelope; `None` when `span` is not
/// exported (export off), so the caller keeps the trace context it had.
pub fn trace_parent(span: &tracing::Span) -> Option<TraceParent> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    let span = context.span();
    let span = span.span_context();
    if !span.is_valid() {
        return None;
    }
    TraceParent::from_parts(
        span.trace_id().to_bytes(),
        span.span_id().to_bytes(),
        span.is_sampled(),
    )
}

/// Makes `parent` (from the envelope) the parent of `span`, before it starts.
pub fn set_remote_parent(span: &tracing::Span, parent: Option<&TraceParent>) {
    if span.is_disabled() {
        return;
    }
    if let Some(parent) = parent {
        // Fails only without the OpenTelemetry layer or once the span started, neither
        // of which can happen to a span just made while export is on.
        let _ = span.set_parent(remote_context(parent));
    }
}

/// Sets an attribute on an exported span (beyond the fields it was declared with).
pub fn set_attribute(span: &tracing::Span, key: &'static str, value: impl Into<Value>) {
    if !span.is_disabled() {
        span.set_attribute(key, value);
    }
}

/// The three-digit code a reply text starts with (`451 4.3.0 …` → 451).
pub fn reply_code(reply: &str) -> Option<u16> {
    let code = reply.get(..3)?;
    let valid = code.bytes().all(|b| b.is_ascii_digit())
        && reply
            .as_bytes()
            .get(3)
            .is_none_or(|b| matches!(b, b' ' | b'-'));
    valid.then(|| code.parse().ok()).flatten()
}

/// Recipient domains (never the local parts), distinct, lower case, at most `max`,
/// joined with commas: an attribute that says where mail went without saying to whom.
pub fn domains<'a>(domains: impl Iterator<Item = &'a str>, max: usize) -> String {
    let mut seen: Vec<String> = Vec::new();
    for domain in domains {
        let domain = domain.to_ascii_lowercase();
        if !seen.contains(&domain) {
            if seen.len() == max {
                break;
            }
            seen.push(domain);
        }
    }
    seen.join(",")
}

#[cfg(test)]
#[path = "otel_tests.rs"]
mod tests;

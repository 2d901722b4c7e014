//! Observability: logging set-up, trace export over OTLP ([`otel`]), the Prometheus
//! [`metrics`] and readiness latches ([`readiness`]). The admin HTTP listener that serves
//! them (`/metrics`, `/readyz`) is [`crate::admin`], above the queue it also manages.

pub mod metrics;
pub mod operator;
pub mod otel;
pub mod readiness;

use std::io::IsTerminal;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// How log lines are written: for people, or one JSON object per line for collectors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Logs go to standard error, one line per event, filtered by `RUST_LOG` (default `info`).
pub fn init_logging(format: LogFormat) {
    init_logging_with(format, None);
}

/// [`init_logging`], with the spans meant for export going to `export` when there is
/// one. The log layer never sees them ([`otel::TARGET`]), so log lines are the same
/// with export on or off.
pub fn init_logging_with(format: LogFormat, export: Option<&otel::Export>) {
    // A second initialisation (tests) is harmless, hence the ignored result.
    let _ = subscriber(format, export).try_init();
}

/// The log layer, and the export layer only when there is an export: an absent layer
/// (`Option::None`) would still declare an interest in every call site, enabling the
/// exported spans with no one to consume them.
fn subscriber(format: LogFormat, export: Option<&otel::Export>) -> tracing::Dispatch {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let not_exported = filter_fn(|meta| meta.target() != otel::TARGET);
    // Colours only for a person at a terminal, never into log files or collectors.
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => Box::new(fmt),
        LogFormat::Json => Box::new(fmt.json().flatten_event(true)),
    };
    let logs = tracing_subscriber::registry().with(fmt.with_filter(filter.and(not_exported)));
    match export {
        Some(export) => tracing::Dispatch::new(logs.with(export.layer())),
        None => tracing::Dispatch::new(logs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without export, the spans meant for it are disabled at their call site (no
    /// layer wants them), while log events and other spans are as before.
    #[test]
    fn exported_spans_cost_nothing_without_export() {
        for format in [LogFormat::Text, LogFormat::Json] {
            tracing::dispatcher::with_default(&subscriber(format, None), || {
                let exported = tracing::info_span!(target: otel::TARGET, "smtp.session");
                assert!(exported.is_disabled());
                assert!(!tracing::enabled!(target: otel::TARGET, tracing::Level::ERROR));
                assert!(tracing::enabled!(tracing::Level::INFO));
            });
        }
    }
}

//! Observability: logging set-up, the Prometheus [`metrics`] and readiness latches
//! ([`readiness`]). The admin HTTP listener that serves them (`/metrics`, `/readyz`) is
//! [`crate::admin`], above the queue it also manages.

pub mod metrics;
pub mod operator;
pub mod readiness;

use crate::config::LogFormat;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Logs go to standard error, one line per event, filtered by `RUST_LOG` (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal, never into log files or collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless, hence the ignored result.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

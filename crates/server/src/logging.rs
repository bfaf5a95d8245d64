//! The process's log: `tracing` events written to standard error by `tracing-subscriber`, one
//! line each, with a UTC timestamp, the level, the target (`ringmatch` for the service's own
//! lines, the crate and module otherwise) and the fields. `RUST_LOG` filters them (default
//! `info`; for example `RUST_LOG=warn` or `RUST_LOG=info,ringmatch_gateway=debug`);
//! `--log-format json` writes one JSON object per line instead.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-12-02T06:30:00.123456Z  INFO ringmatch: ready`
    Text,
    /// `{"timestamp":"...","level":"INFO","message":"ready","target":"ringmatch"}`, the
    /// event's fields beside `message`
    Json,
}

/// Installs the subscriber for the whole process. A `RUST_LOG` that does not parse is an
/// error, not silently ignored.
pub fn init(format: LogFormat) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
            .map_err(|error| anyhow::anyhow!("RUST_LOG={directives:?}: {error}"))?,
        _ => EnvFilter::new("info"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_ansi(false)
            .try_init(),
    };
    installed.map_err(|error| anyhow::anyhow!("cannot install the log: {error}"))
}

//! The tracing subscriber: the one place in floodway that decides where logs go.
//!
//! Logs always go to stderr, so stdout carries only results (tables, ids, JSON) and can be
//! piped. The default level is `warn`, which keeps human output clean; `-v` raises it, and
//! `RUST_LOG`, when set, replaces it with its own directives.

use std::io::IsTerminal;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event, for log collectors.
    Json,
}

/// Installs the global subscriber. `verbose` is the number of `-v` flags.
pub(crate) fn install(format: LogFormat, verbose: u8) {
    let level = match verbose {
        0 => LevelFilter::WARN,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let filter = EnvFilter::builder()
        .with_default_directive(level.into())
        .from_env_lossy();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // Installing fails only if a subscriber is already set, which cannot happen in main; a
    // missing subscriber would only cost logs, never the command.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

//! How results reach the user: human tables, JSON documents, durations, progress bars.
//!
//! Results go to stdout and everything else (progress, notes, logs) to stderr, so that
//! `floodway ... > file` captures exactly the result. Writes to stdout return errors instead of
//! panicking when the reader has gone away (`floodway tasks list | head`).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use comfy_table::{ContentArrangement, Table, presets};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// An empty table with `header`, sized to the terminal when stdout is one.
pub(crate) fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED);
    if std::io::stdout().is_terminal()
        && let Some((_, width)) = console::Term::stdout().size_checked()
    {
        table
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_width(width);
    }
    table.set_header(header);
    table
}

/// Prints `text` and a line break on stdout.
pub(crate) fn print(text: impl std::fmt::Display) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")?;
    stdout.flush()?;
    Ok(())
}

/// Prints `value` as one JSON document on stdout.
pub(crate) fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, value)?;
    writeln!(stdout)?;
    stdout.flush()?;
    Ok(())
}

/// A duration for people: `850ms`, `1.2s`, `4m05s`, `3h20m`, `2d04h`.
pub(crate) fn human_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    let secs = duration.as_secs();
    if millis < 1000 {
        format!("{millis}ms")
    } else if secs < 60 {
        format!("{:.1}s", duration.as_secs_f64())
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else if secs < 86_400 {
        format!("{}h{:02}m", secs / 3600, (secs / 60) % 60)
    } else {
        format!("{}d{:02}h", secs / 86_400, (secs / 3600) % 24)
    }
}

/// What a progress bar shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    /// A count and a rate, for work of unknown size.
    Count,
    /// A bar towards a known total, with the time left.
    Bar,
    /// A bar towards a total that grows as the work runs, so no estimate of time left.
    GrowingBar,
}

/// Set once at start-up (`--json`): progress bars are then never drawn, so a script that
/// merges stderr into its JSON, or runs in a terminal, reads only the JSON and its own logs.
static PROGRESS_HIDDEN: AtomicBool = AtomicBool::new(false);

/// Hides every progress bar of this process when `hidden` (the command line's `--json`).
pub(crate) fn hide_progress(hidden: bool) {
    PROGRESS_HIDDEN.store(hidden, Ordering::Relaxed);
}

/// Whether progress bars are drawn: on a terminal, and not with `--json`.
fn progress_visible(stderr_is_terminal: bool, hidden: bool) -> bool {
    stderr_is_terminal && !hidden
}

/// A progress bar on stderr, drawn only when stderr is a terminal and `--json` was not given.
/// `len` is its total (or 0 to set later with `set_length`).
pub(crate) fn progress(kind: Progress, len: u64, what: &str) -> ProgressBar {
    let template = match kind {
        Progress::Count => "{spinner} {msg} {pos} ({rate})",
        Progress::Bar => "{spinner} {msg} [{bar:40}] {pos}/{len} ({rate}, {eta} left)",
        Progress::GrowingBar => "{spinner} {msg} [{bar:40}] {pos}/{len} ({rate})",
    };
    let style = ProgressStyle::with_template(template)
        .expect("the templates are valid")
        .with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0}/s", state.per_sec());
            },
        )
        .progress_chars("=> ");
    let bar = ProgressBar::new(len).with_style(style);
    let target = if progress_visible(
        std::io::stderr().is_terminal(),
        PROGRESS_HIDDEN.load(Ordering::Relaxed),
    ) {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    bar.set_draw_target(target);
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_drawn_only_on_a_terminal_and_never_with_json() {
        assert!(progress_visible(true, false));
        assert!(!progress_visible(false, false));
        assert!(!progress_visible(true, true));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(human_duration(Duration::from_millis(1234)), "1.2s");
        assert_eq!(human_duration(Duration::from_secs(245)), "4m05s");
        assert_eq!(human_duration(Duration::from_secs(12_000)), "3h20m");
        assert_eq!(human_duration(Duration::from_secs(187_200)), "2d04h");
    }
}

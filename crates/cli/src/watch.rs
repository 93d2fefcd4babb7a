//! Views that refresh (`stats --watch`, `top`): a loop that makes a frame every interval until
//! Ctrl-C (or SIGTERM) or `--count` frames, and the screen that shows the frames.
//!
//! On a terminal each frame is drawn over the previous one in place: the cursor goes home,
//! every line is rewritten and cleared to its end, and whatever the previous frame had below
//! is cleared, so nothing is blanked between frames and the table does not flicker. The cursor
//! is hidden meanwhile and shown again however the loop ends. When stdout is not a terminal,
//! frames follow one another separated by a blank line; with `--json`, each frame is one JSON
//! object on one line (JSON lines), for scripts.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use serde::Serialize;

/// `--interval` and `--count`.
#[derive(Debug, clap::Args)]
pub(crate) struct RefreshArgs {
    /// Time between refreshes, e.g. 500ms, 2s, 1m [default: 2s].
    #[arg(long, value_parser = parse_interval, value_name = "DURATION")]
    pub(crate) interval: Option<Duration>,
    /// Stop after this many refreshes (for scripts); until Ctrl-C when omitted.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) count: Option<u64>,
}

impl RefreshArgs {
    /// True when `--interval` or `--count` was given.
    pub(crate) fn given(&self) -> bool {
        self.interval.is_some() || self.count.is_some()
    }

    /// The interval between refreshes.
    pub(crate) fn interval(&self) -> Duration {
        self.interval.unwrap_or(INTERVAL_DEFAULT)
    }
}

/// The interval when none is given.
const INTERVAL_DEFAULT: Duration = Duration::from_secs(2);

/// Shortest interval: a refresh reads every queue's statistics, which is not free.
const INTERVAL_MIN: Duration = Duration::from_millis(50);

fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = floodway_core::duration::parse(text).map_err(|e| e.to_string())?;
    if interval < INTERVAL_MIN {
        return Err(format!(
            "must be at least {}",
            floodway_core::duration::format(INTERVAL_MIN)
        ));
    }
    Ok(interval)
}

/// One refresh: the text for people and the document for `--json`.
pub(crate) struct Frame<J> {
    /// What a terminal shows: a header line and tables.
    pub(crate) text: String,
    /// What `--json` prints, as one line.
    pub(crate) json: J,
}

/// Makes a frame and shows it, then again `refresh.interval` after it was shown, until Ctrl-C
/// or SIGTERM, or `refresh.count` frames. Returns normally on a signal: stopping a view is
/// success.
pub(crate) async fn run<J: Serialize>(
    refresh: &RefreshArgs,
    json: bool,
    mut next: impl AsyncFnMut() -> anyhow::Result<Frame<J>>,
) -> anyhow::Result<()> {
    let mut screen = Screen::new(json);
    let mut stop = crate::signal::shutdown_signal().await;
    let mut shown = 0u64;
    loop {
        let frame = tokio::select! {
            () = &mut stop => break,
            frame = next() => frame?,
        };
        screen.show(&frame)?;
        shown += 1;
        if refresh.count.is_some_and(|count| shown >= count) {
            break;
        }
        // The pause runs from the end of a frame, so a frame that measures over the interval
        // (top) always gets a full one.
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(refresh.interval()) => {}
        }
    }
    screen.finish()
}

/// Where frames go.
enum Screen {
    /// A terminal: each frame drawn over the last. `started` once the screen was cleared and
    /// the cursor hidden, which [`Drop`] undoes.
    Terminal { started: bool },
    /// A pipe or file: frames one after another.
    Lines,
    /// `--json`: one JSON line per frame.
    Json,
}

impl Screen {
    fn new(json: bool) -> Screen {
        if json {
            Screen::Json
        } else if std::io::stdout().is_terminal() {
            Screen::Terminal { started: false }
        } else {
            Screen::Lines
        }
    }

    fn show<J: Serialize>(&mut self, frame: &Frame<J>) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        match self {
            Screen::Json => {
                serde_json::to_writer(&mut stdout, &frame.json)?;
                writeln!(stdout)?;
            }
            Screen::Lines => writeln!(stdout, "{}\n", frame.text)?,
            Screen::Terminal { started } => {
                if !*started {
                    // Hide the cursor and clear the screen once; later frames overwrite.
                    write!(stdout, "\x1b[?25l\x1b[H\x1b[2J")?;
                    *started = true;
                }
                let rows = console::Term::stdout()
                    .size_checked()
                    .map_or(usize::MAX, |(rows, _)| usize::from(rows));
                stdout.write_all(redraw(&frame.text, rows).as_bytes())?;
            }
        }
        stdout.flush()?;
        Ok(())
    }

    /// Leaves the terminal as it was (cursor shown, below the last frame).
    fn finish(mut self) -> anyhow::Result<()> {
        if let Screen::Terminal { started } = &mut self
            && *started
        {
            *started = false;
            let mut stdout = std::io::stdout().lock();
            write!(stdout, "\x1b[?25h")?;
            stdout.flush()?;
        }
        Ok(())
    }
}

impl Drop for Screen {
    /// Shows the cursor again when the loop ends early (an error).
    fn drop(&mut self) {
        if let Screen::Terminal { started: true } = self {
            let mut stdout = std::io::stdout().lock();
            let _ = write!(stdout, "\x1b[?25h");
            let _ = stdout.flush();
        }
    }
}

/// The bytes that draw `text` over the previous frame on a terminal of `rows` lines: cursor
/// home, each line then clear to its end, clear below; lines past the screen are left out so
/// the terminal never scrolls (which would break the next redraw).
fn redraw(text: &str, rows: usize) -> String {
    let mut out = String::with_capacity(text.len() + 256);
    out.push_str("\x1b[H");
    let lines: Vec<&str> = text.lines().collect();
    let shown = lines.len().min(rows.saturating_sub(1));
    for line in &lines[..shown] {
        out.push_str(line);
        out.push_str("\x1b[K\n");
    }
    if shown < lines.len() {
        out.push_str(&format!(
            "… {} more lines (a larger terminal, or fewer rows)\x1b[K\n",
            lines.len() - shown
        ));
    }
    out.push_str("\x1b[J");
    out
}

/// Said under the header when the view reads the data directory: this process holds its
/// lock, so no server or worker can be moving its tasks meanwhile.
pub(crate) const HELD_NOTE: &str = "\nnote: this view holds the data directory's lock, so its \
     figures change only through a server: watch one with --server URL";

/// The header line of a frame: what is shown, from where, how often, and the time (UTC).
pub(crate) fn header(what: &str, source: &str, interval: Duration) -> String {
    let now = floodway_core::Timestamp::now_system().to_string();
    // RFC 3339: the time of day is characters 11..19.
    let time = now.get(11..19).unwrap_or(&now);
    let quit = if std::io::stdout().is_terminal() {
        " · Ctrl-C quits"
    } else {
        ""
    };
    format!(
        "{what} · {source} · every {} · {time} UTC{quit}",
        floodway_core::duration::format(interval)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redraw_overwrites_in_place_and_never_scrolls() {
        let out = redraw("a\nb\nc", 10);
        assert_eq!(out, "\x1b[Ha\x1b[K\nb\x1b[K\nc\x1b[K\n\x1b[J");
        assert!(!out.contains("\x1b[2J"), "no full clear between frames");
        let cut = redraw("1\n2\n3\n4\n5", 3);
        assert!(cut.starts_with("\x1b[H1\x1b[K\n2\x1b[K\n… 3 more lines"));
    }

    #[test]
    fn intervals_have_a_floor() {
        assert_eq!(parse_interval("2s").unwrap(), Duration::from_secs(2));
        assert!(parse_interval("1ms").unwrap_err().contains("at least"));
        assert!(parse_interval("soon").is_err());
    }
}

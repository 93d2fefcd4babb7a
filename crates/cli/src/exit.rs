//! Exit codes, and how an error becomes one line on stderr.
//!
//! The codes are documented in the crate docs and in `--help`: 0 success, 2 bad input (the
//! caller's mistake; nothing was changed), 1 any other failure. A command marks bad input
//! either by returning a [`BadInput`] or by passing on a [`BrokerError`] of a kind that only
//! bad input causes; everything else is a failure.

use std::fmt;
use std::process::ExitCode;

use floodway_core::BrokerError;
use floodway_core::MalformedTaskId;

/// Exit code of a run that did what was asked.
const SUCCESS: u8 = 0;
/// Exit code of any failure that is not the caller's mistake.
const FAILURE: u8 = 1;
/// Exit code of bad input: the message names the problem and nothing was changed.
const BAD_INPUT: u8 = 2;

/// The caller gave something unusable; the message names it. Exits with code 2.
#[derive(Debug)]
pub(crate) struct BadInput(pub(crate) String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// An error that exits with code 2 and says `message`.
pub(crate) fn bad_input(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(BadInput(message.into()))
}

/// The exit code for `error`: 2 when anything in its chain is bad input, else 1.
pub(crate) fn code(error: &anyhow::Error) -> u8 {
    let bad = error.chain().any(|cause| {
        cause.is::<BadInput>()
            || cause.is::<MalformedTaskId>()
            || cause
                .downcast_ref::<BrokerError>()
                .is_some_and(is_bad_input)
    });
    if bad { BAD_INPUT } else { FAILURE }
}

/// True for the broker errors only bad input causes: the request named something that does not
/// exist or broke a limit. Backpressure (a full queue) and unavailability are failures.
fn is_bad_input(error: &BrokerError) -> bool {
    matches!(
        error,
        BrokerError::Invalid { .. }
            | BrokerError::PayloadTooLarge { .. }
            | BrokerError::BatchTooLarge { .. }
            | BrokerError::UnknownQueue(_)
            | BrokerError::UnknownTask(_)
    )
}

/// Prints `error` as one line on stderr and returns its exit code.
///
/// One exception, as ripgrep makes it: when stdout's reader went away
/// (`floodway tasks list | head`), the output is simply cut short and the exit is quiet and
/// successful. Only a bare broken pipe counts; a command that must report a closed stdout as a
/// failure (`enqueue --from`, whose reader would miss acknowledged ids) adds context to it.
pub(crate) fn report(error: &anyhow::Error) -> ExitCode {
    if error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    {
        return ExitCode::from(SUCCESS);
    }
    tracing::debug!(?error, "command failed");
    eprintln!("error: {}", one_line(&format!("{error:#}")));
    ExitCode::from(code(error))
}

/// Handles a command line clap could not parse: help and version are printed as clap prints
/// them (exit 0); a usage error becomes one line on stderr and exit code 2.
pub(crate) fn usage(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // Printing can fail only if stdout is gone, and then there is nobody to tell.
            let _ = error.print();
            ExitCode::from(if error.exit_code() == 0 {
                SUCCESS
            } else {
                BAD_INPUT
            })
        }
        _ => {
            let rendered = error.render().to_string();
            // clap's message is the first paragraph; usage and the hint follow it.
            let message: Vec<&str> = rendered
                .lines()
                .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more"))
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .collect();
            let message = message.join(" ");
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            eprintln!("error: {message} (see floodway --help)");
            ExitCode::from(BAD_INPUT)
        }
    }
}

/// `text` with line breaks folded into spaces, so an error is always one line.
fn one_line(text: &str) -> String {
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn bad_input_anywhere_in_the_chain_exits_2() {
        let error = Err::<(), _>(bad_input("unknown thing"))
            .context("doing it")
            .unwrap_err();
        assert_eq!(code(&error), BAD_INPUT);
        let error = anyhow::Error::new(BrokerError::UnknownTask(floodway_core::TaskId::from_u128(
            1,
        )));
        assert_eq!(code(&error), BAD_INPUT);
    }

    #[test]
    fn other_failures_exit_1() {
        assert_eq!(code(&anyhow::anyhow!("disk on fire")), FAILURE);
        let error = anyhow::Error::new(BrokerError::Unavailable("closed".into()));
        assert_eq!(code(&error), FAILURE);
    }

    #[test]
    fn messages_are_folded_into_one_line() {
        assert_eq!(one_line("a\n  b\r\n\nc"), "a b c");
    }
}

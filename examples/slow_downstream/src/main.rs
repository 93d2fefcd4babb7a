//! `slow-downstream`: runs workload W5 once, with backpressure on or off, printing a line per
//! second and a summary; with `--out DIR` it also writes `w5-backpressure-{on,off}.png` and
//! `.csv` there.
//!
//! ```text
//! cargo run --release -p slow-downstream -- [--backpressure on|off] [--seconds 30] [--out DIR]
//! ```
//!
//! Exit codes: 0 when the run lost no task, 1 when it lost some, 2 for bad arguments, 3 when
//! the run itself failed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use slow_downstream::timeline::Row;
use slow_downstream::{Scenario, plot, run};

const USAGE: &str = "usage: slow-downstream [--backpressure on|off] [--seconds N] [--out DIR]

  --backpressure on|off  configure floodway's backpressure (default on)
  --seconds N            how long the producers offer 2,000 tasks/s (default 30, at most 600)
  --out DIR              write w5-backpressure-{on,off}.png and .csv into DIR";

struct Args {
    backpressure: bool,
    seconds: u64,
    out: Option<PathBuf>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        backpressure: true,
        seconds: 30,
        out: None,
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--backpressure" => {
                parsed.backpressure = match value()?.as_str() {
                    "on" => true,
                    "off" => false,
                    other => return Err(format!("--backpressure takes on or off, not {other:?}")),
                }
            }
            "--seconds" => {
                let text = value()?;
                parsed.seconds = text
                    .parse()
                    .ok()
                    .filter(|s| (1..=600).contains(s))
                    .ok_or_else(|| format!("--seconds takes 1 to 600, not {text:?}"))?;
            }
            "--out" => parsed.out = Some(PathBuf::from(value()?)),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(parsed)
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("slow-downstream: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match execute(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("slow-downstream: {error}");
            ExitCode::from(3)
        }
    }
}

/// Runs W5 and writes the files; `Ok(false)` when tasks were lost.
fn execute(args: &Args) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    let scenario = Scenario::w5(args.backpressure, Duration::from_secs(args.seconds));
    let dir = tempfile::tempdir()?;
    println!("W5: {}", scenario.describe());
    println!(
        "embedded broker in {} (durability fsync)",
        dir.path().display()
    );
    println!("{}", Row::LINE_HEADER);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let run = runtime.block_on(run(&scenario, dir.path(), |row| println!("{}", row.line())))?;
    println!();
    print!("{}", run.summary);
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out)?;
        let name = format!(
            "w5-backpressure-{}",
            if args.backpressure { "on" } else { "off" }
        );
        let png = out.join(format!("{name}.png"));
        std::fs::write(&png, plot::png(&run)?)?;
        let csv = out.join(format!("{name}.csv"));
        std::fs::write(&csv, run.timeline.csv())?;
        println!("wrote {} and {}", png.display(), csv.display());
    }
    Ok(run.summary.lost == 0 && run.summary.unacknowledged == 0)
}

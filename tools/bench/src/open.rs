//! `bench open` (issue 17): what every `ledgerctl` call on a big store pays before it answers.
//! A store of `--events` and one of 30,000 (each generated, then closed as `ledgerctl` closes
//! it) beside a store of 100 events, each asked `log read --limit 1` and `balance` by a fresh
//! `ledgerctl` process, the three stores taking turns; the ratio is the small store's time over
//! the other's (target ≥ 1/3: at most 3× the small one). The 30,000-event store is the size
//! whose journal a close leaves for the next open, when the thresholds are too high.
//!
//! Expected before measuring: opening reads the store's metadata and, after a clean close,
//! replays an empty journal: a few ms whatever the size; with memtables never flushed, fjall
//! replays every write since the last flush (up to 512 MiB of journal per database).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use clap::Args;
use ledger::{Append, ExpectedVersion, Ledger, NewEvent};

use crate::{Line, Report, generate_history, generate_history_with, median, print_machine};

/// Events in the middle store.
const MID_EVENTS: u64 = 30_000;

#[derive(Args)]
pub struct OpenBenchArgs {
    /// Events in the big store.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) events: u64,
    /// Alternating rounds.
    #[arg(long, default_value_t = 5)]
    pub(crate) rounds: usize,
    /// Where the temporary stores go; default: the current directory.
    #[arg(long, default_value = ".")]
    pub(crate) work_dir: PathBuf,
    /// Keep the two stores (their directory is printed) instead of deleting them.
    #[arg(long)]
    pub(crate) keep: bool,
}

/// Seconds one `ledgerctl --data DIR ARGS…` process takes, start to exit.
fn timed(data: &Path, args: &[&str]) -> anyhow::Result<f64> {
    let started = Instant::now();
    let status = Command::new(harness::ledgerctl_path()?)
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("LEDGER_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    let took = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        status.success(),
        "ledgerctl {args:?} on {}: {status}",
        data.display()
    );
    Ok(took)
}

pub fn run(args: OpenBenchArgs, report: &mut Report) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.work_dir)?;
    let work = tempfile::Builder::new()
        .prefix("ledger-bench-")
        .tempdir_in(&args.work_dir)?;
    print_machine(work.path());
    let (small, mid, big) = (
        work.path().join("small"),
        work.path().join("mid"),
        work.path().join("big"),
    );
    {
        // One contract of 100 events.
        generate_history_with(&Ledger::open(&small)?, 100, 1, 0)?;
        // 30 contracts of 1,000: below fjall's 64 MB journal rotation, so what the next open
        // replays is what the close left (`CLOSE_*_JOURNAL_KEEP_BYTES`).
        generate_history_with(&Ledger::open(&mid)?, MID_EVENTS, 30, 0)?;
        let started = Instant::now();
        let ledger = Ledger::open(&big)?;
        generate_history(&ledger, args.events, (args.events / 1000).max(1))?;
        eprintln!(
            "generated {} events in {:.1} s",
            ledger.committed_position(),
            started.elapsed().as_secs_f64()
        );
        // A raw append too, as `log append` makes.
        ledger.append_blocking(Append::new(
            "bench-open",
            ExpectedVersion::Any,
            vec![NewEvent::new("opened", b"{}".to_vec())],
        ))?;
    }
    // The first balance builds the projections; what is measured is every call after it.
    for data in [&small, &mid, &big] {
        timed(data, &["balance", "P-0"])?;
    }
    for (verb, call) in [
        ("log_read_limit_1", &["log", "read", "--limit", "1"][..]),
        ("balance", &["balance", "P-0"][..]),
    ] {
        let (mut small_s, mut mid_s, mut big_s) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..args.rounds {
            small_s.push(timed(&small, call)?);
            mid_s.push(timed(&mid, call)?);
            big_s.push(timed(&big, call)?);
            eprintln!(
                "round {round}: {verb} stores of 100, {MID_EVENTS} and {} events: {:.0}, {:.0}, {:.0} ms",
                args.events,
                small_s[round] * 1e3,
                mid_s[round] * 1e3,
                big_s[round] * 1e3
            );
        }
        let best_small = small_s.iter().copied().fold(f64::MAX, f64::min);
        let small_median = median(&mut small_s);
        let (mid_median, big_median) = (median(&mut mid_s), median(&mut big_s));
        for (events, took) in [(MID_EVENTS, mid_median), (args.events, big_median)] {
            Line {
                workload: format!("open_{verb}_{events}_events"),
                per_sec: 1.0 / took,
                p50_us: None,
                p99_us: None,
                baseline: Some((format!("open_{verb}_100_events"), 1.0 / small_median)),
                // At most 3× the small store's time.
                target_ratio: Some(1.0 / 3.0),
                cpu_us_per_event: None,
            }
            .print(report);
        }
        println!(
            "BENCH workload=open_{verb}_times small_median_ms={:.1} small_best_ms={:.1} mid_median_ms={:.1} big_median_ms={:.1} times_small={:.2}",
            small_median * 1e3,
            best_small * 1e3,
            mid_median * 1e3,
            big_median * 1e3,
            big_median / small_median
        );
    }
    if args.keep {
        eprintln!("kept the stores in {}", work.keep().display());
    }
    Ok(ExitCode::SUCCESS)
}

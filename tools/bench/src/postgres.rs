//! `ledgerctl bench postgres`: durable appends, the ledger beside PostgreSQL 15 in the same run
//! on the same disk (issue 6). PostgreSQL runs from Debian's packages (`tools/postgres.sh`),
//! started here on a temp dir under --work-dir and a free loopback port, as the `postgres` user,
//! with `synchronous_commit = on`. Its events table has a bigserial global position, a unique
//! (stream, version) and a jsonb payload; each writer appends one event per transaction with the
//! same expected-version check the ledger makes (`Exact(version)`).

// Rates and percentiles are reported as floating-point numbers; no money is computed here.
#![allow(clippy::float_arithmetic)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use ledger::Ledger;

use crate::{Line, concurrent_appends, percentile, print_machine};

#[derive(Args)]
pub struct PostgresBenchArgs {
    /// How long each workload runs, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    millis: u64,
    /// Concurrent writer counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    writers: Vec<usize>,
    /// Where the temporary stores and the PostgreSQL data directory go.
    #[arg(long, default_value = ".")]
    work_dir: PathBuf,
}

/// The events table, the append with its expected-version check and the point-in-time balance:
/// the same files `tests/it/postgres_side.rs` checks against the ledger's answers.
pub(crate) const SCHEMA: &str = include_str!("../../sql/schema.sql");
pub(crate) const APPEND: &str = include_str!("../../sql/append.sql");
pub(crate) const BALANCE_AS_OF: &str = include_str!("../../sql/balance_as_of.sql");

/// `writers` threads, each on its own connection and stream, appending one event per
/// transaction with the expected-version check, for `duration`. Rate and sorted latencies (µs).
pub(crate) fn postgres_appends(
    url: &str,
    writers: usize,
    duration: Duration,
) -> anyhow::Result<(f64, Vec<u64>)> {
    let payload = format!(r#"{{"x":"{}"}}"#, "x".repeat(140));
    let mut clients = (0..writers)
        .map(|_| postgres::Client::connect(url, postgres::NoTls).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let run = format!("{}", Instant::now().elapsed().as_nanos());
    let start = Instant::now();
    let deadline = start + duration;
    let latencies = std::thread::scope(|scope| {
        let handles: Vec<_> = clients
            .iter_mut()
            .enumerate()
            .map(|(writer, client)| {
                let payload = &payload;
                let stream = format!("bench-{writers}-{writer}-{run}");
                scope.spawn(move || {
                    let statement = client.prepare(APPEND)?;
                    let mut version = 0i64;
                    let mut latencies = Vec::new();
                    while Instant::now() < deadline {
                        let sent = Instant::now();
                        let id = uuid::Uuid::now_v7().to_string();
                        let now = chrono::Utc::now().to_rfc3339();
                        let appended = client.execute(
                            &statement,
                            &[
                                &stream,
                                &version,
                                &id,
                                &"bench_event",
                                &now,
                                &None::<&str>,
                                payload,
                            ],
                        )?;
                        anyhow::ensure!(
                            appended == 1,
                            "{stream}: expected version {version} refused"
                        );
                        latencies.push(sent.elapsed().as_micros() as u64);
                        version += 1;
                    }
                    anyhow::Ok(latencies)
                })
            })
            .collect();
        let mut all = Vec::new();
        for handle in handles {
            all.extend(
                handle
                    .join()
                    .map_err(|_| anyhow::anyhow!("a writer panicked"))??,
            );
        }
        anyhow::Ok(all)
    })?;
    let rate = latencies.len() as f64 / start.elapsed().as_secs_f64();
    let mut latencies = latencies;
    latencies.sort_unstable();
    Ok((rate, latencies))
}

pub fn run(args: PostgresBenchArgs) -> anyhow::Result<ExitCode> {
    let report = &mut crate::Report::default();
    std::fs::create_dir_all(&args.work_dir)?;
    let work = tempfile::Builder::new()
        .prefix("ledger-bench-pg-")
        .tempdir_in(&args.work_dir)?;
    print_machine(work.path());
    let max_writers = args.writers.iter().copied().max().unwrap_or(1);
    let server =
        harness::Postgres::start_at(&work.path().join("postgres"), Some(max_writers + 20))?;
    println!(
        "POSTGRES version={} synchronous_commit=on fsync=on",
        server.version()?
    );
    postgres::Client::connect(&server.url(), postgres::NoTls)?.batch_execute(SCHEMA)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let duration = Duration::from_millis(args.millis);
    for &writers in &args.writers {
        let (pg_rate, pg_latencies) = postgres_appends(&server.url(), writers, duration)?;
        let ledger = Ledger::open(work.path().join(format!("ledger-{writers}")))?;
        let (rate, mut latencies) =
            runtime.block_on(concurrent_appends(&ledger, writers, duration))?;
        latencies.sort_unstable();
        drop(ledger);
        Line {
            workload: format!("durable_appends_{writers}_writers_vs_postgres"),
            per_sec: rate,
            p50_us: Some(percentile(&latencies, 50)),
            p99_us: Some(percentile(&latencies, 99)),
            baseline: Some(("postgres15_one_insert_per_transaction".into(), pg_rate)),
            target_ratio: (writers >= 256).then_some(10.0),
            cpu_us_per_event: None,
        }
        .print(report);
        println!(
            "BENCH workload=postgres15_appends_{writers}_writers per_sec={pg_rate:.0} p50_us={} p99_us={}",
            percentile(&pg_latencies, 50),
            percentile(&pg_latencies, 99)
        );
    }
    Ok(ExitCode::SUCCESS)
}

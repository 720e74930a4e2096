//! `ledgerctl bench replicated`: the replicated log on a 3-node JetStream cluster it starts on
//! loopback (`sync_interval: always`), each figure beside its baselines in the same run:
//! - replicated appends with 1, 16 and 256 writers (the ledger's writer with its JetStream
//!   commit, in this process) beside the embedded ledger with the same writers, and beside a raw
//!   JetStream R3 publish pipeline (up to 256 acks in flight, no fence) of the ledger's own batch
//!   sizes, and of 16 events (the size DESIGN.md measured);
//! - mirror lag: from an append's answer to a mirror (a second store applying the stream through
//!   the same ordered-consumer loop `serve --replicated` runs) holding it, p50 and p99;
//! - failover: two `ledgerctl serve --replicated` children; the writer is SIGKILLed and the time
//!   to the first accepted command is measured.
//!
//! Not the PostgreSQL baseline: that is `bench postgres` and the suite.

#![allow(clippy::float_arithmetic)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use clap::Args;
use ledger::{Ledger, LedgerOptions};
use tokio::sync::watch;

use crate::{Line, Report, Row, concurrent_appends, percentile, print_machine};
use service::replicated::{JetStreamCommit, mirror_loop, set_up_log_named};

#[derive(Args)]
pub struct ReplicatedBenchArgs {
    /// How long each workload runs, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub millis: u64,
    /// Concurrent writer counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    pub writers: Vec<usize>,
    /// Leave out the failover measurement (it starts two serve processes).
    #[arg(long)]
    pub no_failover: bool,
    /// Where the temporary stores and the cluster's files go; default: the current directory.
    #[arg(long, default_value = ".")]
    pub work_dir: PathBuf,
}

async fn connect(urls: &str) -> anyhow::Result<async_nats::Client> {
    let servers: Vec<async_nats::ServerAddr> =
        urls.split(',').map(str::parse).collect::<Result<_, _>>()?;
    Ok(async_nats::ConnectOptions::new()
        .max_reconnects(None)
        .connect(servers)
        .await?)
}

/// A raw R3 publish pipeline: messages of `batch_bytes`, up to 256 acks in flight.
async fn raw_pipeline(
    js: &jetstream::Context,
    name: &str,
    batch_bytes: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let subject = format!("bench.raw.{name}");
    set_up_log_named(js, 3, name, &subject).await?;
    let payload: Vec<u8> = vec![7; batch_bytes];
    let mut acks = std::collections::VecDeque::new();
    let start = Instant::now();
    let mut messages = 0u64;
    while start.elapsed() < duration {
        acks.push_back(js.publish(subject.clone(), payload.clone().into()).await?);
        if acks.len() >= 256 {
            acks.pop_front().expect("an ack").await?;
            messages += 1;
        }
    }
    while let Some(ack) = acks.pop_front() {
        ack.await?;
        messages += 1;
    }
    Ok(messages as f64 / start.elapsed().as_secs_f64())
}

pub fn run(args: ReplicatedBenchArgs, report: &mut Report) -> anyhow::Result<ExitCode> {
    let duration = Duration::from_millis(args.millis);
    std::fs::create_dir_all(&args.work_dir)?;
    let work = tempfile::Builder::new()
        .prefix("ledger-bench-replicated-")
        .tempdir_in(&args.work_dir)?;
    print_machine(work.path());
    let cluster = harness::NatsCluster::start_in(Some(work.path()), &[true, true, true])?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let _entered = runtime.enter();
    let client = runtime.block_on(connect(&cluster.urls()))?;
    let js = jetstream::new(client.clone());
    let bytes_max = client.server_info().max_payload.saturating_sub(4096);
    let mut raw_16: Option<f64> = None;
    for (run, &writers) in args.writers.iter().enumerate() {
        // The embedded ledger with the same writers, in the same run.
        let embedded = Ledger::open(work.path().join(format!("embedded-{writers}")))?;
        let (embedded_rate, _) =
            runtime.block_on(concurrent_appends(&embedded, writers, duration))?;
        drop(embedded);

        // The replicated writer, and a mirror following its stream.
        let name = format!("BENCH_LOG_{run}");
        let subject = format!("bench.log.{run}");
        let mut log = runtime.block_on(set_up_log_named(&js, 3, &name, &subject))?;
        let writer = Ledger::open_with(
            work.path().join(format!("replicated-{writers}")),
            LedgerOptions::mirror(),
        )?;
        writer.start_writer(Some(Arc::new(JetStreamCommit {
            js: js.clone(),
            stream: name.clone(),
            subject,
            runtime: runtime.handle().clone(),
            last_sequence: std::sync::Mutex::new(0),
            bytes_max,
        })))?;
        let mirror = Ledger::open_with(
            work.path().join(format!("mirror-{writers}")),
            LedgerOptions::mirror(),
        )?;
        let (stop, stop_rx) = watch::channel(false);
        let mirror_task = runtime.spawn(mirror_loop(mirror.clone(), log.clone(), stop_rx));
        // Lag: each mirror wake-up is compared with when the writer's log had those positions.
        let lags = runtime.spawn(measure_lag(writer.clone(), mirror.clone(), duration));
        let (rate, mut latencies) =
            runtime.block_on(concurrent_appends(&writer, writers, duration))?;
        let mut lags = runtime.block_on(lags)??;
        stop.send(true).ok();
        runtime.block_on(mirror_task)??;
        let info = runtime.block_on(log.info())?.clone();
        let batches = info.state.messages.max(1);
        let events = writer.committed_position();
        let events_per_batch = events as f64 / batches as f64;
        let batch_bytes = (info.state.bytes / batches) as usize;
        latencies.sort_unstable();
        lags.sort_unstable();
        let raw_name = format!("BENCH_RAW_{run}");
        let raw_messages = runtime.block_on(raw_pipeline(&js, &raw_name, batch_bytes, duration))?;
        let raw_rate = raw_messages * events_per_batch;
        if raw_16.is_none() {
            let per_event = (batch_bytes as f64 / events_per_batch).max(1.0) as usize;
            let raw =
                runtime.block_on(raw_pipeline(&js, "BENCH_RAW_16", per_event * 16, duration))?;
            raw_16 = Some(raw * 16.0);
            Line {
                workload: "raw_jetstream_r3_pipeline_batch_16".into(),
                per_sec: raw * 16.0,
                p50_us: None,
                p99_us: None,
                baseline: None,
                target_ratio: None,
                cpu_us_per_event: None,
            }
            .print(report);
        }
        eprintln!(
            "replicated, {writers} writers: {rate:.0} events/s in {batches} batches \
             ({events_per_batch:.1} events, {batch_bytes} bytes each)"
        );
        let workload = format!("replicated_append_writers_{writers}");
        let p50_us = Some(percentile(&latencies, 50));
        let p99_us = Some(percentile(&latencies, 99));
        for (baseline, target) in [
            (
                (
                    format!("raw_jetstream_r3_pipeline_batch_{events_per_batch:.0}"),
                    raw_rate,
                ),
                (writers == 256).then_some(0.5),
            ),
            (
                (
                    "raw_jetstream_r3_pipeline_batch_16".to_owned(),
                    raw_16.unwrap_or(raw_rate),
                ),
                None,
            ),
            (
                (format!("embedded_append_writers_{writers}"), embedded_rate),
                None,
            ),
        ] {
            Line {
                workload: workload.clone(),
                per_sec: rate,
                p50_us,
                p99_us,
                baseline: Some(baseline),
                target_ratio: target,
                cpu_us_per_event: None,
            }
            .print(report);
        }
        println!(
            "BENCH workload=mirror_lag_writers_{writers} samples={} p50_us={} p99_us={}",
            lags.len(),
            percentile(&lags, 50),
            percentile(&lags, 99)
        );
        report.record(Row {
            step: String::new(),
            workload: format!("replicated_mirror_lag_writers_{writers}"),
            ledger: format!(
                "p50 {} µs, p99 {} µs ({} samples)",
                percentile(&lags, 50),
                percentile(&lags, 99),
                lags.len()
            ),
            baseline: "target p99 < 50 ms".into(),
            baseline_figure: String::new(),
            speedup: None,
            target: None,
            memory: String::new(),
        });
        writer.stop_writer();
    }
    if !args.no_failover {
        // On a cluster of its own, as the tests do: the benchmark streams above stay out of it.
        drop(cluster);
        let dir = work.path().join("failover");
        std::fs::create_dir_all(&dir)?;
        let cluster = harness::NatsCluster::start_in(Some(&dir), &[true, true, true])?;
        let client = runtime.block_on(connect(&cluster.urls()))?;
        let (to_first_command, killed) = failover(&dir, &cluster, &runtime, &client)?;
        println!(
            "BENCH workload=failover_writer_sigkill_to_first_accepted_command millis={} writer_killed={killed}",
            to_first_command.as_millis()
        );
        report.record(Row {
            step: String::new(),
            workload: "replicated_failover_writer_sigkill_to_first_accepted_command".into(),
            ledger: format!("{} ms (lease 3 s)", to_first_command.as_millis()),
            baseline: "target ≤ 10 s".into(),
            baseline_figure: String::new(),
            speedup: None,
            target: None,
            memory: String::new(),
        });
    }
    Ok(ExitCode::SUCCESS)
}

/// Samples how long after the writer had a position the mirror had it too, for `duration`.
async fn measure_lag(
    writer: Ledger,
    mirror: Ledger,
    duration: Duration,
) -> anyhow::Result<Vec<u64>> {
    let start = Instant::now();
    let mut lags = Vec::new();
    while start.elapsed() < duration {
        let target = writer.committed_position();
        if target == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        let seen = Instant::now();
        if tokio::time::timeout(Duration::from_secs(5), mirror.wait_for(target))
            .await
            .is_err()
        {
            anyhow::bail!("the mirror did not reach position {target} within 5 s");
        }
        lags.push(seen.elapsed().as_micros() as u64);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(lags)
}

/// Two `serve --replicated` children; SIGKILLs the writer and measures until a command (with
/// its own id, retried) is accepted by the other. Returns that time and the writer's name.
fn failover(
    work: &Path,
    cluster: &harness::NatsCluster,
    runtime: &tokio::runtime::Runtime,
    client: &async_nats::Client,
) -> anyhow::Result<(Duration, String)> {
    let monitors = cluster.monitors();
    let mut children = Vec::new();
    for name in ["f1", "f2"] {
        let serve = harness::Serve::start(
            &work.join(name),
            &cluster.urls(),
            &[
                "--replicated",
                "--nats-monitor",
                &monitors,
                "--instance",
                name,
                "--lease-seconds",
                "3",
            ],
        )?;
        children.push((name, serve));
    }
    let writer = harness::wait_until(
        Duration::from_secs(60),
        Duration::from_millis(20),
        || {
            children
                .iter()
                .position(|(_, serve)| serve.log().contains("is the writer"))
        },
        || {
            let logs: Vec<String> = children
                .iter()
                .map(|(name, serve)| format!("{name}: {}", serve.log()))
                .collect();
            format!("no instance became the writer:\n{}", logs.join("\n"))
        },
    )?;
    let open = r#"{"type":"open_contract","command_id":"failover-open","contract_id":"C-F","customer":"Failover Ltd","package":"advanced","term_start":"2026-01-01","term_end":"2026-12-31","currency":"USD","time_zone":"UTC","holidays":[],"cancellation_fee_rate":"1.00","sab_commitments":[]}"#;
    runtime.block_on(accepted(client, "open_contract", open.to_owned()))?;
    let (name, serve) = children.remove(writer);
    serve.kill();
    let killed = Instant::now();
    let buy = r#"{"type":"purchase","command_id":"failover-buy","contract_id":"C-F","item":"proactive_credits","quantity":"1","unit_price":"250.00","effective_at":"2026-01-01T00:00:00Z"}"#;
    runtime.block_on(accepted(client, "purchase", buy.to_owned()))?;
    let elapsed = killed.elapsed();
    drop(children);
    Ok((elapsed, name.to_owned()))
}

/// Sends a command until it is accepted (retrying while no writer answers).
async fn accepted(client: &async_nats::Client, verb: &str, body: String) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "{verb} never accepted"
        );
        let answer = tokio::time::timeout(
            Duration::from_millis(500),
            client.request(format!("ledger.cmd.{verb}"), body.clone().into()),
        )
        .await;
        if let Ok(Ok(message)) = answer {
            let reply: serde_json::Value = serde_json::from_slice(&message.payload)?;
            if reply["ok"] == true {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

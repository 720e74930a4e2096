//! `ledgerctl bench nats`: the service over a real nats-server, each figure beside a baseline in
//! the same run on the same server.
//! - commands over NATS request/reply with N concurrent clients (own contract each), beside the
//!   same clients against a raw echo responder (NATS's own request/reply rate here), and beside
//!   the same number of callers submitting to the handler embedded (target: 0.5 of it);
//! - append-to-subscriber latency: from a command's reply (the append is durable) to its balance
//!   update arriving on `ledger.balance.>`;
//! - the publisher draining a log it has not published yet, beside a raw async-nats JetStream
//!   publish loop of as many messages of the same size, same headers and the same ack window.
//!
//! It starts its own nats-server (`NATS_SERVER` or PATH, as tools/nats-server.sh installs it)
//! and `ledgerctl serve` as a child process, on temp directories under --work-dir.

// Rates and percentiles are reported as floating-point numbers; no money is computed here.
#![allow(clippy::float_arithmetic)]

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use ledger::Ledger;

use crate::{Line, Report, generate_history, percentile, print_machine};
use publisher::PUBLISH_ACKS_IN_FLIGHT_MAX;

#[derive(Args)]
pub struct NatsBenchArgs {
    /// How long the request/reply workloads run, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub millis: u64,
    /// Concurrent clients for commands over NATS.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Events generated for the publisher to drain, over 100 contracts; contract 0 gets at least
    /// 10,000 (for the audits), so the log may hold more, and the publisher drains all of it.
    /// The raw loop publishes as many messages as the publisher did (event + balance).
    #[arg(long, default_value_t = 100_000)]
    pub publish_events: u64,
    /// Where the temporary stores go; default: the current directory.
    #[arg(long, default_value = ".")]
    pub work_dir: PathBuf,
}

fn open_contract(id: &str) -> String {
    format!(
        r#"{{"type":"open_contract","contract_id":"{id}","customer":"B","package":"core","term_start":"2026-01-01","term_end":"2026-12-31","currency":"USD","time_zone":"UTC","holidays":[],"cancellation_fee_rate":"1.00","sab_commitments":[]}}"#
    )
}

fn purchase(id: &str) -> String {
    format!(
        r#"{{"type":"purchase","contract_id":"{id}","item":"das_hours","quantity":"1600","unit_price":"150.00","effective_at":"2026-01-01T00:00:00Z"}}"#
    )
}

/// The `n`th one-minute consumption (business minutes from 2026-01-05, a Monday).
fn consume(id: &str, n: u64) -> String {
    let day = n / 480;
    let week = day / 5;
    let date = chrono::NaiveDate::from_ymd_opt(2026, 1, 5).expect("a date")
        + chrono::Duration::days((week * 7 + day % 5) as i64);
    let minute = 9 * 60 + n % 480;
    let (h, m) = (minute / 60, minute % 60);
    let (eh, em) = ((minute + 1) / 60, (minute + 1) % 60);
    format!(
        r#"{{"type":"consume_hours","contract_id":"{id}","bucket":"das_hours","started_at":"{date}T{h:02}:{m:02}:00Z","ended_at":"{date}T{eh:02}:{em:02}:00Z"}}"#
    )
}

async fn ask(client: &async_nats::Client, verb: &str, body: String) -> anyhow::Result<u64> {
    let reply = client
        .request(format!("ledger.cmd.{verb}"), body.into())
        .await
        .map_err(|e| anyhow::anyhow!("ledger.cmd.{verb}: {e}"))?;
    let result: serde_json::Value = serde_json::from_slice(&reply.payload)?;
    anyhow::ensure!(result["ok"] == true, "{verb} was refused: {result}");
    Ok(result["events"][0]["position"].as_u64().unwrap_or(0))
}

/// `clients` tasks, each sending `make(client, n)` requests for `duration`; returns the rate and
/// the latencies (µs) sorted.
async fn request_load(
    client: &async_nats::Client,
    clients: usize,
    duration: Duration,
    subject: impl Fn(usize) -> String,
    body: impl Fn(usize, u64) -> String,
) -> anyhow::Result<(f64, Vec<u64>)> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = client.clone();
        let subject = subject(c);
        let bodies: Vec<String> = (0..20_000).map(|n| body(c, n)).collect();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for text in bodies {
                if start.elapsed() >= duration {
                    break;
                }
                let sent = Instant::now();
                let reply = client
                    .request(subject.clone(), text.into())
                    .await
                    .map_err(|e| anyhow::anyhow!("{subject}: {e}"))?;
                anyhow::ensure!(!reply.payload.is_empty(), "an empty reply");
                latencies.push(sent.elapsed().as_micros() as u64);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    all.sort_unstable();
    Ok((rate, all))
}

/// Balance queries measured idle, and again while audit statements are built.
const BALANCE_QUERIES: usize = 200;

pub fn run(args: NatsBenchArgs, report: &mut Report) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.work_dir)?;
    let work = tempfile::Builder::new()
        .prefix("ledger-bench-nats-")
        .tempdir_in(&args.work_dir)?;
    print_machine(work.path());
    let server = harness::NatsServer::start_in(Some(work.path()), None)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let duration = Duration::from_millis(args.millis);

    // Commands over NATS, and the raw request/reply baseline.
    let data = work.path().join("commands");
    let serve = harness::Serve::start(&data, &server.url(), &[])?;
    runtime.block_on(async {
        let client = async_nats::connect(server.url()).await?;
        for c in 0..args.clients {
            let id = format!("N-{c}");
            ask(&client, "open_contract", open_contract(&id)).await?;
            ask(&client, "purchase", purchase(&id)).await?;
        }
        let (rate, latencies) = request_load(
            &client,
            args.clients,
            duration,
            |_| "ledger.cmd.consume_hours".to_owned(),
            |c, n| consume(&format!("N-{c}"), n),
        )
        .await?;
        // The echo responder: NATS request/reply with nothing behind it.
        let mut echo = client.subscribe("bench.echo").await?;
        let responder = client.clone();
        let echo_task = tokio::spawn(async move {
            while let Some(message) = echo.next().await {
                if let Some(reply) = message.reply {
                    responder.publish(reply, message.payload).await.ok();
                }
            }
        });
        let (raw_rate, raw_latencies) = request_load(
            &client,
            args.clients,
            duration,
            |_| "bench.echo".to_owned(),
            |c, n| consume(&format!("N-{c}"), n),
        )
        .await?;
        echo_task.abort();
        // The same commands embedded: the handler on a store of this process, as many callers.
        let embedded = Ledger::open(work.path().join("embedded"))?;
        let (embedded_rate, _) =
            crate::concurrent_commands(embedded.clone(), args.clients, duration).await?;
        drop(embedded);
        Line {
            workload: format!("commands_over_nats_{}_clients", args.clients),
            per_sec: rate,
            p50_us: Some(percentile(&latencies, 50)),
            p99_us: Some(percentile(&latencies, 99)),
            baseline: Some(("raw_nats_request_reply_echo".into(), raw_rate)),
            target_ratio: None,
            cpu_us_per_event: None,
        }
        .print(report);
        Line {
            workload: format!("commands_over_nats_{}_clients", args.clients),
            per_sec: rate,
            p50_us: Some(percentile(&latencies, 50)),
            p99_us: Some(percentile(&latencies, 99)),
            baseline: Some((
                format!("commands_embedded_{}_callers_same_run", args.clients),
                embedded_rate,
            )),
            target_ratio: Some(0.5),
            cpu_us_per_event: None,
        }
        .print(report);
        println!(
            "BENCH workload=raw_nats_request_reply_echo_{}_clients per_sec={raw_rate:.0} p50_us={} p99_us={}",
            args.clients,
            percentile(&raw_latencies, 50),
            percentile(&raw_latencies, 99)
        );

        // Append-to-subscriber: one command at a time; from the event's recorded time (the
        // ledger's clock when it appended, the same machine's clock) to its balance update
        // arriving at a plain subscriber of `ledger.balance.…`.
        let mut feed = client.subscribe("ledger.balance.N-0.das_hours").await?;
        let mut waits = Vec::new();
        for n in 0..300u64 {
            let position = ask(&client, "consume_hours", consume("N-0", 20_000 + n)).await?;
            loop {
                let message = tokio::time::timeout(Duration::from_secs(10), feed.next())
                    .await
                    .context("no balance update within 10 s")?
                    .context("the feed ended")?;
                let arrived = chrono::Utc::now();
                let update: serde_json::Value = serde_json::from_slice(&message.payload)?;
                if update["position"].as_u64() == Some(position) {
                    let recorded: chrono::DateTime<chrono::Utc> =
                        serde_json::from_value(update["recorded_at"].clone())?;
                    let micros = (arrived - recorded).num_microseconds().unwrap_or(i64::MAX);
                    waits.push(micros.max(0) as u64);
                    break;
                }
            }
        }
        waits.sort_unstable();
        report.record(crate::Row {
            step: String::new(),
            workload: "append_to_subscriber_latency_over_nats".into(),
            ledger: format!(
                "p50 {}, p99 {}",
                crate::micros_text(percentile(&waits, 50)),
                crate::micros_text(percentile(&waits, 99))
            ),
            baseline: "—".into(),
            baseline_figure: String::new(),
            speedup: None,
            target: None,
            memory: String::new(),
        });
        println!(
            "BENCH workload=append_to_subscriber_latency samples={} p50_us={} p99_us={}",
            waits.len(),
            percentile(&waits, 50),
            percentile(&waits, 99)
        );
        anyhow::Ok(())
    })?;
    serve.terminate();

    // The publisher draining a log, beside a raw publish loop of as many messages.
    let data = work.path().join("publisher");
    // Every event generated, contract 0's 10,000 (for the audits below) among them: the
    // publisher's rate is over the whole log it drains.
    let events = {
        let ledger = Ledger::open(&data)?;
        generate_history(&ledger, args.publish_events, 100)?;
        ledger.committed_position()
    };
    let started = Instant::now();
    let serve = harness::Serve::start(&data, &server.url(), &[])?;
    let (published_events, messages, seconds) = runtime.block_on(async {
        let client = async_nats::connect(server.url()).await?;
        let js = async_nats::jetstream::new(client);
        loop {
            if let Ok(mut stream) = js.get_stream("LEDGER_EVENTS").await {
                let count = stream.info().await?.state.messages;
                if count >= events {
                    let seconds = started.elapsed().as_secs_f64();
                    // Sequences count every message stored, also those the KV bucket's history
                    // limit has since removed.
                    let kv = js.get_stream("KV_ledger_balances").await?;
                    let total = stream.cached_info().state.last_sequence
                        + kv.cached_info().state.last_sequence;
                    return anyhow::Ok((count, total, seconds));
                }
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(600),
                "the publisher stalled"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })?;

    // Queries do not wait for each other: a balance query's latency while audit statements of
    // a 10,000-event contract (P-0) are built back to back, beside the same query idle.
    let (idle, busy, audits) = runtime.block_on(async {
        let client = async_nats::connect(server.url()).await?;
        let balance = serde_json::json!({ "contract_id": "P-1" }).to_string();
        let measure = |client: async_nats::Client, balance: String| async move {
            let mut latencies = Vec::new();
            for _ in 0..BALANCE_QUERIES {
                let sent = Instant::now();
                client
                    .request("ledger.qry.balance", balance.clone().into())
                    .await?;
                latencies.push(sent.elapsed().as_micros() as u64);
            }
            latencies.sort_unstable();
            anyhow::Ok(latencies)
        };
        // Warm: the first balance query catches the timeline projection up.
        client
            .request("ledger.qry.balance", balance.clone().into())
            .await?;
        let idle = measure(client.clone(), balance.clone()).await?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let auditor = {
            let client = client.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let audit = serde_json::json!({ "contract_id": "P-0" }).to_string();
                let mut audits = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    client
                        .request("ledger.qry.audit", audit.clone().into())
                        .await?;
                    audits += 1;
                }
                anyhow::Ok(audits)
            })
        };
        let busy = measure(client.clone(), balance).await?;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let audits = auditor.await??;
        anyhow::Ok((idle, busy, audits))
    })?;
    let p99 = |latencies: &[u64]| percentile(latencies, 99);
    report.record(crate::Row {
        step: String::new(),
        workload: format!("balance_query_p99_while_{audits}_audits_of_10k_events_run"),
        ledger: crate::micros_text(p99(&busy)),
        baseline: "the same query idle (target: < 10 ms while busy)".into(),
        baseline_figure: crate::micros_text(p99(&idle)),
        speedup: None,
        target: None,
        memory: String::new(),
    });
    println!(
        "BENCH workload=balance_query_while_audits audits={audits} p50_us={} p99_us={} idle_p50_us={} idle_p99_us={} target_p99_us=10000 meets={}",
        percentile(&busy, 50),
        p99(&busy),
        percentile(&idle, 50),
        p99(&idle),
        if p99(&busy) < 10_000 { "yes" } else { "no" }
    );
    serve.terminate();
    let raw_rate = runtime.block_on(raw_publish(&server.url(), messages))?;
    let rate = messages as f64 / seconds;
    Line {
        workload: format!("publisher_drain_{published_events}_events_{messages}_messages"),
        per_sec: rate,
        p50_us: None,
        p99_us: None,
        baseline: Some(("raw_jetstream_publish_loop_same_messages".into(), raw_rate)),
        target_ratio: Some(0.5),
        cpu_us_per_event: None,
    }
    .print(report);
    Ok(ExitCode::SUCCESS)
}

/// A raw JetStream publish loop: `messages` bodies of a balance update's size with the same
/// headers, at most `PUBLISH_ACKS_IN_FLIGHT_MAX` acks outstanding. Messages per second.
async fn raw_publish(url: &str, messages: u64) -> anyhow::Result<f64> {
    use async_nats::jetstream::stream;
    let client = async_nats::connect(url).await?;
    let js = async_nats::jetstream::new(client);
    js.create_or_update_stream(stream::Config {
        name: "BENCH_RAW".into(),
        subjects: vec!["bench.raw.>".into()],
        duplicate_window: publisher::DUPLICATE_WINDOW,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("creating BENCH_RAW: {e}"))?;
    let body = vec![b'x'; 330];
    let start = Instant::now();
    let mut acks = VecDeque::new();
    for n in 0..messages {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("raw-{n}").as_str());
        headers.insert("Content-Type", "application/json");
        headers.insert("Ledger-Type", "balance_update/1");
        headers.insert("Ledger-Position", n.to_string().as_str());
        let ack = js
            .publish_with_headers(
                format!("bench.raw.P-{}.das_hours", n % 100),
                headers,
                body.clone().into(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("publishing: {e}"))?;
        acks.push_back(ack);
        if acks.len() >= PUBLISH_ACKS_IN_FLIGHT_MAX {
            acks.pop_front()
                .expect("not empty")
                .await
                .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        }
    }
    for ack in acks {
        ack.await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
    }
    Ok(messages as f64 / start.elapsed().as_secs_f64())
}

//! `ledgerctl load` (hidden): the child process of the crash tests. Many tasks append to a few
//! streams at once and print one line per acknowledged append, flushed before the next ack
//! is awaited, so a test that SIGKILLs this process knows exactly what was acknowledged:
//! `ack <first_position> <count> <stream> <first_version> <append_id>`. With `--replicated` the
//! same load goes to the replicated log on a JetStream cluster (the crash test's other backend).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Args;
use ledger::{Append, ExpectedVersion, NewEvent};

#[derive(Args)]
pub struct LoadArgs {
    /// Concurrent appending tasks.
    #[arg(long, default_value_t = 16)]
    writers: usize,
    /// Streams they append to.
    #[arg(long, default_value_t = 8)]
    streams: u64,
    /// Stop after this many appends per writer (0: never).
    #[arg(long, default_value_t = 0)]
    appends: u64,
    /// Append to the replicated log on --nats (LEDGER_LOG, created with --replicas) through
    /// --data as this writer's copy: each batch is acknowledged by the cluster before it is
    /// written locally and acknowledged here. Takes no writer lease.
    #[arg(long)]
    replicated: bool,
    /// LEDGER_LOG's replicas when it is created.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
}

pub fn run(data: &Path, nats: &service::NatsArgs, args: LoadArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    // The client must live as long as the writer: its commit step publishes through it.
    let (ledger, _client) = if args.replicated {
        let (ledger, client) = runtime.block_on(service::replicated::open_log_writer(
            data,
            nats,
            args.replicas,
        ))?;
        (ledger, Some(client))
    } else {
        (crate::create_ledger(data)?, None)
    };
    let stdout = Arc::new(Mutex::new(std::io::stdout()));
    println!("ready {}", ledger.committed_position());
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for writer in 0..args.writers {
            let ledger = ledger.clone();
            let stdout = stdout.clone();
            let streams = args.streams.max(1);
            let appends = args.appends;
            tasks.push(tokio::spawn(async move {
                let mut seed = (std::process::id() as u64) << 16 | writer as u64 | 1;
                let mut n = 0u64;
                while appends == 0 || n < appends {
                    n += 1;
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let stream = format!("load-{}", seed % streams);
                    let count = 1 + (seed >> 8) % 4;
                    let append_id = format!("{}-{writer}-{n}", std::process::id());
                    let events = (0..count)
                        .map(|index| {
                            NewEvent::new(
                                "load_event",
                                format!(
                                    r#"{{"append":"{append_id}","index":{index},"count":{count},"pad":"{}"}}"#,
                                    "x".repeat(120)
                                ),
                            )
                        })
                        .collect();
                    let append = Append::new(stream.clone(), ExpectedVersion::Any, events)
                        .command_id(append_id.clone());
                    let appended = ledger.append(append).await?;
                    let line = format!(
                        "ack {} {} {} {} {}\n",
                        appended.events[0].position,
                        appended.events.len(),
                        stream,
                        appended.events[0].version,
                        append_id
                    );
                    let mut out = stdout.lock().expect("stdout lock");
                    out.write_all(line.as_bytes())?;
                    out.flush()?;
                }
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

//! `ledgerctl submit`, `tick` and `balance` on the embedded store: parse, hand to the
//! `commands` handler, print. No rule lives here.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use commands::handler::CommandResult;
use commands::{Handler, Rejection};
use schemas::CommandEnvelope;

use crate::Format;
use crate::limits;
use crate::pipeline::{self, Job, Order, Progress};

/// The rules over the store at `data`; `submit` may create the store, `tick` needs one.
fn handler(data: &Path, create: bool) -> anyhow::Result<Handler> {
    let ledger = if create {
        crate::create_ledger(data)?
    } else {
        crate::open_ledger(data)?
    };
    let actor = std::env::var("USER").unwrap_or_else(|_| "ledgerctl".to_owned());
    Ok(Handler::new(ledger, Arc::new(Utc::now), actor))
}

/// Parses an RFC 3339 time with an offset for a flag, with a message that names the flag.
/// A time flag not tied to a contract (`tick --now`): RFC 3339 with an offset, or a date alone,
/// 00:00 UTC that day.
pub fn parse_time(flag: &str, text: &str) -> anyhow::Result<DateTime<Utc>> {
    service::parse_time(flag, text)
}

/// The command id of a line that did not parse, if one can be read from it.
pub fn command_id_of(line: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    value.get("command_id")?.as_str().map(str::to_owned)
}

pub fn submit(data: &Path, file: &Path) -> anyhow::Result<ExitCode> {
    let (reader, size) = crate::open_input_sized(file)?;
    let handler = handler(data, true)?;
    let runtime = crate::pipeline_runtime()?;
    submit_each(reader, size, &runtime, |_, envelope| {
        let handler = handler.clone();
        // A rejection is a result line; a failure of the log stops the run (exit 2).
        Box::pin(async move { Ok(serde_json::to_value(handler.submit(envelope).await?)?) })
    })
}

/// One line's answer: its number, its command id, and the result or why it was not recorded.
struct Answered {
    line: usize,
    command_id: Option<String>,
    result: anyhow::Result<serde_json::Value>,
}

/// The `submit` loop, wherever the commands go: reads JSON lines, skips blank ones, answers a
/// line that does not parse here (it never travels), hands the others to `run` (with the line
/// as written) — up to `limits::SUBMIT_IN_FLIGHT` at once, each contract's commands in file
/// order and a command of no contract (`publish_rates`) after everything before it and before
/// everything after it — and prints one result line each, in file order. Exit 0 when all were
/// accepted, 1 when any was rejected. A command the log could not record stops the run with an
/// error (exit 2), after the lines already sent are answered; resending with the same
/// `command_id`s is safe. With stderr on a terminal, progress is shown there.
pub fn submit_each(
    reader: Box<dyn BufRead>,
    size: Option<u64>,
    runtime: &tokio::runtime::Runtime,
    mut run: impl FnMut(&str, CommandEnvelope) -> Job<anyhow::Result<serde_json::Value>>,
) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let mut any_rejected = false;
    let mut failure: Option<anyhow::Error> = None;
    let mut progress = Progress::new("lines", size);
    let (mut done, mut bytes_read) = (0u64, 0u64);
    let bytes = std::cell::Cell::new(0u64);
    let jobs = reader.lines().enumerate().filter_map(|(index, line)| {
        let line = match line.with_context(|| format!("reading line {}", index + 1)) {
            Ok(line) => line,
            Err(error) => return Some(Err(error)),
        };
        bytes.set(bytes.get() + line.len() as u64 + 1);
        if line.trim().is_empty() {
            return None;
        }
        let number = index + 1;
        Some(Ok(match CommandEnvelope::from_json(&line) {
            Ok(envelope) => {
                let command_id = envelope.command_id.clone();
                let order = match envelope.body.contract_id() {
                    Some(contract) => Order::After(contract.to_owned()),
                    None => Order::Barrier,
                };
                let work = run(&line, envelope);
                let job: Job<Answered> = Box::pin(async move {
                    Answered {
                        line: number,
                        command_id,
                        result: work.await,
                    }
                });
                (order, job)
            }
            Err(message) => {
                let rejected = serde_json::to_value(CommandResult::rejected(
                    command_id_of(&line),
                    Rejection::invalid(format!("line {number}: {message}")),
                ))
                .map_err(anyhow::Error::from);
                let job: Job<Answered> = Box::pin(async move {
                    Answered {
                        line: number,
                        command_id: None,
                        result: rejected,
                    }
                });
                (Order::Free, job)
            }
        }))
    });
    let outcome = pipeline::run_ordered(runtime, limits::SUBMIT_IN_FLIGHT, jobs, |answer| {
        done += 1;
        bytes_read = bytes.get();
        progress.update(done, bytes_read);
        match answer.result {
            Ok(result) => {
                any_rejected |= result["ok"] != serde_json::Value::Bool(true);
                writeln!(stdout, "{}", serde_json::to_string(&result)?)?;
                Ok(true)
            }
            Err(error) => {
                let error = error.context(match &answer.command_id {
                    Some(id) => format!("line {} (command_id {id})", answer.line),
                    None => format!("line {}", answer.line),
                });
                if failure.is_some() {
                    eprintln!("ledgerctl: also not recorded: {error:#}");
                } else {
                    failure = Some(error);
                }
                Ok(false)
            }
        }
    });
    progress.finish();
    stdout.flush()?;
    outcome?;
    if let Some(error) = failure {
        return Err(error.context(
            "stopped; the lines sent before it stopped are answered above, and sending the file \
             again with the same command_ids is safe",
        ));
    }
    Ok(if any_rejected {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// With a signing key, a signed checkpoint follows (kept in the store; its size on stderr).
pub fn tick(data: &Path, now: &str, key: Option<&Path>) -> anyhow::Result<ExitCode> {
    let now = parse_time("--now", now)?;
    let key = key.map(crate::proof::signing_key_file).transpose()?;
    let handler = handler(data, false)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let results = runtime.block_on(handler.tick(now))?;
    let mut stdout = std::io::stdout().lock();
    for result in &results {
        writeln!(stdout, "{}", serde_json::to_string(result)?)?;
    }
    eprintln!(
        "tick at {}: {} time-driven event(s) appended",
        now.to_rfc3339(),
        results.len()
    );
    if let Some(key) = key {
        let (checkpoint, _) = proofs::make_checkpoint(handler.ledger(), &key)?;
        eprintln!(
            "checkpoint of the log at size {} signed by key {} (ledgerctl checkpoint prints one)",
            checkpoint.size, checkpoint.key_id
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints balances (summed here or answered by the service).
pub fn print_balance(
    view: &projections::timeline::Balances,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match format {
        Format::Json => writeln!(stdout, "{}", serde_json::to_string(view)?)?,
        Format::Csv => {
            writeln!(stdout, "contract_id,position,bucket,balance")?;
            for (bucket, balance) in &view.balances {
                writeln!(
                    stdout,
                    "{},{},{bucket},{balance}",
                    view.contract_id, view.position
                )?;
            }
        }
        Format::Table | Format::Html => {
            writeln!(
                stdout,
                "contract {} at position {}",
                view.contract_id, view.position
            )?;
            for (bucket, balance) in &view.balances {
                writeln!(stdout, "  {bucket:<18} {balance:>12}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

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
    let reader = crate::open_input(file)?;
    let handler = handler(data, true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    submit_each(reader, |_, envelope| {
        // A rejection is a result line; a failure of the log stops the run (exit 2).
        Ok(serde_json::to_value(
            runtime.block_on(handler.submit(envelope))?,
        )?)
    })
}

/// The `submit` loop, wherever the commands go: reads JSON lines, skips blank ones, answers a
/// line that does not parse here (it never travels), hands the others to `run` (with the line
/// as written), prints one result line each. Exit 0 when all were accepted, 1 when any was
/// rejected; a command the log could not record stops the run with an error (exit 2), safe to
/// send again with its `command_id`.
pub fn submit_each(
    reader: Box<dyn BufRead>,
    mut run: impl FnMut(&str, CommandEnvelope) -> anyhow::Result<serde_json::Value>,
) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    let mut any_rejected = false;
    for (index, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading line {}", index + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let result = match CommandEnvelope::from_json(&line) {
            Ok(envelope) => {
                let command_id = envelope.command_id.clone();
                run(&line, envelope).with_context(|| match &command_id {
                    Some(id) => format!("line {} (command_id {id})", index + 1),
                    None => format!("line {}", index + 1),
                })?
            }
            Err(message) => serde_json::to_value(CommandResult::rejected(
                command_id_of(&line),
                Rejection::invalid(format!("line {}: {message}", index + 1)),
            ))?,
        };
        any_rejected |= result["ok"] != serde_json::Value::Bool(true);
        writeln!(stdout, "{}", serde_json::to_string(&result)?)?;
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

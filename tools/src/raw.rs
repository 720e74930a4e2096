//! `ledgerctl log`: raw events in and out, without contract rules. For seeding, inspecting and
//! testing the event log itself; contract commands go through `submit`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use ledger::{Append, ExpectedVersion, NewEvent};

use crate::pipeline::{Job, Order};

#[derive(Subcommand)]
pub enum LogCommand {
    /// Append raw events from a JSON-lines file or stdin, one append per line:
    /// {"stream":"s","type":"t","payload":{…},"expected":"any"|"no_stream"|"stream_exists"|N,
    ///  "effective_at":"RFC 3339","command_id":"…"}. Prints one result line each; exit 0 when all
    /// were accepted, 1 when any was rejected (the rest still run), 2 on unusable input.
    Append {
        /// The file, or - for stdin.
        #[arg(default_value = "-")]
        file: PathBuf,
    },
    /// Print events of the global log (or of one stream) as JSON lines or a table.
    Read {
        /// First global position (or stream version with --stream).
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Only this stream.
        #[arg(long)]
        stream: Option<String>,
        /// At most this many events.
        #[arg(long, default_value_t = projections::query::LOG_READ_EVENTS_DEFAULT)]
        limit: usize,
    },
}

pub fn run(data: &Path, command: LogCommand) -> anyhow::Result<ExitCode> {
    match command {
        LogCommand::Append { file } => append(data, &file),
        LogCommand::Read { .. } => unreachable!("log read is a read question (main.rs)"),
    }
}

fn parse_line(line: &str) -> Result<Append, String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let object = value.as_object().ok_or("a line must be a JSON object")?;
    for key in object.keys() {
        if !matches!(
            key.as_str(),
            "stream" | "type" | "payload" | "expected" | "effective_at" | "command_id"
        ) {
            return Err(format!("unknown field {key:?}"));
        }
    }
    let text = |key: &str| object.get(key).and_then(|v| v.as_str());
    let stream = text("stream").ok_or("\"stream\" (a string) is required")?;
    let event_type = text("type").ok_or("\"type\" (a string) is required")?;
    let payload = object
        .get("payload")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let expected = match object.get("expected") {
        None => ExpectedVersion::Any,
        Some(serde_json::Value::String(word)) => match word.as_str() {
            "any" => ExpectedVersion::Any,
            "no_stream" => ExpectedVersion::NoStream,
            "stream_exists" => ExpectedVersion::StreamExists,
            other => {
                return Err(format!(
                    "\"expected\" {other:?}: use any, no_stream, stream_exists or a version number"
                ));
            }
        },
        Some(serde_json::Value::Number(n)) => ExpectedVersion::Exact(
            n.as_u64()
                .ok_or("\"expected\" must be a whole version number ≥ 0")?,
        ),
        Some(_) => return Err("\"expected\" must be a word or a version number".into()),
    };
    let mut event = NewEvent::new(event_type, payload.to_string());
    if let Some(at) = text("effective_at") {
        let at = chrono::DateTime::parse_from_rfc3339(at)
            .map_err(|e| format!("\"effective_at\" {at:?} is not RFC 3339 with an offset: {e}"))?;
        event.effective_at = Some(at.to_utc());
    }
    let mut append = Append::new(stream, expected, vec![event]);
    if let Some(id) = text("command_id") {
        event_metadata_command(&mut append, id);
        append = append.command_id(id);
    }
    Ok(append)
}

fn event_metadata_command(append: &mut Append, id: &str) {
    for event in &mut append.events {
        event.metadata.command_id = Some(id.to_owned());
    }
}

/// A line's number and what appending it gave.
type LineAnswer = (usize, Result<ledger::Appended, String>);

fn append(data: &Path, file: &Path) -> anyhow::Result<ExitCode> {
    let (reader, size) = crate::open_input_sized(file)?;
    let ledger = crate::create_ledger(data)?;
    let runtime = crate::pipeline_runtime()?;
    let mut any_rejected = false;
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let mut progress = crate::pipeline::Progress::new("lines", size);
    let bytes = std::cell::Cell::new(0u64);
    let mut done = 0u64;
    // Appends to one stream in file order (their expected versions depend on it), to
    // different streams concurrently: one fsync for many.
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
        let job: (Order, Job<LineAnswer>) = match parse_line(&line) {
            Ok(append) => {
                let ledger = ledger.clone();
                (
                    Order::After(append.stream.clone()),
                    Box::pin(async move {
                        (
                            number,
                            ledger.append(append).await.map_err(|e| e.to_string()),
                        )
                    }),
                )
            }
            Err(message) => (Order::Free, Box::pin(async move { (number, Err(message)) })),
        };
        Some(Ok(job))
    });
    crate::pipeline::run_ordered(
        &runtime,
        crate::limits::SUBMIT_IN_FLIGHT,
        jobs,
        |(number, result)| {
            done += 1;
            progress.update(done, bytes.get());
            let json = match result {
                Ok(appended) => serde_json::json!({
                    "line": number, "ok": true, "duplicate": appended.duplicate,
                    "events": appended.events.iter().map(|e| serde_json::json!({
                        "position": e.position, "version": e.version, "event_id": e.event_id.to_string(),
                    })).collect::<Vec<_>>(),
                }),
                Err(message) => {
                    any_rejected = true;
                    serde_json::json!({"line": number, "ok": false, "error": message})
                }
            };
            writeln!(stdout, "{json}")?;
            Ok(true)
        },
    )?;
    progress.finish();
    stdout.flush()?;
    Ok(if any_rejected {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

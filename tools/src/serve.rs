//! `ledgerctl serve`: one process owns the store and serves it on NATS. It runs
//! - the `ledger` service (async-nats service API, so `$SRV.PING|INFO|STATS` work) with the
//!   endpoints `ledger.cmd.<verb>` (a command's JSON; `tick`) and `ledger.qry.<view>`
//!   (`balance`, `audit`, `shortfalls`, `replay`);
//! - the publisher (an outbox over the log): balance changes into the KV bucket
//!   `ledger_balances` (republished live on `ledger.balance.<contract>.<bucket>`), events on
//!   `ledger.evt.<contract>.<type>`, billables on `ledger.shortfall.<contract>`, expiry notices on
//!   `ledger.notice.<contract>`; every message carries a `Nats-Msg-Id` derived from its log
//!   position, so a republish after a crash is dropped by JetStream as a duplicate; the
//!   publisher's checkpoint moves only after JetStream acknowledged everything before it;
//! - the scheduler: `tick` on a timer (R8, R9, R10, R15).
//!
//! SIGTERM or Ctrl-C: stop taking requests, finish those in flight, publish up to the head,
//! checkpoint, flush, exit 0.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_nats::HeaderMap;
use async_nats::jetstream;
use async_nats::service::ServiceExt;
use chrono::{DateTime, Utc};
use commands::handler::CommandResult;
use commands::{Handler, Rejection};
use futures::StreamExt;
use ledger::{Checkpoint, Ledger};
use schemas::CommandEnvelope;
use tokio::sync::{Mutex, watch};

use crate::nats::{NatsArgs, REQUEST_BYTES_MAX};

/// `serve`'s own flags.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Fix the clock (RFC 3339) for commands and the scheduler, for tests and replays.
    #[arg(long)]
    pub now: Option<String>,
    /// Seconds between scheduler ticks; 0 turns the scheduler off.
    #[arg(long, default_value_t = 60)]
    pub tick_seconds: u64,
    #[command(flatten)]
    pub replicated: crate::replicated::ReplicatedArgs,
}

pub fn run(data: &Path, nats: &NatsArgs, args: &ServeArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        nats.nats.is_some(),
        "serve needs a NATS server: --nats URL (or NATS_URL)"
    );
    if args.replicated.replicated {
        return crate::replicated::run(data, nats, args);
    }
    let fixed_now = args
        .now
        .as_deref()
        .map(|t| crate::contract::parse_time("--now", t))
        .transpose()?;
    let ledger = crate::create_ledger(data)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(ledger, nats, fixed_now, args.tick_seconds))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(
    ledger: Ledger,
    nats: &NatsArgs,
    fixed_now: Option<DateTime<Utc>>,
    tick_seconds: u64,
) -> anyhow::Result<()> {
    let clock: ledger::Clock = match fixed_now {
        Some(now) => Arc::new(move || now),
        None => Arc::new(Utc::now),
    };
    let handler = Handler::new(ledger.clone(), clock.clone(), "ledger-service");
    let (reconnects_tx, reconnects) = watch::channel(0u64);
    let client = nats.connect("ledger serve", Some(reconnects_tx)).await?;
    let js = jetstream::new(client.clone());
    publisher::set_up(&js, 1).await?;

    let service = client
        .service_builder()
        .description("Contract Ledger: commands and queries")
        .start("ledger", env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| anyhow::anyhow!("starting the NATS service: {e}"))?;
    let mut commands_endpoint = service
        .endpoint_builder()
        .name("cmd")
        .add("ledger.cmd.*")
        .await
        .map_err(|e| anyhow::anyhow!("adding ledger.cmd.*: {e}"))?;
    let mut queries_endpoint = service
        .endpoint_builder()
        .name("qry")
        .add("ledger.qry.*")
        .await
        .map_err(|e| anyhow::anyhow!("adding ledger.qry.*: {e}"))?;

    let Background {
        stop: stop_tx,
        publisher,
        scheduler,
    } = start_background(&ledger, &js, reconnects, &handler, &clock, tick_seconds);
    let views = Arc::new(Mutex::new(()));
    tracing::info!("serving the ledger on NATS");
    eprintln!("ledgerctl serve: serving (pid {})", std::process::id());

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            Some(request) = commands_endpoint.next() => {
                let handler = handler.clone();
                in_flight.spawn(async move { answer_command(&handler, request).await });
            }
            Some(request) = queries_endpoint.next() => {
                let ledger = ledger.clone();
                let views = views.clone();
                in_flight.spawn(async move { answer_query(&ledger, &views, request).await });
            }
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    tracing::info!("stopping: draining requests in flight");
    commands_endpoint.stop().await.ok();
    queries_endpoint.stop().await.ok();
    while in_flight.join_next().await.is_some() {}
    stop_tx.send(true).ok();
    if let Some(scheduler) = scheduler {
        scheduler.await.ok();
    }
    let checkpoint = publisher.await.context("the publisher task")??;
    client.flush().await.context("flushing NATS")?;
    eprintln!(
        "ledgerctl serve: stopped; published and checkpointed to position {}",
        checkpoint.position
    );
    Ok(())
}

/// What runs beside the endpoints of the log's writer: the publisher and the scheduler, with the
/// switch that stops both.
pub(crate) struct Background {
    pub stop: watch::Sender<bool>,
    pub publisher: tokio::task::JoinHandle<Result<Checkpoint, publisher::PublishError>>,
    pub scheduler: Option<tokio::task::JoinHandle<()>>,
}

/// Starts the publisher and, unless `tick_seconds` is 0, the scheduler.
pub(crate) fn start_background(
    ledger: &Ledger,
    js: &jetstream::Context,
    reconnects: watch::Receiver<u64>,
    handler: &Handler,
    clock: &ledger::Clock,
    tick_seconds: u64,
) -> Background {
    let (stop, stop_rx) = watch::channel(false);
    let (publisher, _) =
        publisher::Publisher::new(ledger.clone(), js.clone(), reconnects, stop_rx.clone());
    let publisher = tokio::spawn(publisher.run());
    let scheduler = (tick_seconds > 0).then(|| {
        tokio::spawn(schedule_loop(
            handler.clone(),
            clock.clone(),
            Duration::from_secs(tick_seconds),
            stop_rx,
        ))
    });
    Background {
        stop,
        publisher,
        scheduler,
    }
}

/// A reply body with the service-error headers when `code` is set.
async fn reply(
    request: &async_nats::service::Request,
    body: &serde_json::Value,
    error: Option<(u16, &str)>,
    position: Option<u64>,
) {
    let bytes = serde_json::to_vec(body).expect("JSON values serialize");
    reply_bytes(request, bytes, error, position).await;
}

/// A reply of JSON bytes with the service-error headers when `code` is set.
async fn reply_bytes(
    request: &async_nats::service::Request,
    bytes: Vec<u8>,
    error: Option<(u16, &str)>,
    position: Option<u64>,
) {
    let mut headers = HeaderMap::new();
    headers.insert("Content-Type", "application/json");
    if let Some(position) = position {
        headers.insert("Ledger-Position", position.to_string().as_str());
    }
    if let Some((code, status)) = error {
        headers.insert("Nats-Service-Error-Code", code.to_string().as_str());
        headers.insert("Nats-Service-Error", status);
    }
    if let Err(error) = request
        .respond_with_headers(Ok(bytes.into()), headers)
        .await
    {
        tracing::warn!(%error, "could not send a reply");
    }
}

fn refusal(command_id: Option<String>, code: &str, message: String) -> serde_json::Value {
    serde_json::to_value(schemas::nats::ServiceRefusal {
        command_id,
        ok: false,
        error: schemas::nats::RefusalDetail {
            code: code.to_owned(),
            rule: None,
            message,
        },
    })
    .expect("refusals serialize")
}

pub(crate) async fn answer_command(handler: &Handler, request: async_nats::service::Request) {
    let subject = request.message.subject.to_string();
    let verb = subject.rsplit('.').next().unwrap_or_default().to_owned();
    let payload = request.message.payload.clone();
    if payload.len() > REQUEST_BYTES_MAX {
        let body = refusal(
            None,
            "payload_too_large",
            format!(
                "a command is at most {REQUEST_BYTES_MAX} bytes; this one is {}",
                payload.len()
            ),
        );
        return reply(&request, &body, Some((413, "payload_too_large")), None).await;
    }
    if verb == "tick" {
        return answer_tick(handler, &request, &payload).await;
    }
    if !schemas::COMMAND_TYPES.contains(&verb.as_str()) {
        let body = refusal(
            None,
            "unknown_verb",
            format!(
                "{subject}: no such command; the verbs are tick, {}",
                schemas::COMMAND_TYPES.join(", ")
            ),
        );
        return reply(&request, &body, Some((404, "unknown_verb")), None).await;
    }
    let result = match command_for_verb(&verb, &payload) {
        Ok(envelope) => handler.submit(envelope).await,
        Err(message) => {
            let command_id = serde_json::from_slice::<serde_json::Value>(&payload)
                .ok()
                .and_then(|v| v.get("command_id")?.as_str().map(str::to_owned));
            CommandResult::rejected(command_id, Rejection::invalid(message))
        }
    };
    let position = result
        .events
        .as_ref()
        .and_then(|events| events.iter().map(|e| e.position).max());
    let error = result.error.as_ref().map(|rejection| {
        if rejection.code == "invalid_command" {
            (400, "invalid_command")
        } else if rejection.code == "storage_failure" {
            // Not the command's fault: the log could not record it (a full disk, a writer that
            // stopped or lost its lease). A retry with the same command_id is safe.
            (500, "internal")
        } else {
            (422, "rejected")
        }
    });
    let body = serde_json::to_value(&result).expect("results serialize");
    reply(&request, &body, error, position).await;
}

/// The command in a request body: its `type` may be left out (the verb says it) but must not
/// contradict the verb.
fn command_for_verb(verb: &str, payload: &[u8]) -> Result<CommandEnvelope, String> {
    // The usual case, one parse: the body names its type and it is the verb.
    if let Ok(text) = std::str::from_utf8(payload)
        && let Ok(envelope) = CommandEnvelope::from_json(text)
    {
        let kind = envelope.body.type_name();
        return if kind == verb {
            Ok(envelope)
        } else {
            Err(format!(
                "the body's type {kind:?} does not match the subject's verb {verb:?}"
            ))
        };
    }
    // Otherwise the type may be left out (the verb says it), or the body is bad: say why.
    let mut value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("not valid JSON: {e}"))?;
    let object = value.as_object_mut().ok_or("a command is a JSON object")?;
    match object.get("type").and_then(|t| t.as_str()) {
        None => {
            object.insert("type".to_owned(), verb.into());
        }
        Some(kind) if kind == verb => {}
        Some(kind) => {
            return Err(format!(
                "the body's type {kind:?} does not match the subject's verb {verb:?}"
            ));
        }
    }
    CommandEnvelope::from_json(&value.to_string())
}

async fn answer_tick(handler: &Handler, request: &async_nats::service::Request, payload: &[u8]) {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Tick {
        now: String,
    }
    let now = serde_json::from_slice::<Tick>(payload)
        .map_err(|e| format!("tick takes {{\"now\":\"<RFC 3339>\"}}: {e}"))
        .and_then(|t| crate::contract::parse_time("now", &t.now).map_err(|e| format!("{e:#}")));
    let now = match now {
        Ok(now) => now,
        Err(message) => {
            let body = refusal(None, "invalid_command", message);
            return reply(request, &body, Some((400, "invalid_command")), None).await;
        }
    };
    match handler.tick(now).await {
        Ok(results) => {
            let position = results
                .iter()
                .filter_map(|r| r.events.as_ref())
                .flatten()
                .map(|e| e.position)
                .max();
            let body = serde_json::to_value(&results).expect("results serialize");
            reply(request, &body, None, position).await;
        }
        Err(error) => {
            let body = refusal(None, "internal", format!("tick failed: {error}"));
            reply(request, &body, Some((500, "internal")), None).await;
        }
    }
}

pub(crate) async fn answer_query(
    ledger: &Ledger,
    views: &Mutex<()>,
    request: async_nats::service::Request,
) {
    let subject = request.message.subject.to_string();
    let view = subject.rsplit('.').next().unwrap_or_default().to_owned();
    let payload = request.message.payload.clone();
    if payload.len() > REQUEST_BYTES_MAX {
        let body = refusal(
            None,
            "payload_too_large",
            "a query is at most 64 KiB".into(),
        );
        return reply(&request, &body, Some((413, "payload_too_large")), None).await;
    }
    // Read your writes: `min_position` (a command reply's `Ledger-Position`) makes the answer
    // wait until this instance holds it, up to 5 s; on a replicated instance the mirror may lag.
    let (payload, min_position) = match split_min_position(&payload) {
        Ok(split) => split,
        Err(message) => {
            let body = refusal(None, "invalid_query", message);
            return reply(&request, &body, Some((400, "invalid_query")), None).await;
        }
    };
    if let Some(position) = min_position
        && tokio::time::timeout(
            crate::replicated::READ_YOUR_WRITES_WAIT,
            ledger.wait_for(position),
        )
        .await
        .is_err()
    {
        let body = refusal(
            None,
            "not_yet_replicated",
            format!(
                "this instance has the log up to position {} and did not reach {position} within 5 s",
                ledger.committed_position()
            ),
        );
        return reply(&request, &body, Some((503, "not_yet_replicated")), None).await;
    }
    // Views catch their projections up first; one at a time keeps two catch-ups of the same
    // projection from racing.
    let _one_at_a_time = views.lock().await;
    let ledger = ledger.clone();
    let answer = match projections::query::Query::from_json(&view, &payload) {
        Err(error) => Err(error),
        Ok(query) => {
            tokio::task::spawn_blocking(move || projections::query::answer(&ledger, &query))
                .await
                .unwrap_or_else(|e| {
                    Err(projections::query::QueryError::Log(
                        ledger::Error::Invalid {
                            what: "query",
                            detail: format!("the query panicked: {e}"),
                        },
                    ))
                })
        }
    };
    match answer {
        Ok((answer, position)) => {
            reply_bytes(&request, answer.to_json(), None, Some(position)).await;
        }
        Err(error) => {
            let (code, status) = error.status();
            let body = refusal(None, status, error.to_string());
            reply(&request, &body, Some((code, status)), None).await;
        }
    }
}

/// A query's body without its `min_position`, and that position.
fn split_min_position(payload: &[u8]) -> Result<(Vec<u8>, Option<u64>), String> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok((Vec::new(), None));
    }
    let mut value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("bad query: {e}"))?;
    let Some(object) = value.as_object_mut() else {
        return Err("a query is a JSON object".to_owned());
    };
    let min_position = match object.remove("min_position") {
        None => None,
        Some(value) => Some(
            value
                .as_u64()
                .ok_or("min_position is a log position (a number)")?,
        ),
    };
    Ok((value.to_string().into_bytes(), min_position))
}

async fn schedule_loop(
    handler: Handler,
    clock: ledger::Clock,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut interval = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => return,
        }
        match handler.tick(clock()).await {
            Ok(results) if !results.is_empty() => {
                tracing::info!(appended = results.len(), "scheduler tick");
            }
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "scheduler tick failed"),
        }
    }
}

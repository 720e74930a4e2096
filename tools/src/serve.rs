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

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv, stream};
use async_nats::service::ServiceExt;
use chrono::{DateTime, Utc};
use commands::handler::CommandResult;
use commands::{Handler, Rejection};
use futures::StreamExt;
use ledger::{Checkpoint, Ledger, RecordedEvent};
use rust_decimal::Decimal;
use schemas::{Bucket, CommandEnvelope};
use tokio::sync::{Mutex, watch};

use crate::nats::{NatsArgs, REQUEST_BYTES_MAX};

/// The KV bucket of current balances, key `<contract>.<bucket>`.
pub const BALANCES_BUCKET: &str = "ledger_balances";
/// Streams of what the publisher sends (kept by age and size, not by interest).
pub const EVENTS_STREAM: &str = "LEDGER_EVENTS";
/// Billables.
pub const SHORTFALLS_STREAM: &str = "LEDGER_SHORTFALLS";
/// Expiry notices.
pub const NOTICES_STREAM: &str = "LEDGER_NOTICES";
/// The publisher's checkpoint and per-contract balances (a projection keyspace).
pub const PUBLISHER: &str = "publisher";
/// Events published between two checkpoints.
pub const PUBLISH_BATCH_EVENTS_MAX: usize = 2048;
/// Publishes whose acks may be outstanding at once (async-nats blocks past ~5,000).
pub const PUBLISH_ACKS_IN_FLIGHT_MAX: usize = 512;
/// How long a message's id is remembered by JetStream for de-duplication.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
/// How long published messages are kept.
pub const RETENTION: Duration = Duration::from_secs(400 * 24 * 60 * 60);
/// Schema version of every published body (`Ledger-Type: <type>/<version>`).
pub const MESSAGE_SCHEMA_VERSION: u32 = schemas::nats::MESSAGE_SCHEMA_VERSION;

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
    set_up_jetstream(&js, 1).await?;

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
    pub publisher: tokio::task::JoinHandle<anyhow::Result<Checkpoint>>,
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
    let publisher = tokio::spawn(publish_loop(
        ledger.clone(),
        js.clone(),
        reconnects,
        stop_rx.clone(),
    ));
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

/// Creates (or updates) the KV bucket and the streams the publisher writes to.
pub async fn set_up_jetstream(js: &jetstream::Context, replicas: usize) -> anyhow::Result<()> {
    js.create_or_update_key_value(kv::Config {
        bucket: BALANCES_BUCKET.to_owned(),
        description: "Contract Ledger: current balance per <contract>.<bucket>".to_owned(),
        history: 64,
        max_age: RETENTION,
        num_replicas: replicas,
        republish: Some(stream::Republish {
            source: format!("$KV.{BALANCES_BUCKET}.>"),
            destination: "ledger.balance.>".to_owned(),
            headers_only: false,
        }),
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("creating the KV bucket {BALANCES_BUCKET}: {e}"))?;
    // The KV bucket's own stream keeps message ids for de-duplication as long as the others.
    let mut kv_stream = js
        .get_stream(format!("KV_{BALANCES_BUCKET}"))
        .await
        .map_err(|e| anyhow::anyhow!("reading the KV stream: {e}"))?;
    let mut config = kv_stream
        .info()
        .await
        .map_err(|e| anyhow::anyhow!("reading the KV stream: {e}"))?
        .config
        .clone();
    if config.duplicate_window != DUPLICATE_WINDOW {
        config.duplicate_window = DUPLICATE_WINDOW;
        js.update_stream(config)
            .await
            .map_err(|e| anyhow::anyhow!("setting the KV stream's duplicate window: {e}"))?;
    }
    for (name, subject, description) in [
        (
            EVENTS_STREAM,
            "ledger.evt.>",
            "Contract Ledger: every contract event, ledger.evt.<contract>.<type>",
        ),
        (
            SHORTFALLS_STREAM,
            "ledger.shortfall.>",
            "Contract Ledger: billables, ledger.shortfall.<contract>",
        ),
        (
            NOTICES_STREAM,
            "ledger.notice.>",
            "Contract Ledger: expiry notices, ledger.notice.<contract>",
        ),
    ] {
        js.create_or_update_stream(stream::Config {
            name: name.to_owned(),
            description: Some(description.to_owned()),
            subjects: vec![subject.to_owned()],
            retention: stream::RetentionPolicy::Limits,
            max_age: RETENTION,
            duplicate_window: DUPLICATE_WINDOW,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("creating the stream {name}: {e}"))?;
    }
    Ok(())
}

/// A reply body with the service-error headers when `code` is set.
async fn reply(
    request: &async_nats::service::Request,
    body: &serde_json::Value,
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
    let bytes = serde_json::to_vec(body).expect("JSON values serialize");
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

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Query {
    contract_id: Option<String>,
    as_of: Option<String>,
    known_at: Option<String>,
    at_position: Option<u64>,
    from: Option<String>,
    to: Option<String>,
    until: Option<String>,
    /// Read your writes: answer only once the log holds this position (a command's
    /// `Ledger-Position`), waiting up to 5 s; on a replicated instance the mirror may lag.
    min_position: Option<u64>,
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
    let query = if payload.is_empty() {
        Ok(Query {
            contract_id: None,
            as_of: None,
            known_at: None,
            at_position: None,
            from: None,
            to: None,
            until: None,
            min_position: None,
        })
    } else {
        serde_json::from_slice::<Query>(&payload).map_err(|e| format!("bad query: {e}"))
    };
    if let Ok(Query {
        min_position: Some(position),
        ..
    }) = &query
        && tokio::time::timeout(
            crate::replicated::READ_YOUR_WRITES_WAIT,
            ledger.wait_for(*position),
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
    let answer = match query {
        Err(message) => Err((400, "invalid_query", message)),
        Ok(query) => tokio::task::spawn_blocking(move || {
            crate::views::query(&ledger, &view, query_args(query))
        })
        .await
        .unwrap_or_else(|e| Err((500, "internal", format!("the query panicked: {e}")))),
    };
    match answer {
        Ok((body, position)) => reply(&request, &body, None, Some(position)).await,
        Err((code, status, message)) => {
            let body = refusal(None, status, message);
            reply(&request, &body, Some((code, status)), None).await;
        }
    }
}

fn query_args(query: Query) -> crate::views::QueryArgs {
    crate::views::QueryArgs {
        contract_id: query.contract_id,
        as_of: query.as_of,
        known_at: query.known_at,
        at_position: query.at_position,
        from: query.from,
        to: query.to,
        until: query.until,
    }
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

/// What a contract's balances were after the last published event, kept with the checkpoint.
type PublishedBalances = BTreeMap<String, Decimal>;

/// The publisher's entry (beside one per contract) recording, per stream it writes to, the last
/// log position it published there and saw acknowledged. Contract ids never start with `~`.
const PUBLISHED_KEY: &[u8] = b"~published";

/// Streams the publisher writes to, by the `Outgoing::kind` of their messages.
fn stream_of(kind: &str) -> &'static str {
    match kind {
        "balance_update" => "KV_ledger_balances",
        "billable" => SHORTFALLS_STREAM,
        "expiry_notice" => NOTICES_STREAM,
        _ => EVENTS_STREAM,
    }
}

/// Publishes every event past the checkpoint, a batch at a time; returns the final checkpoint
/// once `stop` is set and everything up to the head is published.
///
/// JetStream acknowledges before it syncs to disk (`sync_interval`), so a killed nats-server can
/// lose the tail of a stream that the publisher already checkpointed. The log is the truth: at
/// start, after every reconnection and after a failed batch, the publisher compares each
/// stream's last `Ledger-Position` with what it recorded as acknowledged there, and when a
/// stream is behind it rewinds to that position and publishes again from there (messages the
/// stream still has are dropped as duplicates by their ids; lost ones are appended in order).
async fn publish_loop(
    ledger: Ledger,
    js: jetstream::Context,
    mut reconnects: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Checkpoint> {
    let store = ledger.projection_store(PUBLISHER)?;
    let mut checkpoint = store.checkpoint()?.unwrap_or(Checkpoint {
        position: 0,
        hash: ledger::GENESIS_HASH,
    });
    let mut published: BTreeMap<String, u64> = match store.get(PUBLISHED_KEY)? {
        Some(bytes) => serde_json::from_slice(&bytes)?,
        None => BTreeMap::new(),
    };
    let mut backoff = Duration::from_millis(100);
    let mut check_streams = true;
    loop {
        if check_streams || reconnects.has_changed().unwrap_or(false) {
            reconnects.mark_unchanged();
            match stream_behind(&js, &published).await {
                Ok(Some(position)) if position < checkpoint.position => {
                    tracing::warn!(
                        from = position,
                        checkpoint = checkpoint.position,
                        "a stream lost acknowledged messages (nats-server restarted?); publishing again"
                    );
                    checkpoint = rewind(&ledger, &store, position, &mut published)?;
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "could not read the streams' last positions; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
            check_streams = false;
        }
        let head = ledger.committed_position();
        if head == checkpoint.position {
            if *stop.borrow() {
                return Ok(checkpoint);
            }
            let mut subscription = ledger.subscribe(checkpoint.position + 1);
            tokio::select! {
                next = subscription.next() => { next?; }
                _ = stop.changed() => {}
                _ = reconnects.changed() => { check_streams = true; }
            }
            continue;
        }
        let batch: Vec<RecordedEvent> = ledger
            .scan(checkpoint.position + 1)
            .take(PUBLISH_BATCH_EVENTS_MAX)
            .collect::<Result<_, _>>()?;
        match publish_batch(&store, &js, &batch).await {
            Ok((mut entries, reached)) => {
                let last = batch.last().expect("the head is past the checkpoint");
                checkpoint = Checkpoint {
                    position: last.position,
                    hash: last.hash,
                };
                for (stream, position) in reached {
                    published.insert(stream.to_owned(), position);
                }
                entries.push((PUBLISHED_KEY.to_vec(), serde_json::to_vec(&published)?));
                // Only after every message of the batch was acknowledged.
                store.commit(entries, checkpoint)?;
                backoff = Duration::from_millis(100);
            }
            Err(error) => {
                // Nothing moved: the same messages, with the same ids, go again.
                tracing::warn!(%error, position = checkpoint.position + 1, "publishing failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                check_streams = true;
            }
        }
    }
}

/// The lowest last position among the streams that hold less than the publisher recorded as
/// acknowledged there, or `None` when none lost anything.
async fn stream_behind(
    js: &jetstream::Context,
    published: &BTreeMap<String, u64>,
) -> anyhow::Result<Option<u64>> {
    let mut behind: Option<u64> = None;
    for (name, &recorded) in published {
        let stream = js
            .get_stream(name)
            .await
            .map_err(|e| anyhow::anyhow!("stream {name}: {e}"))?;
        let info = stream.cached_info();
        let actual = if info.state.messages == 0 {
            0
        } else {
            // The last message that is there (a stream's last sequence may have been removed).
            let subjects = info
                .config
                .subjects
                .first()
                .cloned()
                .unwrap_or(">".to_owned());
            let last = stream
                .get_last_raw_message_by_subject(&subjects)
                .await
                .map_err(|e| anyhow::anyhow!("stream {name}'s last message: {e}"))?;
            last.headers
                .get("Ledger-Position")
                .and_then(|v| v.as_str().parse::<u64>().ok())
                .unwrap_or(0)
        };
        if actual < recorded {
            behind = Some(behind.map_or(actual, |b| b.min(actual)));
        }
    }
    Ok(behind)
}

/// Moves the publisher back to `position`: its per-contract balances are folded again from the
/// log up to there, and each stream's record is lowered to it.
fn rewind(
    ledger: &Ledger,
    store: &ledger::ProjectionStore,
    position: u64,
    published: &mut BTreeMap<String, u64>,
) -> anyhow::Result<Checkpoint> {
    let mut balances: BTreeMap<String, PublishedBalances> = BTreeMap::new();
    let mut checkpoint = Checkpoint {
        position: 0,
        hash: ledger::GENESIS_HASH,
    };
    for event in ledger.scan(1).take(position as usize) {
        let event = event?;
        if let Some(contract) = projections::contract_of(&event.stream) {
            let state = balances.entry(contract.to_owned()).or_insert_with(|| {
                Bucket::ALL
                    .iter()
                    .map(|b| (b.name().to_owned(), Decimal::ZERO))
                    .collect()
            });
            for movement in projections::decode_effects(&event).movements {
                *state.entry(movement.bucket.name().to_owned()).or_default() +=
                    movement.balance_delta();
            }
        }
        checkpoint = Checkpoint {
            position: event.position,
            hash: event.hash,
        };
    }
    for recorded in published.values_mut() {
        *recorded = (*recorded).min(position);
    }
    store.clear()?;
    let mut entries: Vec<(Vec<u8>, Vec<u8>)> = balances
        .into_iter()
        .map(|(contract, state)| (contract.into_bytes(), serde_json::to_vec(&state)))
        .map(|(key, value)| value.map(|value| (key, value)))
        .collect::<Result<_, _>>()?;
    entries.push((PUBLISHED_KEY.to_vec(), serde_json::to_vec(published)?));
    store.commit(entries, checkpoint)?;
    Ok(checkpoint)
}

/// Publishes one batch and awaits every ack; returns the publisher's changed entries and, per
/// stream, the last position it published there.
async fn publish_batch(
    store: &ledger::ProjectionStore,
    js: &jetstream::Context,
    batch: &[RecordedEvent],
) -> anyhow::Result<(Vec<(Vec<u8>, Vec<u8>)>, BTreeMap<&'static str, u64>)> {
    let mut balances: BTreeMap<String, PublishedBalances> = BTreeMap::new();
    let mut reached: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut acks = VecDeque::new();
    for event in batch {
        let Some(contract) = projections::contract_of(&event.stream) else {
            continue; // the rate card: not a contract's event
        };
        if !balances.contains_key(contract) {
            let known = match store.get(contract.as_bytes())? {
                Some(bytes) => serde_json::from_slice(&bytes)?,
                None => Bucket::ALL
                    .iter()
                    .map(|b| (b.name().to_owned(), Decimal::ZERO))
                    .collect(),
            };
            balances.insert(contract.to_owned(), known);
        }
        let current = balances.get_mut(contract).expect("inserted above");
        for message in messages(contract, event, current) {
            reached.insert(stream_of(message.kind), event.position);
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", message.id.as_str());
            headers.insert("Content-Type", "application/json");
            headers.insert(
                "Ledger-Type",
                format!("{}/{MESSAGE_SCHEMA_VERSION}", message.kind).as_str(),
            );
            headers.insert("Ledger-Position", event.position.to_string().as_str());
            let ack = js
                .publish_with_headers(message.subject, headers, message.body.into())
                .await
                .map_err(|e| anyhow::anyhow!("publishing: {e}"))?;
            acks.push_back(ack);
            if acks.len() >= PUBLISH_ACKS_IN_FLIGHT_MAX {
                let ack = acks.pop_front().expect("not empty");
                ack.await
                    .map_err(|e| anyhow::anyhow!("awaiting an ack: {e}"))?;
            }
        }
    }
    for ack in acks {
        // A duplicate (a republish after a crash) is acknowledged as one: success.
        ack.await
            .map_err(|e| anyhow::anyhow!("awaiting an ack: {e}"))?;
    }
    let entries = balances
        .into_iter()
        .map(|(contract, state)| {
            (
                contract.into_bytes(),
                serde_json::to_vec(&state).expect("balances serialize"),
            )
        })
        .collect();
    Ok((entries, reached))
}

/// One message to publish.
struct Outgoing {
    subject: String,
    id: String,
    kind: &'static str,
    body: Vec<u8>,
}

/// Every message one event makes, moving `balances` (the contract's published balances).
fn messages(
    contract: &str,
    event: &RecordedEvent,
    balances: &mut PublishedBalances,
) -> Vec<Outgoing> {
    use schemas::nats::*;
    let mut out = Vec::new();
    let effects = projections::decode_effects(event);
    let payload: serde_json::Value =
        serde_json::from_slice(&event.payload).expect("stored payloads are JSON");
    fn body<T: serde::Serialize>(message: &T) -> Vec<u8> {
        serde_json::to_vec(message).expect("messages serialize")
    }
    let source = Source {
        contract_id: contract.to_owned(),
        position: event.position,
        event_id: event.event_id.to_string(),
        event_type: event.event_type.clone(),
        recorded_at: event.recorded_at,
        effective_at: event.effective_at,
    };
    let metadata = &event.metadata;
    out.push(Outgoing {
        subject: format!("ledger.evt.{contract}.{}", event.event_type),
        id: format!("evt-{}", event.position),
        kind: "event",
        body: body(&PublishedEvent {
            contract_id: contract.to_owned(),
            position: event.position,
            stream: event.stream.clone(),
            version: event.version,
            event_id: event.event_id.to_string(),
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            recorded_at: event.recorded_at,
            effective_at: event.effective_at,
            metadata: PublishedMetadata {
                command_id: metadata.command_id.clone(),
                actor: metadata.actor.clone(),
                correlation_id: metadata.correlation_id.clone(),
                causation_id: metadata.causation_id.clone(),
                reason: metadata.reason.clone(),
                reference: metadata.reference.clone(),
            },
            payload: payload.clone(),
        }),
    });
    let mut deltas: BTreeMap<Bucket, Decimal> = BTreeMap::new();
    for movement in &effects.movements {
        *deltas.entry(movement.bucket).or_default() += movement.balance_delta();
    }
    for (bucket, delta) in deltas {
        let before = balances.get(bucket.name()).copied().unwrap_or_default();
        let after = before + delta;
        balances.insert(bucket.name().to_owned(), after);
        out.push(Outgoing {
            subject: format!("$KV.{BALANCES_BUCKET}.{contract}.{}", bucket.name()),
            id: format!("bal-{}-{}", event.position, bucket.name()),
            kind: "balance_update",
            body: body(&BalanceUpdate {
                source: source.clone(),
                bucket,
                balance_before: before,
                balance_after: after,
            }),
        });
    }
    for (index, billable) in effects.billables.iter().enumerate() {
        out.push(Outgoing {
            subject: format!("ledger.shortfall.{contract}"),
            id: format!("bill-{}-{index}", event.position),
            kind: "billable",
            body: body(&PublishedBillable {
                source: source.clone(),
                kind: billable.kind,
                period: billable.period.clone(),
                amount: billable.amount,
                currency: billable.currency.clone(),
            }),
        });
    }
    // Only a notice's payload is parsed a second time, as the typed event.
    if event.event_type == "expiry_notice_issued"
        && let Ok(schemas::Event::ExpiryNoticeIssued(notice)) =
            schemas::Event::from_payload(&event.payload)
    {
        out.push(Outgoing {
            subject: format!("ledger.notice.{contract}"),
            id: format!("notice-{}", event.position),
            kind: "expiry_notice",
            body: body(&PublishedNotice { source, notice }),
        });
    }
    out
}

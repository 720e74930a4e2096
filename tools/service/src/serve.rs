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

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use commands::Handler;

use crate::endpoints::{
    answer_command, answer_query, command_endpoints, query_endpoints, start_service, stop_endpoints,
};
use futures::StreamExt;
use ledger::{Checkpoint, Ledger};
use tokio::sync::watch;

use crate::NatsArgs;

/// `serve`'s own flags.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Fix the clock (RFC 3339) for commands and the scheduler, for tests and replays.
    #[arg(long)]
    pub now: Option<String>,
    /// Seconds between scheduler ticks; 0 turns the scheduler off.
    #[arg(long, default_value_t = 60)]
    pub tick_seconds: u64,
    /// Seconds between signed checkpoints of the log (with --signing-key; made only when the log
    /// grew, kept in the store and published on ledger.checkpoint); 0 turns them off.
    #[arg(long, default_value_t = 60)]
    pub checkpoint_seconds: u64,
    /// The replicated log's flags.
    #[command(flatten)]
    pub replicated: crate::replicated::ReplicatedArgs,
}

/// `serve`: owns the store at `data` (created when missing) and serves it on NATS until SIGTERM
/// or Ctrl-C; with `--replicated`, joins the replicated log instead.
///
/// # Errors
/// Bad flags, a NATS server it never reached, the store or NATS failing.
/// With `key`, it also signs checkpoints (`checkpointer`).
pub fn run(
    data: &Path,
    nats: &NatsArgs,
    args: &ServeArgs,
    key: Option<proofs::SigningKey>,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        nats.nats.is_some(),
        "serve needs a NATS server: --nats URL (or NATS_URL)"
    );
    let checkpoints = key.map(|key| (Arc::new(key), args.checkpoint_seconds));
    if args.replicated.replicated {
        return crate::replicated::run(data, nats, args, checkpoints);
    }
    let fixed_now = args
        .now
        .as_deref()
        .map(|t| crate::parse_time("--now", t))
        .transpose()?;
    let ledger = Ledger::open(data)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(serve(
        ledger,
        nats,
        fixed_now,
        args.tick_seconds,
        checkpoints,
    ));
    // Whatever a task still waits for (NATS that does not answer), the process ends now.
    runtime.shutdown_timeout(Duration::from_secs(1));
    outcome
}

async fn serve(
    ledger: Ledger,
    nats: &NatsArgs,
    fixed_now: Option<DateTime<Utc>>,
    tick_seconds: u64,
    checkpoints: Option<(Arc<proofs::SigningKey>, u64)>,
) -> anyhow::Result<ExitCode> {
    let clock: ledger::Clock = match fixed_now {
        Some(now) => Arc::new(move || now),
        None => Arc::new(Utc::now),
    };
    let handler = Handler::new(ledger.clone(), clock.clone(), "ledger-service");
    let (reconnects_tx, reconnects) = watch::channel(0u64);
    let client = nats.connect("ledger serve", Some(reconnects_tx)).await?;
    let js = jetstream::new(client.clone());
    publisher::set_up(&js, 1).await?;
    // One store per NATS account: a second serve on another store would split the ledger.
    let claim = crate::claim::Claim::take(&js, ledger.store_id()).await?;

    let service = start_service(&client, "Contract Ledger: commands and queries").await?;
    let mut commands_endpoint = command_endpoints(&service).await?;
    let mut queries_endpoint = query_endpoints(&service).await?;

    let ticked = Arc::new(tokio::sync::Notify::new());
    let Background {
        stop: stop_tx,
        publisher,
        published,
        scheduler,
    } = start_background(
        &ledger,
        &js,
        reconnects,
        &handler,
        &clock,
        (tick_seconds, ticked.clone()),
        (ledger.store_id().to_string(), 1),
    );
    let checkpointer = match checkpoints {
        Some((key, seconds)) if seconds > 0 => {
            crate::checkpointer::set_up(&js, 1).await?;
            eprintln!(
                "ledgerctl serve: signing a checkpoint every {seconds} s with key {}",
                key.public().id()
            );
            Some(tokio::spawn(crate::checkpointer::run(
                ledger.clone(),
                js.clone(),
                key,
                Duration::from_secs(seconds),
                ticked.clone(),
                stop_tx.subscribe(),
            )))
        }
        _ => None,
    };
    let mut claim_tick = tokio::time::interval(crate::limits::CLAIM_RENEW_EVERY);
    let views = Arc::new(crate::endpoints::QueryState::default());
    tracing::info!("serving the ledger on NATS");
    // Before saying it serves: a SIGTERM from then on is a clean stop.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    eprintln!(
        "ledgerctl serve: serving (pid {}) store {}",
        std::process::id(),
        ledger.store_id()
    );

    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            Some(request) = commands_endpoint.next() => {
                let handler = handler.clone();
                let client = client.clone();
                in_flight.spawn(async move { answer_command(&client, &handler, request).await });
            }
            Some(request) = queries_endpoint.next() => {
                let ledger = ledger.clone();
                let views = views.clone();
                let client = client.clone();
                in_flight.spawn(async move { answer_query(&client, &ledger, &views, request).await });
            }
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            _ = claim_tick.tick() => claim.renew().await,
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    // Whatever NATS does from here, the process ends within STOP_WAIT.
    let deadline = tokio::time::Instant::now() + crate::limits::STOP_WAIT;
    tracing::info!("stopping: draining requests in flight");
    let drained = async {
        stop_endpoints(&mut commands_endpoint).await;
        stop_endpoints(&mut queries_endpoint).await;
        while in_flight.join_next().await.is_some() {}
    };
    if tokio::time::timeout_at(deadline, drained).await.is_err() {
        tracing::warn!("requests still in flight at the deadline; stopping without them");
    }
    stop_tx.send(true).ok();
    if let Some(scheduler) = scheduler {
        tokio::time::timeout_at(deadline, scheduler).await.ok();
    }
    if let Some(checkpointer) = checkpointer {
        tokio::time::timeout_at(deadline, checkpointer).await.ok();
    }
    let head = ledger.committed_position();
    let outcome = tokio::time::timeout_at(deadline, publisher).await;
    tokio::time::timeout_at(deadline, async {
        claim.release().await;
        client.flush().await.ok();
    })
    .await
    .ok();
    match outcome {
        Ok(Ok(Ok(checkpoint))) => {
            eprintln!(
                "ledgerctl serve: stopped; published and checkpointed to position {}",
                checkpoint.position
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(Ok(Err(error))) => {
            eprintln!(
                "ledgerctl serve: stopped; the publisher {error}; the next serve publishes the rest"
            );
            Ok(ExitCode::from(1))
        }
        Ok(Err(panicked)) => Err(anyhow::anyhow!("the publisher task: {panicked}")),
        Err(_) => {
            eprintln!(
                "ledgerctl serve: stopped after {} s without reaching NATS; published to position \
                 {} of {head}; the next serve publishes the rest",
                crate::limits::STOP_WAIT.as_secs(),
                published.position()
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// What runs beside the endpoints of the log's writer: the publisher and the scheduler, with the
/// switch that stops both.
pub struct Background {
    /// Set to stop both (the publisher publishes up to the head first).
    pub stop: watch::Sender<bool>,
    /// The publisher; its checkpoint when stopped.
    pub publisher: tokio::task::JoinHandle<Result<Checkpoint, publisher::PublishError>>,
    /// How far the publisher got.
    pub published: publisher::PublisherHandle,
    /// The scheduler, unless it is off.
    pub scheduler: Option<tokio::task::JoinHandle<()>>,
}

/// Starts the publisher (its message ids prefixed with `log_id`, its streams recreated with
/// `replicas` when lost: `topology`) and, unless `tick_seconds` is 0, the scheduler.
pub fn start_background(
    ledger: &Ledger,
    js: &jetstream::Context,
    reconnects: watch::Receiver<u64>,
    handler: &Handler,
    clock: &ledger::Clock,
    schedule: (u64, Arc<tokio::sync::Notify>),
    topology: (String, usize),
) -> Background {
    let (tick_seconds, ticked) = schedule;
    let (stop, stop_rx) = watch::channel(false);
    let (log_id, replicas) = topology;
    let (publisher, published) = publisher::Publisher::new(
        ledger.clone(),
        js.clone(),
        reconnects,
        stop_rx.clone(),
        log_id,
        replicas,
    );
    let publisher = tokio::spawn(publisher.run());
    let scheduler = (tick_seconds > 0).then(|| {
        tokio::spawn(schedule_loop(
            handler.clone(),
            clock.clone(),
            Duration::from_secs(tick_seconds),
            ticked,
            stop_rx,
        ))
    });
    Background {
        stop,
        publisher,
        published,
        scheduler,
    }
}

async fn schedule_loop(
    handler: Handler,
    clock: ledger::Clock,
    every: Duration,
    ticked: Arc<tokio::sync::Notify>,
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
                // A checkpoint at every tick that appended (when checkpoints are signed).
                ticked.notify_one();
            }
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "scheduler tick failed"),
        }
    }
}

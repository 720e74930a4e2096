//! `ledgerctl serve --replicated`: one of N instances of the ledger on a JetStream cluster.
//! The log's durable copy is the stream `LEDGER_LOG` (R3, file storage, `deny_delete`,
//! `deny_purge`, `discard: new`), on nodes that fsync every write (`sync_interval: always`,
//! checked at start). DIR is this instance's mirror of it. Not the rules, the index or the read
//! side: those are the embedded code, above the log's commit seam (`ledger::Replicator`).
//!
//! - **One writer, fenced.** The instance holding the lease (key `writer` in the KV bucket
//!   `ledger_writer`, whose entries live `--lease-seconds`; taken with create, renewed with a
//!   revision check every third of that) runs the log's writer, answers `ledger.cmd.*`, and runs
//!   the scheduler and the publisher. Its commit step publishes each group-committed batch as one
//!   message with `Nats-Expected-Last-Sequence` (the batch before) and `Nats-Msg-Id: log-<first
//!   position>`, awaits the R3 ack, and only then writes the batch locally and acknowledges its
//!   callers. A deposed writer's late publish fails the sequence check, so the log cannot fork;
//!   a writer that cannot renew its lease stops answering commands at once.
//! - **Every instance a mirror.** When not the writer, an ordered consumer applies `LEDGER_LOG`
//!   batch by batch, each checked (positions, hashes, versions) by `Ledger::apply_replicated`;
//!   a batch that does not follow stops the instance loudly. Queries are answered by every
//!   instance; a query with `min_position` waits (up to 5 s) until the mirror has it.
//! - **Failover.** When the lease expires, another instance takes it, applies the stream up to
//!   its last sequence, and starts the writer there. Clients retry with the same `command_id`
//!   (R14) and get the first result.
//! - **Status.** Every instance records its role and mirror position in the KV bucket
//!   `ledger_instances` each lease period (`ledgerctl --nats URL status` reads it).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, context::PublishErrorKind, kv, stream};
use chrono::Utc;
use commands::Handler;
use futures::StreamExt;
use ledger::replica::Pending;
use ledger::{Ledger, LedgerOptions, Replicator, WireBatch};
use tokio::sync::watch;

use crate::NatsArgs;
use crate::ServeArgs;
use crate::endpoints::{
    answer_command, answer_query, command_endpoints, query_endpoints, start_service, stop_endpoints,
};
use crate::limits::*;

/// The replicated log's stream and its one subject.
pub const LOG_STREAM: &str = "LEDGER_LOG";
/// The subject every batch of the replicated log is published on.
pub const LOG_SUBJECT: &str = "ledger.log";
/// The writer lease's bucket and key.
pub const LEASE_BUCKET: &str = "ledger_writer";
/// The lease's key in its bucket.
pub const LEASE_KEY: &str = "writer";
/// Each instance's role and position, for `status`.
pub const INSTANCES_BUCKET: &str = "ledger_instances";

/// The replicated commit: one JetStream publish per batch, fenced by the expected sequence.
pub struct JetStreamCommit {
    /// The cluster.
    pub js: jetstream::Context,
    /// The log's stream and subject (LEDGER_LOG, ledger.log; benchmarks use their own).
    pub stream: String,
    /// The subject its batches are published on.
    pub subject: String,
    /// Where the async publishes run (the commit is called from the writer's thread).
    pub runtime: tokio::runtime::Handle,
    /// The stream's sequence of the last batch this writer knows of.
    pub last_sequence: std::sync::Mutex<u64>,
    /// The largest batch message, below the server's max_payload.
    pub bytes_max: usize,
}

impl JetStreamCommit {
    /// The headers of a batch's message.
    fn headers(batch: &WireBatch, expected: u64) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let id = format!("log-{}", batch.first_position);
        headers.insert("Nats-Msg-Id", id.as_str());
        headers.insert("Nats-Expected-Last-Sequence", expected.to_string().as_str());
        headers.insert(
            "Ledger-Positions",
            format!("{}-{}", batch.first_position, batch.last_position).as_str(),
        );
        headers
    }

    /// Publishes one batch expecting the stream's last sequence to be `expected`; its
    /// sequence, or why it was refused.
    ///
    /// # Errors
    /// A refused or unanswered publish, in words.
    pub async fn publish(&self, batch: &WireBatch, expected: u64) -> Result<u64, String> {
        self.publish_after(batch, expected, None).await
    }

    /// Publishes a batch (or first awaits an attempt already sent) until its ack, fenced by
    /// `expected`; retries with the same id (the stream drops a second copy).
    async fn publish_after(
        &self,
        batch: &WireBatch,
        expected: u64,
        sent: Option<async_nats::jetstream::context::PublishAckFuture>,
    ) -> Result<u64, String> {
        let headers = Self::headers(batch, expected);
        let payload = &batch.bytes;
        let started = Instant::now();
        let mut backoff = Duration::from_millis(50);
        let mut sent = sent;
        loop {
            let already = sent.take();
            let attempt = async {
                let ack = match already {
                    Some(ack) => ack,
                    None => self
                        .js
                        .publish_with_headers(
                            self.subject.clone(),
                            headers.clone(),
                            payload.clone().into(),
                        )
                        .await
                        .map_err(|e| (PublishErrorKind::Other, e.to_string()))?,
                };
                match tokio::time::timeout(ACK_TIMEOUT, ack).await {
                    Err(_) => Err((PublishErrorKind::TimedOut, "no ack".to_owned())),
                    Ok(Err(e)) => Err((e.kind(), e.to_string())),
                    Ok(Ok(ack)) => Ok(ack),
                }
            };
            let outcome = attempt.await;
            let landed_at = match &outcome {
                Ok(ack) if !ack.duplicate && ack.sequence == expected + 1 => {
                    return Ok(ack.sequence);
                }
                Ok(ack) if !ack.duplicate => {
                    return Err(format!(
                        "LEDGER_LOG stored the batch at sequence {}, not {}",
                        ack.sequence,
                        expected + 1
                    ));
                }
                // Our own earlier attempt (its ack was lost), or another writer's batch with
                // the same first position: only the bytes tell.
                Ok(ack) => Some(ack.sequence),
                // Something is at `expected + 1` already (ours, or another writer's), or our
                // predecessor was not stored when this one arrived (a pipelined batch after a
                // failed one): the stream's last sequence tells which.
                Err((PublishErrorKind::WrongLastSequence, _)) => match self.last_sequence().await {
                    Ok(last) if last > expected => Some(expected + 1),
                    _ => None,
                },
                Err((PublishErrorKind::MaxPayloadExceeded, message)) => {
                    return Err(format!("batch too large for the server: {message}"));
                }
                Err(_) => None,
            };
            if let Some(sequence) = landed_at {
                return match self.is_ours(sequence, payload).await {
                    Ok(true) => Ok(sequence),
                    Ok(false) => Err(format!(
                        "fenced: another writer appended at LEDGER_LOG sequence {sequence}; \
                         this instance is no longer the writer"
                    )),
                    Err(error) => Err(format!("reading back sequence {sequence}: {error}")),
                };
            }
            let (_, message) = outcome.expect_err("only failures reach here");
            if started.elapsed() > REPLICATE_DEADLINE {
                return Err(format!(
                    "no ack from LEDGER_LOG within {}s: {message}",
                    REPLICATE_DEADLINE.as_secs()
                ));
            }
            tracing::warn!(%message, expected, "replicating a batch failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    async fn last_sequence(&self) -> anyhow::Result<u64> {
        let stream = self.js.get_stream(&self.stream).await?;
        Ok(stream.get_info().await?.state.last_sequence)
    }

    async fn is_ours(&self, sequence: u64, payload: &[u8]) -> anyhow::Result<bool> {
        let stream = self.js.get_stream(&self.stream).await?;
        match stream.get_raw_message(sequence).await {
            Ok(message) => Ok(message.payload.as_ref() == payload),
            Err(error) => Err(anyhow::anyhow!("{error}")),
        }
    }
}

impl Replicator for JetStreamCommit {
    fn replicate(&self, batch: &WireBatch) -> Result<u64, String> {
        let expected = *self.last_sequence.lock().expect("sequence lock");
        let sequence = self.runtime.block_on(self.publish(batch, expected))?;
        *self.last_sequence.lock().expect("sequence lock") = sequence;
        Ok(sequence)
    }

    fn batch_bytes_max(&self) -> usize {
        self.bytes_max
    }

    fn window(&self) -> usize {
        // For measuring: `LEDGER_REPLICATE_WINDOW=1` replicates one batch at a time.
        std::env::var("LEDGER_REPLICATE_WINDOW")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&w| w >= 1)
            .unwrap_or(REPLICATE_WINDOW)
    }

    /// Sends the batch now, fenced by the sequence its predecessor will have, and returns the
    /// wait for its ack (with the retries of `publish`).
    fn submit(&self, batch: WireBatch) -> Pending {
        let expected = {
            let mut last = self.last_sequence.lock().expect("sequence lock");
            let expected = *last;
            *last += 1;
            expected
        };
        let sent = self.runtime.block_on(self.js.publish_with_headers(
            self.subject.clone(),
            Self::headers(&batch, expected),
            batch.bytes.clone().into(),
        ));
        let this = JetStreamCommit {
            js: self.js.clone(),
            stream: self.stream.clone(),
            subject: self.subject.clone(),
            runtime: self.runtime.clone(),
            last_sequence: std::sync::Mutex::new(expected),
            bytes_max: self.bytes_max,
        };
        Pending::new(move || {
            this.runtime
                .clone()
                .block_on(this.publish_after(&batch, expected, sent.ok()))
        })
    }
}

/// `serve --replicated`'s own flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ReplicatedArgs {
    /// Join the replicated log on a JetStream cluster (LEDGER_LOG) instead of owning --data
    /// alone; --data is this instance's mirror.
    #[arg(long)]
    pub replicated: bool,
    /// Each cluster node's HTTP monitoring URL (comma-separated), to check that every node
    /// fsyncs each write (sync_interval: always). Required with --replicated.
    #[arg(long, value_delimiter = ',')]
    pub nats_monitor: Vec<String>,
    /// Replicas of LEDGER_LOG and of the buckets and streams the ledger creates.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// This instance's name in the lease and in `status` (default: host name and pid).
    #[arg(long)]
    pub instance: Option<String>,
    /// How long the writer lease lives without a renewal; failover takes about this long.
    #[arg(long, default_value_t = 3)]
    pub lease_seconds: u64,
}

/// `serve --replicated`: this instance joins the replicated log with `data` as its mirror, and
/// serves until SIGTERM or Ctrl-C.
///
/// # Errors
/// Bad flags, a cluster that does not fsync every write, a store that is not the log's prefix,
/// NATS or the store failing.
/// With `checkpoints` (a key and an interval), the writer signs checkpoints as the embedded
/// `serve` does, naming the replicated log (`log_id`): any instance's are of the same log.
pub fn run(
    data: &Path,
    nats: &NatsArgs,
    args: &ServeArgs,
    checkpoints: Option<(Arc<proofs::SigningKey>, u64)>,
) -> anyhow::Result<ExitCode> {
    let replicated = &args.replicated;
    anyhow::ensure!(
        !replicated.nats_monitor.is_empty(),
        "--replicated needs --nats-monitor URL[,URL…]: each node's HTTP monitoring port, to \
         check that it fsyncs every write (sync_interval: always)"
    );
    anyhow::ensure!(
        replicated.lease_seconds >= 1,
        "--lease-seconds must be at least 1"
    );
    let fixed_now = args
        .now
        .as_deref()
        .map(|t| crate::parse_time("--now", t))
        .transpose()?;
    let clock: ledger::Clock = match fixed_now {
        Some(now) => Arc::new(move || now),
        None => Arc::new(Utc::now),
    };
    let ledger = Ledger::open_with(data, LedgerOptions::mirror())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(
        ledger,
        nats,
        replicated.clone(),
        clock,
        (args.tick_seconds, checkpoints),
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// Refuses a cluster whose nodes do not fsync every write, naming the node.
pub fn check_nodes_sync(monitors: &[String]) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for url in monitors {
        let body = http_get(url, "/varz").with_context(|| format!("reading {url}/varz"))?;
        let varz: serde_json::Value =
            serde_json::from_str(&body).with_context(|| format!("{url}/varz is not JSON"))?;
        let name = varz["server_name"].as_str().unwrap_or(url).to_owned();
        let config = &varz["jetstream"]["config"];
        anyhow::ensure!(
            !config.is_null(),
            "node {name} ({url}) runs without JetStream"
        );
        anyhow::ensure!(
            config["sync_always"].as_bool() == Some(true),
            "node {name} ({url}) does not fsync each write: set `sync_interval: always` in its \
             jetstream block (found sync_interval {} ns); the replicated log is only as durable \
             as its least durable node",
            config["sync_interval"]
        );
        names.push(name);
    }
    Ok(names)
}

/// A plain HTTP/1.0 GET of a monitoring endpoint (loopback or a private network; no TLS).
pub fn http_get(base: &str, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let authority = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    anyhow::ensure!(
        !base.starts_with("https://"),
        "{base}: only http:// monitoring URLs are read"
    );
    let address = std::net::ToSocketAddrs::to_socket_addrs(&authority)?
        .next()
        .with_context(|| format!("{authority} resolves to nothing"))?;
    let mut socket = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        socket,
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nAccept: application/json\r\n\r\n"
    )?;
    let mut response = String::new();
    socket.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no HTTP header in the answer")?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.") && head.split(' ').nth(1) == Some("200"),
        "{}",
        head.lines().next().unwrap_or_default()
    );
    Ok(body.to_owned())
}

async fn set_up_log(js: &jetstream::Context, replicas: usize) -> anyhow::Result<stream::Stream> {
    set_up_log_named(js, replicas, LOG_STREAM, LOG_SUBJECT).await
}

/// Gets or creates a replicated log's stream (LEDGER_LOG, or a benchmark's own).
pub async fn set_up_log_named(
    js: &jetstream::Context,
    replicas: usize,
    name: &str,
    subject: &str,
) -> anyhow::Result<stream::Stream> {
    let config = stream::Config {
        name: name.to_owned(),
        description: Some(
            "Contract Ledger: the replicated event log, one batch per message".into(),
        ),
        subjects: vec![subject.to_owned()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        discard: stream::DiscardPolicy::New,
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    let stream = match js.get_stream(name).await {
        Ok(mut stream) => {
            let found = stream.info().await?.config.clone();
            anyhow::ensure!(
                found.deny_delete && found.deny_purge && found.subjects == config.subjects,
                "stream {name} exists but is not a ledger log (deny_delete, deny_purge, \
                 subject {subject})"
            );
            stream
        }
        Err(_) => js
            .create_stream(config)
            .await
            .map_err(|e| anyhow::anyhow!("creating the stream {name}: {e}"))?,
    };
    Ok(stream)
}

/// Checks that every replica of the log is on a node whose sync was checked.
async fn check_log_placement(
    stream: &mut stream::Stream,
    checked: &[String],
) -> anyhow::Result<()> {
    let info = stream.info().await?;
    if let Some(cluster) = &info.cluster {
        let peers = cluster
            .leader
            .iter()
            .cloned()
            .chain(cluster.replicas.iter().map(|peer| peer.name.clone()));
        for peer in peers {
            anyhow::ensure!(
                checked.contains(&peer),
                "node {peer} holds a replica of {LOG_STREAM} but was not given to --nats-monitor, \
                 so its sync_interval is unchecked"
            );
        }
    }
    Ok(())
}

/// Applies the stream to the local store from its replicated sequence on, until `stop`.
/// Returns an error only when a batch does not follow the local log (the mirror must stop).
pub async fn mirror_loop(
    ledger: Ledger,
    stream: stream::Stream,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let from = ledger.replicated_sequence()? + 1;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                ..Default::default()
            })
            .await;
        let mut messages = match consumer {
            Ok(consumer) => match consumer.messages().await {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(%error, "mirror: reading LEDGER_LOG failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            },
            Err(error) => {
                tracing::warn!(%error, "mirror: creating a consumer on LEDGER_LOG failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        // A consumer can go quiet for good when the whole cluster restarted under it: when
        // nothing arrived for a while, compare with the stream and recreate it if behind.
        let mut idle = tokio::time::interval(MIRROR_IDLE_CHECK);
        idle.reset();
        loop {
            let next = tokio::select! {
                next = messages.next() => next,
                _ = stop.changed() => return Ok(()),
                _ = idle.tick() => {
                    let local = ledger.replicated_sequence()?;
                    match stream.get_info().await {
                        Ok(info) if info.state.last_sequence > local => {
                            tracing::warn!(local, last = info.state.last_sequence, "mirror: the consumer is behind and quiet; recreating it");
                            break;
                        }
                        _ => continue,
                    }
                }
            };
            idle.reset();
            let message = match next {
                None => break,
                Some(Err(error)) => {
                    tracing::warn!(%error, "mirror: the consumer failed; recreating it");
                    break;
                }
                Some(Ok(message)) => message,
            };
            let sequence = message
                .info()
                .map_err(|e| anyhow::anyhow!("a LEDGER_LOG message without its info: {e}"))?
                .stream_sequence;
            apply(&ledger, sequence, message.payload.to_vec()).await?;
            adopt(&ledger, &stream)?;
            backoff = Duration::from_millis(100);
        }
    }
}

/// Records in the store that it is a copy of this replicated log, once the store is known to
/// follow it: every copy then names the log the same way in the checkpoints it signs.
fn adopt(ledger: &Ledger, log: &stream::Stream) -> anyhow::Result<()> {
    ledger
        .adopt_log_id(&log_id(log))
        .context("this store copies another replicated log")
}

/// Applies one batch, unless the store has it already; refuses a gap.
async fn apply(ledger: &Ledger, sequence: u64, payload: Vec<u8>) -> anyhow::Result<()> {
    let local = ledger.replicated_sequence()?;
    if sequence <= local {
        return Ok(());
    }
    anyhow::ensure!(
        sequence == local + 1,
        "mirror: LEDGER_LOG sequence {sequence} follows {local}; a batch is missing"
    );
    let ledger = ledger.clone();
    tokio::task::spawn_blocking(move || ledger.apply_replicated(sequence, &payload))
        .await
        .context("the mirror's apply task")?
        .with_context(|| {
            format!("mirror: LEDGER_LOG sequence {sequence} does not follow this store; stopped")
        })?;
    Ok(())
}

/// Applies every batch up to the stream's last sequence; returns that sequence.
async fn catch_up(ledger: &Ledger, stream: &mut stream::Stream) -> anyhow::Result<u64> {
    let last = stream.info().await?.state.last_sequence;
    let mut sequence = ledger.replicated_sequence()?;
    while sequence < last {
        sequence += 1;
        let message = stream
            .get_raw_message(sequence)
            .await
            .map_err(|e| anyhow::anyhow!("reading LEDGER_LOG sequence {sequence}: {e}"))?;
        apply(ledger, sequence, message.payload.to_vec()).await?;
        adopt(ledger, stream)?;
    }
    Ok(last)
}

/// Creates (or finds) LEDGER_LOG, the publisher's streams and bucket, the lease bucket and the
/// instances bucket.
async fn set_up_cluster(
    js: &jetstream::Context,
    args: &ReplicatedArgs,
    lease_ttl: Duration,
) -> anyhow::Result<(stream::Stream, kv::Store, kv::Store)> {
    let log = set_up_log(js, args.replicas).await?;
    publisher::set_up(js, args.replicas).await?;
    let lease = js
        .create_key_value(kv::Config {
            bucket: LEASE_BUCKET.to_owned(),
            description: "Contract Ledger: the writer lease of the replicated log".to_owned(),
            history: 1,
            max_age: lease_ttl,
            num_replicas: args.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("creating the KV bucket {LEASE_BUCKET}: {e}"))?;
    let instances = js
        .create_key_value(kv::Config {
            bucket: INSTANCES_BUCKET.to_owned(),
            description: "Contract Ledger: each instance's role and mirror position".to_owned(),
            history: 1,
            max_age: Duration::from_secs(60),
            num_replicas: args.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("creating the KV bucket {INSTANCES_BUCKET}: {e}"))?;
    Ok((log, lease, instances))
}

/// Refuses a store that holds events past the stream's head (written while it was not part of
/// the replicated log): as writer it would publish batches that do not follow the stream.
async fn ensure_no_local_tail(ledger: &Ledger, log: &mut stream::Stream) -> anyhow::Result<()> {
    let (sequence, position, _) = log_tail(log).await?;
    let local = ledger.committed_position();
    anyhow::ensure!(
        local <= position,
        "this store holds positions up to {local} but LEDGER_LOG only up to {position} \
         ({sequence} batches): it was written outside the replicated log; relay it with \
         `ledgerctl migrate` or give the instance an empty --data"
    );
    Ok(())
}

/// What the instance runs while it holds the lease.
struct WriterTerm {
    revision: u64,
    renewed: Instant,
    handler: Handler,
    commands: crate::endpoints::Endpoints,
    stop: watch::Sender<bool>,
    publisher: tokio::task::JoinHandle<Result<ledger::Checkpoint, publisher::PublishError>>,
    scheduler: Option<tokio::task::JoinHandle<()>>,
    checkpointer: Option<tokio::task::JoinHandle<()>>,
}

/// What it runs otherwise.
struct MirrorTerm {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

enum Role {
    Writer(Box<WriterTerm>),
    Mirror(MirrorTerm),
}

/// What woke the serve loop.
enum Event {
    Command(Option<async_nats::service::Request>),
    Query(async_nats::service::Request),
    MirrorEnded(anyhow::Result<()>),
    LeaseTick,
}

/// An instance's key in `ledger_instances` (KV keys allow `[-/_=.a-zA-Z0-9]`).
pub fn instance_key(instance: &str) -> String {
    instance.replace(
        |c: char| !c.is_ascii_alphanumeric() && !matches!(c, '-' | '_'),
        "_",
    )
}

fn start_mirror(ledger: &Ledger, stream: &stream::Stream) -> MirrorTerm {
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(mirror_loop(ledger.clone(), stream.clone(), stop_rx));
    MirrorTerm { stop, task }
}

async fn stop_mirror(term: MirrorTerm) -> anyhow::Result<()> {
    term.stop.send(true).ok();
    term.task.await.context("the mirror task")?
}

fn instance_name(given: Option<&str>) -> String {
    given.map(str::to_owned).unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "host".to_owned());
        format!("{host}-{}", std::process::id())
    })
}

#[allow(clippy::too_many_lines)]
async fn serve(
    ledger: Ledger,
    nats: &NatsArgs,
    args: ReplicatedArgs,
    clock: ledger::Clock,
    timers: (u64, Option<(Arc<proofs::SigningKey>, u64)>),
) -> anyhow::Result<()> {
    let (tick_seconds, checkpoints) = timers;
    let instance = instance_name(args.instance.as_deref());
    let monitors = args.nats_monitor.clone();
    let checked = tokio::task::spawn_blocking(move || check_nodes_sync(&monitors))
        .await
        .context("the sync check")??;
    let (reconnects_tx, reconnects) = watch::channel(0u64);
    let client = nats
        .connect("ledger serve --replicated", Some(reconnects_tx))
        .await?;
    let js = jetstream::new(client.clone());
    let lease_ttl = Duration::from_secs(args.lease_seconds);
    // Instances started together race to create the same streams and buckets; the cluster
    // answers some of those requests late (a meta-leader proposal at a time): try again.
    let started = Instant::now();
    let mut backoff = Duration::from_millis(200);
    let mut set_up_js = js.clone();
    set_up_js.set_timeout(Duration::from_secs(5));
    let (mut log, lease, instances) = loop {
        match set_up_cluster(&set_up_js, &args, lease_ttl).await {
            Ok(set_up) => break set_up,
            Err(error) if started.elapsed() < SET_UP_DEADLINE => {
                tracing::warn!(%error, "setting up the cluster's streams and buckets; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(3));
            }
            Err(error) => return Err(error),
        }
    };
    check_log_placement(&mut log, &checked).await?;
    if ledger.replicated_sequence()? == log.info().await?.state.last_sequence {
        ensure_no_local_tail(&ledger, &mut log).await?;
        adopt(&ledger, &log)?;
    }
    let bytes_max = client
        .server_info()
        .max_payload
        .saturating_sub(HEADER_ROOM_BYTES);

    let service = start_service(
        &client,
        "Contract Ledger: commands (the writer) and queries (every instance)",
    )
    .await?;
    let mut queries = query_endpoints(&service).await?;
    let views = Arc::new(crate::endpoints::QueryState::default());
    let mut role = Role::Mirror(start_mirror(&ledger, &log));
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    eprintln!(
        "ledgerctl serve: serving (pid {}) as instance {instance}, replicated on {LOG_STREAM}",
        std::process::id()
    );
    let mut lease_tick = tokio::time::interval(lease_ttl / 3);
    lease_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight = tokio::task::JoinSet::new();
    let value = || instance.clone().into_bytes().into();
    loop {
        let event = {
            let role_event = async {
                match &mut role {
                    Role::Writer(term) => Event::Command(term.commands.next().await),
                    Role::Mirror(term) => Event::MirrorEnded(
                        (&mut term.task)
                            .await
                            .context("the mirror task")
                            .and_then(|ended| ended),
                    ),
                }
            };
            tokio::select! {
                event = role_event => event,
                Some(request) = queries.next() => Event::Query(request),
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => continue,
                _ = lease_tick.tick() => Event::LeaseTick,
                _ = terminate.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
            }
        };
        match event {
            Event::Command(None) => {}
            Event::Command(Some(request)) => {
                if let Role::Writer(term) = &role {
                    let handler = term.handler.clone();
                    let client = client.clone();
                    in_flight
                        .spawn(async move { answer_command(&client, &handler, request).await });
                }
            }
            Event::Query(request) => {
                let ledger = ledger.clone();
                let views = views.clone();
                let client = client.clone();
                in_flight
                    .spawn(async move { answer_query(&client, &ledger, &views, request).await });
            }
            Event::MirrorEnded(outcome) => {
                // A mirror ends by itself only when the stream does not follow this store.
                return Err(outcome
                    .err()
                    .unwrap_or_else(|| anyhow::anyhow!("the mirror ended")));
            }
            Event::LeaseTick => {
                role = match role {
                    Role::Mirror(term) => {
                        match tokio::time::timeout(lease_ttl / 3, lease.create(LEASE_KEY, value()))
                            .await
                        {
                            Ok(Ok(revision)) => {
                                stop_mirror(term).await?;
                                let started = become_writer(
                                    &ledger,
                                    &js,
                                    &mut log,
                                    &service,
                                    revision,
                                    bytes_max,
                                    &clock,
                                    (tick_seconds, checkpoints.clone()),
                                    reconnects.clone(),
                                    args.replicas,
                                )
                                .await;
                                match started {
                                    Ok(term) => {
                                        let term = Box::new(term);
                                        eprintln!(
                                            "ledgerctl serve: instance {instance} is the writer \
                                         (lease revision {revision}, position {})",
                                            ledger.committed_position()
                                        );
                                        Role::Writer(term)
                                    }
                                    Err(error) => {
                                        tracing::error!(%error, "could not become the writer; staying a mirror");
                                        let _ = lease
                                            .delete_expect_revision(LEASE_KEY, Some(revision))
                                            .await;
                                        Role::Mirror(start_mirror(&ledger, &log))
                                    }
                                }
                            }
                            _ => Role::Mirror(term),
                        }
                    }
                    Role::Writer(mut term) => {
                        let healthy = ledger.is_writer() && !writer_failed(&ledger);
                        let asked = Instant::now();
                        let renewal = if healthy {
                            renew(&lease, &instance, term.revision, lease_ttl / 3).await
                        } else {
                            Renewal::Lost
                        };
                        match renewal {
                            Renewal::Renewed(revision) => {
                                term.revision = revision;
                                // The entry's age counts from no earlier than the request.
                                term.renewed = asked;
                                Role::Writer(term)
                            }
                            // The bucket did not answer (its leader is being elected): nobody
                            // can take the lease meanwhile, and should another have it later,
                            // the next renewal finds out; the log's fence holds either way.
                            Renewal::Unknown => {
                                if term.renewed.elapsed() > lease_ttl {
                                    tracing::warn!(
                                        since = ?term.renewed.elapsed(),
                                        "the writer lease could not be renewed; writing on (fenced by LEDGER_LOG's sequence)"
                                    );
                                }
                                Role::Writer(term)
                            }
                            Renewal::Lost => {
                                eprintln!(
                                    "ledgerctl serve: instance {instance} is no longer the writer \
                                     ({}); stepping down to a mirror",
                                    ledger
                                        .writer_stop_cause()
                                        .unwrap_or_else(|| "its lease could not be renewed".into())
                                );
                                let revision = term.revision;
                                step_down(&ledger, term).await;
                                // Free it at once when it is still ours (the writer failed).
                                let _ = lease
                                    .delete_expect_revision(LEASE_KEY, Some(revision))
                                    .await;
                                Role::Mirror(start_mirror(&ledger, &log))
                            }
                        }
                    }
                };
                let status = serde_json::json!({
                    "instance": instance,
                    "role": match role { Role::Writer(_) => "writer", Role::Mirror(_) => "mirror" },
                    "position": ledger.committed_position(),
                    "sequence": ledger.replicated_sequence().unwrap_or(0),
                    "updated_at": Utc::now(),
                });
                instances
                    .put(instance_key(&instance), serde_json::to_vec(&status)?.into())
                    .await
                    .ok();
            }
        }
    }
    tracing::info!("stopping: draining requests in flight");
    stop_endpoints(&mut queries).await;
    match role {
        Role::Writer(mut term) => {
            let revision = term.revision;
            stop_endpoints(&mut term.commands).await;
            while in_flight.join_next().await.is_some() {}
            step_down(&ledger, term).await;
            // Hand the lease over now rather than after it expires.
            let _ = lease
                .delete_expect_revision(LEASE_KEY, Some(revision))
                .await;
        }
        Role::Mirror(term) => {
            while in_flight.join_next().await.is_some() {}
            stop_mirror(term).await?;
        }
    }
    client.flush().await.context("flushing NATS")?;
    eprintln!(
        "ledgerctl serve: stopped at position {}",
        ledger.committed_position()
    );
    Ok(())
}

/// What a renewal found.
enum Renewal {
    Renewed(u64),
    /// Another instance holds the lease (or it is gone): step down now.
    Lost,
    /// The bucket did not answer in time.
    Unknown,
}

async fn renew(lease: &kv::Store, instance: &str, revision: u64, within: Duration) -> Renewal {
    let value = instance.as_bytes().to_vec();
    match tokio::time::timeout(within, lease.update(LEASE_KEY, value.into(), revision)).await {
        Ok(Ok(revision)) => return Renewal::Renewed(revision),
        Ok(Err(error)) => tracing::warn!(%error, "renewing the writer lease failed"),
        Err(_) => tracing::warn!("renewing the writer lease timed out"),
    }
    // Tell "someone else has it" from "no answer".
    match tokio::time::timeout(within, lease.entry(LEASE_KEY)).await {
        Ok(Ok(Some(entry)))
            if entry.revision == revision && entry.value.as_ref() == instance.as_bytes() =>
        {
            Renewal::Unknown
        }
        Ok(Ok(_)) => Renewal::Lost,
        _ => Renewal::Unknown,
    }
}

fn writer_failed(ledger: &Ledger) -> bool {
    // An append that fails with WriterStopped has a cause; a running writer has none.
    ledger.writer_stop_cause().is_some()
}

#[allow(clippy::too_many_arguments)]
async fn become_writer(
    ledger: &Ledger,
    js: &jetstream::Context,
    log: &mut stream::Stream,
    service: &async_nats::service::Service,
    revision: u64,
    bytes_max: usize,
    clock: &ledger::Clock,
    timers: (u64, Option<(Arc<proofs::SigningKey>, u64)>),
    reconnects: watch::Receiver<u64>,
    replicas: usize,
) -> anyhow::Result<WriterTerm> {
    let (tick_seconds, checkpoints) = timers;
    start_log_writer(ledger, js, log, bytes_max).await?;
    let handler = Handler::new(ledger.clone(), clock.clone(), "ledger-service");
    let commands = command_endpoints(service).await?;
    let ticked = Arc::new(tokio::sync::Notify::new());
    let crate::serve::Background {
        stop,
        publisher,
        scheduler,
        ..
    } = crate::serve::start_background(
        ledger,
        js,
        reconnects,
        &handler,
        clock,
        (tick_seconds, ticked.clone()),
        (log_id(log), replicas),
    );
    let checkpointer = match checkpoints {
        Some((key, seconds)) if seconds > 0 => {
            crate::checkpointer::set_up(js, replicas).await?;
            Some(tokio::spawn(crate::checkpointer::run(
                ledger.clone(),
                js.clone(),
                key,
                Duration::from_secs(seconds),
                ticked,
                stop.subscribe(),
            )))
        }
        _ => None,
    };
    Ok(WriterTerm {
        revision,
        renewed: Instant::now(),
        handler,
        commands,
        stop,
        publisher,
        scheduler,
        checkpointer,
    })
}

/// Brings a store that is not writing up to LEDGER_LOG's last batch and starts its writer with
/// the replicated commit step, fenced by the stream sequence it caught up to. The caller holds
/// the writer lease (`serve --replicated`), or is the crash test's `ledgerctl load`, which takes
/// none: the expected-sequence fence alone keeps a second writer from forking the log.
///
/// # Errors
/// NATS, a batch that does not follow the store, or a store with a tail LEDGER_LOG lacks.
pub async fn start_log_writer(
    ledger: &Ledger,
    js: &jetstream::Context,
    log: &mut stream::Stream,
    bytes_max: usize,
) -> anyhow::Result<()> {
    let last = catch_up(ledger, log).await?;
    ensure_no_local_tail(ledger, log).await?;
    adopt(ledger, log)?;
    let commit = Arc::new(JetStreamCommit {
        js: js.clone(),
        stream: LOG_STREAM.to_owned(),
        subject: LOG_SUBJECT.to_owned(),
        runtime: tokio::runtime::Handle::current(),
        last_sequence: std::sync::Mutex::new(last),
        bytes_max,
    });
    ledger.start_writer(Some(commit))?;
    Ok(())
}

/// Opens `data` as a writer of the replicated log for `ledgerctl load`: LEDGER_LOG found or
/// created with `replicas`, the store caught up, the writer started (no lease; see
/// `start_log_writer`).
///
/// # Errors
/// As `start_log_writer`, or the store cannot be opened.
pub async fn open_log_writer(
    data: &Path,
    nats: &NatsArgs,
    replicas: usize,
) -> anyhow::Result<(Ledger, async_nats::Client)> {
    let client = nats.connect("ledger load --replicated", None).await?;
    let js = jetstream::new(client.clone());
    let mut log = set_up_log(&js, replicas).await?;
    let ledger = Ledger::open_with(data, LedgerOptions::mirror())?;
    let bytes_max = client
        .server_info()
        .max_payload
        .saturating_sub(HEADER_ROOM_BYTES);
    start_log_writer(&ledger, &js, &mut log, bytes_max).await?;
    Ok((ledger, client))
}

/// The replicated log's identity: its stream's creation time, the same on every instance (each
/// instance's mirror store has an identity of its own; the publisher's message ids must not
/// depend on which instance publishes).
fn log_id(log: &stream::Stream) -> String {
    format!(
        "{LOG_STREAM}-{}",
        log.cached_info().created.unix_timestamp_nanos()
    )
}

/// Stops answering commands at once, then the scheduler, the publisher and the writer.
async fn step_down(ledger: &Ledger, mut term: Box<WriterTerm>) {
    stop_endpoints(&mut term.commands).await;
    term.stop.send(true).ok();
    if let Some(scheduler) = term.scheduler {
        scheduler.await.ok();
    }
    if let Some(checkpointer) = term.checkpointer {
        checkpointer.await.ok();
    }
    // The publisher drains to the head unless NATS is gone; it resumes from its checkpoint
    // on whichever instance writes next.
    match tokio::time::timeout(Duration::from_secs(5), &mut term.publisher).await {
        Ok(Ok(Err(error))) => tracing::warn!(%error, "the publisher stopped"),
        Ok(_) => {}
        Err(_) => {
            tracing::warn!("the publisher did not drain within 5 s; stopped where it was");
            term.publisher.abort();
        }
    }
    let ledger = ledger.clone();
    tokio::task::spawn_blocking(move || ledger.stop_writer())
        .await
        .ok();
}

/// `migrate`'s flags.
#[derive(clap::Args, Debug, Clone)]
pub struct MigrateArgs {
    /// Each cluster node's HTTP monitoring URL (comma-separated): every node must fsync each
    /// write (sync_interval: always) before the log moves there.
    #[arg(long, value_delimiter = ',', required = true)]
    pub nats_monitor: Vec<String>,
    /// Replicas of LEDGER_LOG when it is created.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
}

/// The last position in LEDGER_LOG and its hash, from its last batch (0 and genesis: empty).
async fn log_tail(log: &mut stream::Stream) -> anyhow::Result<(u64, u64, ledger::Hash)> {
    let last = log.info().await?.state.last_sequence;
    if last == 0 {
        return Ok((0, 0, ledger::GENESIS_HASH));
    }
    let message = log
        .get_raw_message(last)
        .await
        .map_err(|e| anyhow::anyhow!("reading LEDGER_LOG sequence {last}: {e}"))?;
    let position = message
        .headers
        .get("Ledger-Positions")
        .and_then(|v| v.as_str().rsplit('-').next()?.parse::<u64>().ok())
        .with_context(|| format!("LEDGER_LOG sequence {last} has no Ledger-Positions header"))?;
    let hash = ledger::replica::last_hash(&message.payload)
        .with_context(|| format!("LEDGER_LOG sequence {last} is not a ledger batch"))?;
    Ok((last, position, hash))
}

/// `ledgerctl --data DIR migrate --nats URLS --nats-monitor URLS`: relays a verified embedded
/// store into LEDGER_LOG with the same positions and hashes, batch by batch; run again after an
/// interruption, it goes on from the stream's last batch. Refuses a stream that is not a prefix
/// of the store. Afterwards DIR can be an instance's mirror (`serve --replicated`).
/// Which part of `migrate` a progress report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigratePhase {
    /// Verifying the store before anything is relayed.
    Verify,
    /// Relaying its batches into LEDGER_LOG.
    Relay,
}

/// Relays the `--data` store into LEDGER_LOG, resuming where the stream ends; `progress` is told
/// `(phase, done, total)` in events as it goes (a few times a second at most).
///
/// # Errors
/// A store that does not verify, a LEDGER_LOG that is not a prefix of it, or NATS.
pub fn migrate(
    data: &Path,
    nats: &NatsArgs,
    args: &MigrateArgs,
    progress: &mut dyn FnMut(MigratePhase, u64, u64),
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        data.join("store").exists(),
        "no store at {} (set --data or LEDGER_DATA)",
        data.display()
    );
    let ledger = Ledger::open(data)?;
    let head = ledger.committed_position();
    let report = ledger
        .verify_with_progress(&mut |checked| progress(MigratePhase::Verify, checked, head))?;
    anyhow::ensure!(
        report.is_ok(),
        "{} does not verify (position {}: {}); refusing to migrate it",
        data.display(),
        report.problem.as_ref().map_or(0, |p| p.position),
        report.problem.as_ref().map_or("", |p| p.detail.as_str())
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let monitors = args.nats_monitor.clone();
        tokio::task::spawn_blocking(move || check_nodes_sync(&monitors))
            .await
            .context("the sync check")??;
        let client = nats.connect("ledger migrate", None).await?;
        let js = jetstream::new(client.clone());
        let mut log = set_up_log(&js, args.replicas).await?;
        let (mut sequence, position, hash) = log_tail(&mut log).await?;
        let local = if position == 0 {
            Some(ledger::GENESIS_HASH)
        } else {
            ledger.read_all(position, 1)?.first().filter(|e| e.position == position).map(|e| e.hash)
        };
        anyhow::ensure!(
            local == Some(hash),
            "LEDGER_LOG holds {sequence} batches up to position {position} that are not a prefix \
             of {} (its head is {head}); refusing to migrate into it",
            data.display()
        );
        if position > 0 {
            eprintln!("ledgerctl migrate: LEDGER_LOG has positions 1-{position} already; going on from {}", position + 1);
        }
        let bytes_max = client.server_info().max_payload.saturating_sub(HEADER_ROOM_BYTES);
        let commit = JetStreamCommit {
            js: js.clone(),
            stream: LOG_STREAM.to_owned(),
            subject: LOG_SUBJECT.to_owned(),
            runtime: tokio::runtime::Handle::current(),
            last_sequence: std::sync::Mutex::new(sequence),
            bytes_max,
        };
        let mut relayed = 0u64;
        for batch in ledger.export_batches(position + 1, MIGRATE_BATCH_EVENTS, bytes_max)? {
            let batch = batch?;
            sequence = commit
                .publish(&batch, sequence)
                .await
                .map_err(|cause| anyhow::anyhow!("publishing positions {}-{}: {cause}", batch.first_position, batch.last_position))?;
            relayed += batch.last_position - batch.first_position + 1;
            progress(MigratePhase::Relay, relayed, head - position);
        }
        ledger.mark_replicated(sequence)?;
        eprintln!(
            "ledgerctl migrate: LEDGER_LOG holds positions 1-{head} in {sequence} batches \
             ({relayed} relayed now); {} can be an instance's mirror",
            data.display()
        );
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `ledgerctl --nats URLS status`: the writer, the log's replicas and leader, and every
/// instance's role, mirror position and lag.
pub fn status(nats: &NatsArgs, json: bool) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let status = runtime.block_on(async {
        let client = nats.connect("ledger status", None).await?;
        let js = jetstream::new(client);
        let mut log = js.get_stream(LOG_STREAM).await.map_err(|e| {
            anyhow::anyhow!("no replicated log on this cluster ({LOG_STREAM}: {e})")
        })?;
        let (last_sequence, head, _) = log_tail(&mut log).await?;
        let info = log.info().await?.clone();
        let writer = match js.get_key_value(LEASE_BUCKET).await {
            Ok(lease) => lease
                .get(LEASE_KEY)
                .await
                .ok()
                .flatten()
                .map(|v| String::from_utf8_lossy(&v).into_owned()),
            Err(_) => None,
        };
        let mut instances = Vec::new();
        if let Ok(bucket) = js.get_key_value(INSTANCES_BUCKET).await
            && let Ok(mut keys) = bucket.keys().await
        {
            while let Some(Ok(key)) = keys.next().await {
                if let Ok(Some(value)) = bucket.get(&key).await
                    && let Ok(mut entry) = serde_json::from_slice::<serde_json::Value>(&value)
                {
                    let position = entry["position"].as_u64().unwrap_or(0);
                    entry["lag"] = serde_json::json!(head.saturating_sub(position));
                    instances.push(entry);
                }
            }
        }
        let cluster = info.cluster.as_ref();
        anyhow::Ok(serde_json::json!({
            "writer": writer,
            "log": {
                "stream": LOG_STREAM,
                "last_sequence": last_sequence,
                "head_position": head,
                "replicas": info.config.num_replicas,
                "leader": cluster.and_then(|c| c.leader.clone()),
                "followers": cluster.map(|c| c.replicas.iter().map(|p| serde_json::json!({
                    "node": p.name, "current": p.current, "offline": p.offline, "lag": p.lag,
                })).collect::<Vec<_>>()),
            },
            "instances": instances,
        }))
    })?;
    if json {
        println!("{status}");
    } else {
        let log = &status["log"];
        println!(
            "writer      {}",
            status["writer"]
                .as_str()
                .unwrap_or("(none: the lease is free)")
        );
        println!(
            "log         {} R{}: leader {}, head position {}, {} batches",
            LOG_STREAM,
            log["replicas"],
            log["leader"].as_str().unwrap_or("(none)"),
            log["head_position"],
            log["last_sequence"]
        );
        for follower in log["followers"].as_array().into_iter().flatten() {
            println!(
                "  replica   {} current={} offline={} lag={}",
                follower["node"].as_str().unwrap_or_default(),
                follower["current"],
                follower["offline"],
                follower["lag"]
            );
        }
        for instance in status["instances"].as_array().into_iter().flatten() {
            println!(
                "instance    {} {} position {} lag {} (as of {})",
                instance["instance"].as_str().unwrap_or_default(),
                instance["role"].as_str().unwrap_or_default(),
                instance["position"],
                instance["lag"],
                instance["updated_at"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

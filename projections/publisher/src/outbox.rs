//! The publish loop: from the checkpoint to the head a batch at a time, every ack awaited before
//! the checkpoint moves; the rewind when a stream lost what it had acknowledged.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv};
use ledger::{Checkpoint, Ledger, RecordedEvent};
use rust_decimal::Decimal;
use schemas::Bucket;
use tokio::sync::watch;

use crate::limits::{PROGRESS_EVERY, PROGRESS_WRITE_WAIT};
use crate::{
    EVENTS_STREAM, MESSAGE_SCHEMA_VERSION, NOTICES_STREAM, PROGRESS_BUCKET, PROGRESS_KEY,
    PUBLISH_ACKS_IN_FLIGHT_MAX, PUBLISH_BATCH_EVENTS_MAX, PUBLISHER, PublishError,
    SHORTFALLS_STREAM, messages,
};

/// What a contract's balances were after the last published event, kept with the checkpoint.
type PublishedBalances = BTreeMap<String, Decimal>;

/// The publisher, ready to run: `run` until `stop` is set.
pub struct Publisher {
    ledger: Ledger,
    js: jetstream::Context,
    reconnects: watch::Receiver<u64>,
    stop: watch::Receiver<bool>,
    published: watch::Sender<u64>,
    log_id: String,
    replicas: usize,
}

/// Watches how far the publisher got.
#[derive(Clone)]
pub struct PublisherHandle {
    published: watch::Receiver<u64>,
}

impl PublisherHandle {
    /// The last log position published and acknowledged.
    pub fn position(&self) -> u64 {
        *self.published.borrow()
    }

    /// Waits until everything up to `position` is published and acknowledged; false when the
    /// publisher stopped before.
    pub async fn published_to(&mut self, position: u64) -> bool {
        self.published
            .wait_for(|published| *published >= position)
            .await
            .is_ok()
    }
}

impl Publisher {
    /// A publisher of `ledger` to `js`. `reconnects` counts NATS (re)connections (each makes it
    /// check the streams for lost messages); `stop` ends `run` once the head is published.
    /// `log_id` prefixes every message id (the log's identity: two logs never collide);
    /// `replicas` is what the streams are recreated with when the server lost them.
    pub fn new(
        ledger: Ledger,
        js: jetstream::Context,
        reconnects: watch::Receiver<u64>,
        stop: watch::Receiver<bool>,
        log_id: String,
        replicas: usize,
    ) -> (Publisher, PublisherHandle) {
        let (published, watcher) = watch::channel(0);
        (
            Publisher {
                ledger,
                js,
                reconnects,
                stop,
                published,
                log_id,
                replicas,
            },
            PublisherHandle { published: watcher },
        )
    }

    /// Publishes every event past the checkpoint (see `publish_loop`); returns the final
    /// checkpoint.
    ///
    /// # Errors
    /// When the log or the publisher's own state cannot be read or written; NATS failures are
    /// retried, until `stop` is set: then the first failure ends it (`PublishError::Stopped`,
    /// with how far it got).
    pub async fn run(self) -> Result<Checkpoint, PublishError> {
        publish_loop(self).await
    }
}

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
///
/// A server that lost the streams themselves (emptied, or a new one on the same address) has
/// them created again, and everything is published again from the first position.
async fn publish_loop(publisher: Publisher) -> Result<Checkpoint, PublishError> {
    let Publisher {
        ledger,
        js,
        mut reconnects,
        mut stop,
        published: published_to,
        log_id,
        replicas,
    } = publisher;
    let store = ledger.projection_store(PUBLISHER)?;
    let mut checkpoint = store.checkpoint()?.unwrap_or(Checkpoint {
        position: 0,
        hash: ledger::GENESIS_HASH,
    });
    let mut published: BTreeMap<String, u64> = match store.get(PUBLISHED_KEY)? {
        Some(bytes) => serde_json::from_slice(&bytes)?,
        None => BTreeMap::new(),
    };
    published_to.send_replace(checkpoint.position);
    // The position last written to the progress bucket, when, and the bucket once found.
    let mut said = 0;
    let mut last_said = Instant::now();
    let mut progress: Option<kv::Store> = None;
    let mut backoff = Duration::from_millis(100);
    let mut check_streams = true;
    loop {
        if check_streams || reconnects.has_changed().unwrap_or(false) {
            reconnects.mark_unchanged();
            match stream_behind(&js, &published).await {
                Ok(Behind::Gone(name)) => {
                    tracing::warn!(
                        stream = name,
                        checkpoint = checkpoint.position,
                        "the streams were gone (an emptied or new nats-server?); creating them again and publishing everything again"
                    );
                    if let Err(error) = crate::topology::set_up(&js, replicas).await {
                        tracing::warn!(%error, "could not create the streams; retrying");
                        if wait_or_stop(&mut stop, &mut backoff).await {
                            return Err(stopped(&checkpoint, &ledger, error));
                        }
                        continue;
                    }
                    checkpoint = rewind(&ledger, &store, 0, &mut published)?;
                    published_to.send_replace(checkpoint.position);
                    said = 0;
                }
                Ok(Behind::From(position)) if position < checkpoint.position => {
                    tracing::warn!(
                        from = position,
                        checkpoint = checkpoint.position,
                        "a stream lost acknowledged messages (nats-server restarted?); publishing again"
                    );
                    checkpoint = rewind(&ledger, &store, position, &mut published)?;
                    published_to.send_replace(checkpoint.position);
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "could not read the streams' last positions; retrying");
                    if wait_or_stop(&mut stop, &mut backoff).await {
                        return Err(stopped(&checkpoint, &ledger, error));
                    }
                    continue;
                }
            }
            check_streams = false;
        }
        let head = ledger.committed_position();
        if head == checkpoint.position {
            // How long until the position reached may be said: at once when it has not been
            // said for PROGRESS_EVERY (or on the way out), otherwise after that (unless new
            // events come first), so under load the bucket is written a few times a second,
            // not once per commit, and when load stops the last position is said within
            // PROGRESS_EVERY.
            let say_in = (said < checkpoint.position).then(|| {
                if *stop.borrow() {
                    Duration::ZERO
                } else {
                    PROGRESS_EVERY.saturating_sub(last_said.elapsed())
                }
            });
            if say_in == Some(Duration::ZERO) {
                // Said once per position reached, written or not (a hint); then the head is read
                // again, since it may have moved while this waited.
                say_progress(&js, &mut progress, checkpoint.position).await;
                said = checkpoint.position;
                last_said = Instant::now();
                continue;
            }
            if *stop.borrow() {
                return Ok(checkpoint);
            }
            let mut subscription = ledger.subscribe(checkpoint.position + 1);
            let say_later = tokio::time::sleep(say_in.unwrap_or(PROGRESS_WRITE_WAIT));
            tokio::select! {
                next = subscription.next() => { next?; }
                _ = say_later, if say_in.is_some() => {}
                _ = stop.changed() => {}
                _ = reconnects.changed() => { check_streams = true; }
            }
            continue;
        }
        let batch: Vec<RecordedEvent> = ledger
            .scan(checkpoint.position + 1)
            .take(PUBLISH_BATCH_EVENTS_MAX)
            .collect::<Result<_, _>>()?;
        match publish_batch(&store, &js, &log_id, &batch).await {
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
                published_to.send_replace(checkpoint.position);
                backoff = Duration::from_millis(100);
            }
            Err(error) => {
                // Nothing moved: the same messages, with the same ids, go again.
                tracing::warn!(%error, position = checkpoint.position + 1, "publishing failed; retrying");
                if wait_or_stop(&mut stop, &mut backoff).await {
                    return Err(stopped(&checkpoint, &ledger, error));
                }
                check_streams = true;
            }
        }
    }
}

/// Waits `backoff` (doubling it, up to 5 s) before a retry, or returns true at once when the
/// publisher is told to stop: a stopping publisher does not wait for NATS to come back.
async fn wait_or_stop(stop: &mut watch::Receiver<bool>, backoff: &mut Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    let stopping = tokio::select! {
        _ = tokio::time::sleep(*backoff) => false,
        _ = stop.changed() => true,
    };
    *backoff = (*backoff * 2).min(Duration::from_secs(5));
    stopping || *stop.borrow()
}

/// The publisher stopped before the head, with how far it got.
fn stopped(checkpoint: &Checkpoint, ledger: &Ledger, cause: PublishError) -> PublishError {
    PublishError::Stopped {
        published: checkpoint.position,
        head: ledger.committed_position(),
        cause: cause.to_string(),
    }
}

/// Writes `position` to the progress bucket once the publisher is caught up (a hint: when it
/// cannot, it says so in the log and the next catch-up writes it again).
async fn say_progress(js: &jetstream::Context, bucket: &mut Option<kv::Store>, position: u64) {
    let written = async {
        if bucket.is_none() {
            *bucket = Some(js.get_key_value(PROGRESS_BUCKET).await.ok()?);
        }
        let put = bucket
            .as_ref()?
            .put(PROGRESS_KEY, position.to_string().into())
            .await;
        if put.is_err() {
            // Found again next time (the bucket may have been made again on an emptied server).
            *bucket = None;
        }
        put.ok()
    };
    // A hint, never a reason to stall: bounded like every other wait on NATS here.
    if tokio::time::timeout(PROGRESS_WRITE_WAIT, written)
        .await
        .ok()
        .flatten()
        .is_none()
    {
        tracing::warn!(position, "could not write the publisher's progress");
    }
}

/// What the streams hold against what the publisher recorded as acknowledged there.
enum Behind {
    /// Each holds all of it.
    Nothing,
    /// Some lost their tail: publish again from this position (the lowest last position).
    From(u64),
    /// A stream or bucket is not there at all.
    Gone(String),
}

/// Compares each stream's last `Ledger-Position` with what the publisher recorded there.
async fn stream_behind(
    js: &jetstream::Context,
    published: &BTreeMap<String, u64>,
) -> Result<Behind, PublishError> {
    use async_nats::jetstream::context::GetStreamErrorKind;
    let mut behind: Option<u64> = None;
    for (name, &recorded) in published {
        let stream = match js.get_stream(name).await {
            Ok(stream) => stream,
            Err(error) => {
                if let GetStreamErrorKind::JetStream(inner) = error.kind()
                    && inner.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND
                {
                    return Ok(Behind::Gone(name.clone()));
                }
                return Err(PublishError::Nats(format!("stream {name}: {error}")));
            }
        };
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
                .map_err(|e| PublishError::Nats(format!("stream {name}'s last message: {e}")))?;
            last.headers
                .get("Ledger-Position")
                .and_then(|v| v.as_str().parse::<u64>().ok())
                .unwrap_or(0)
        };
        if actual < recorded {
            behind = Some(behind.map_or(actual, |b| b.min(actual)));
        }
    }
    Ok(behind.map_or(Behind::Nothing, Behind::From))
}

/// Moves the publisher back to `position`: its per-contract balances are folded again from the
/// log up to there, and each stream's record is lowered to it.
fn rewind(
    ledger: &Ledger,
    store: &ledger::ProjectionStore,
    position: u64,
    published: &mut BTreeMap<String, u64>,
) -> Result<Checkpoint, PublishError> {
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
            let effects = projections::decode_effects(&event);
            for (bucket, change) in projections::balances::net_changes(&effects.movements) {
                *state.entry(bucket.name().to_owned()).or_default() += change;
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
    log_id: &str,
    batch: &[RecordedEvent],
) -> Result<(Vec<(Vec<u8>, Vec<u8>)>, BTreeMap<&'static str, u64>), PublishError> {
    let mut balances: BTreeMap<String, PublishedBalances> = BTreeMap::new();
    let mut no_balances = PublishedBalances::new();
    let mut reached: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut acks = VecDeque::new();
    for event in batch {
        let current = match projections::contract_of(&event.stream) {
            Some(contract) => {
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
                balances.get_mut(contract).expect("inserted above")
            }
            // The rate card, a raw stream: its event only.
            None => &mut no_balances,
        };
        for message in messages(log_id, event, current) {
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
                .map_err(|e| PublishError::Nats(format!("publishing: {e}")))?;
            acks.push_back(ack);
            if acks.len() >= PUBLISH_ACKS_IN_FLIGHT_MAX {
                let ack = acks.pop_front().expect("not empty");
                ack.await
                    .map_err(|e| PublishError::Nats(format!("awaiting an ack: {e}")))?;
            }
        }
    }
    for ack in acks {
        // A duplicate (a republish after a crash) is acknowledged as one: success.
        ack.await
            .map_err(|e| PublishError::Nats(format!("awaiting an ack: {e}")))?;
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

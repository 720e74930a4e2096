//! The single writer: the only code that writes events. It gathers queued appends into one fjall
//! batch and one fsync (group commit), decides expected versions and idempotency against the
//! state it alone changes, and acknowledges only after `PersistMode::SyncAll` returned. Not a
//! general-purpose executor: it runs on OS threads because fjall's calls block.
//!
//! It is a two-stage pipeline on two threads. The *stager* takes appends off the queue, decides
//! them (version check, idempotency), encodes and hashes their envelopes and puts them into the
//! open batch; the *committer* takes the open batch whenever it is free, commits it with
//! `SyncAll` (journal write, fsync, memtable inserts, all under fjall's journal lock) and answers
//! its callers. So batch N+1 is decided and encoded while batch N is being written and fsync'd,
//! and everything that arrives during a commit joins the next one. When the writer is idle (one
//! append arrives at an empty queue and nothing is being committed) the stager commits that
//! batch itself: a lone writer then pays one thread hop per append, not two.
//!
//! With a [`Replicator`] (the replicated log), each batch is first made durable there: one batch
//! at a time, or pipelined (`Replicator::window` > 1: this committer submits each ready batch at
//! once, and a completer thread waits for the outcomes in order, writes each batch locally, to
//! the OS without fsync, and answers its callers). The stager then never commits by itself.
//!
//! The stager decides on a state that includes batches not yet committed. That is sound because
//! a failed commit stops the writer for good: every later batch is answered with
//! [`Error::WriterStopped`] and nothing after the failure is acknowledged.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use fjall::PersistMode;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::envelope::{self, EnvelopeParts, Hash};
use crate::error::{Error, Result};
use crate::index::{self, IndexBatch, IndexProgress};
use crate::limits::{EVENTS_PER_BATCH_MAX, INDEX_QUEUE_BATCHES_MAX};
use crate::replica::{Pending, Replicator, WIRE_EVENT_OVERHEAD, WireBatch, WireBuilder};
use crate::store::{DedupRecord, REPLICATED_SEQUENCE_KEY, Store, stream_key};
use crate::{Append, Appended, AppendedEvent, Clock, ExpectedVersion};

pub(crate) struct Request {
    pub append: Append,
    pub reply: oneshot::Sender<Result<Appended>>,
}

type Reply = oneshot::Sender<Result<Appended>>;

/// What the stager knows of the log's end, committed or staged.
struct Tail {
    last_position: u64,
    last_hash: Hash,
    last_recorded_nanos: i64,
}

/// One batch being filled by the stager or committed by the committer.
struct Batch {
    /// Counts batches from 1 in this open; the committer reports the last one committed.
    sequence: u64,
    items: fjall::OwnedWriteBatch,
    events: usize,
    /// The position of the last event in the batch (0: no event), and its hash.
    last_position: u64,
    last_hash: Hash,
    /// The stream index entries of its events, for the indexer once the batch is durable.
    index_entries: Vec<(Vec<u8>, u64)>,
    /// Its events' hashes, in order (for the log tree, `recent.rs`).
    hashes: Vec<Hash>,
    outcomes: Vec<(Reply, Result<Appended>)>,
    /// The position of its first event (0: none yet).
    first_position: u64,
    /// Its bytes as replicated, when a replicator is set.
    wire: Option<WireBuilder>,
}

/// The hand-over between the two threads.
struct Slot {
    state: Mutex<SlotState>,
    /// The committer waits here for a ready batch (or the end).
    ready: Condvar,
    /// The stager waits here while the open batch is full.
    room: Condvar,
}

struct SlotState {
    open: Option<Batch>,
    /// The stager found the queue empty (or the batch full) since it last staged: take it.
    open_ready: bool,
    /// The stager has stopped: no batch will follow the open one.
    stager_done: bool,
    /// A batch is being committed (by the committer, or by the stager when idle). Batches are
    /// committed one at a time, in order.
    committing: bool,
    /// The committer failed: the cause, and no batch after it will be written.
    failed: Option<String>,
    /// The sequence of the last batch the committer finished.
    committed_sequence: u64,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().expect("writer slot lock")
    }
}

pub(crate) struct Writer {
    stager: Stager,
    committer: Committer,
    index_progress: Arc<IndexProgress>,
}

struct Stager {
    store: Store,
    clock: Clock,
    tail: Tail,
    /// Stream versions the writer has seen or staged; a miss reads the stream index. Grows with
    /// the number of streams (contracts), never with the number of events.
    heads: HashMap<String, u64>,
    /// Command ids of batches staged but not yet committed: their dedup records are not in the
    /// store yet. Pruned as the committer reports batches done.
    in_flight: HashMap<String, (Hash, Appended)>,
    in_flight_by_batch: VecDeque<(u64, Vec<String>)>,
    next_sequence: u64,
    ids: EventIds,
    /// The replicated batch's size limit, when a replicator is set.
    wire_bytes_max: Option<usize>,
}

struct Committer {
    committed: Arc<watch::Sender<u64>>,
    stopped: Arc<Mutex<Option<String>>>,
    /// Set when the committer runs.
    indexer: Option<std::sync::mpsc::SyncSender<IndexBatch>>,
    /// The durable step before the local commit, when the log is replicated.
    replicator: Option<Arc<dyn Replicator>>,
    meta: fjall::Keyspace,
    /// Committed events for the log tree, when it asked for them.
    recent: Arc<crate::recent::RecentHeads>,
}

impl Writer {
    pub fn new(
        store: Store,
        clock: Clock,
        committed: Arc<watch::Sender<u64>>,
        stopped: Arc<Mutex<Option<String>>>,
        index_progress: Arc<IndexProgress>,
        replicator: Option<Arc<dyn Replicator>>,
        recent: Arc<crate::recent::RecentHeads>,
    ) -> Result<Writer> {
        let (last_position, last_hash, last_recorded_nanos) = store.head()?;
        let wire_bytes_max = replicator.as_ref().map(|r| r.batch_bytes_max());
        let meta = store.meta.clone();
        Ok(Writer {
            stager: Stager {
                store,
                clock,
                tail: Tail {
                    last_position,
                    last_hash,
                    last_recorded_nanos,
                },
                heads: HashMap::new(),
                in_flight: HashMap::new(),
                in_flight_by_batch: VecDeque::new(),
                next_sequence: 1,
                ids: EventIds::seeded(),
                wire_bytes_max,
            },
            committer: Committer {
                committed,
                stopped,
                indexer: None,
                replicator,
                meta,
                recent,
            },
            index_progress,
        })
    }

    /// Runs until every sender is gone or a write fails; returns after its three threads (stager,
    /// committer, indexer) ended.
    pub fn run(self, queue: mpsc::Receiver<Request>) {
        let slot = Slot {
            state: Mutex::new(SlotState {
                open: None,
                open_ready: false,
                stager_done: false,
                committing: false,
                failed: None,
                committed_sequence: 0,
            }),
            ready: Condvar::new(),
            room: Condvar::new(),
        };
        let Writer {
            stager,
            mut committer,
            index_progress,
        } = self;
        let (index_tx, index_rx) = std::sync::mpsc::sync_channel(INDEX_QUEUE_BATCHES_MAX);
        committer.indexer = Some(index_tx);
        let store = stager.store.clone();
        std::thread::scope(|outer| {
            std::thread::Builder::new()
                .name("ledger-index".into())
                .spawn_scoped(outer, || {
                    index::run_indexer(&store, index_rx, &index_progress);
                })
                .expect("spawning the ledger's index thread");
            // Stager and committer share the committer; once both have ended, dropping it
            // closes the indexer's channel, and the indexer ends after writing what it holds.
            std::thread::scope(|inner| {
                let (committer, slot) = (&committer, &slot);
                std::thread::Builder::new()
                    .name("ledger-commit".into())
                    .spawn_scoped(inner, move || committer.run(slot))
                    .expect("spawning the ledger's commit thread");
                stager.run(queue, slot, committer);
            });
            drop(committer);
        });
    }
}

impl Stager {
    fn run(mut self, mut queue: mpsc::Receiver<Request>, slot: &Slot, committer: &Committer) {
        // Requests staged since the stager last waited on an empty queue.
        let mut staged_since_idle = 0usize;
        loop {
            let request = match queue.try_recv() {
                Ok(request) => request,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // Nothing more to gather now: the open batch may go. A lone request that
                    // woke an idle writer is committed here, saving the hand-over; anything
                    // gathered under load goes to the committer so that staging goes on.
                    if staged_since_idle == 1 && committer.replicator.is_none() {
                        commit_if_idle(slot, committer);
                    }
                    mark_ready(slot);
                    staged_since_idle = 0;
                    match queue.blocking_recv() {
                        Some(request) => request,
                        None => break,
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            };
            staged_since_idle += 1;
            let wire_len = self.wire_bytes_max.map(|_| wire_estimate(&request.append));
            if let (Some(len), Some(max)) = (wire_len, self.wire_bytes_max)
                && len > max
            {
                let _ = request.reply.send(Err(Error::invalid(
                    "append size",
                    format!("about {len} bytes; a replicated batch carries at most {max} bytes"),
                )));
                continue;
            }
            let mut state = slot.lock();
            loop {
                if state.failed.is_some() {
                    break;
                }
                let Some(batch) = state.open.as_ref() else {
                    break;
                };
                let bytes_full = match (&batch.wire, wire_len, self.wire_bytes_max) {
                    (Some(wire), Some(len), Some(max)) => {
                        batch.events > 0 && wire.len() + len > max
                    }
                    _ => false,
                };
                if batch.events < EVENTS_PER_BATCH_MAX && !bytes_full {
                    break;
                }
                if !state.open_ready {
                    state.open_ready = true;
                    slot.ready.notify_one();
                }
                state = slot.room.wait(state).expect("writer slot lock");
            }
            if let Some(cause) = state.failed.clone() {
                drop(state);
                let _ = request.reply.send(Err(Error::WriterStopped {
                    cause: cause.clone(),
                }));
                queue.close();
                while let Ok(request) = queue.try_recv() {
                    let _ = request.reply.send(Err(Error::WriterStopped {
                        cause: cause.clone(),
                    }));
                }
                break;
            }
            self.prune_in_flight(state.committed_sequence);
            let batch = state.open.get_or_insert_with(|| {
                let sequence = self.next_sequence;
                self.next_sequence += 1;
                Batch {
                    sequence,
                    // SyncAll on the batch itself: fjall fsyncs the journal before the batch
                    // becomes visible, so no reader can see an event that is not durable yet.
                    // Replicated, the batch is durable once the replicated log acknowledged it
                    // (fsync'd on a quorum of nodes); the local store is a copy that a restart
                    // completes from the stream, so it is written to the OS, not fsync'd.
                    items: self.store.db.batch().durability(Some(
                        if self.wire_bytes_max.is_some() {
                            PersistMode::Buffer
                        } else {
                            PersistMode::SyncAll
                        },
                    )),
                    events: 0,
                    last_position: 0,
                    last_hash: [0; 32],
                    index_entries: Vec::new(),
                    hashes: Vec::new(),
                    outcomes: Vec::new(),
                    first_position: 0,
                    wire: self.wire_bytes_max.map(|_| WireBuilder::new()),
                }
            });
            let outcome = self.stage(&request.append, batch);
            batch.outcomes.push((request.reply, outcome));
            if batch.events >= EVENTS_PER_BATCH_MAX {
                state.open_ready = true;
                slot.ready.notify_one();
            }
            // The request's events are dropped here, on this thread, not in the commit's path.
        }
        let mut state = slot.lock();
        state.stager_done = true;
        state.open_ready = true;
        slot.ready.notify_one();
    }

    fn prune_in_flight(&mut self, committed_sequence: u64) {
        while let Some((sequence, _)) = self.in_flight_by_batch.front() {
            if *sequence > committed_sequence {
                break;
            }
            let (_, command_ids) = self.in_flight_by_batch.pop_front().expect("front exists");
            for command_id in command_ids {
                self.in_flight.remove(&command_id);
            }
        }
    }

    fn current_version(&self, stream: &str) -> Result<u64> {
        if let Some(version) = self.heads.get(stream) {
            return Ok(*version);
        }
        // Never written since open, so no batch in flight holds it: the store is current.
        self.store.stream_version(stream)
    }

    /// Decides one append against the committed and staged state and adds its items to `batch`.
    fn stage(&mut self, append: &Append, batch: &mut Batch) -> Result<Appended> {
        if let Some(idempotency) = &append.idempotency {
            if let Some((content_hash, appended)) = self.in_flight.get(&idempotency.command_id) {
                return if *content_hash == idempotency.content_hash {
                    Ok(Appended {
                        duplicate: true,
                        ..appended.clone()
                    })
                } else {
                    Err(Error::IdempotencyKeyReused {
                        command_id: idempotency.command_id.clone(),
                    })
                };
            }
            if let Some(record) = read_dedup(&self.store, &idempotency.command_id)? {
                return if record.content_hash == idempotency.content_hash {
                    appended_from_log(&self.store, &record)
                } else {
                    Err(Error::IdempotencyKeyReused {
                        command_id: idempotency.command_id.clone(),
                    })
                };
            }
        }

        let actual = self.current_version(&append.stream)?;
        if !append.expected.accepts(actual) {
            return Err(Error::VersionConflict {
                stream: append.stream.clone(),
                expected: append.expected,
                actual,
            });
        }

        // Recorded time never decreases along the global order, so "known at K" is a prefix.
        let now_nanos = (self.clock)()
            .timestamp_nanos_opt()
            .expect("the clock reads between 1677 and 2262");
        let tail = &mut self.tail;
        let recorded_nanos = now_nanos.max(tail.last_recorded_nanos);
        let mut appended = Vec::with_capacity(append.events.len());
        for (offset, event) in append.events.iter().enumerate() {
            let position = tail.last_position + 1;
            let version = actual + 1 + offset as u64;
            let event_id = self.ids.next(recorded_nanos);
            let (bytes, hash) = envelope::encode(&EnvelopeParts {
                position,
                stream: &append.stream,
                version,
                event_id,
                recorded_at_nanos: recorded_nanos,
                event,
                prev_hash: &tail.last_hash,
            });
            if let Some(wire) = batch.wire.as_mut() {
                wire.push_event(&bytes);
            }
            if batch.first_position == 0 {
                batch.first_position = position;
            }
            batch
                .items
                .insert(&self.store.log, position.to_be_bytes(), bytes);
            batch
                .index_entries
                .push((stream_key(&append.stream, version), position));
            batch.hashes.push(hash);
            tail.last_position = position;
            tail.last_hash = hash;
            appended.push(AppendedEvent {
                position,
                version,
                event_id,
            });
        }
        tail.last_recorded_nanos = recorded_nanos;
        batch.events += append.events.len();
        batch.last_position = tail.last_position;
        batch.last_hash = tail.last_hash;
        let new_version = actual + append.events.len() as u64;
        match self.heads.get_mut(&append.stream) {
            Some(head) => *head = new_version,
            None => {
                self.heads.insert(append.stream.clone(), new_version);
            }
        }

        let result = Appended {
            events: appended,
            duplicate: false,
        };
        if let Some(idempotency) = &append.idempotency {
            let record = DedupRecord {
                content_hash: idempotency.content_hash,
                first_position: result.events[0].position,
                count: u32::try_from(result.events.len()).expect("events per append are limited"),
            };
            let record = record.encode();
            if let Some(wire) = batch.wire.as_mut() {
                wire.push_record(&idempotency.command_id, &record);
            }
            batch
                .items
                .insert(&self.store.dedup, idempotency.command_id.as_bytes(), record);
            self.in_flight.insert(
                idempotency.command_id.clone(),
                (idempotency.content_hash, result.clone()),
            );
            match self.in_flight_by_batch.back_mut() {
                Some((sequence, ids)) if *sequence == batch.sequence => {
                    ids.push(idempotency.command_id.clone());
                }
                _ => self
                    .in_flight_by_batch
                    .push_back((batch.sequence, vec![idempotency.command_id.clone()])),
            }
        }
        Ok(result)
    }
}

/// A committed batch's events as the log tree needs them, from its index entries (`stream ‖ 0 ‖
/// version`) and hashes; one shared stream name per run of events of one stream.
fn recent_events(
    index_entries: &[(Vec<u8>, u64)],
    hashes: Vec<Hash>,
) -> impl Iterator<Item = crate::recent::RecentEvent> + '_ {
    let mut last: Option<Arc<str>> = None;
    index_entries
        .iter()
        .zip(hashes)
        .map(move |((key, _), hash)| {
            let (stream, version) = key.split_at(key.len() - 9);
            let version = u64::from_be_bytes(version[1..].try_into().expect("8 bytes"));
            let stream = match &last {
                Some(name) if name.as_bytes() == stream => name.clone(),
                _ => {
                    let name: Arc<str> =
                        Arc::from(std::str::from_utf8(stream).expect("stream ids are UTF-8"));
                    last = Some(name.clone());
                    name
                }
            };
            (stream, version, hash)
        })
}

/// Answers every caller of a batch that will not be written: rejections stay rejections.
fn answer_stopped(batch: Batch, cause: &str) {
    for (reply, outcome) in batch.outcomes {
        let answer = match outcome {
            Err(rejection) => Err(rejection),
            Ok(_) => Err(Error::WriterStopped {
                cause: cause.to_owned(),
            }),
        };
        let _ = reply.send(answer);
    }
}

/// An upper bound on what an append adds to a replicated batch.
fn wire_estimate(append: &Append) -> usize {
    let per_event: usize = append
        .events
        .iter()
        .map(|event| {
            WIRE_EVENT_OVERHEAD
                + append.stream.len()
                + event.event_type.len()
                + event.payload.len()
                + event.metadata.bytes_len()
        })
        .sum();
    per_event
        + append
            .idempotency
            .as_ref()
            .map_or(0, |i| i.command_id.len() + 46)
}

/// Commits the open batch on the calling thread when no batch is being committed.
fn commit_if_idle(slot: &Slot, committer: &Committer) {
    let batch = {
        let mut state = slot.lock();
        if state.committing || state.failed.is_some() || state.open.is_none() {
            return;
        }
        state.committing = true;
        state.open_ready = false;
        let batch = state.open.take().expect("an open batch");
        slot.room.notify_one();
        batch
    };
    committer.commit_taken(slot, batch);
}

/// Lets the committer take the open batch.
fn mark_ready(slot: &Slot) {
    let mut state = slot.lock();
    if state.open.is_some() && !state.open_ready {
        state.open_ready = true;
        slot.ready.notify_one();
    }
}

impl Committer {
    fn run(&self, slot: &Slot) {
        if let Some(replicator) = &self.replicator
            && replicator.window() > 1
        {
            return self.run_pipelined(slot, replicator.as_ref());
        }
        loop {
            let batch = {
                let mut state = slot.lock();
                loop {
                    if state.failed.is_some() {
                        return;
                    }
                    if state.open_ready && state.open.is_some() && !state.committing {
                        break;
                    }
                    if state.stager_done && state.open.is_none() && !state.committing {
                        return;
                    }
                    state = slot.ready.wait(state).expect("writer slot lock");
                }
                state.open_ready = false;
                state.committing = true;
                let batch = state.open.take().expect("a ready batch");
                slot.room.notify_one();
                batch
            };
            if !self.commit_taken(slot, batch) {
                return;
            }
        }
    }

    /// Commits a batch taken from the slot (with `committing` set) and releases the slot.
    /// Returns false when the commit failed and the writer has stopped.
    fn commit_taken(&self, slot: &Slot, batch: Batch) -> bool {
        {
            let sequence = batch.sequence;
            if let Err(cause) = self.commit(batch) {
                self.fail(slot, &cause);
                return false;
            }
            let mut state = slot.lock();
            state.committed_sequence = sequence;
            state.committing = false;
            // The other thread may be waiting for the commit role.
            slot.ready.notify_all();
        }
        true
    }

    /// Stops the writer after a failed commit: records the cause, wakes subscribers, and answers
    /// the open batch (decided on events that will never exist) with the failure.
    fn fail(&self, slot: &Slot, cause: &str) {
        tracing::error!(%cause, "event log writer stopped");
        *self.stopped.lock().expect("stopped flag lock") = Some(cause.to_owned());
        // Wake subscribers so that they see the stop instead of waiting for ever.
        self.committed.send_modify(|_| {});
        let mut state = slot.lock();
        state.failed = Some(cause.to_owned());
        if let Some(later) = state.open.take() {
            answer_stopped(later, cause);
        }
        state.committing = false;
        slot.room.notify_one();
        slot.ready.notify_all();
    }

    /// The pipelined commit for a replicator with a window: this thread takes each ready batch
    /// and submits it at once (the replicated log keeps them in order, each fenced by its
    /// predecessor's sequence); a completer thread waits for each batch's replication in order,
    /// writes it locally and answers its callers. At most `window` batches are submitted and
    /// not yet written. A failed batch stops the writer; the batches submitted after it are
    /// answered with the failure (what of them reached the replicated log is found there by a
    /// retry with the same command id).
    fn run_pipelined(&self, slot: &Slot, replicator: &dyn Replicator) {
        let (to_completer, submitted) =
            std::sync::mpsc::sync_channel::<(Batch, Option<Pending>)>(replicator.window() - 1);
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("ledger-complete".into())
                .spawn_scoped(scope, move || {
                    let mut failed: Option<String> = None;
                    for (batch, pending) in submitted {
                        if let Some(cause) = &failed {
                            answer_stopped(batch, cause);
                            continue;
                        }
                        let sequence = batch.sequence;
                        let replicated = pending.map(|p| {
                            p.wait()
                                .map_err(|cause| format!("replicating failed: {cause}"))
                        });
                        match self.finish(batch, replicated) {
                            Ok(()) => {
                                let mut state = slot.lock();
                                state.committed_sequence = sequence;
                                slot.ready.notify_all();
                            }
                            Err(cause) => {
                                self.fail(slot, &cause);
                                failed = Some(cause);
                            }
                        }
                    }
                })
                .expect("spawning the ledger's completer thread");
            // Owned here: returning drops it, which ends the completer's loop.
            let to_completer = to_completer;
            loop {
                let mut batch = {
                    let mut state = slot.lock();
                    loop {
                        if state.failed.is_some() {
                            return;
                        }
                        if state.open_ready && state.open.is_some() {
                            break;
                        }
                        if state.stager_done && state.open.is_none() {
                            return;
                        }
                        state = slot.ready.wait(state).expect("writer slot lock");
                    }
                    state.open_ready = false;
                    let batch = state.open.take().expect("a ready batch");
                    slot.room.notify_one();
                    batch
                };
                let pending = match batch.wire.take() {
                    Some(wire) if batch.last_position > 0 => Some(replicator.submit(WireBatch {
                        first_position: batch.first_position,
                        last_position: batch.last_position,
                        last_hash: batch.last_hash,
                        bytes: wire.finish(),
                    })),
                    _ => None,
                };
                if to_completer.send((batch, pending)).is_err() {
                    return;
                }
            }
        });
    }

    /// Writes one batch and answers its callers. Returns the failure that must stop the
    /// writer, after telling every caller of this batch that nothing of theirs was acknowledged.
    fn commit(&self, mut batch: Batch) -> Result<(), String> {
        let replicated = match (&self.replicator, batch.wire.take()) {
            (Some(replicator), Some(wire)) if batch.last_position > 0 => Some(
                replicator
                    .replicate(&WireBatch {
                        first_position: batch.first_position,
                        last_position: batch.last_position,
                        last_hash: batch.last_hash,
                        bytes: wire.finish(),
                    })
                    .map_err(|cause| format!("replicating failed: {cause}")),
            ),
            _ => None,
        };
        self.finish(batch, replicated)
    }

    /// Writes a batch locally once its replication (if any) succeeded, and answers its callers.
    fn finish(&self, batch: Batch, replicated: Option<Result<u64, String>>) -> Result<(), String> {
        let Batch {
            mut items,
            last_position,
            last_hash,
            index_entries,
            hashes,
            outcomes,
            first_position,
            ..
        } = batch;
        let replicated = match replicated {
            Some(Ok(sequence)) => {
                items.insert(&self.meta, REPLICATED_SEQUENCE_KEY, sequence.to_be_bytes());
                Ok(())
            }
            Some(Err(cause)) => Err(cause),
            None => Ok(()),
        };
        let written = replicated.and_then(|()| {
            if items.is_empty() {
                return Ok(());
            }
            items
                .commit()
                .map_err(|source| format!("write or fsync failed: {source}"))
        });
        if let Err(cause) = written {
            for (reply, outcome) in outcomes {
                let answer = match outcome {
                    // A rejection stays a rejection: it wrote nothing either way.
                    Err(rejection) => Err(rejection),
                    Ok(_) => Err(Error::WriterStopped {
                        cause: cause.clone(),
                    }),
                };
                let _ = reply.send(answer);
            }
            return Err(cause);
        }
        if last_position > 0 {
            // Wake subscribers only after the fsync: they must never see an unacknowledged event.
            self.committed.send_replace(last_position);
            if self.recent.enabled() {
                self.recent
                    .push(first_position, recent_events(&index_entries, hashes));
            }
            // Durable now: the indexer may follow. If it stopped, the log goes on and stream
            // reads report the index's failure; the next open indexes again.
            if let Some(indexer) = &self.indexer {
                let _ = indexer.send(IndexBatch {
                    entries: index_entries,
                    last_position,
                    last_hash,
                });
            }
        }
        for (reply, outcome) in outcomes {
            // A caller that gave up waiting still had its events written; that is what the
            // command id is for.
            let _ = reply.send(outcome);
        }
        Ok(())
    }
}

/// Makes UUID v7 event ids: the recorded time's milliseconds, then 74 bits from a SplitMix64
/// sequence seeded once from the OS. One `getrandom` per open instead of one per event (that
/// syscall was a measurable share of the writer's time); the sequence does not repeat within
/// 2^64 ids, and a fresh seed per open keeps ids of different opens apart with overwhelming
/// probability.
struct EventIds {
    state: u64,
}

impl EventIds {
    fn seeded() -> EventIds {
        // The low half of a v7 id is OS randomness (apart from two variant bits).
        let seed = Uuid::now_v7().as_u64_pair().1;
        EventIds { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next(&mut self, recorded_nanos: i64) -> Uuid {
        let millis = u64::try_from(recorded_nanos.div_euclid(1_000_000)).unwrap_or(0);
        let mut random = [0u8; 10];
        random[..8].copy_from_slice(&self.next_u64().to_be_bytes());
        random[8..].copy_from_slice(&self.next_u64().to_be_bytes()[..2]);
        uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
    }
}

pub(crate) fn read_dedup(store: &Store, command_id: &str) -> Result<Option<DedupRecord>> {
    let value = store
        .dedup
        .get(command_id.as_bytes())
        .map_err(Error::storage(format!("reading command id {command_id:?}")))?;
    value
        .map(|bytes| {
            DedupRecord::decode(&bytes).ok_or_else(|| Error::Corrupt {
                position: 0,
                detail: format!("dedup record of {command_id:?} is not 44 bytes"),
            })
        })
        .transpose()
}

/// Rebuilds the first answer to an idempotent append from the events it wrote.
pub(crate) fn appended_from_log(store: &Store, record: &DedupRecord) -> Result<Appended> {
    let mut events = Vec::with_capacity(record.count as usize);
    for position in record.first_position..record.first_position + u64::from(record.count) {
        let event = store.event_at(position)?.ok_or_else(|| Error::Corrupt {
            position,
            detail: "a dedup record points at a missing event".into(),
        })?;
        events.push(AppendedEvent {
            position,
            version: event.version,
            event_id: event.event_id,
        });
    }
    Ok(Appended {
        events,
        duplicate: true,
    })
}

impl ExpectedVersion {
    fn accepts(self, actual: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::StreamExists => actual > 0,
            ExpectedVersion::Exact(version) => actual == version,
        }
    }
}

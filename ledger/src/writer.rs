//! The single writer: the only code that writes events. It gathers queued appends into one fjall
//! batch and one fsync (group commit), decides expected versions and idempotency against the
//! state it alone changes, and acknowledges only after `PersistMode::SyncAll` returned. Not a
//! general-purpose executor: it runs on its own OS thread because fjall's calls block.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fjall::PersistMode;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::envelope::{self, EnvelopeParts, Hash};
use crate::error::{Error, Result};
use crate::limits::EVENTS_PER_BATCH_MAX;
use crate::store::{DedupRecord, Store, stream_key};
use crate::{Append, Appended, AppendedEvent, Clock, ExpectedVersion};

pub(crate) struct Request {
    pub append: Append,
    pub reply: oneshot::Sender<Result<Appended>>,
}

/// What the writer knows of the log's end. Copied per batch and kept only if the batch commits.
#[derive(Clone)]
struct Tail {
    last_position: u64,
    last_hash: Hash,
    last_recorded_nanos: i64,
}

pub(crate) struct Writer {
    store: Store,
    clock: Clock,
    tail: Tail,
    /// Stream versions the writer has seen; a miss reads the `heads` keyspace. Grows with the
    /// number of streams (contracts), never with the number of events.
    heads: HashMap<String, u64>,
    committed: watch::Sender<u64>,
    stopped: Arc<Mutex<Option<String>>>,
    ids: EventIds,
}

impl Writer {
    pub fn new(
        store: Store,
        clock: Clock,
        committed: watch::Sender<u64>,
        stopped: Arc<Mutex<Option<String>>>,
    ) -> Result<Writer> {
        let (last_position, last_hash, last_recorded_nanos) = store.head()?;
        Ok(Writer {
            store,
            clock,
            tail: Tail {
                last_position,
                last_hash,
                last_recorded_nanos,
            },
            heads: HashMap::new(),
            committed,
            stopped,
            ids: EventIds::seeded(),
        })
    }

    /// Runs until every sender is gone or a write fails.
    pub fn run(mut self, mut queue: mpsc::Receiver<Request>) {
        while let Some(first) = queue.blocking_recv() {
            let mut events_in_batch = first.append.events.len();
            let mut requests = vec![first];
            while events_in_batch < EVENTS_PER_BATCH_MAX {
                match queue.try_recv() {
                    Ok(request) => {
                        events_in_batch += request.append.events.len();
                        requests.push(request);
                    }
                    Err(_) => break,
                }
            }
            if let Err(cause) = self.write_batch(requests) {
                tracing::error!(%cause, "event log writer stopped");
                *self.stopped.lock().expect("stopped flag lock") = Some(cause.clone());
                queue.close();
                while let Ok(request) = queue.try_recv() {
                    let _ = request.reply.send(Err(Error::WriterStopped {
                        cause: cause.clone(),
                    }));
                }
                return;
            }
        }
    }

    /// Decides and writes one batch. Returns the failure that must stop the writer, after
    /// telling every caller of this batch that nothing of theirs was acknowledged.
    fn write_batch(&mut self, requests: Vec<Request>) -> Result<(), String> {
        let mut tail = self.tail.clone();
        let mut staged_heads: HashMap<String, u64> = HashMap::new();
        let mut staged_dedup: HashMap<String, (Hash, Appended)> = HashMap::new();
        // SyncAll on the batch itself: fjall fsyncs the journal before the batch becomes visible, so
        // no reader in this process can see an event that is not durable yet.
        let mut batch = self.store.db.batch().durability(Some(PersistMode::SyncAll));
        let mut outcomes: Vec<(oneshot::Sender<Result<Appended>>, Result<Appended>)> =
            Vec::with_capacity(requests.len());

        for Request { append, reply } in requests {
            let outcome = self.stage(
                &append,
                &mut tail,
                &mut staged_heads,
                &mut staged_dedup,
                &mut batch,
            );
            outcomes.push((reply, outcome));
        }

        if !batch.is_empty()
            && let Err(source) = batch.commit()
        {
            let cause = format!("write or fsync failed: {source}");
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

        self.tail = tail;
        self.heads.extend(staged_heads);
        // Wake subscribers only after the fsync: they must never see an unacknowledged event.
        self.committed.send_replace(self.tail.last_position);
        for (reply, outcome) in outcomes {
            // A caller that gave up waiting still had its events written; that is what the
            // command id is for.
            let _ = reply.send(outcome);
        }
        Ok(())
    }

    fn current_version(&self, stream: &str, staged: &HashMap<String, u64>) -> Result<u64> {
        if let Some(version) = staged.get(stream).or_else(|| self.heads.get(stream)) {
            return Ok(*version);
        }
        self.store.stream_version(stream)
    }

    fn stage(
        &mut self,
        append: &Append,
        tail: &mut Tail,
        staged_heads: &mut HashMap<String, u64>,
        staged_dedup: &mut HashMap<String, (Hash, Appended)>,
        batch: &mut fjall::OwnedWriteBatch,
    ) -> Result<Appended> {
        if let Some(idempotency) = &append.idempotency {
            if let Some((content_hash, appended)) = staged_dedup.get(&idempotency.command_id) {
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

        let actual = self.current_version(&append.stream, staged_heads)?;
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
            batch.insert(&self.store.log, position.to_be_bytes(), bytes);
            batch.insert(
                &self.store.streams,
                stream_key(&append.stream, version),
                position.to_be_bytes(),
            );
            tail.last_position = position;
            tail.last_hash = hash;
            appended.push(AppendedEvent {
                position,
                version,
                event_id,
            });
        }
        tail.last_recorded_nanos = recorded_nanos;
        let new_version = actual + append.events.len() as u64;
        staged_heads.insert(append.stream.clone(), new_version);

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
            batch.insert(
                &self.store.dedup,
                idempotency.command_id.as_bytes(),
                record.encode(),
            );
            staged_dedup.insert(
                idempotency.command_id.clone(),
                (idempotency.content_hash, result.clone()),
            );
        }
        Ok(result)
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

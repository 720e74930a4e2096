//! The stream index (stream, version → position) as a follower of the log: the indexer thread
//! writes what the committer has made durable into the index's own database, without fsync, and
//! `catch_up` completes it from the log at every open. Stream reads wait until the index has
//! reached the position the log had committed when they were called. The indexer lets committed
//! batches gather for up to `INDEX_GATHER_MAX` before it writes them (one index write per many
//! appends), except while a reader waits: a waiting reader ends the pause at once. Not a source
//! of truth: the index can always be rebuilt from the log, and `verify` checks that it agrees
//! with it.
//!
//! Why it is safe without fsync: each index batch carries its checkpoint (`indexed_to`: the
//! position and hash of its last event), and fjall's journal recovers whole batches only, so
//! after a crash the index holds exactly the entries up to its checkpoint, and the log holds at
//! least that much (the committer hands a batch over only after its fsync). A checkpoint the log
//! does not confirm (past its head, or another hash there) means the index belongs to another
//! log: it is cleared and built again from position 1.

use std::sync::mpsc;
use std::sync::{Condvar, Mutex};

use crate::envelope::{GENESIS_HASH, Hash};
use crate::error::{Error, Result};
use crate::limits::{INDEX_CATCH_UP_BATCH_EVENTS, INDEX_GATHER_ENTRIES, INDEX_GATHER_MAX};
use crate::store::{INDEXED_TO_KEY, Store, encode_indexed_to, stream_key};

/// The index entries of one committed batch.
pub(crate) struct IndexBatch {
    /// `stream_key(stream, version)` and the event's position, in log order.
    pub entries: Vec<(Vec<u8>, u64)>,
    pub last_position: u64,
    pub last_hash: Hash,
}

/// How far the index has followed the log; readers wait on it, and the indexer, while it lets
/// batches gather, waits for a reader.
pub(crate) struct IndexProgress {
    state: Mutex<ProgressState>,
    advanced: Condvar,
    reader_waiting: Condvar,
}

struct ProgressState {
    indexed_to: u64,
    failed: Option<String>,
    /// Readers blocked in `wait_for`: while there are any, the indexer does not gather.
    readers_waiting: usize,
}

impl IndexProgress {
    pub fn new(indexed_to: u64) -> IndexProgress {
        IndexProgress {
            state: Mutex::new(ProgressState {
                indexed_to,
                failed: None,
                readers_waiting: 0,
            }),
            advanced: Condvar::new(),
            reader_waiting: Condvar::new(),
        }
    }

    /// Blocks until every event up to `position` is indexed. The indexer runs right behind the
    /// committer, and a waiting reader ends its gathering pause, so this waits for at most the
    /// batches handed over but not yet written.
    ///
    /// # Errors
    /// [`Error::IndexStopped`] when the indexer failed before reaching `position`.
    pub fn wait_for(&self, position: u64) -> Result<()> {
        let mut state = self.state.lock().expect("index progress lock");
        while state.indexed_to < position {
            if let Some(cause) = &state.failed {
                return Err(Error::IndexStopped {
                    cause: cause.clone(),
                });
            }
            state.readers_waiting += 1;
            self.reader_waiting.notify_one();
            state = self.advanced.wait(state).expect("index progress lock");
            state.readers_waiting -= 1;
        }
        Ok(())
    }

    /// The indexer's pause to let batches gather: returns after `timeout`, or at once when a
    /// reader is (or starts) waiting for the index.
    fn gather_pause(&self, timeout: std::time::Duration) {
        let state = self.state.lock().expect("index progress lock");
        let _state = self
            .reader_waiting
            .wait_timeout_while(state, timeout, |state| state.readers_waiting == 0)
            .expect("index progress lock");
    }

    pub(crate) fn advance(&self, position: u64) {
        self.state.lock().expect("index progress lock").indexed_to = position;
        self.advanced.notify_all();
    }

    fn fail(&self, cause: String) {
        self.state.lock().expect("index progress lock").failed = Some(cause);
        self.advanced.notify_all();
    }
}

/// Writes every batch the committer hands over, merging those that queued up, until the
/// committer is gone. A failed write stops the index (readers get [`Error::IndexStopped`]), not
/// the log: the next open catches the index up from its checkpoint.
pub(crate) fn run_indexer(
    store: &Store,
    batches: mpsc::Receiver<IndexBatch>,
    progress: &IndexProgress,
) {
    while let Ok(first) = batches.recv() {
        let mut items = store.index_db.batch();
        let mut last = (first.last_position, first.last_hash);
        let mut pending = put_entries(store, &mut items, first.entries);
        let mut take_queued = |items: &mut fjall::OwnedWriteBatch, pending: &mut usize| {
            while let Ok(next) = batches.try_recv() {
                last = (next.last_position, next.last_hash);
                *pending += put_entries(store, items, next.entries);
            }
        };
        take_queued(&mut items, &mut pending);
        if pending < INDEX_GATHER_ENTRIES {
            progress.gather_pause(INDEX_GATHER_MAX);
            take_queued(&mut items, &mut pending);
        }
        items.insert(
            &store.index_meta,
            INDEXED_TO_KEY,
            encode_indexed_to(last.0, &last.1),
        );
        if let Err(source) = items.commit() {
            let cause = format!("writing the stream index failed: {source}");
            tracing::error!(%cause, "stream index stopped");
            progress.fail(cause);
            return;
        }
        progress.advance(last.0);
    }
    // A clean close leaves the index complete on disk, so the next open has nothing to redo.
    if let Err(source) = store.index_db.persist(fjall::PersistMode::SyncAll) {
        tracing::warn!(%source, "persisting the stream index at close failed; the next open indexes again");
    }
}

/// Adds a batch's entries to `items`; returns how many.
fn put_entries(
    store: &Store,
    items: &mut fjall::OwnedWriteBatch,
    entries: Vec<(Vec<u8>, u64)>,
) -> usize {
    let count = entries.len();
    for (key, position) in entries {
        items.insert(&store.streams, key, position.to_be_bytes());
    }
    count
}

/// Brings the index up to the log's head (`head`, with its hash), before any writer or reader
/// uses it; migrates a format 1 store. Returns the position indexed to (= `head`).
///
/// # Errors
/// [`Error::Corrupt`] when an event in the unindexed tail cannot be decoded;
/// [`Error::Storage`] when fjall fails.
pub(crate) fn catch_up(store: &Store, head: u64) -> Result<u64> {
    let (mut indexed_to, checkpoint_hash) = store.indexed_to()?;
    let confirmed = indexed_to == 0
        || (indexed_to <= head
            && store
                .event_at(indexed_to)?
                .is_some_and(|event| event.hash == checkpoint_hash));
    if !confirmed {
        tracing::warn!(
            indexed_to,
            head,
            "the stream index does not match this log; building it again"
        );
        clear(store)?;
        indexed_to = 0;
    }
    if indexed_to < head {
        tracing::info!(from = indexed_to + 1, to = head, "indexing the log");
    }
    let mut items = store.index_db.batch();
    let mut in_batch = 0u64;
    let mut last_hash = GENESIS_HASH;
    let mut position = indexed_to;
    let log = store.log.clone();
    for entry in log.range((indexed_to + 1).to_be_bytes()..=head.to_be_bytes()) {
        let (key, value) = entry
            .into_inner()
            .map_err(Error::storage("reading the log to index it"))?;
        let expected = position + 1;
        if crate::store::decode_u64(&key) != Some(expected) {
            return Err(Error::Corrupt {
                position: expected,
                detail: "the log has a gap where the index must follow it".into(),
            });
        }
        let event = crate::envelope::decode(expected, &value)?;
        items.insert(
            &store.streams,
            stream_key(&event.stream, event.version),
            expected.to_be_bytes(),
        );
        position = expected;
        last_hash = event.hash;
        in_batch += 1;
        if in_batch == INDEX_CATCH_UP_BATCH_EVENTS {
            commit_with_checkpoint(store, items, position, &last_hash)?;
            items = store.index_db.batch();
            in_batch = 0;
        }
    }
    if position != head {
        return Err(Error::Corrupt {
            position: position + 1,
            detail: format!("the log ends at {position}, before its head {head}"),
        });
    }
    if in_batch > 0 {
        commit_with_checkpoint(store, items, position, &last_hash)?;
    }
    if store.needs_migration {
        // The new index is complete: make it durable before the old one goes.
        store
            .index_db
            .persist(fjall::PersistMode::SyncAll)
            .map_err(Error::storage("persisting the stream index"))?;
        store.write_format()?;
        tracing::info!(
            events = head,
            "migrated the store to format 2 (stream index in DIR/index)"
        );
    }
    // On every open, not only a migrating one: a migration cut short after its marker was
    // written leaves the old keyspace behind.
    store.drop_format_1_index()?;
    Ok(position)
}

/// Commits catch-up entries together with the checkpoint they bring the index to.
fn commit_with_checkpoint(
    store: &Store,
    mut items: fjall::OwnedWriteBatch,
    position: u64,
    hash: &Hash,
) -> Result<()> {
    items.insert(
        &store.index_meta,
        INDEXED_TO_KEY,
        encode_indexed_to(position, hash),
    );
    items
        .commit()
        .map_err(Error::storage("writing the stream index"))
}

/// Removes every entry and the checkpoint.
fn clear(store: &Store) -> Result<()> {
    let mut items = store.index_db.batch();
    let mut count = 0u64;
    for entry in store.streams.iter() {
        let key = entry
            .key()
            .map_err(Error::storage("reading the stream index"))?;
        items.remove(&store.streams, key);
        count += 1;
        if count.is_multiple_of(INDEX_CATCH_UP_BATCH_EVENTS) {
            items
                .commit()
                .map_err(Error::storage("clearing the stream index"))?;
            items = store.index_db.batch();
        }
    }
    items.remove(&store.index_meta, INDEXED_TO_KEY);
    items
        .commit()
        .map_err(Error::storage("clearing the stream index"))
}

//! Runs a projection over the log: from its checkpoint to the head, a page at a time, writing
//! the changed entries and the new checkpoint in one batch per page. Memory holds one page's
//! changed entries: it grows with the contracts a page touches, never with the log.

use ledger::{Checkpoint, Ledger, ProjectionStore, RecordedEvent};
use rustc_hash::FxHashMap;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::limits::PROJECTION_PAGE_EVENTS_MAX;
use crate::limits::{READ_AHEAD_FROM_EVENTS, READ_AHEAD_READERS_MAX};

/// A fold over the log, keyed by entity (a contract).
pub trait Projection {
    /// The keyspace name.
    const NAME: &'static str;
    /// One entity's state, stored as JSON.
    type State: Serialize + DeserializeOwned + Default;

    /// The entity an event concerns, or `None` when the projection ignores it.
    fn key(event: &RecordedEvent) -> Option<&str>;

    /// Folds one event into its entity's state.
    fn apply(state: &mut Self::State, event: &RecordedEvent);
}

/// A projection folding the log a page at a time: what `fold_log` drives, alone (`catch_up`) or
/// beside the others in `rebuild_all`'s single scan.
pub trait Fold {
    /// Folds the next event of the log.
    ///
    /// # Errors
    /// When the projection's store cannot be read.
    fn fold(&mut self, event: &RecordedEvent) -> ledger::Result<()>;

    /// Writes what the page changed and `checkpoint` in one batch, and starts a new page.
    ///
    /// # Errors
    /// When the projection's store cannot be written.
    fn commit(&mut self, checkpoint: Checkpoint) -> ledger::Result<()>;
}

/// Scans the log after `from` once, feeding every event to every fold and committing them all
/// every `PROJECTION_PAGE_EVENTS_MAX` events and at the end. `progress` hears the position after
/// each page. Returns the checkpoint they were built to.
///
/// # Errors
/// When the log or a store cannot be read or written.
pub fn fold_log(
    ledger: &Ledger,
    from: Checkpoint,
    folds: &mut [&mut dyn Fold],
    progress: &mut dyn FnMut(u64),
) -> ledger::Result<Checkpoint> {
    let mut checkpoint = from;
    let mut in_page = 0usize;
    let mut fold_one = |event: &RecordedEvent| -> ledger::Result<()> {
        assert_eq!(event.position, checkpoint.position + 1, "the log has a gap");
        assert_eq!(
            event.prev_hash, checkpoint.hash,
            "the chain breaks at {}",
            event.position
        );
        for fold in folds.iter_mut() {
            fold.fold(event)?;
        }
        checkpoint = Checkpoint {
            position: event.position,
            hash: event.hash,
        };
        in_page += 1;
        if in_page == PROJECTION_PAGE_EVENTS_MAX {
            for fold in folds.iter_mut() {
                fold.commit(checkpoint)?;
            }
            in_page = 0;
            progress(checkpoint.position);
        }
        Ok(())
    };
    // Far behind (a rebuild, a long catch-up), the log is read ahead on other threads, so the
    // folds run beside fjall's reads and the envelope decode instead of after them.
    let behind = ledger.committed_position().saturating_sub(from.position);
    if behind >= READ_AHEAD_FROM_EVENTS {
        let readers = std::thread::available_parallelism().map_or(1, usize::from);
        let mut chunks =
            ledger.scan_ahead(from.position + 1, readers.clamp(1, READ_AHEAD_READERS_MAX));
        while let Some(chunk) = chunks.next_chunk() {
            for event in chunk? {
                fold_one(event)?;
            }
        }
    } else {
        for event in ledger.scan(from.position + 1) {
            fold_one(&event?)?;
        }
    }
    // Nothing new: nothing written (a read verb leaves the store as it found it).
    if checkpoint != from {
        for fold in folds.iter_mut() {
            fold.commit(checkpoint)?;
        }
    }
    progress(checkpoint.position);
    Ok(checkpoint)
}

/// Where a store's fold starts: its checkpoint, or the genesis.
///
/// # Errors
/// When the store cannot be read.
pub fn start_of(store: &ProjectionStore) -> ledger::Result<Checkpoint> {
    Ok(store.checkpoint()?.unwrap_or(Checkpoint {
        position: 0,
        hash: ledger::GENESIS_HASH,
    }))
}

/// A keyed projection's fold: one page of changed states in memory, grown with the contracts a
/// page touches, never with the log.
pub struct Paged<'a, P: Projection> {
    store: &'a ProjectionStore,
    /// Keyed by contract id with rustc-hash's Fx hash: SipHash's flooding resistance buys
    /// nothing for ids read from our own log, and costs a tenth of a fold per event.
    page: FxHashMap<String, P::State>,
}

impl<'a, P: Projection> Paged<'a, P> {
    /// A fold writing to `store`.
    pub fn new(store: &'a ProjectionStore) -> Self {
        Paged {
            store,
            page: FxHashMap::default(),
        }
    }
}

impl<P: Projection> Fold for Paged<'_, P> {
    fn fold(&mut self, event: &RecordedEvent) -> ledger::Result<()> {
        let Some(key) = P::key(event) else {
            return Ok(());
        };
        // One lookup by the borrowed key: all but a contract's first event in a page find their
        // state without allocating or looking up twice.
        if let Some(state) = self.page.get_mut(key) {
            P::apply(state, event);
        } else {
            let mut state = match self.store.get(key.as_bytes())? {
                Some(bytes) => serde_json::from_slice(&bytes)
                    .unwrap_or_else(|e| panic!("projection {} entry {key}: {e}", P::NAME)),
                None => P::State::default(),
            };
            P::apply(&mut state, event);
            self.page.insert(key.to_owned(), state);
        }
        Ok(())
    }

    fn commit(&mut self, checkpoint: Checkpoint) -> ledger::Result<()> {
        let entries = std::mem::take(&mut self.page)
            .into_iter()
            .map(|(key, state)| {
                (
                    key.into_bytes(),
                    serde_json::to_vec(&state).expect("states serialize"),
                )
            })
            .collect();
        self.store.commit(entries, checkpoint)
    }
}

/// Folds every event past the checkpoint into `store`. `progress` hears the position after each
/// page. Returns the new checkpoint.
///
/// # Errors
/// When the log or the store cannot be read or written.
pub fn catch_up<P: Projection>(
    ledger: &Ledger,
    store: &ProjectionStore,
    progress: &mut dyn FnMut(u64),
) -> ledger::Result<Checkpoint> {
    let from = start_of(store)?;
    fold_log(ledger, from, &mut [&mut Paged::<P>::new(store)], progress)
}

/// Clears the projection and folds the whole log again.
///
/// # Errors
/// When the log or the store cannot be read or written.
pub fn rebuild<P: Projection>(
    ledger: &Ledger,
    store: &ProjectionStore,
    progress: &mut dyn FnMut(u64),
) -> ledger::Result<Checkpoint> {
    store.clear()?;
    catch_up::<P>(ledger, store, progress)
}

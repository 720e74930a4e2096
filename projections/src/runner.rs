//! Runs a projection over the log: from its checkpoint to the head, a page at a time, writing
//! the changed entries and the new checkpoint in one batch per page. Memory holds one page's
//! changed entries: it grows with the contracts a page touches, never with the log.

use std::collections::HashMap;

use ledger::{Checkpoint, Ledger, ProjectionStore, RecordedEvent};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Events folded between two commits of a projection.
pub const PROJECTION_PAGE_EVENTS_MAX: usize = 100_000;

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
    let mut checkpoint = store.checkpoint()?.unwrap_or(Checkpoint {
        position: 0,
        hash: ledger::GENESIS_HASH,
    });
    let mut page: HashMap<String, P::State> = HashMap::new();
    let mut in_page = 0usize;
    for event in ledger.scan(checkpoint.position + 1) {
        let event = event?;
        assert_eq!(event.position, checkpoint.position + 1, "the log has a gap");
        assert_eq!(
            event.prev_hash, checkpoint.hash,
            "the chain breaks at {}",
            event.position
        );
        if let Some(key) = P::key(&event) {
            // One lookup by the borrowed key: all but a contract's first event in a page find
            // their state without allocating or looking up twice.
            if let Some(state) = page.get_mut(key) {
                P::apply(state, &event);
            } else {
                let mut state = match store.get(key.as_bytes())? {
                    Some(bytes) => serde_json::from_slice(&bytes)
                        .unwrap_or_else(|e| panic!("projection {} entry {key}: {e}", P::NAME)),
                    None => P::State::default(),
                };
                P::apply(&mut state, &event);
                page.insert(key.to_owned(), state);
            }
        }
        checkpoint = Checkpoint {
            position: event.position,
            hash: event.hash,
        };
        in_page += 1;
        if in_page == PROJECTION_PAGE_EVENTS_MAX {
            flush::<P>(store, &mut page, checkpoint)?;
            in_page = 0;
            progress(checkpoint.position);
        }
    }
    flush::<P>(store, &mut page, checkpoint)?;
    progress(checkpoint.position);
    Ok(checkpoint)
}

fn flush<P: Projection>(
    store: &ProjectionStore,
    page: &mut HashMap<String, P::State>,
    checkpoint: Checkpoint,
) -> ledger::Result<()> {
    let entries = std::mem::take(page)
        .into_iter()
        .map(|(key, state)| {
            (
                key.into_bytes(),
                serde_json::to_vec(&state).expect("states serialize"),
            )
        })
        .collect();
    store.commit(entries, checkpoint)
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

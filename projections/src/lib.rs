//! Read models folded from the log: per-contract balances with money by lot (R12, R13),
//! billable shortfalls (R6, R9), and audit statements. A persisted projection keeps its state
//! and its checkpoint (position and chain hash) in one fjall batch and resumes from the
//! checkpoint; `rebuild` folds it again from position 0 and must give the same bytes.
//!
//! Not here: any rule. Projections only add up the movements and billables that events
//! recorded when `commands` decided them.

pub mod audit;
pub mod balances;
pub mod disputes;
pub mod limits;
pub mod notices;
pub mod query;
pub mod runner;
pub mod shortfalls;
pub mod time;
pub mod timeline;

pub use runner::{Fold, Projection, catch_up, fold_log, rebuild};

/// Every persisted projection.
pub const PERSISTED: [&str; 4] = [
    balances::Balances::NAME,
    shortfalls::Shortfalls::NAME,
    notices::Notices::NAME,
    timeline::NAME,
];

/// Clears every persisted projection and folds them all again from position 0 in one scan of
/// the log. `progress` hears the position after each page. Returns the checkpoint they were all
/// built to.
///
/// # Errors
/// When the log or a store cannot be read or written.
pub fn rebuild_all(
    ledger: &ledger::Ledger,
    progress: &mut dyn FnMut(u64),
) -> ledger::Result<ledger::Checkpoint> {
    let stores = PERSISTED
        .iter()
        .map(|name| ledger.projection_store(name))
        .collect::<ledger::Result<Vec<_>>>()?;
    for store in &stores {
        store.clear()?;
    }
    let [balances, shortfalls, notices, timeline] = &stores[..] else {
        unreachable!("one store per persisted projection");
    };
    let genesis = ledger::Checkpoint {
        position: 0,
        hash: ledger::GENESIS_HASH,
    };
    runner::fold_log(
        ledger,
        genesis,
        &mut [
            &mut runner::Paged::<balances::Balances>::new(balances),
            &mut runner::Paged::<shortfalls::Shortfalls>::new(shortfalls),
            &mut runner::Paged::<notices::Notices>::new(notices),
            &mut timeline::TimelineFold::new(timeline),
        ],
        progress,
    )
}

pub use schemas::contract_of;

/// Decodes a stored payload. A payload that does not parse is a broken invariant: it was
/// validated before it was written.
pub fn decode(event: &ledger::RecordedEvent) -> schemas::Event {
    schemas::Event::from_payload(&event.payload)
        .unwrap_or_else(|e| panic!("event at position {} does not parse: {e}", event.position))
}

/// Parses only the movements and billables of a stored payload (the fast path of folds that add
/// up balances). A payload that does not parse is a broken invariant.
pub fn decode_effects(event: &ledger::RecordedEvent) -> schemas::Effects {
    let mut effects = schemas::Effects::default();
    decode_effects_into(event, &mut effects);
    effects
}

/// Runs `f` on the effects of `event`, read into one buffer per thread: a fold that reads every
/// payload of the log allocates nothing per event for them, and the projections that
/// `rebuild_all` feeds the same event one after another read its payload once (the buffer
/// remembers the hash of the event it holds, and a hash names one envelope).
pub fn with_effects<R>(event: &ledger::RecordedEvent, f: impl FnOnce(&schemas::Effects) -> R) -> R {
    thread_local! {
        static EFFECTS: std::cell::RefCell<(Option<ledger::Hash>, schemas::Effects)> =
            std::cell::RefCell::default();
    }
    EFFECTS.with_borrow_mut(|(held, effects)| {
        if *held != Some(event.hash) {
            *held = None;
            decode_effects_into(event, effects);
            *held = Some(event.hash);
        }
        f(effects)
    })
}

/// `decode_effects` into a buffer that keeps its allocations from one event to the next.
pub fn decode_effects_into(event: &ledger::RecordedEvent, effects: &mut schemas::Effects) {
    effects
        .read_payload(&event.payload)
        .unwrap_or_else(|e| panic!("event at position {} does not parse: {e}", event.position));
}

/// Every event of one contract's stream, in order (empty for an unknown contract).
///
/// # Errors
/// When the log cannot be read.
pub fn contract_events(
    ledger: &ledger::Ledger,
    contract_id: &str,
) -> ledger::Result<Vec<ledger::RecordedEvent>> {
    let stream = schemas::contract_stream(contract_id);
    let mut events = Vec::new();
    loop {
        let page = ledger.read_stream(
            &stream,
            events.len() as u64 + 1,
            ledger::limits::READ_PAGE_MAX,
        )?;
        if page.is_empty() {
            return Ok(events);
        }
        events.extend(page);
    }
}

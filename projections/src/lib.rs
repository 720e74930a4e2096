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
pub mod notices;
pub mod runner;
pub mod shortfalls;
pub mod timeline;

pub use runner::{Projection, catch_up, rebuild};

/// Every persisted projection, in the order `rebuild_all` rebuilds them.
pub const PERSISTED: [&str; 4] = [
    balances::Balances::NAME,
    shortfalls::Shortfalls::NAME,
    notices::Notices::NAME,
    timeline::NAME,
];

/// Rebuilds every persisted projection from position 0, one after another (each is one scan of
/// the log). `progress` hears the projection's name and the position reached. Returns the
/// checkpoint they were all built to.
///
/// # Errors
/// When the log or a store cannot be read or written.
pub fn rebuild_all(
    ledger: &ledger::Ledger,
    progress: &mut dyn FnMut(&'static str, u64),
) -> ledger::Result<ledger::Checkpoint> {
    let mut checkpoint: Option<ledger::Checkpoint> = None;
    for name in PERSISTED {
        let store = ledger.projection_store(name)?;
        let mut report = |position: u64| progress(name, position);
        let built = match name {
            balances::Balances::NAME => rebuild::<balances::Balances>(ledger, &store, &mut report)?,
            shortfalls::Shortfalls::NAME => {
                rebuild::<shortfalls::Shortfalls>(ledger, &store, &mut report)?
            }
            notices::Notices::NAME => rebuild::<notices::Notices>(ledger, &store, &mut report)?,
            _ => {
                store.clear()?;
                let built = timeline::catch_up(ledger, &store)?;
                report(built.position);
                built
            }
        };
        // Each rebuild reads to the head; a concurrent writer could move it, so keep the least.
        checkpoint = Some(match checkpoint {
            Some(done) if built.position > done.position => done,
            _ => built,
        });
    }
    Ok(checkpoint.expect("at least one projection"))
}

/// The contract a stream belongs to, if it is a contract's stream.
pub fn contract_of(stream: &str) -> Option<&str> {
    stream.strip_prefix("contract-")
}

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
/// payload of the log allocates nothing per event for them.
pub fn with_effects<R>(event: &ledger::RecordedEvent, f: impl FnOnce(&schemas::Effects) -> R) -> R {
    thread_local! {
        static EFFECTS: std::cell::RefCell<schemas::Effects> = std::cell::RefCell::default();
    }
    EFFECTS.with_borrow_mut(|effects| {
        decode_effects_into(event, effects);
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
    let stream = format!("contract-{contract_id}");
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

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
    schemas::Effects::from_payload(&event.payload)
        .unwrap_or_else(|e| panic!("event at position {} does not parse: {e}", event.position))
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

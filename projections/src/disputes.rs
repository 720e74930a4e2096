//! For whoever settles a billing dispute: `replay` walks a contract's history event by event with
//! the balances after each, as the ledger recorded it; `diff` says which events changed which
//! numbers between two knowledge times ("what did we know on the 31st, and what is true now?").
//! Both read the contract's stream; both are sums of recorded movements and billables.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ledger::{Ledger, RecordedEvent};
use rust_decimal::Decimal;
use schemas::Bucket;

use crate::{contract_events, decode};

/// Where a replay stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Everything.
    End,
    /// Events recorded at or before this time.
    RecordedAt(DateTime<Utc>),
    /// Events at or before this global position.
    Position(u64),
}

pub use schemas::reply::{Change, Diff, ReplayStep};

fn zero_buckets() -> BTreeMap<String, Decimal> {
    Bucket::ALL
        .iter()
        .map(|b| (b.name().to_owned(), Decimal::ZERO))
        .collect()
}

/// Net bucket changes and billables of one event.
fn effects(
    event: &RecordedEvent,
) -> (
    BTreeMap<String, Decimal>,
    BTreeMap<String, Decimal>,
    schemas::Event,
) {
    let decoded = decode(event);
    let mut delta = BTreeMap::new();
    for movement in decoded.movements() {
        *delta.entry(movement.bucket.name().to_owned()).or_default() += movement.balance_delta();
    }
    let mut billables = BTreeMap::new();
    for billable in decoded.billables() {
        let kind = serde_json::to_value(billable.kind).expect("kinds serialize");
        *billables
            .entry(kind.as_str().unwrap_or_default().to_owned())
            .or_default() += billable.amount;
    }
    (delta, billables, decoded)
}

fn add(into: &mut BTreeMap<String, Decimal>, from: &BTreeMap<String, Decimal>) {
    for (key, value) in from {
        *into.entry(key.clone()).or_default() += value;
    }
}

/// The history of a contract, step by step, or `None` for an unknown contract.
///
/// # Errors
/// When the log cannot be read.
pub fn replay(
    ledger: &Ledger,
    contract_id: &str,
    until: Until,
) -> ledger::Result<Option<Vec<ReplayStep>>> {
    let events = contract_events(ledger, contract_id)?;
    if events.is_empty() {
        return Ok(None);
    }
    let mut balances = zero_buckets();
    let mut billables = BTreeMap::new();
    let mut steps = Vec::new();
    for event in events {
        let included = match until {
            Until::End => true,
            Until::RecordedAt(at) => event.recorded_at <= at,
            Until::Position(position) => event.position <= position,
        };
        if !included {
            break;
        }
        let (delta, added, decoded) = effects(&event);
        add(&mut balances, &delta);
        add(&mut billables, &added);
        steps.push(ReplayStep {
            position: event.position,
            version: event.version,
            event_id: event.event_id.to_string(),
            event_type: event.event_type.clone(),
            recorded_at: event.recorded_at,
            effective_at: event.effective_at,
            delta,
            balances: balances.clone(),
            billables: billables.clone(),
            event: serde_json::to_value(&decoded).expect("events serialize"),
        });
    }
    Ok(Some(steps))
}

/// Which events changed which numbers between two knowledge times, or `None` for an unknown
/// contract. The times may come in either order.
///
/// # Errors
/// When the log cannot be read.
pub fn diff(
    ledger: &Ledger,
    contract_id: &str,
    first: DateTime<Utc>,
    second: DateTime<Utc>,
) -> ledger::Result<Option<Diff>> {
    let (before, after) = if first <= second {
        (first, second)
    } else {
        (second, first)
    };
    let events = contract_events(ledger, contract_id)?;
    if events.is_empty() {
        return Ok(None);
    }
    let mut diff = Diff {
        contract_id: contract_id.to_owned(),
        known_at_before: before,
        known_at_after: after,
        balances_before: zero_buckets(),
        balances_after: zero_buckets(),
        billables_before: BTreeMap::new(),
        billables_after: BTreeMap::new(),
        changes: Vec::new(),
    };
    let known: BTreeMap<String, (String, u64)> = events
        .iter()
        .map(|e| (e.event_id.to_string(), (e.event_type.clone(), e.position)))
        .collect();
    for event in events {
        if event.recorded_at > after {
            break;
        }
        let (delta, billables, decoded) = effects(&event);
        add(&mut diff.balances_after, &delta);
        add(&mut diff.billables_after, &billables);
        if event.recorded_at <= before {
            add(&mut diff.balances_before, &delta);
            add(&mut diff.billables_before, &billables);
        } else {
            diff.changes.push(Change {
                position: event.position,
                event_id: event.event_id.to_string(),
                event_type: event.event_type.clone(),
                recorded_at: event.recorded_at,
                effective_at: event.effective_at,
                delta,
                billables,
                delta_value: decoded
                    .movements()
                    .iter()
                    .fold(BTreeMap::new(), |mut money, m| {
                        let value = if m.kind.adds() { m.value } else { -m.value };
                        *money.entry(m.bucket.name().to_owned()).or_default() += value;
                        money
                    }),
                reference: event.metadata.reference.clone(),
                reason: event.metadata.reason.clone(),
                undoes: match &decoded {
                    schemas::Event::EventReversed(r) => Some(crate::audit::Undone {
                        event_id: r.reversed_event_id.clone(),
                        event_type: r.reversed_type.clone(),
                        position: known.get(&r.reversed_event_id).map(|(_, p)| *p),
                    }),
                    _ => None,
                },
            });
        }
    }
    Ok(Some(diff))
}

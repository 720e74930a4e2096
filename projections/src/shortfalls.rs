//! Billable amounts (R6, R9): SAB shortfalls, their adjustments, uncovered reschedule fees, and
//! their reversals, each with its derivation and the event it came from.

use ledger::RecordedEvent;
use rust_decimal::Decimal;
use schemas::Event;
use serde::{Deserialize, Serialize};

use crate::runner::Projection;
use crate::{contract_of, decode, with_effects};

pub use schemas::reply::BillableEntry;

/// One contract's billables, in log order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractShortfalls {
    /// In log order.
    pub entries: Vec<BillableEntry>,
}

/// The `shortfalls` projection.
pub struct Shortfalls;

impl Projection for Shortfalls {
    const NAME: &'static str = "shortfalls";
    type State = ContractShortfalls;

    fn key(event: &RecordedEvent) -> Option<&str> {
        contract_of(&event.stream)
    }

    fn apply(state: &mut ContractShortfalls, event: &RecordedEvent) {
        // Most events bill nothing: a look at their billables spares the full decode.
        if with_effects(event, |effects| effects.billables.is_empty()) {
            return;
        }
        let decoded = decode(event);
        let derivation = match &decoded {
            Event::SabShortfallAssessed(a) => serde_json::json!({
                "support_year": a.support_year,
                "year_start": a.year_start,
                "committed_incidents": a.committed_incidents,
                "committed_value_per_incident": a.committed_value_per_incident,
                "committed_amount": a.committed_amount,
                "converted_amount": a.converted_amount,
                "rule": "R9: max(0, committed incidents × value − value converted in the year)",
            }),
            Event::SabShortfallAdjusted(a) => serde_json::json!({
                "support_year": a.support_year,
                "converted_amount": a.converted_amount,
                "rule": "R9: a late conversion lowers the billable by its value, never below zero in total",
            }),
            Event::BookingRescheduled(r) => serde_json::json!({
                "booking_id": r.booking_id,
                "fee_rate": r.fee_rate,
                "fee_credits": r.fee_credits,
                "uncovered_credits": r.uncovered_credits,
                "rule": "R6: uncovered credits × the unit price of the credits' newest lot",
            }),
            Event::EventReversed(r) => serde_json::json!({
                "reversed_event_id": r.reversed_event_id,
                "reason": r.reason,
                "rule": "R11: a reversal undoes the billables of the reversed event",
            }),
            _ => serde_json::Value::Null,
        };
        let contract_id = contract_of(&event.stream).unwrap_or_default().to_owned();
        for billable in decoded.billables() {
            let kind = serde_json::to_value(billable.kind).expect("kinds serialize");
            state.entries.push(BillableEntry {
                contract_id: contract_id.clone(),
                kind: kind.as_str().unwrap_or_default().to_owned(),
                period: billable.period.clone(),
                amount: billable.amount,
                currency: billable.currency.clone(),
                event_id: event.event_id.to_string(),
                position: event.position,
                effective_at: event.effective_at,
                derivation: derivation.clone(),
            });
        }
    }
}

/// The sum of a list of entries (one currency per contract).
pub fn total(entries: &[BillableEntry]) -> Decimal {
    entries.iter().map(|e| e.amount).sum()
}

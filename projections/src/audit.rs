//! The audit statement of one contract: opening balances, every movement in log order with its
//! times, type, actor, reference, reason, ids, delta and running balance per bucket, the lots
//! drawn with their money value; totals by kind; closing balances; and a roll-forward line per
//! bucket proving opening + movements = closing. Built from the contract's stream on demand and
//! stamped with the log position and chain hash it was built to, so it can be reproduced.
//!
//! The period (`from`, `to`) is by effective time and half-open, `from ≤ t < to`: movements
//! effective before `from` make up the opening balances; movements effective at or after `to`
//! are left out.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ledger::Ledger;
use rust_decimal::Decimal;
use schemas::{Bucket, Event, KindTotals, Movement};
use serde::{Deserialize, Serialize};

use crate::decode;

/// One event's line in the statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementLine {
    /// Global position.
    pub position: u64,
    /// The log's event id.
    pub event_id: String,
    /// Event type.
    pub event_type: String,
    /// When the ledger recorded it.
    pub recorded_at: DateTime<Utc>,
    /// When it happened.
    pub effective_at: DateTime<Utc>,
    /// Who asked.
    pub actor: Option<String>,
    /// External reference.
    pub reference: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// Net change per bucket (only buckets it moved).
    pub delta: BTreeMap<String, Decimal>,
    /// Balance per bucket after this line.
    pub running: BTreeMap<String, Decimal>,
    /// The lots it drew from or gave back to, with money value.
    pub lots: Vec<Movement>,
    /// Billable money it recorded, by kind.
    pub billables: BTreeMap<String, Decimal>,
}

/// Opening + movements = closing, for one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollForward {
    /// The bucket.
    pub bucket: String,
    /// Balance before the period.
    pub opening: Decimal,
    /// Net movement in the period.
    pub movements: Decimal,
    /// Balance at the end of the period.
    pub closing: Decimal,
    /// `opening + movements == closing`.
    pub reconciles: bool,
}

/// A contract's statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    /// The contract.
    pub contract_id: String,
    /// Customer.
    pub customer: String,
    /// ISO 4217.
    pub currency: String,
    /// Term start.
    pub term_start: String,
    /// Term end.
    pub term_end: String,
    /// The log position the statement was built to.
    pub built_to_position: u64,
    /// That event's chain hash (hex): reproduce the statement from a log with this head.
    pub built_to_hash: String,
    /// Period start (effective time), if any.
    pub from: Option<DateTime<Utc>>,
    /// Period end (effective time, excluded), if any.
    pub to: Option<DateTime<Utc>>,
    /// Balances before the period.
    pub opening: BTreeMap<String, Decimal>,
    /// The period's lines, in log order.
    pub lines: Vec<StatementLine>,
    /// Units by kind, per bucket, in the period.
    pub totals: BTreeMap<String, KindTotals>,
    /// Money by kind, per bucket, in the period.
    pub totals_value: BTreeMap<String, KindTotals>,
    /// Billable money by kind in the period.
    pub billables: BTreeMap<String, Decimal>,
    /// Balances at the end of the period.
    pub closing: BTreeMap<String, Decimal>,
    /// One line per bucket.
    pub roll_forward: Vec<RollForward>,
}

/// Why a statement could not be built.
#[derive(Debug)]
pub enum StatementError {
    /// No such contract.
    UnknownContract(String),
    /// `from` after `to`.
    BadPeriod,
    /// The log failed.
    Log(ledger::Error),
}

impl std::fmt::Display for StatementError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatementError::UnknownContract(id) => write!(f, "no contract {id}"),
            StatementError::BadPeriod => {
                write!(f, "--from is after --to; the period must run forward")
            }
            StatementError::Log(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for StatementError {}

fn buckets() -> BTreeMap<String, Decimal> {
    Bucket::ALL
        .iter()
        .map(|b| (b.name().to_owned(), Decimal::ZERO))
        .collect()
}

/// Builds the statement of `contract_id` for the period.
///
/// # Errors
/// [`StatementError`].
pub fn statement(
    ledger: &Ledger,
    contract_id: &str,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<Statement, StatementError> {
    if let (Some(from), Some(to)) = (from, to)
        && from > to
    {
        return Err(StatementError::BadPeriod);
    }
    let (head_position, head_hash) = ledger.head().map_err(StatementError::Log)?;
    let mut events = crate::contract_events(ledger, contract_id).map_err(StatementError::Log)?;
    // Only what the head we stamp on the statement covers.
    events.retain(|e| e.position <= head_position);
    let Some(first) = events.first() else {
        return Err(StatementError::UnknownContract(contract_id.to_owned()));
    };
    let Event::ContractOpened(opened) = decode(first) else {
        return Err(StatementError::UnknownContract(contract_id.to_owned()));
    };
    let mut opening = buckets();
    let mut running = buckets();
    let mut totals: BTreeMap<String, KindTotals> = Bucket::ALL
        .iter()
        .map(|b| (b.name().to_owned(), KindTotals::default()))
        .collect();
    let mut totals_value = totals.clone();
    let mut billables_total: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut lines = Vec::new();
    for event in &events {
        let effective_at = event.effective_at.unwrap_or(event.recorded_at);
        // Periods are half-open, `from ≤ t < to` (DOMAIN, Time): an event at exactly `to`
        // belongs to the next period, so one period's closing is the next one's opening.
        if to.is_some_and(|to| effective_at >= to) {
            continue;
        }
        let decoded = decode(event);
        let before_period = from.is_some_and(|from| effective_at < from);
        let mut delta: BTreeMap<String, Decimal> = BTreeMap::new();
        for movement in decoded.movements() {
            let bucket = movement.bucket.name().to_owned();
            *delta.entry(bucket.clone()).or_default() += movement.balance_delta();
            *running.entry(bucket.clone()).or_default() += movement.balance_delta();
            if before_period {
                *opening.entry(bucket).or_default() += movement.balance_delta();
            } else {
                totals
                    .entry(bucket.clone())
                    .or_default()
                    .add(movement.kind, movement.quantity);
                totals_value
                    .entry(bucket)
                    .or_default()
                    .add(movement.kind, movement.value);
            }
        }
        if before_period {
            continue;
        }
        let mut billables = BTreeMap::new();
        for billable in decoded.billables() {
            let kind = serde_json::to_value(billable.kind).expect("kinds serialize");
            let kind = kind.as_str().unwrap_or_default().to_owned();
            *billables.entry(kind.clone()).or_default() += billable.amount;
            *billables_total.entry(kind).or_default() += billable.amount;
        }
        lines.push(StatementLine {
            position: event.position,
            event_id: event.event_id.to_string(),
            event_type: event.event_type.clone(),
            recorded_at: event.recorded_at,
            effective_at,
            actor: event.metadata.actor.clone(),
            reference: event.metadata.reference.clone(),
            reason: event.metadata.reason.clone(),
            delta,
            running: running.clone(),
            lots: decoded.movements().to_vec(),
            billables,
        });
    }
    let closing = running;
    let roll_forward = Bucket::ALL
        .iter()
        .map(|bucket| {
            let name = bucket.name().to_owned();
            let movements = totals[&name].net();
            RollForward {
                opening: opening[&name],
                movements,
                closing: closing[&name],
                reconciles: opening[&name] + movements == closing[&name],
                bucket: name,
            }
        })
        .collect();
    Ok(Statement {
        contract_id: contract_id.to_owned(),
        customer: opened.customer,
        currency: opened.currency,
        term_start: opened.term_start.to_string(),
        term_end: opened.term_end.to_string(),
        built_to_position: head_position,
        built_to_hash: ledger::hex(&head_hash),
        from,
        to,
        opening,
        lines,
        totals,
        totals_value,
        billables: billables_total,
        closing,
        roll_forward,
    })
}

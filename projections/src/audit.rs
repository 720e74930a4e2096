//! The audit statement of one contract: opening balances, every movement in effective-time order
//! (then position) with its recorded and effective times, type, actor, reference, reason, ids,
//! delta and running balance per bucket, the lots drawn with their money value, SAB conversions
//! with their money, and what a reversal undid; totals by kind; closing balances; a quantity and
//! a money roll-forward per bucket proving opening + movements = closing; and per support year
//! the SAB commitment, conversions, shortfall, adjustments and billable total with its
//! derivation. Built from the contract's stream on demand and stamped with the log position and
//! chain hash it was built to, so it can be reproduced; `known_at` rebuilds it from only what was
//! recorded by then, stamped with the head as it stood then, exactly as it was issued.
//!
//! The period (`from`, `to`) is by effective time and half-open, `from ≤ t < to`: movements
//! effective before `from` make up the opening balances; movements effective at or after `to`
//! are left out. Times are in the contract's zone (named in `time_zone`); figures are as shown
//! (`schemas::display`: money in the currency's minor units, hours to 2 decimals, credits
//! whole), summed exactly before each is rounded once.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use ledger::Ledger;
use rust_decimal::Decimal;
use schemas::{Bucket, Event, KindTotals, Movement, display};
use serde::Serialize;

use crate::decode;
use crate::time::{head_at, local};

pub use schemas::reply::{RollForward, SabLine, SabYear, Statement, StatementLine, Undone};

/// Which part of a contract's history a statement covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Period {
    /// Effective at or after.
    pub from: Option<DateTime<Utc>>,
    /// Effective before.
    pub to: Option<DateTime<Utc>>,
    /// Recorded at or before (the statement as issued then).
    pub known_at: Option<DateTime<Utc>>,
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

/// A movement's effect on its bucket's money value (the sign of its effect on the balance).
fn value_delta(movement: &Movement) -> Decimal {
    if movement.kind.adds() {
        movement.value
    } else {
        -movement.value
    }
}

fn text_of<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Builds the statement of `contract_id` for `period`.
///
/// # Errors
/// [`StatementError`].
pub fn statement(
    ledger: &Ledger,
    contract_id: &str,
    period: Period,
) -> Result<Statement, StatementError> {
    let Period { from, to, known_at } = period;
    if let (Some(from), Some(to)) = (from, to)
        && from > to
    {
        return Err(StatementError::BadPeriod);
    }
    let (head_position, head_hash) = match known_at {
        Some(known_at) => head_at(ledger, known_at),
        None => ledger.head(),
    }
    .map_err(StatementError::Log)?;
    let events = crate::contract_events(ledger, contract_id).map_err(StatementError::Log)?;
    statement_of_events(contract_id, events, period, (head_position, head_hash))
}

/// Builds the statement of `contract_id` for `period` from the contract's events, stamped with
/// `head` (the log position and chain hash it is built to; events past it are left out): what
/// `statement` does with the events it read, and what a verifier does with the events a bundle
/// carries.
///
/// # Errors
/// [`StatementError`] (never `Log`).
pub fn statement_of_events(
    contract_id: &str,
    mut events: Vec<ledger::RecordedEvent>,
    period: Period,
    head: (u64, ledger::Hash),
) -> Result<Statement, StatementError> {
    let Period { from, to, known_at } = period;
    if let (Some(from), Some(to)) = (from, to)
        && from > to
    {
        return Err(StatementError::BadPeriod);
    }
    let (head_position, head_hash) = head;
    // Only what the head we stamp on the statement covers.
    events.retain(|e| e.position <= head_position);
    let Some(first) = events.first() else {
        return Err(StatementError::UnknownContract(contract_id.to_owned()));
    };
    let Event::ContractOpened(opened) = decode(first) else {
        return Err(StatementError::UnknownContract(contract_id.to_owned()));
    };
    let zone: Tz = opened.time_zone.parse().unwrap_or(Tz::UTC);
    let currency = opened.currency.clone();
    let effective = |e: &ledger::RecordedEvent| e.effective_at.unwrap_or(e.recorded_at);
    let sab_years = sab_years(&opened, &events);
    // The statement's order: effective time, then position (DOMAIN, Time).
    events.sort_by_key(|e| (effective(e), e.position));
    let type_at: BTreeMap<String, (String, u64)> = events
        .iter()
        .map(|e| (e.event_id.to_string(), (e.event_type.clone(), e.position)))
        .collect();

    let mut opening = buckets();
    let mut opening_value = buckets();
    let mut running = buckets();
    let mut running_value = buckets();
    let mut totals: BTreeMap<String, KindTotals> = Bucket::ALL
        .iter()
        .map(|b| (b.name().to_owned(), KindTotals::default()))
        .collect();
    let mut totals_value = totals.clone();
    let mut billables_total: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut lines = Vec::new();
    for event in &events {
        let effective_at = effective(event);
        // Periods are half-open, `from ≤ t < to` (DOMAIN, Time): an event at exactly `to`
        // belongs to the next period, so one period's closing is the next one's opening.
        if to.is_some_and(|to| effective_at >= to) {
            break;
        }
        let decoded = decode(event);
        let before_period = from.is_some_and(|from| effective_at < from);
        let mut delta: BTreeMap<String, Decimal> = BTreeMap::new();
        let mut delta_value: BTreeMap<String, Decimal> = BTreeMap::new();
        for movement in decoded.movements() {
            let bucket = movement.bucket.name().to_owned();
            let units = movement.balance_delta();
            let money = value_delta(movement);
            *delta.entry(bucket.clone()).or_default() += units;
            *delta_value.entry(bucket.clone()).or_default() += money;
            *running.entry(bucket.clone()).or_default() += units;
            *running_value.entry(bucket.clone()).or_default() += money;
            if before_period {
                *opening.entry(bucket.clone()).or_default() += units;
                *opening_value.entry(bucket).or_default() += money;
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
            let kind = text_of(&billable.kind);
            *billables.entry(kind.clone()).or_default() += billable.amount;
            *billables_total.entry(kind).or_default() += billable.amount;
        }
        let (sab, undoes) = match &decoded {
            Event::SabConverted(c) => (
                Some(SabLine {
                    incidents: i64::from(c.incidents),
                    value_per_incident: c.value_per_incident,
                    amount: c.amount,
                    applied_to: text_of(&c.applied_to),
                    support_year: c.support_year,
                }),
                None,
            ),
            Event::EventReversed(r) => {
                let undone = type_at.get(&r.reversed_event_id);
                let sab = events
                    .iter()
                    .find(|e| e.event_id.to_string() == r.reversed_event_id)
                    .and_then(|e| match decode(e) {
                        Event::SabConverted(c) => Some(SabLine {
                            incidents: -i64::from(c.incidents),
                            value_per_incident: c.value_per_incident,
                            amount: -c.amount,
                            applied_to: text_of(&c.applied_to),
                            support_year: c.support_year,
                        }),
                        _ => None,
                    });
                (
                    sab,
                    Some(Undone {
                        event_id: r.reversed_event_id.clone(),
                        event_type: r.reversed_type.clone(),
                        position: undone.map(|(_, position)| *position),
                    }),
                )
            }
            _ => (None, None),
        };
        lines.push(StatementLine {
            position: event.position,
            event_id: event.event_id.to_string(),
            event_type: event.event_type.clone(),
            recorded_at: local(event.recorded_at, zone),
            effective_at: local(effective_at, zone),
            actor: event.metadata.actor.clone(),
            reference: event.metadata.reference.clone(),
            reason: event.metadata.reason.clone(),
            delta,
            delta_value,
            running: running.clone(),
            lots: decoded.movements().to_vec(),
            billables,
            sab,
            undoes,
        });
    }
    let closing = running;
    let closing_value = running_value;
    let roll = |opening: &BTreeMap<String, Decimal>,
                closing: &BTreeMap<String, Decimal>,
                totals: &BTreeMap<String, KindTotals>| {
        Bucket::ALL
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
            .collect::<Vec<_>>()
    };
    let roll_forward = roll(&opening, &closing, &totals);
    let money_roll_forward = roll(&opening_value, &closing_value, &totals_value);
    let statement = Statement {
        contract_id: contract_id.to_owned(),
        customer: opened.customer,
        currency: opened.currency,
        time_zone: zone.name().to_owned(),
        term_start: opened.term_start.to_string(),
        term_end: opened.term_end.to_string(),
        built_to_position: head_position,
        built_to_hash: ledger::hex(&head_hash),
        known_at: known_at.map(|t| local(t, zone)),
        from: from.map(|t| local(t, zone)),
        to: to.map(|t| local(t, zone)),
        opening,
        lines,
        totals,
        totals_value,
        billables: billables_total,
        closing,
        roll_forward,
        money_roll_forward,
        sab_years,
    };
    Ok(shown(statement, &currency))
}

/// Every committed support year's SAB figures, over `events` (the contract's, in log order).
fn sab_years(opened: &schemas::ContractOpened, events: &[ledger::RecordedEvent]) -> Vec<SabYear> {
    let mut years: BTreeMap<u32, SabYear> = opened
        .sab_commitments
        .iter()
        .map(|c| {
            let committed = Decimal::from(c.incidents) * c.value_per_incident;
            (
                c.year,
                SabYear {
                    support_year: c.year,
                    committed_incidents: c.incidents,
                    value_per_incident: c.value_per_incident,
                    committed,
                    converted: Decimal::ZERO,
                    shortfall: None,
                    adjustments: Decimal::ZERO,
                    billable: Decimal::ZERO,
                    derivation: String::new(),
                },
            )
        })
        .collect();
    let mut conversions: BTreeMap<String, (u32, Decimal)> = BTreeMap::new();
    for event in events {
        match decode(event) {
            Event::SabConverted(c) => {
                conversions.insert(event.event_id.to_string(), (c.support_year, c.amount));
                if let Some(year) = years.get_mut(&c.support_year) {
                    year.converted += c.amount;
                }
            }
            Event::EventReversed(r) => {
                if let Some((support_year, amount)) = conversions.get(&r.reversed_event_id)
                    && let Some(year) = years.get_mut(support_year)
                {
                    year.converted -= amount;
                }
                // A reversed assessment or adjustment takes its billable back.
                for billable in &r.billables {
                    if let Some(year) =
                        year_of_period(&billable.period).and_then(|y| years.get_mut(&y))
                    {
                        match billable.kind {
                            schemas::BillableKind::SabShortfall => {
                                year.shortfall =
                                    Some(year.shortfall.unwrap_or_default() + billable.amount);
                            }
                            schemas::BillableKind::SabShortfallAdjustment => {
                                year.adjustments += billable.amount;
                            }
                            schemas::BillableKind::UncoveredCancellationFee => {}
                        }
                    }
                }
            }
            Event::SabShortfallAssessed(a) => {
                if let Some(year) = years.get_mut(&a.support_year) {
                    year.shortfall = Some(year.shortfall.unwrap_or_default() + a.shortfall);
                }
            }
            Event::SabShortfallAdjusted(a) => {
                if let Some(year) = years.get_mut(&a.support_year) {
                    year.adjustments += a.billables.iter().map(|b| b.amount).sum::<Decimal>();
                }
            }
            _ => {}
        }
    }
    let currency = opened.currency.as_str();
    years
        .into_values()
        .map(|mut year| {
            let money = |d: Decimal| display::money(d, currency);
            year.derivation = match year.shortfall {
                None => format!(
                    "not assessed yet (30 days into the year): committed {} − converted {}",
                    money(year.committed),
                    money(year.converted)
                ),
                Some(shortfall) => {
                    year.billable = shortfall + year.adjustments;
                    let expected = (year.committed - year.converted).max(Decimal::ZERO);
                    let relation = if year.billable == expected {
                        "="
                    } else {
                        "DOES NOT MATCH R9's"
                    };
                    format!(
                        "shortfall {} + adjustments {} = {} {relation} max(0, committed {} − converted {})",
                        money(shortfall),
                        money(year.adjustments),
                        money(year.billable),
                        money(year.committed),
                        money(year.converted)
                    )
                }
            };
            year
        })
        .collect()
}

/// `year-3` → 3.
fn year_of_period(period: &str) -> Option<u32> {
    period.strip_prefix("year-")?.parse().ok()
}

/// The statement as shown: every figure rounded once, by its unit (`schemas::display`).
fn shown(mut statement: Statement, currency: &str) -> Statement {
    let money = |d: &mut Decimal| *d = display::money(*d, currency);
    let units = |map: &mut BTreeMap<String, Decimal>| {
        for (bucket, value) in map.iter_mut() {
            *value = display::quantity_named(bucket, *value);
        }
    };
    let moneys = |map: &mut BTreeMap<String, Decimal>| {
        for value in map.values_mut() {
            *value = display::money(*value, currency);
        }
    };
    let kinds = |totals: &mut BTreeMap<String, KindTotals>, as_money: bool| {
        for (bucket, t) in totals.iter_mut() {
            for value in [
                &mut t.purchased,
                &mut t.returned,
                &mut t.converted,
                &mut t.consumed,
                &mut t.fees,
                &mut t.forfeited,
            ] {
                *value = if as_money {
                    display::money(*value, currency)
                } else {
                    display::quantity_named(bucket, *value)
                };
            }
        }
    };
    units(&mut statement.opening);
    units(&mut statement.closing);
    moneys(&mut statement.billables);
    kinds(&mut statement.totals, false);
    kinds(&mut statement.totals_value, true);
    for line in &mut statement.lines {
        units(&mut line.delta);
        units(&mut line.running);
        moneys(&mut line.delta_value);
        moneys(&mut line.billables);
        for lot in &mut line.lots {
            lot.quantity = display::quantity(lot.bucket, lot.quantity);
            money(&mut lot.unit_price);
            money(&mut lot.value);
        }
        if let Some(sab) = &mut line.sab {
            money(&mut sab.value_per_incident);
            money(&mut sab.amount);
        }
    }
    for roll in &mut statement.roll_forward {
        for value in [&mut roll.opening, &mut roll.movements, &mut roll.closing] {
            *value = display::quantity_named(&roll.bucket, *value);
        }
    }
    for roll in &mut statement.money_roll_forward {
        for value in [&mut roll.opening, &mut roll.movements, &mut roll.closing] {
            money(value);
        }
    }
    for year in &mut statement.sab_years {
        for value in [
            &mut year.value_per_incident,
            &mut year.committed,
            &mut year.converted,
            &mut year.adjustments,
            &mut year.billable,
        ] {
            money(value);
        }
        if let Some(shortfall) = &mut year.shortfall {
            money(shortfall);
        }
    }
    statement
}

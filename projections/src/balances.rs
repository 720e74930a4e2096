//! Balances per contract and bucket (R12): balance, purchased, returned, converted, consumed,
//! fees and forfeited, and their money value by lot (R13); billable totals by kind. A sum of
//! the movements and billables that events recorded, nothing else.

use std::collections::BTreeMap;

use ledger::RecordedEvent;
use rust_decimal::Decimal;
use schemas::{Event, Movement};

use crate::runner::Projection;
use crate::{contract_of, decode, with_effects};

pub use schemas::reply::{BucketBalance, ContractBalances, LotBalance};

/// Applies one movement to a contract's balances.
pub fn apply_movement(balances: &mut ContractBalances, movement: &Movement) {
    // Look up before inserting: the keys exist for all but a lot's first movement, and a
    // rebuild calls this once per movement.
    let name = movement.bucket.name();
    let bucket = match balances.buckets.get_mut(name) {
        Some(bucket) => bucket,
        None => balances.buckets.entry(name.to_owned()).or_default(),
    };
    let delta = movement.balance_delta();
    bucket.balance += delta;
    bucket.quantity.add(movement.kind, movement.quantity);
    bucket.value.add(movement.kind, movement.value);
    let lot = match bucket.lots.get_mut(&movement.lot) {
        Some(lot) => lot,
        None => bucket.lots.entry(movement.lot.clone()).or_default(),
    };
    lot.unit_price = movement.unit_price;
    lot.remaining += delta;
    lot.quantity.add(movement.kind, movement.quantity);
    lot.value.add(movement.kind, movement.value);
}

/// The net change each bucket's balance takes from `movements` (R12), the one balance fold that
/// every reader of current balances shares: this projection's `balance`, the publisher's
/// `balance_before`/`balance_after`, and `diff`.
pub fn net_changes(movements: &[Movement]) -> BTreeMap<schemas::Bucket, Decimal> {
    let mut changes: BTreeMap<schemas::Bucket, Decimal> = BTreeMap::new();
    for movement in movements {
        *changes.entry(movement.bucket).or_default() += movement.balance_delta();
    }
    changes
}

/// The `balances` projection.
pub struct Balances;

impl Projection for Balances {
    const NAME: &'static str = "balances";
    type State = ContractBalances;

    fn key(event: &RecordedEvent) -> Option<&str> {
        contract_of(&event.stream)
    }

    fn apply(state: &mut ContractBalances, event: &RecordedEvent) {
        if event.event_type == "contract_opened"
            && let Event::ContractOpened(opened) = decode(event)
        {
            state.contract_id = opened.contract_id;
            state.currency = opened.currency;
            for bucket in schemas::Bucket::ALL {
                state.buckets.entry(bucket.name().to_owned()).or_default();
            }
        }
        state.position = event.position;
        with_effects(event, |effects| {
            for movement in &effects.movements {
                apply_movement(state, movement);
            }
            for billable in &effects.billables {
                let kind = serde_json::to_value(billable.kind).expect("kinds serialize");
                *state
                    .billables
                    .entry(kind.as_str().unwrap_or_default().to_owned())
                    .or_default() += billable.amount;
            }
        });
    }
}

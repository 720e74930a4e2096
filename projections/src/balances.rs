//! Balances per contract and bucket (R12): balance, purchased, returned, converted, consumed,
//! fees and forfeited, and their money value by lot (R13); billable totals by kind. A sum of
//! the movements and billables that events recorded, nothing else.

use std::collections::BTreeMap;

use ledger::RecordedEvent;
use rust_decimal::Decimal;
use schemas::{Event, KindTotals, Movement};
use serde::{Deserialize, Serialize};

use crate::runner::Projection;
use crate::{contract_of, decode, with_effects};

/// One lot: its unit price, what is left, and quantities and money by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LotBalance {
    /// Money per unit.
    pub unit_price: Decimal,
    /// Units left.
    pub remaining: Decimal,
    /// Units by kind.
    pub quantity: KindTotals,
    /// Money by kind (quantity × unit price, as recorded).
    pub value: KindTotals,
}

/// One bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BucketBalance {
    /// Units left.
    pub balance: Decimal,
    /// Units by kind.
    pub quantity: KindTotals,
    /// Money by kind.
    pub value: KindTotals,
    /// By lot id.
    pub lots: BTreeMap<String, LotBalance>,
}

/// One contract.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ContractBalances {
    /// The contract.
    pub contract_id: String,
    /// ISO 4217.
    pub currency: String,
    /// The last position folded for this contract.
    pub position: u64,
    /// By bucket name.
    pub buckets: BTreeMap<String, BucketBalance>,
    /// Billable money by kind (shortfalls, adjustments, uncovered fees).
    pub billables: BTreeMap<String, Decimal>,
}

impl ContractBalances {
    /// Applies one movement.
    pub fn apply_movement(&mut self, movement: &Movement) {
        // Look up before inserting: the keys exist for all but a lot's first movement, and a
        // rebuild calls this once per movement.
        let name = movement.bucket.name();
        let bucket = match self.buckets.get_mut(name) {
            Some(bucket) => bucket,
            None => self.buckets.entry(name.to_owned()).or_default(),
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
                state.apply_movement(movement);
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

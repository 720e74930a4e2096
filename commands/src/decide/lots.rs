//! R12, R13 lots and drawdown: what each lot can give at an effective time, drawn oldest first,
//! given back to the lots it came from, forfeited; and what a notice says is at risk.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use schemas::*;

use super::*;
use crate::rejection::{Code, Rejection};
use crate::state::{ContractState, Lot};

/// What one lot can give to the deduction being decided: what it held at the deduction's
/// effective time and every later one (R13), less what this decision took, plus what it gave
/// back.
pub(crate) struct LotShare {
    id: String,
    unit_price: Decimal,
    available: Decimal,
}

/// The lots of one bucket as a decision effective at one time sees them (R12, R13): only lots
/// bought at or before that time, each with what it can still give without going below zero at
/// any later effective time. A decision that moves several times (return, then fee) works on it.
pub(crate) struct LotBook {
    bucket: Bucket,
    lots: Vec<LotShare>,
}

impl LotBook {
    pub(crate) fn of(state: &ContractState, bucket: Bucket, at: DateTime<Utc>) -> LotBook {
        LotBook {
            bucket,
            lots: state
                .lots_in_order(bucket)
                .into_iter()
                .map(|lot: &Lot| LotShare {
                    id: lot.id.clone(),
                    unit_price: lot.unit_price,
                    available: lot.available_at(at),
                })
                .collect(),
        }
    }

    /// What the lots can give at the decision's effective time.
    pub(crate) fn balance(&self) -> Decimal {
        self.lots.iter().map(|lot| lot.available).sum()
    }

    /// R13: draws `quantity` oldest lot first. The caller checked the balance.
    pub(crate) fn draw(&mut self, quantity: Decimal, kind: MovementKind) -> Vec<Movement> {
        let mut left = quantity;
        let mut movements = Vec::new();
        for lot in &mut self.lots {
            if left.is_zero() {
                break;
            }
            let take = left.min(lot.available);
            if take.is_zero() {
                continue;
            }
            lot.available -= take;
            left -= take;
            movements.push(Movement {
                bucket: self.bucket,
                kind,
                lot: lot.id.clone(),
                quantity: take,
                unit_price: lot.unit_price,
                value: take * lot.unit_price,
            });
        }
        assert!(
            left.is_zero(),
            "drew more than the balance: the caller must check it"
        );
        movements
    }

    /// Gives back what `draws` took, to the same lots. Returned at the decision's effective
    /// time, the units are there at every later time too.
    pub(crate) fn give_back(&mut self, draws: &[Movement]) -> Vec<Movement> {
        draws
            .iter()
            .map(|draw| {
                let lot = self
                    .lots
                    .iter_mut()
                    .find(|lot| lot.id == draw.lot)
                    .expect("drawn lot exists");
                lot.available += draw.quantity;
                Movement {
                    kind: MovementKind::Returned,
                    ..draw.clone()
                }
            })
            .collect()
    }

    /// Forfeits everything left.
    pub(crate) fn forfeit_all(&mut self) -> Vec<Movement> {
        let balance = self.balance();
        self.draw(balance, MovementKind::Forfeited)
    }
}

/// R13: the balance at `at` cannot cover a deduction; says what was available then.
pub(crate) fn insufficient(
    state: &ContractState,
    bucket: Bucket,
    rule: &'static str,
    needed: Decimal,
    available: Decimal,
    at: DateTime<Utc>,
    what: &str,
) -> Rejection {
    let unit = if bucket == Bucket::ProactiveCredits {
        "credits"
    } else {
        "hours"
    };
    let local = at.with_timezone(&zone(state)).format("%Y-%m-%d %H:%M %Z");
    let now = state.balance(bucket);
    let later = if now > available {
        format!(
            " ({now} in all, but lots bought later or units used by later entries cannot pay for work at {local})"
        )
    } else {
        String::new()
    };
    Rejection::new(
        Code::InsufficientBalance,
        rule,
        format!(
            "{what} needs {needed} {unit} but {} had {available} available at {local}{later}; {available} remain at that time",
            bucket.name()
        ),
    )
}

/// R15, R13: every lot that still holds something, oldest first per bucket, with its money value.
pub(crate) fn lots_at_risk(state: &ContractState) -> Vec<schemas::LotAtRisk> {
    Bucket::ALL
        .into_iter()
        .flat_map(|bucket| {
            state
                .lots_in_order(bucket)
                .into_iter()
                .filter(|lot| lot.remaining > Decimal::ZERO)
                .map(move |lot| schemas::LotAtRisk {
                    bucket,
                    lot: lot.id.clone(),
                    quantity: lot.remaining,
                    unit_price: lot.unit_price,
                    value: lot.remaining * lot.unit_price,
                })
        })
        .collect()
}

/// R8: everything the lots can give at `at` (what they still hold then and at every later time).
pub(crate) fn forfeit_everything(state: &ContractState, at: DateTime<Utc>) -> Vec<Movement> {
    Bucket::ALL
        .into_iter()
        .flat_map(|bucket| LotBook::of(state, bucket, at).forfeit_all())
        .collect()
}

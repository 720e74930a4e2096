//! R11 corrections: which events may be reversed, and a reversal undoing exactly their
//! movements and billables.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use schemas::*;

use super::*;
use crate::rejection::{Code, Rejection};
use crate::state::{ContractState, Status};

pub(crate) fn reverse_event(
    state: &ContractState,
    reverse: &Reverse,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<Decided>, Rejection> {
    if state.status == Status::Unopened {
        return Err(Rejection::new(
            Code::UnknownContract,
            "R1",
            format!("no contract {}", reverse.contract_id),
        ));
    }
    let reason = reason
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            Rejection::new(
                Code::ReasonRequired,
                "R11",
                "a reversal must give a reason (the command's \"reason\" field)",
            )
        })?;
    let original = state.recorded.get(&reverse.event_id).ok_or_else(|| {
        Rejection::new(
            Code::UnknownEvent,
            "R11",
            format!(
                "no event {} in contract {}",
                reverse.event_id, reverse.contract_id
            ),
        )
    })?;
    if original.event_type == "event_reversed" {
        return Err(Rejection::new(
            Code::ReversalOfReversal,
            "R11",
            "a reversal cannot be reversed; record the correct event instead",
        ));
    }
    if state.reversed.contains(&reverse.event_id) {
        return Err(Rejection::new(
            Code::AlreadyReversed,
            "R11",
            format!(
                "event {} was already reversed; an event is reversed at most once",
                reverse.event_id
            ),
        ));
    }
    match &original.event {
        Event::Purchased(purchased) => {
            let touched = state.recorded.iter().any(|(id, recorded)| {
                *id != reverse.event_id && recorded.movements.iter().any(|m| m.lot == purchased.lot)
            });
            if touched {
                return Err(Rejection::new(
                    Code::LotInUse,
                    "R11",
                    format!(
                        "lot {} has been drawn from; a purchase is reversed only while its lot is untouched",
                        purchased.lot
                    ),
                ));
            }
        }
        Event::CreditsConverted(converted) => {
            let booking = state.bookings.get(&converted.booking_id);
            if !booking.is_some_and(|b| b.active) {
                return Err(Rejection::new(
                    Code::BookingNotActive,
                    "R11",
                    format!(
                        "booking {} was cancelled or exchanged since; reverse that first is not supported, record a correction instead",
                        converted.booking_id
                    ),
                ));
            }
        }
        Event::HoursConsumed(_) | Event::SabConverted(_) => {}
        other => {
            return Err(Rejection::new(
                Code::NotReversible,
                "R11",
                format!(
                    "{} events cannot be reversed; purchases, conversions, SAB conversions and hour consumption can",
                    other.type_name()
                ),
            ));
        }
    }
    let negate = |m: &Movement| Movement {
        quantity: -m.quantity,
        value: -m.value,
        ..m.clone()
    };
    let movements: Vec<Movement> = original.movements.iter().map(negate).collect();
    let billables = original
        .billables
        .iter()
        .map(|b| Billable {
            amount: -b.amount,
            ..b.clone()
        })
        .collect();
    let mut events = vec![decided(
        Event::EventReversed(EventReversed {
            reversed_event_id: reverse.event_id.clone(),
            reversed_type: original.event_type.to_owned(),
            reason: reason.to_owned(),
            movements: movements.clone(),
            billables,
        }),
        original.effective_at,
    )];
    // R9, R11: the value leaves its support year; an assessed year's billable rises again.
    if let Event::SabConverted(converted) = &original.event {
        events.extend(sab_adjustment(
            state,
            converted.support_year,
            -converted.amount,
            original.effective_at,
        ));
    }
    // R11: after the term, whatever the reversal returns to a bucket is forfeited with it.
    if matches!(state.status, Status::Expired | Status::Terminated) {
        let returned: Vec<Movement> = movements
            .iter()
            .filter(|m| m.balance_delta() > Decimal::ZERO)
            .map(|m| Movement {
                kind: MovementKind::Forfeited,
                quantity: m.balance_delta(),
                value: m.balance_delta() * m.unit_price,
                ..m.clone()
            })
            .collect();
        if !returned.is_empty() {
            // Forfeited at the end, or when the units come back if that is later: a lot is never
            // forfeited before it holds them (R12 by effective time).
            let forfeited_at = state.ended_at.unwrap_or(now).max(original.effective_at);
            events.push(decided(
                Event::BalancesForfeited(BalancesForfeited {
                    cause: ForfeitureCause::ReversalAfterTerm,
                    forfeited_at,
                    movements: returned,
                }),
                forfeited_at,
            ));
        }
    }
    Ok(events)
}

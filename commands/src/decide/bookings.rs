//! R3, R6, R7 bookings: converting credits into a service at the rate in force, cancelling,
//! rescheduling and exchanging with their fees, the request deadline.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use schemas::*;

use super::*;
use crate::calendar;
use crate::rejection::{Code, Rejection};
use crate::state::{ContractState, RateCard};

/// R7: proactive requests on advanced/performance contracts by term_end − 60 days.
pub(crate) fn require_before_request_deadline(
    state: &ContractState,
    at: DateTime<Utc>,
) -> Result<(), Rejection> {
    if !state.is_advanced_or_performance() {
        return Ok(());
    }
    let terms = state.terms.as_ref().expect("opened");
    let deadline = calendar::request_deadline(terms.term_end);
    let date = calendar::local_date(zone(state), at);
    if date > deadline {
        return Err(Rejection::new(
            Code::RequestDeadlinePassed,
            "R7",
            format!(
                "requests for proactive services on {} contracts must come by {deadline} (60 days before the term ends on {}); this one is dated {date}",
                package_name(terms.package),
                terms.term_end
            ),
        ));
    }
    Ok(())
}

pub(crate) struct Priced {
    rate: Decimal,
    rate_effective_from: DateTime<Utc>,
    unrounded: Decimal,
    credits: Decimal,
}

pub(crate) fn price(
    rates: &RateCard,
    service: &str,
    quantity: Decimal,
    at: DateTime<Utc>,
) -> Result<Priced, Rejection> {
    require_positive(quantity, "quantity")?;
    let (rate, rate_effective_from) = rates.rate_at(service, at).ok_or_else(|| {
        Rejection::new(
            Code::UnknownService,
            "R3",
            format!("no rate for service {service:?} is in force at {at}; publish_rates first"),
        )
    })?;
    let unrounded = rate * quantity;
    let credits = round_credits(unrounded);
    if credits.is_zero() {
        return Err(Rejection::new(
            Code::InvalidQuantity,
            "R3",
            format!(
                "{quantity} × {rate} credits = {unrounded}, which rounds to 0 credits; book a larger quantity"
            ),
        ));
    }
    Ok(Priced {
        rate,
        rate_effective_from,
        unrounded,
        credits,
    })
}

pub(crate) fn require_new_booking(
    state: &ContractState,
    booking_id: &str,
    starts_at: DateTime<Utc>,
    requested_at: DateTime<Utc>,
) -> Result<(), Rejection> {
    if booking_id.is_empty() {
        return Err(Rejection::invalid("booking_id must not be empty"));
    }
    if state.bookings.contains_key(booking_id) {
        return Err(Rejection::new(
            Code::BookingExists,
            "R3",
            format!("booking {booking_id} already exists; use a new booking id"),
        ));
    }
    require_start(state, starts_at, requested_at)
}

pub(crate) fn require_start(
    state: &ContractState,
    starts_at: DateTime<Utc>,
    requested_at: DateTime<Utc>,
) -> Result<(), Rejection> {
    if starts_at <= requested_at {
        return Err(Rejection::new(
            Code::BookingInPast,
            "R3",
            format!(
                "a booking must start after the request; {starts_at} is not after {requested_at}"
            ),
        ));
    }
    let terms = state.terms.as_ref().expect("opened");
    let date = calendar::local_date(zone(state), starts_at);
    if date < terms.term_start || date > terms.term_end {
        return Err(Rejection::new(
            Code::BookingOutsideTerm,
            "R3",
            format!(
                "a booking must start inside the term {}..{}; {date} is not",
                terms.term_start, terms.term_end
            ),
        ));
    }
    Ok(())
}

pub(crate) fn convert_credits(
    state: &ContractState,
    rates: &RateCard,
    convert: &ConvertCredits,
) -> Result<Vec<Decided>, Rejection> {
    active(state, &convert.contract_id)?;
    require_in_term(state, convert.effective_at, "a credit conversion", "R3")?;
    require_before_request_deadline(state, convert.effective_at)?;
    require_new_booking(
        state,
        &convert.booking_id,
        convert.starts_at,
        convert.effective_at,
    )?;
    let priced = price(
        rates,
        &convert.service,
        convert.quantity,
        convert.effective_at,
    )?;
    let mut book = LotBook::of(state, Bucket::ProactiveCredits, convert.effective_at);
    let balance = book.balance();
    if balance < priced.credits {
        return Err(insufficient(
            state,
            Bucket::ProactiveCredits,
            "R3",
            priced.credits,
            balance,
            convert.effective_at,
            &format!("converting {} × {}", convert.quantity, convert.service),
        ));
    }
    let movements = book.draw(priced.credits, MovementKind::Converted);
    Ok(vec![decided(
        Event::CreditsConverted(CreditsConverted {
            booking_id: convert.booking_id.clone(),
            service: convert.service.clone(),
            quantity: convert.quantity,
            rate: priced.rate,
            rate_effective_from: priced.rate_effective_from,
            credits_unrounded: priced.unrounded,
            credits: priced.credits,
            starts_at: convert.starts_at,
            movements,
        }),
        convert.effective_at,
    )])
}

/// A booking that can still change, or why not.
pub(crate) fn changeable_booking<'s>(
    state: &'s ContractState,
    booking_id: &str,
    at: DateTime<Utc>,
) -> Result<&'s crate::state::Booking, Rejection> {
    let booking = state.bookings.get(booking_id).ok_or_else(|| {
        Rejection::new(
            Code::UnknownBooking,
            "R3",
            format!("no booking {booking_id} in this contract"),
        )
    })?;
    if !booking.active {
        return Err(Rejection::new(
            Code::BookingNotActive,
            "R3",
            format!("booking {booking_id} was already cancelled or exchanged"),
        ));
    }
    if at >= booking.starts_at {
        return Err(Rejection::new(
            Code::BookingDelivered,
            "R3",
            format!(
                "booking {booking_id} started at {} and counts as delivered; it can no longer be cancelled, rescheduled or exchanged",
                booking.starts_at
            ),
        ));
    }
    Ok(booking)
}

/// R6: (late?, fee rate applied, fee in credits).
pub(crate) fn cancellation_fee(
    state: &ContractState,
    booking: &crate::state::Booking,
    at: DateTime<Utc>,
) -> (bool, Decimal, Decimal) {
    let terms = state.terms.as_ref().expect("opened");
    let late = at > calendar::free_cancellation_deadline(zone(state), booking.starts_at);
    if late {
        let rate = terms.cancellation_fee_rate;
        (true, rate, round_credits(rate * booking.credits))
    } else {
        (false, Decimal::ZERO, Decimal::ZERO)
    }
}

pub(crate) fn cancel_booking(
    state: &ContractState,
    cancel: &CancelBooking,
) -> Result<Vec<Decided>, Rejection> {
    active(state, &cancel.contract_id)?;
    require_in_term(state, cancel.effective_at, "a cancellation", "R6")?;
    let booking = changeable_booking(state, &cancel.booking_id, cancel.effective_at)?;
    let (late, fee_rate, fee_credits) = cancellation_fee(state, booking, cancel.effective_at);
    let mut book = LotBook::of(state, Bucket::ProactiveCredits, cancel.effective_at);
    let mut movements = book.give_back(&booking.draws);
    // The fee never exceeds the credits just returned (rate ≤ 100 %), so it is always covered.
    movements.extend(book.draw(fee_credits, MovementKind::Fee));
    Ok(vec![decided(
        Event::BookingCancelled(BookingCancelled {
            booking_id: cancel.booking_id.clone(),
            late,
            fee_rate,
            fee_credits,
            movements,
        }),
        cancel.effective_at,
    )])
}

pub(crate) fn reschedule_booking(
    state: &ContractState,
    reschedule: &RescheduleBooking,
) -> Result<Vec<Decided>, Rejection> {
    let terms = active(state, &reschedule.contract_id)?;
    require_in_term(state, reschedule.effective_at, "a reschedule", "R6")?;
    let booking = changeable_booking(state, &reschedule.booking_id, reschedule.effective_at)?;
    require_start(state, reschedule.starts_at, reschedule.effective_at)?;
    let (late, fee_rate, fee_credits) = cancellation_fee(state, booking, reschedule.effective_at);
    let mut book = LotBook::of(state, Bucket::ProactiveCredits, reschedule.effective_at);
    let covered = fee_credits.min(book.balance());
    let uncovered = fee_credits - covered;
    let movements = book.draw(covered, MovementKind::Fee);
    let mut billables = Vec::new();
    if uncovered > Decimal::ZERO {
        // R6: "uncovered credits × the unit price of the credits' newest lot": the newest
        // purchase effective at or before the request that has not been reversed.
        let newest = state
            .lots_in_order(Bucket::ProactiveCredits)
            .into_iter()
            .rfind(|lot| !lot.reversed && lot.order.0 <= reschedule.effective_at)
            .map(|lot| lot.unit_price)
            .expect("a booking implies a credit lot bought before the request");
        billables.push(Billable {
            kind: BillableKind::UncoveredCancellationFee,
            period: reschedule.booking_id.clone(),
            amount: uncovered * newest,
            currency: terms.currency.clone(),
        });
    }
    Ok(vec![decided(
        Event::BookingRescheduled(BookingRescheduled {
            booking_id: reschedule.booking_id.clone(),
            previous_starts_at: booking.starts_at,
            starts_at: reschedule.starts_at,
            late,
            fee_rate,
            fee_credits,
            uncovered_credits: uncovered,
            movements,
            billables,
        }),
        reschedule.effective_at,
    )])
}

pub(crate) fn exchange_booking(
    state: &ContractState,
    rates: &RateCard,
    exchange: &ExchangeBooking,
) -> Result<Vec<Decided>, Rejection> {
    active(state, &exchange.contract_id)?;
    require_in_term(state, exchange.effective_at, "an exchange", "R3")?;
    require_before_request_deadline(state, exchange.effective_at)?;
    let booking = changeable_booking(state, &exchange.booking_id, exchange.effective_at)?;
    require_new_booking(
        state,
        &exchange.new_booking_id,
        exchange.starts_at,
        exchange.effective_at,
    )?;
    let priced = price(
        rates,
        &exchange.service,
        exchange.quantity,
        exchange.effective_at,
    )?;
    let (late, fee_rate, fee_credits) = cancellation_fee(state, booking, exchange.effective_at);
    let mut book = LotBook::of(state, Bucket::ProactiveCredits, exchange.effective_at);
    let mut movements = book.give_back(&booking.draws);
    let needed = fee_credits + priced.credits;
    let balance = book.balance();
    if balance < needed {
        return Err(insufficient(
            state,
            Bucket::ProactiveCredits,
            "R3",
            needed,
            balance,
            exchange.effective_at,
            &format!(
                "exchanging {} for {} × {} (fee {fee_credits} + {} credits, after the old booking's {} return)",
                exchange.booking_id,
                exchange.quantity,
                exchange.service,
                priced.credits,
                booking.credits
            ),
        ));
    }
    movements.extend(book.draw(fee_credits, MovementKind::Fee));
    movements.extend(book.draw(priced.credits, MovementKind::Converted));
    Ok(vec![decided(
        Event::BookingExchanged(BookingExchanged {
            booking_id: exchange.booking_id.clone(),
            new_booking_id: exchange.new_booking_id.clone(),
            service: exchange.service.clone(),
            quantity: exchange.quantity,
            rate: priced.rate,
            rate_effective_from: priced.rate_effective_from,
            credits_unrounded: priced.unrounded,
            credits: priced.credits,
            starts_at: exchange.starts_at,
            late,
            fee_rate,
            fee_credits,
            movements,
        }),
        exchange.effective_at,
    )])
}

//! `decide`: the rules of DOMAIN.md. Given a contract's state, the rate card, a command and the
//! time it arrives, it returns the events to append or a rejection. Pure and deterministic: no
//! IO and no clock; time arrives with the command (`effective_at`) or as `now`.

use chrono::{DateTime, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use schemas::*;

use crate::calendar;
use crate::currency;
use crate::rejection::{Code, Rejection};
use crate::state::{ContractState, RateCard, Status};

mod bookings;
mod contract;
mod hours;
mod lots;
mod purchase;
mod reversal;
mod sab;

use bookings::*;
use contract::*;
use hours::*;
pub(crate) use lots::*;
use purchase::*;
use reversal::*;
pub(crate) use sab::*;

/// An event `decide` wants appended, with its business time.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    /// The event.
    pub event: Event,
    /// Its effective time (stored in the envelope; `--as-of` reads it).
    pub effective_at: DateTime<Utc>,
}

pub(crate) fn decided(event: Event, effective_at: DateTime<Utc>) -> Decided {
    Decided {
        event,
        effective_at,
    }
}

/// R3: "rounded to the nearest whole credit, halves away from zero"; R6 fees likewise.
pub fn round_credits(value: Decimal) -> Decimal {
    value.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
}

/// R5: "minutes ÷ 60, rounded to 2 decimals, halves away from zero".
pub fn minutes_to_hours(minutes: i64) -> Decimal {
    (Decimal::from(minutes) / Decimal::from(60))
        .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// Contract ids become subject tokens and stream ids: `[A-Za-z0-9_-]{1,64}`.
pub fn valid_contract_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Decides a user command. See the module doc.
///
/// # Errors
/// A [`Rejection`] naming the broken rule; nothing is to be appended then.
pub fn decide(
    state: &ContractState,
    rates: &RateCard,
    command: &CommandEnvelope,
    now: DateTime<Utc>,
) -> Result<Vec<Decided>, Rejection> {
    if let Some(id) = command.body.contract_id()
        && !valid_contract_id(id)
    {
        return Err(Rejection::invalid(format!(
            "contract_id {id:?} must be 1 to 64 characters of A-Z a-z 0-9 _ -"
        )));
    }
    match &command.body {
        Command::OpenContract(open) => open_contract(state, open),
        Command::PublishRates(publish) => publish_rates(publish),
        Command::Purchase(purchase) => buy(state, purchase),
        Command::ConvertCredits(convert) => convert_credits(state, rates, convert),
        Command::CancelBooking(cancel) => cancel_booking(state, cancel),
        Command::RescheduleBooking(reschedule) => reschedule_booking(state, reschedule),
        Command::ExchangeBooking(exchange) => exchange_booking(state, rates, exchange),
        Command::ConvertSab(convert) => convert_sab(state, convert),
        Command::ConsumeHours(consume) => consume_hours(state, consume),
        Command::TerminateContract(command) => terminate(state, command),
        Command::Reverse(reverse) => reverse_event(state, reverse, command.reason.as_deref(), now),
    }
}

/// The terms of a contract that accepts commands, or why it does not.
pub(crate) fn active<'s>(
    state: &'s ContractState,
    contract_id: &str,
) -> Result<&'s ContractOpened, Rejection> {
    let other_contract = state
        .terms
        .as_ref()
        .is_some_and(|t| t.contract_id != contract_id);
    match state.status {
        _ if other_contract => Err(Rejection::new(
            Code::UnknownContract,
            "R1",
            format!("no contract {contract_id}; open it first with open_contract"),
        )),
        Status::Unopened => Err(Rejection::new(
            Code::UnknownContract,
            "R1",
            format!("no contract {contract_id}; open it first with open_contract"),
        )),
        Status::Expired => Err(Rejection::new(
            Code::ContractExpired,
            "R8",
            format!(
                "contract {contract_id} expired at the end of its term; only reads are accepted"
            ),
        )),
        Status::Terminated => Err(Rejection::new(
            Code::ContractTerminated,
            "R8",
            format!(
                "contract {contract_id} was terminated on {}; only reads are accepted",
                state
                    .terminated_on
                    .map_or_else(String::new, |d| d.to_string())
            ),
        )),
        Status::Active => Ok(state.terms.as_ref().expect("active contracts have terms")),
    }
}

pub(crate) fn zone(state: &ContractState) -> chrono_tz::Tz {
    state.zone.expect("opened contracts have a zone")
}

pub(crate) fn require_in_term(
    state: &ContractState,
    at: DateTime<Utc>,
    what: &str,
    rule: &'static str,
) -> Result<(), Rejection> {
    let terms = state.terms.as_ref().expect("opened");
    let date = calendar::local_date(zone(state), at);
    if date < terms.term_start || date > terms.term_end {
        return Err(Rejection::new(
            Code::OutsideTerm,
            rule,
            format!(
                "{what} on {date} ({}) is outside the term {}..{}",
                terms.time_zone, terms.term_start, terms.term_end
            ),
        ));
    }
    Ok(())
}

pub(crate) fn require_positive(quantity: Decimal, what: &str) -> Result<(), Rejection> {
    if quantity <= Decimal::ZERO {
        return Err(Rejection::new(
            Code::InvalidQuantity,
            "R2",
            format!("{what} must be greater than 0, not {quantity}"),
        ));
    }
    Ok(())
}

pub(crate) fn bucket_of(item: Item) -> Bucket {
    match item {
        Item::ProactiveCredits => Bucket::ProactiveCredits,
        Item::DseHours => Bucket::DseHours,
        Item::DasHours => Bucket::DasHours,
        Item::DeveloperAdvanced | Item::DeveloperPerformance => Bucket::AdmHours,
    }
}

pub(crate) fn package_name(package: Package) -> &'static str {
    match package {
        Package::Core => "core",
        Package::Advanced => "advanced",
        Package::Performance => "performance",
    }
}

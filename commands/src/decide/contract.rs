//! R1 opening and R8 termination: a contract's start and early end; and the rate card.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use schemas::*;

use super::*;
use crate::calendar;
use crate::rejection::{Code, Rejection};
use crate::state::{ContractState, Status};

pub(crate) fn open_contract(
    state: &ContractState,
    open: &OpenContract,
) -> Result<Vec<Decided>, Rejection> {
    if state.status != Status::Unopened {
        return Err(Rejection::new(
            Code::ContractExists,
            "R1",
            format!(
                "contract {} is already open; a contract is opened once",
                open.contract_id
            ),
        ));
    }
    if open.customer.trim().is_empty() {
        return Err(Rejection::invalid("customer must not be empty"));
    }
    if open.term_start > open.term_end {
        return Err(Rejection::new(
            Code::InvalidTerm,
            "R1",
            format!(
                "term_start {} is after term_end {}; the term must satisfy start ≤ end",
                open.term_start, open.term_end
            ),
        ));
    }
    if !currency::is_iso_4217(&open.currency) {
        return Err(Rejection::new(
            Code::InvalidCurrency,
            "R1",
            format!(
                "{:?} is not an ISO 4217 currency code (e.g. USD, EUR)",
                open.currency
            ),
        ));
    }
    let zone: chrono_tz::Tz = open.time_zone.parse().map_err(|_| {
        Rejection::new(
            Code::InvalidTimeZone,
            "R1",
            format!(
                "{:?} is not an IANA time zone (e.g. Europe/Berlin)",
                open.time_zone
            ),
        )
    })?;
    let fee_rate = open.cancellation_fee_rate.unwrap_or(Decimal::ONE);
    if fee_rate < Decimal::ZERO || fee_rate > Decimal::ONE {
        return Err(Rejection::new(
            Code::InvalidFeeRate,
            "R1",
            format!("cancellation_fee_rate {fee_rate} must be between 0 and 1 (0–100 %)"),
        ));
    }
    let mut years = std::collections::BTreeSet::new();
    for commitment in &open.sab_commitments {
        let year_start = calendar::support_year_start(open.term_start, commitment.year);
        if year_start.is_none_or(|start| start > open.term_end) {
            return Err(Rejection::new(
                Code::InvalidSabCommitment,
                "R1",
                format!(
                    "SAB commitment for support year {} lies outside the term {}..{}",
                    commitment.year, open.term_start, open.term_end
                ),
            ));
        }
        if !years.insert(commitment.year) {
            return Err(Rejection::new(
                Code::InvalidSabCommitment,
                "R1",
                format!("support year {} is committed twice", commitment.year),
            ));
        }
        if commitment.value_per_incident < Decimal::ZERO {
            return Err(Rejection::new(
                Code::InvalidSabCommitment,
                "R1",
                "value_per_incident must not be negative",
            ));
        }
    }
    let effective_at = open
        .effective_at
        .unwrap_or_else(|| calendar::local_midnight(zone, open.term_start));
    let mut holidays = open.holidays.clone();
    holidays.sort_unstable();
    holidays.dedup();
    Ok(vec![decided(
        Event::ContractOpened(ContractOpened {
            contract_id: open.contract_id.clone(),
            customer: open.customer.clone(),
            package: open.package,
            term_start: open.term_start,
            term_end: open.term_end,
            currency: open.currency.clone(),
            time_zone: open.time_zone.clone(),
            holidays,
            cancellation_fee_rate: fee_rate,
            sab_commitments: open.sab_commitments.clone(),
        }),
        effective_at,
    )])
}

pub(crate) fn terminate(
    state: &ContractState,
    terminate: &TerminateContract,
) -> Result<Vec<Decided>, Rejection> {
    active(state, &terminate.contract_id)?;
    require_in_term(state, terminate.effective_at, "a termination", "R8")?;
    // R8, R12: the termination forfeits what the lots hold at its effective time. Activity already
    // recorded at a later effective time (a purchase, a deduction, an assessment) would outlive
    // the contract's end: its lots never forfeited, a later reversal forfeiting units before they
    // existed. Such a backdated termination is refused; terminate at or after that activity.
    let latest = state
        .recorded
        .values()
        .filter(|recorded| !matches!(recorded.event, Event::ExpiryNoticeIssued(_)))
        .map(|recorded| recorded.effective_at)
        .max();
    if let Some(latest) = latest
        && latest > terminate.effective_at
    {
        let local = |at: DateTime<Utc>| at.with_timezone(&zone(state)).format("%Y-%m-%d %H:%M %Z");
        return Err(Rejection::new(
            Code::TerminationBeforeActivity,
            "R8",
            format!(
                "a termination effective {} would precede activity recorded effective {}; \
                 terminate at or after {}, or reverse that activity first",
                local(terminate.effective_at),
                local(latest),
                local(latest)
            ),
        ));
    }
    let date = calendar::local_date(zone(state), terminate.effective_at);
    Ok(vec![
        decided(
            Event::ContractTerminated(ContractTerminated {
                termination_date: date,
            }),
            terminate.effective_at,
        ),
        // R8: "DSE ends with the contract": every balance, DSE included, in the same append.
        decided(
            Event::BalancesForfeited(BalancesForfeited {
                cause: ForfeitureCause::Termination,
                forfeited_at: terminate.effective_at,
                movements: forfeit_everything(state, terminate.effective_at),
            }),
            terminate.effective_at,
        ),
    ])
}

pub(crate) fn publish_rates(publish: &PublishRates) -> Result<Vec<Decided>, Rejection> {
    if publish.rates.is_empty() {
        return Err(Rejection::invalid("rates must name at least one service"));
    }
    for (service, rate) in &publish.rates {
        if service.is_empty() || *rate <= Decimal::ZERO {
            return Err(Rejection::invalid(format!(
                "rate of {service:?} must be a positive number of credits, not {rate}"
            )));
        }
    }
    Ok(vec![decided(
        Event::RatesPublished(RatesPublished {
            effective_from: publish.effective_from,
            rates: publish.rates.clone(),
        }),
        publish.effective_from,
    )])
}

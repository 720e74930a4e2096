//! R5 hour consumption: business hours for DSE, the term for all, hours from minutes.

use chrono::{DateTime, Days, Utc};
use schemas::*;

use super::*;
use crate::calendar;
use crate::rejection::{Code, Rejection};
use crate::state::ContractState;

pub(crate) fn consume_hours(
    state: &ContractState,
    consume: &ConsumeHours,
) -> Result<Vec<Decided>, Rejection> {
    let terms = active(state, &consume.contract_id)?;
    if consume.bucket == Bucket::ProactiveCredits {
        return Err(Rejection::new(
            Code::InvalidBucket,
            "R5",
            "hours are consumed from dse_hours, das_hours or adm_hours; credits are converted with convert_credits",
        ));
    }
    if consume.ended_at <= consume.started_at {
        return Err(Rejection::invalid(format!(
            "ended_at {} must be after started_at {}",
            consume.ended_at, consume.started_at
        )));
    }
    let whole_minute =
        |at: DateTime<Utc>| at.timestamp() % 60 == 0 && at.timestamp_subsec_nanos() == 0;
    if !whole_minute(consume.started_at) || !whole_minute(consume.ended_at) {
        return Err(Rejection::invalid(
            "started_at and ended_at are whole minutes (R5 counts minutes)",
        ));
    }
    // R5: work starts on a term date and ends at or before the end of the term (00:00 contract
    // time on the day after term_end, that instant included).
    require_in_term(state, consume.started_at, "work", "R5")?;
    let term_over = calendar::local_midnight(zone(state), terms.term_end + Days::new(1));
    if consume.ended_at > term_over {
        return Err(Rejection::new(
            Code::OutsideTerm,
            "R5",
            format!(
                "work ending at {} is after the end of the term ({}, 00:00 {} on the day after {})",
                consume.ended_at, term_over, terms.time_zone, terms.term_end
            ),
        ));
    }
    if consume.bucket == Bucket::DseHours
        && let Some(why) = calendar::business_hours_violation(
            zone(state),
            &terms.holidays,
            consume.started_at,
            consume.ended_at,
        )
    {
        return Err(Rejection::new(Code::OutsideBusinessHours, "R5", why));
    }
    let minutes = (consume.ended_at - consume.started_at).num_minutes();
    let hours = minutes_to_hours(minutes);
    // R5: the hours are delivered at the end of the work, so that is when they are paid for.
    let mut book = LotBook::of(state, consume.bucket, consume.ended_at);
    let balance = book.balance();
    if balance < hours {
        return Err(insufficient(
            state,
            consume.bucket,
            "R5",
            hours,
            balance,
            consume.ended_at,
            &format!("{minutes} minutes of work"),
        ));
    }
    let movements = book.draw(hours, MovementKind::Consumed);
    Ok(vec![decided(
        Event::HoursConsumed(HoursConsumed {
            bucket: consume.bucket,
            started_at: consume.started_at,
            ended_at: consume.ended_at,
            minutes: u32::try_from(minutes)
                .map_err(|_| Rejection::invalid("the interval is too long"))?,
            hours,
            movements,
        }),
        consume.ended_at,
    )])
}

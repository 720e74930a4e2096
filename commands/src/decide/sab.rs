//! R4, R9 SAB: converting incidents into money for a support year, and keeping an assessed
//! year's billable at max(0, committed − converted).

use chrono::{DateTime, Days, Utc};
use rust_decimal::Decimal;
use schemas::*;

use super::*;
use crate::calendar;
use crate::rejection::{Code, Rejection};
use crate::state::ContractState;

pub(crate) fn convert_sab(
    state: &ContractState,
    convert: &ConvertSab,
) -> Result<Vec<Decided>, Rejection> {
    let terms = active(state, &convert.contract_id)?;
    require_in_term(state, convert.effective_at, "a SAB conversion", "R4")?;
    if convert.incidents == 0 {
        return Err(Rejection::new(
            Code::InvalidQuantity,
            "R4",
            "incidents must be at least 1",
        ));
    }
    if convert.value_per_incident < Decimal::ZERO {
        return Err(Rejection::new(
            Code::InvalidQuantity,
            "R4",
            "value_per_incident must not be negative",
        ));
    }
    let date = calendar::local_date(zone(state), convert.effective_at);
    let support_year = calendar::support_year_of(terms.term_start, date).expect("inside the term");
    let amount = Decimal::from(convert.incidents) * convert.value_per_incident;
    let mut events = vec![decided(
        Event::SabConverted(SabConverted {
            incidents: convert.incidents,
            value_per_incident: convert.value_per_incident,
            amount,
            currency: terms.currency.clone(),
            applied_to: convert.applied_to,
            support_year,
        }),
        convert.effective_at,
    )];
    events.extend(sab_adjustment(
        state,
        support_year,
        amount,
        convert.effective_at,
    ));
    Ok(events)
}

/// R9: once support year `year` is assessed, its billable total (shortfall plus adjustments)
/// equals `max(0, committed − converted)`. After `converted_change` (a conversion, or minus a
/// reversed one), the adjustment that keeps it so, if any. It takes effect at `at` or at the
/// assessment, whichever is later, so the billable never moves before it was assessed.
pub(crate) fn sab_adjustment(
    state: &ContractState,
    year: u32,
    converted_change: Decimal,
    at: DateTime<Utc>,
) -> Option<Decided> {
    let standing = *state.shortfall_billable.get(&year)?;
    let terms = state.terms.as_ref().expect("opened");
    let commitment = terms.sab_commitments.iter().find(|c| c.year == year)?;
    let committed = Decimal::from(commitment.incidents) * commitment.value_per_incident;
    let converted = state.sab_converted.get(&year).copied().unwrap_or_default() + converted_change;
    let target = (committed - converted).max(Decimal::ZERO);
    let adjustment = target - standing;
    if adjustment.is_zero() {
        return None;
    }
    let assessed_at = shortfall_due_at(state, year)?;
    Some(decided(
        Event::SabShortfallAdjusted(SabShortfallAdjusted {
            support_year: year,
            converted_amount: converted_change,
            billables: vec![Billable {
                kind: BillableKind::SabShortfallAdjustment,
                period: format!("year-{year}"),
                amount: adjustment,
                currency: terms.currency.clone(),
            }],
        }),
        at.max(assessed_at),
    ))
}

/// R9: when support year `year`'s shortfall falls due (00:00 contract time, year start + 30).
pub(crate) fn shortfall_due_at(state: &ContractState, year: u32) -> Option<DateTime<Utc>> {
    let terms = state.terms.as_ref()?;
    let year_start = calendar::support_year_start(terms.term_start, year)?;
    Some(calendar::local_midnight(
        zone(state),
        year_start + Days::new(30),
    ))
}

//! R8–R10, R15 time-driven commands: what falls due at a time (`due`) and what each appends
//! (`decide_time_driven`), exactly once each through derived command ids.

use chrono::{DateTime, Days, Utc};
use rust_decimal::Decimal;
use schemas::*;

use crate::calendar;
use crate::decide::*;
use crate::rejection::{Code, Rejection};
use crate::state::{ContractState, Status};

/// A time-driven command (R8–R10, R15), appended by the scheduler with a derived id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeDriven {
    /// R15: an expiry notice (`90`, `60`, `30`, `7` days before, or `request_deadline`).
    Notice {
        /// Which notice.
        notice: String,
        /// When it is due.
        due_at: DateTime<Utc>,
    },
    /// R9: assess a support year's SAB shortfall.
    AssessShortfall {
        /// Support year.
        year: u32,
        /// When it is due.
        due_at: DateTime<Utc>,
    },
    /// R8: forfeit everything at the end of the term.
    Forfeit {
        /// When it is due.
        due_at: DateTime<Utc>,
    },
}

impl TimeDriven {
    /// When it is due.
    pub fn due_at(&self) -> DateTime<Utc> {
        match self {
            TimeDriven::Notice { due_at, .. }
            | TimeDriven::AssessShortfall { due_at, .. }
            | TimeDriven::Forfeit { due_at } => *due_at,
        }
    }

    /// R14: the id derived from its inputs, so a retried scheduler cannot append it twice.
    pub fn command_id(&self, state: &ContractState) -> String {
        let terms = state.terms.as_ref().expect("opened");
        match self {
            TimeDriven::Notice { notice, .. } => format!("notice:{}:{notice}", terms.contract_id),
            TimeDriven::AssessShortfall { year, .. } => {
                format!("shortfall:{}:year-{year}", terms.contract_id)
            }
            TimeDriven::Forfeit { .. } => {
                format!("forfeit:{}:{}", terms.contract_id, terms.term_end)
            }
        }
    }
}

/// R10: the time-driven commands of a contract due at `now` and not yet carried out, in due
/// order (notices, then assessments, then forfeiture at the same instant).
pub fn due(state: &ContractState, now: DateTime<Utc>) -> Vec<TimeDriven> {
    let Some(terms) = &state.terms else {
        return Vec::new();
    };
    let zone = zone(state);
    let expiry = calendar::local_midnight(zone, terms.term_end + Days::new(1));
    let still_running_at = |at: DateTime<Utc>| match state.status {
        Status::Active => true,
        _ => state.ended_at.is_some_and(|ended| at < ended),
    };
    let mut due = Vec::new();
    if state.status == Status::Active {
        let mut notices: Vec<(String, chrono::NaiveDate)> = [90u64, 60, 30, 7]
            .iter()
            .filter_map(|days| {
                terms
                    .term_end
                    .checked_sub_days(Days::new(*days))
                    .map(|d| (days.to_string(), d))
            })
            .collect();
        if state.is_advanced_or_performance() {
            notices.push((
                "request_deadline".into(),
                calendar::request_deadline(terms.term_end),
            ));
        }
        for (notice, date) in notices {
            let due_at = calendar::local_midnight(zone, date);
            if date >= terms.term_start && due_at <= now && !state.notices.contains(&notice) {
                due.push((0, TimeDriven::Notice { notice, due_at }));
            }
        }
    }
    for commitment in &terms.sab_commitments {
        let Some(due_at) = shortfall_due_at(state, commitment.year) else {
            continue;
        };
        // R9: no assessment falls due at or after the contract's expiry or termination.
        if due_at <= now
            && due_at < expiry
            && still_running_at(due_at)
            && !state.shortfall_billable.contains_key(&commitment.year)
        {
            due.push((
                1,
                TimeDriven::AssessShortfall {
                    year: commitment.year,
                    due_at,
                },
            ));
        }
    }
    if state.status == Status::Active && expiry <= now {
        due.push((2, TimeDriven::Forfeit { due_at: expiry }));
    }
    due.sort_by_key(|(order, command)| (command.due_at(), *order));
    due.into_iter().map(|(_, command)| command).collect()
}

/// Decides a time-driven command against the state as folded now.
///
/// # Errors
/// `not_due` when it was already carried out or no longer applies.
pub fn decide_time_driven(
    state: &ContractState,
    command: &TimeDriven,
) -> Result<Vec<Decided>, Rejection> {
    let terms = state
        .terms
        .as_ref()
        .ok_or_else(|| Rejection::new(Code::UnknownContract, "R10", "no such contract"))?;
    let not_due = || Rejection::new(Code::NotDue, "R10", "already carried out or no longer due");
    match command {
        TimeDriven::Notice { notice, due_at } => {
            if state.status != Status::Active || state.notices.contains(notice) {
                return Err(not_due());
            }
            let balances = Bucket::ALL
                .into_iter()
                .map(|bucket| (bucket.name().to_owned(), state.balance(bucket)))
                .collect();
            Ok(vec![decided(
                Event::ExpiryNoticeIssued(ExpiryNoticeIssued {
                    notice: notice.clone(),
                    term_end: terms.term_end,
                    balances,
                    at_risk: lots_at_risk(state),
                    currency: Some(terms.currency.clone()),
                }),
                *due_at,
            )])
        }
        TimeDriven::AssessShortfall { year, due_at } => {
            let expiry = calendar::local_midnight(zone(state), terms.term_end + Days::new(1));
            let ended_before = state.ended_at.is_some_and(|ended| *due_at >= ended);
            if state.shortfall_billable.contains_key(year) || *due_at >= expiry || ended_before {
                return Err(not_due());
            }
            let commitment = terms
                .sab_commitments
                .iter()
                .find(|c| c.year == *year)
                .ok_or_else(not_due)?;
            let committed_amount =
                Decimal::from(commitment.incidents) * commitment.value_per_incident;
            let converted_amount = state.sab_converted.get(year).copied().unwrap_or_default();
            let shortfall = (committed_amount - converted_amount).max(Decimal::ZERO);
            let billables = if shortfall > Decimal::ZERO {
                vec![Billable {
                    kind: BillableKind::SabShortfall,
                    period: format!("year-{year}"),
                    amount: shortfall,
                    currency: terms.currency.clone(),
                }]
            } else {
                Vec::new()
            };
            Ok(vec![decided(
                Event::SabShortfallAssessed(SabShortfallAssessed {
                    support_year: *year,
                    year_start: calendar::support_year_start(terms.term_start, *year)
                        .expect("committed years are in the term"),
                    committed_incidents: commitment.incidents,
                    committed_value_per_incident: commitment.value_per_incident,
                    committed_amount,
                    converted_amount,
                    shortfall,
                    billables,
                }),
                *due_at,
            )])
        }
        TimeDriven::Forfeit { due_at } => {
            if state.status != Status::Active {
                return Err(not_due());
            }
            Ok(vec![decided(
                Event::BalancesForfeited(BalancesForfeited {
                    cause: ForfeitureCause::Expiry,
                    forfeited_at: *due_at,
                    movements: forfeit_everything(state, *due_at),
                }),
                *due_at,
            )])
        }
    }
}

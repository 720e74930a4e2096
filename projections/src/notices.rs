//! Expiry notices (R15): for each contract and notice point (90, 60, 30 and 7 days before the
//! term ends, and the R7 request deadline), the balances that would be forfeited, as the
//! scheduler recorded them, with the money at risk per bucket and lot by lot (R13).

use std::collections::BTreeMap;

use ledger::RecordedEvent;
use rust_decimal::Decimal;
use schemas::Event;
use serde::{Deserialize, Serialize};

use crate::runner::Projection;
use crate::{contract_of, decode};

pub use schemas::reply::Notice;

/// One contract's notices, in log order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractNotices {
    /// In log order.
    pub notices: Vec<Notice>,
}

/// The `notices` projection.
pub struct Notices;

impl Projection for Notices {
    const NAME: &'static str = "notices";
    type State = ContractNotices;

    fn key(event: &RecordedEvent) -> Option<&str> {
        (event.event_type == "expiry_notice_issued")
            .then(|| contract_of(&event.stream))
            .flatten()
    }

    fn apply(state: &mut ContractNotices, event: &RecordedEvent) {
        if let Event::ExpiryNoticeIssued(issued) = decode(event) {
            let mut value_at_risk = BTreeMap::new();
            for lot in &issued.at_risk {
                *value_at_risk
                    .entry(lot.bucket.name().to_owned())
                    .or_insert(Decimal::ZERO) += lot.value;
            }
            state.notices.push(Notice {
                value_at_risk,
                at_risk: issued.at_risk,
                currency: issued.currency,
                contract_id: contract_of(&event.stream).unwrap_or_default().to_owned(),
                notice: issued.notice,
                due_at: event.effective_at,
                term_end: issued.term_end,
                balances: issued.balances,
                event_id: event.event_id.to_string(),
                position: event.position,
            });
        }
    }
}

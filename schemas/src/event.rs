//! Events: one fact each, past tense, as stored in the log (the ledger's event type is the
//! `type` tag; the payload is this JSON). Every event that moves a bucket lists its movements,
//! each with the lot it touched and its money value (DOMAIN.md R12, R13), so balances, audits and
//! finance's money views are folds over `movements` that need no rule of their own.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::command::{Bucket, Item, Package, SabCommitment, SabTarget};

/// The payload schema version every event is written with today.
pub const EVENT_SCHEMA_VERSION: u32 = 1;

/// How a movement changes a bucket (R12).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum MovementKind {
    /// + a purchase.
    Purchased,
    /// + credits given back (a cancellation, an exchange).
    Returned,
    /// − credits converted into a booking.
    Converted,
    /// − hours delivered.
    Consumed,
    /// − a cancellation or reschedule fee.
    Fee,
    /// − expired or terminated.
    Forfeited,
}

impl MovementKind {
    /// Every kind, in R12's order.
    pub const ALL: [MovementKind; 6] = [
        MovementKind::Purchased,
        MovementKind::Returned,
        MovementKind::Converted,
        MovementKind::Consumed,
        MovementKind::Fee,
        MovementKind::Forfeited,
    ];

    /// Whether the kind adds to the balance (purchases, returns) rather than deducting.
    pub fn adds(self) -> bool {
        matches!(self, MovementKind::Purchased | MovementKind::Returned)
    }
}

/// Sums per movement kind, of units or of money: the terms of R12's
/// `purchased + returned − converted − consumed − fees − forfeited`. The one place that formula
/// is written; the rules' state, the projections and the audit statement all use it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct KindTotals {
    /// `purchased`.
    pub purchased: Decimal,
    /// `returned`.
    pub returned: Decimal,
    /// `converted`.
    pub converted: Decimal,
    /// `consumed`.
    pub consumed: Decimal,
    /// `fee`.
    pub fees: Decimal,
    /// `forfeited`.
    pub forfeited: Decimal,
}

impl KindTotals {
    /// Adds `amount` under `kind`.
    pub fn add(&mut self, kind: MovementKind, amount: Decimal) {
        let slot = match kind {
            MovementKind::Purchased => &mut self.purchased,
            MovementKind::Returned => &mut self.returned,
            MovementKind::Converted => &mut self.converted,
            MovementKind::Consumed => &mut self.consumed,
            MovementKind::Fee => &mut self.fees,
            MovementKind::Forfeited => &mut self.forfeited,
        };
        *slot += amount;
    }

    /// R12: `purchased + returned − converted − consumed − fees − forfeited`.
    pub fn net(&self) -> Decimal {
        self.purchased + self.returned - self.converted - self.consumed - self.fees - self.forfeited
    }
}

/// One change to one lot of one bucket. `quantity` is the magnitude in the kind's direction;
/// a reversal records the same kind with the opposite sign. `value = quantity × unit_price`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Movement {
    /// The bucket.
    pub bucket: Bucket,
    /// What happened.
    pub kind: MovementKind,
    /// The lot (`L<version of the purchase event>`).
    pub lot: String,
    /// Units.
    #[serde(with = "crate::decimal::DecimalString")]
    pub quantity: Decimal,
    /// The lot's money per unit.
    #[serde(with = "crate::decimal::DecimalString")]
    pub unit_price: Decimal,
    /// `quantity × unit_price`, money.
    #[serde(with = "crate::decimal::DecimalString")]
    pub value: Decimal,
}

impl Movement {
    /// The movement's effect on the bucket's balance.
    pub fn balance_delta(&self) -> Decimal {
        // A negation, not a multiplication by −1: a rebuild calls this for every movement.
        if self.kind.adds() {
            self.quantity
        } else {
            -self.quantity
        }
    }
}

/// What kind of billable amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BillableKind {
    /// R9.
    SabShortfall,
    /// R9, negative.
    SabShortfallAdjustment,
    /// R6.
    UncoveredCancellationFee,
}

/// A billable amount in money. Never netted against balances (R12).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Billable {
    /// What it is.
    pub kind: BillableKind,
    /// The period it concerns, e.g. `year-1` or a booking id.
    pub period: String,
    /// Money; negative for an adjustment.
    #[serde(with = "crate::decimal::DecimalString")]
    pub amount: Decimal,
    /// ISO 4217.
    pub currency: String,
}

/// Only what an event moved and billed: what folds that add up balances need. Read from a payload
/// without the tagged `Event` enum or serde's per-field machinery (see `effects.rs`); the other
/// fields are skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Effects {
    /// The event's movements (none for events that move no bucket).
    #[serde(default)]
    pub movements: Vec<Movement>,
    /// The event's billables.
    #[serde(default)]
    pub billables: Vec<Billable>,
}

impl Effects {
    /// Parses the effects of a stored payload.
    ///
    /// # Errors
    /// When the payload's movements or billables do not parse.
    pub fn from_payload(payload: &[u8]) -> Result<Effects, serde_json::Error> {
        let mut effects = Effects::default();
        effects.read_payload(payload)?;
        Ok(effects)
    }

    /// Parses the effects of a stored payload into `self`, reusing its allocations: the fold
    /// that reads every payload of the log keeps one `Effects` for all of them.
    ///
    /// # Errors
    /// When the payload's movements or billables do not parse (`self` is then unspecified).
    pub fn read_payload(&mut self, payload: &[u8]) -> Result<(), serde_json::Error> {
        if crate::effects::read_into(payload, self).is_none() {
            *self = serde_json::from_slice(payload)?;
        }
        Ok(())
    }
}

/// Every fact the ledger records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// R1.
    ContractOpened(ContractOpened),
    /// The rate card.
    RatesPublished(RatesPublished),
    /// R2.
    Purchased(Purchased),
    /// R3.
    CreditsConverted(CreditsConverted),
    /// R6.
    BookingCancelled(BookingCancelled),
    /// R6.
    BookingRescheduled(BookingRescheduled),
    /// R3, R6.
    BookingExchanged(BookingExchanged),
    /// R4.
    SabConverted(SabConverted),
    /// R5.
    HoursConsumed(HoursConsumed),
    /// R8.
    ContractTerminated(ContractTerminated),
    /// R8, R11.
    BalancesForfeited(BalancesForfeited),
    /// R9.
    SabShortfallAssessed(SabShortfallAssessed),
    /// R9.
    SabShortfallAdjusted(SabShortfallAdjusted),
    /// R11.
    EventReversed(EventReversed),
    /// R15.
    ExpiryNoticeIssued(ExpiryNoticeIssued),
}

impl Event {
    /// The wire name, used as the log's event type.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::ContractOpened(_) => "contract_opened",
            Event::RatesPublished(_) => "rates_published",
            Event::Purchased(_) => "purchased",
            Event::CreditsConverted(_) => "credits_converted",
            Event::BookingCancelled(_) => "booking_cancelled",
            Event::BookingRescheduled(_) => "booking_rescheduled",
            Event::BookingExchanged(_) => "booking_exchanged",
            Event::SabConverted(_) => "sab_converted",
            Event::HoursConsumed(_) => "hours_consumed",
            Event::ContractTerminated(_) => "contract_terminated",
            Event::BalancesForfeited(_) => "balances_forfeited",
            Event::SabShortfallAssessed(_) => "sab_shortfall_assessed",
            Event::SabShortfallAdjusted(_) => "sab_shortfall_adjusted",
            Event::EventReversed(_) => "event_reversed",
            Event::ExpiryNoticeIssued(_) => "expiry_notice_issued",
        }
    }

    /// The bucket movements the event records (empty for most non-monetary events).
    pub fn movements(&self) -> &[Movement] {
        match self {
            Event::Purchased(e) => &e.movements,
            Event::CreditsConverted(e) => &e.movements,
            Event::BookingCancelled(e) => &e.movements,
            Event::BookingRescheduled(e) => &e.movements,
            Event::BookingExchanged(e) => &e.movements,
            Event::HoursConsumed(e) => &e.movements,
            Event::BalancesForfeited(e) => &e.movements,
            Event::EventReversed(e) => &e.movements,
            _ => &[],
        }
    }

    /// The billable amounts the event records.
    pub fn billables(&self) -> &[Billable] {
        match self {
            Event::BookingRescheduled(e) => &e.billables,
            Event::SabShortfallAssessed(e) => &e.billables,
            Event::SabShortfallAdjusted(e) => &e.billables,
            Event::EventReversed(e) => &e.billables,
            _ => &[],
        }
    }

    /// Parses a stored payload.
    ///
    /// # Errors
    /// When the payload is not an event of this schema version.
    pub fn from_payload(payload: &[u8]) -> Result<Event, serde_json::Error> {
        serde_json::from_slice(payload)
    }

    /// The payload to store.
    pub fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("events serialize")
    }
}

/// R1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContractOpened {
    /// Id.
    pub contract_id: String,
    /// Customer.
    pub customer: String,
    /// Package.
    pub package: Package,
    /// Term start.
    pub term_start: NaiveDate,
    /// Term end (inclusive).
    pub term_end: NaiveDate,
    /// ISO 4217.
    pub currency: String,
    /// IANA zone.
    pub time_zone: String,
    /// Holidays.
    pub holidays: Vec<NaiveDate>,
    /// 0..=1.
    #[serde(with = "crate::decimal::DecimalString")]
    pub cancellation_fee_rate: Decimal,
    /// SAB commitments.
    pub sab_commitments: Vec<SabCommitment>,
}

/// The rate card from a time on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RatesPublished {
    /// From when.
    pub effective_from: DateTime<Utc>,
    /// Service → credits.
    #[serde(with = "crate::decimal::DecimalMap")]
    pub rates: BTreeMap<String, Decimal>,
}

/// R2: a lot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Purchased {
    /// What.
    pub item: Item,
    /// The lot's id.
    pub lot: String,
    /// Units.
    #[serde(with = "crate::decimal::DecimalString")]
    pub quantity: Decimal,
    /// Money per unit.
    #[serde(with = "crate::decimal::DecimalString")]
    pub unit_price: Decimal,
    /// Special request.
    pub custom_scope: bool,
    /// The lot's one `purchased` movement.
    pub movements: Vec<Movement>,
}

/// R3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditsConverted {
    /// The booking.
    pub booking_id: String,
    /// Service.
    pub service: String,
    /// Units of the service.
    #[serde(with = "crate::decimal::DecimalString")]
    pub quantity: Decimal,
    /// The rate card's price in credits per unit at the effective time.
    #[serde(with = "crate::decimal::DecimalString")]
    pub rate: Decimal,
    /// When that rate took effect.
    pub rate_effective_from: DateTime<Utc>,
    /// `rate × quantity` before rounding.
    #[serde(with = "crate::decimal::DecimalString")]
    pub credits_unrounded: Decimal,
    /// Rounded to the nearest whole credit, halves away from zero.
    #[serde(with = "crate::decimal::DecimalString")]
    pub credits: Decimal,
    /// When the service starts.
    pub starts_at: DateTime<Utc>,
    /// Credits drawn, by lot.
    pub movements: Vec<Movement>,
}

/// R6.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BookingCancelled {
    /// The booking.
    pub booking_id: String,
    /// Less than 14 days before the start.
    pub late: bool,
    /// The fee rate applied (0 when not late).
    #[serde(with = "crate::decimal::DecimalString")]
    pub fee_rate: Decimal,
    /// Fee in credits, rounded to the nearest whole credit.
    #[serde(with = "crate::decimal::DecimalString")]
    pub fee_credits: Decimal,
    /// The booking's credits returned, by lot, then the fee, by lot.
    pub movements: Vec<Movement>,
}

/// R6.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BookingRescheduled {
    /// The booking.
    pub booking_id: String,
    /// The old start.
    pub previous_starts_at: DateTime<Utc>,
    /// The new start.
    pub starts_at: DateTime<Utc>,
    /// Less than 14 days before the old start.
    pub late: bool,
    /// Fee rate applied.
    #[serde(with = "crate::decimal::DecimalString")]
    pub fee_rate: Decimal,
    /// Fee in credits.
    #[serde(with = "crate::decimal::DecimalString")]
    pub fee_credits: Decimal,
    /// The part of the fee the balance could not cover, in credits.
    #[serde(with = "crate::decimal::DecimalString")]
    pub uncovered_credits: Decimal,
    /// The fee drawn, by lot.
    pub movements: Vec<Movement>,
    /// The uncovered part in money (uncovered credits × the newest lot's unit price).
    pub billables: Vec<Billable>,
}

/// R3, R6.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BookingExchanged {
    /// The booking given up.
    pub booking_id: String,
    /// The new booking.
    pub new_booking_id: String,
    /// Its service.
    pub service: String,
    /// Units.
    #[serde(with = "crate::decimal::DecimalString")]
    pub quantity: Decimal,
    /// Rate at the effective time.
    #[serde(with = "crate::decimal::DecimalString")]
    pub rate: Decimal,
    /// When that rate took effect.
    pub rate_effective_from: DateTime<Utc>,
    /// Before rounding.
    #[serde(with = "crate::decimal::DecimalString")]
    pub credits_unrounded: Decimal,
    /// The new booking's credits.
    #[serde(with = "crate::decimal::DecimalString")]
    pub credits: Decimal,
    /// The new start.
    pub starts_at: DateTime<Utc>,
    /// Less than 14 days before the old start.
    pub late: bool,
    /// Fee rate applied.
    #[serde(with = "crate::decimal::DecimalString")]
    pub fee_rate: Decimal,
    /// Fee on the old booking, in credits.
    #[serde(with = "crate::decimal::DecimalString")]
    pub fee_credits: Decimal,
    /// Old credits returned, fee drawn, new credits drawn, by lot.
    pub movements: Vec<Movement>,
}

/// R4.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SabConverted {
    /// Incidents.
    pub incidents: u32,
    /// Money per incident.
    #[serde(with = "crate::decimal::DecimalString")]
    pub value_per_incident: Decimal,
    /// `incidents × value_per_incident`.
    #[serde(with = "crate::decimal::DecimalString")]
    pub amount: Decimal,
    /// ISO 4217.
    pub currency: String,
    /// Where it was applied.
    pub applied_to: SabTarget,
    /// The support year of the effective time.
    pub support_year: u32,
}

/// R5.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HoursConsumed {
    /// The bucket.
    pub bucket: Bucket,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub ended_at: DateTime<Utc>,
    /// Whole minutes worked.
    pub minutes: u32,
    /// `minutes ÷ 60`, rounded to 2 decimals, halves away from zero.
    #[serde(with = "crate::decimal::DecimalString")]
    pub hours: Decimal,
    /// Hours drawn, by lot.
    pub movements: Vec<Movement>,
}

/// R8: early termination (followed in the same append by `balances_forfeited`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContractTerminated {
    /// The termination date, contract time.
    pub termination_date: NaiveDate,
}

/// Why balances were forfeited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ForfeitureCause {
    /// The term ended (R8).
    Expiry,
    /// The contract was terminated (R8).
    Termination,
    /// A reversal after the term returned units (R11).
    ReversalAfterTerm,
}

/// R8: every remaining balance forfeited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BalancesForfeited {
    /// Why.
    pub cause: ForfeitureCause,
    /// When it took effect.
    pub forfeited_at: DateTime<Utc>,
    /// What was forfeited, by lot.
    pub movements: Vec<Movement>,
}

/// R9.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SabShortfallAssessed {
    /// Support year.
    pub support_year: u32,
    /// Its start.
    pub year_start: NaiveDate,
    /// Committed incidents.
    pub committed_incidents: u32,
    /// Committed value per incident.
    #[serde(with = "crate::decimal::DecimalString")]
    pub committed_value_per_incident: Decimal,
    /// `incidents × value`.
    #[serde(with = "crate::decimal::DecimalString")]
    pub committed_amount: Decimal,
    /// Value converted in that year when assessed.
    #[serde(with = "crate::decimal::DecimalString")]
    pub converted_amount: Decimal,
    /// `max(0, committed − converted)`.
    #[serde(with = "crate::decimal::DecimalString")]
    pub shortfall: Decimal,
    /// The positive shortfall as a billable (none when zero).
    pub billables: Vec<Billable>,
}

/// R9: a late conversion lowers an assessed shortfall.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SabShortfallAdjusted {
    /// Support year.
    pub support_year: u32,
    /// Newly converted value.
    #[serde(with = "crate::decimal::DecimalString")]
    pub converted_amount: Decimal,
    /// The negative adjustment as a billable.
    pub billables: Vec<Billable>,
}

/// R11.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventReversed {
    /// The reversed event's id.
    pub reversed_event_id: String,
    /// Its type.
    pub reversed_type: String,
    /// Why.
    pub reason: String,
    /// The reversed event's movements with the opposite sign.
    pub movements: Vec<Movement>,
    /// The reversed event's billables with the opposite sign.
    pub billables: Vec<Billable>,
}

/// R15.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpiryNoticeIssued {
    /// `90`, `60`, `30`, `7`, or `request_deadline`.
    pub notice: String,
    /// The term's end.
    pub term_end: NaiveDate,
    /// Balances that would be forfeited.
    #[serde(with = "crate::decimal::DecimalMap")]
    pub balances: BTreeMap<String, Decimal>,
    /// What would be forfeited lot by lot, with its money value (R13), oldest lot first. Absent
    /// on notices recorded before it was kept, and when nothing is left.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub at_risk: Vec<LotAtRisk>,
    /// The contract's currency, the money values' unit. Absent on notices recorded before it
    /// was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// What one lot still holds, and its money value, as a notice saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LotAtRisk {
    /// The bucket.
    pub bucket: Bucket,
    /// The lot (`L<version of the purchase event>`).
    pub lot: String,
    /// Units left in it.
    #[serde(with = "crate::decimal::DecimalString")]
    pub quantity: Decimal,
    /// The lot's money per unit.
    #[serde(with = "crate::decimal::DecimalString")]
    pub unit_price: Decimal,
    /// `quantity × unit_price`, money, exact.
    #[serde(with = "crate::decimal::DecimalString")]
    pub value: Decimal,
}

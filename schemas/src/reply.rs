//! Every query's reply as the service sends it (`ledger.qry.<view>`) and the CLI prints it as
//! JSON: balances, the audit statement, billables, notices, replay, diff, verify and raw log
//! entries. The types and their JSON Schemas (`schemas/json/queries/`, kept in step by a test);
//! `projections` fills them in.
//!
//! Not here: how any figure is computed (`projections`), rendering (`tools`).

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{KindTotals, Movement};

/// One event's line in the statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StatementLine {
    /// Global position.
    pub position: u64,
    /// The log's event id.
    pub event_id: String,
    /// Event type.
    pub event_type: String,
    /// When the ledger recorded it, in the contract's zone.
    pub recorded_at: DateTime<FixedOffset>,
    /// When it happened, in the contract's zone.
    pub effective_at: DateTime<FixedOffset>,
    /// Who asked.
    pub actor: Option<String>,
    /// External reference.
    pub reference: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// Net change per bucket (only buckets it moved).
    #[serde(with = "crate::decimal::DecimalMap")]
    pub delta: BTreeMap<String, Decimal>,
    /// Net money change per bucket (only buckets it moved).
    #[serde(with = "crate::decimal::DecimalMap")]
    pub delta_value: BTreeMap<String, Decimal>,
    /// Balance per bucket after this line, in the statement's (effective-time) order.
    #[serde(with = "crate::decimal::DecimalMap")]
    pub running: BTreeMap<String, Decimal>,
    /// The lots it drew from or gave back to, with money value.
    pub lots: Vec<Movement>,
    /// Billable money it recorded, by kind.
    #[serde(with = "crate::decimal::DecimalMap")]
    pub billables: BTreeMap<String, Decimal>,
    /// A SAB conversion's money (negative for its reversal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sab: Option<SabLine>,
    /// The event a reversal undid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undoes: Option<Undone>,
}

/// A SAB conversion on the statement (R9), or its reversal (negative incidents and amount).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SabLine {
    /// Incidents converted.
    pub incidents: i64,
    /// Money per incident.
    #[serde(with = "crate::decimal::DecimalString")]
    pub value_per_incident: Decimal,
    /// incidents × value per incident.
    #[serde(with = "crate::decimal::DecimalString")]
    pub amount: Decimal,
    /// `base_fee`, `dse` or `advanced_services`.
    pub applied_to: String,
    /// The support year it counts in.
    pub support_year: u32,
}

/// The event a reversal undid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Undone {
    /// Its event id.
    pub event_id: String,
    /// Its type.
    pub event_type: String,
    /// Its position, when it is in this contract's stream.
    pub position: Option<u64>,
}

/// Opening + movements = closing, for one bucket (in units, or in money).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RollForward {
    /// The bucket.
    pub bucket: String,
    /// Balance before the period.
    #[serde(with = "crate::decimal::DecimalString")]
    pub opening: Decimal,
    /// Net movement in the period.
    #[serde(with = "crate::decimal::DecimalString")]
    pub movements: Decimal,
    /// Balance at the end of the period.
    #[serde(with = "crate::decimal::DecimalString")]
    pub closing: Decimal,
    /// `opening + movements == closing`, on the exact figures.
    pub reconciles: bool,
}

/// One support year's SAB commitment and what became of it (R9, R11), over everything the
/// statement knows of (not only its period): the year's billable total must equal
/// `max(0, committed − net converted)` once the year is assessed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SabYear {
    /// The support year, from 1.
    pub support_year: u32,
    /// Committed incidents.
    pub committed_incidents: u32,
    /// Money per incident.
    #[serde(with = "crate::decimal::DecimalString")]
    pub value_per_incident: Decimal,
    /// incidents × value.
    #[serde(with = "crate::decimal::DecimalString")]
    pub committed: Decimal,
    /// Money converted in the year, net of reversals.
    #[serde(with = "crate::decimal::DecimalString")]
    pub converted: Decimal,
    /// The shortfall assessed 30 days into the year, if it has been.
    #[serde(with = "crate::decimal::OptionalDecimalString")]
    pub shortfall: Option<Decimal>,
    /// Adjustments since (negative for later conversions, positive for reversed ones).
    #[serde(with = "crate::decimal::DecimalString")]
    pub adjustments: Decimal,
    /// shortfall + adjustments (0 before the assessment).
    #[serde(with = "crate::decimal::DecimalString")]
    pub billable: Decimal,
    /// How `billable` follows from the figures above.
    pub derivation: String,
}

/// A contract's statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Statement {
    /// The contract.
    pub contract_id: String,
    /// Customer.
    pub customer: String,
    /// ISO 4217.
    pub currency: String,
    /// The contract's IANA time zone, in which every time below is given.
    pub time_zone: String,
    /// Term start.
    pub term_start: String,
    /// Term end.
    pub term_end: String,
    /// The log position the statement was built to.
    pub built_to_position: u64,
    /// That event's chain hash (hex): reproduce the statement from a log with this head.
    pub built_to_hash: String,
    /// Only what the ledger had recorded by then, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_at: Option<DateTime<FixedOffset>>,
    /// Period start (effective time), if any.
    pub from: Option<DateTime<FixedOffset>>,
    /// Period end (effective time, excluded), if any.
    pub to: Option<DateTime<FixedOffset>>,
    /// Balances before the period.
    #[serde(with = "crate::decimal::DecimalMap")]
    pub opening: BTreeMap<String, Decimal>,
    /// The period's lines, by effective time, then position.
    pub lines: Vec<StatementLine>,
    /// Units by kind, per bucket, in the period.
    pub totals: BTreeMap<String, KindTotals>,
    /// Money by kind, per bucket, in the period.
    pub totals_value: BTreeMap<String, KindTotals>,
    /// Billable money by kind in the period.
    #[serde(with = "crate::decimal::DecimalMap")]
    pub billables: BTreeMap<String, Decimal>,
    /// Balances at the end of the period.
    #[serde(with = "crate::decimal::DecimalMap")]
    pub closing: BTreeMap<String, Decimal>,
    /// One line per bucket, in units.
    pub roll_forward: Vec<RollForward>,
    /// One line per bucket, in money (the lots' value).
    pub money_roll_forward: Vec<RollForward>,
    /// One entry per committed support year.
    pub sab_years: Vec<SabYear>,
}

/// One lot: its unit price, what is left, and quantities and money by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LotBalance {
    /// Money per unit.
    #[serde(with = "crate::decimal::DecimalString")]
    pub unit_price: Decimal,
    /// Units left.
    #[serde(with = "crate::decimal::DecimalString")]
    pub remaining: Decimal,
    /// Units by kind.
    pub quantity: KindTotals,
    /// Money by kind (quantity × unit price, as recorded).
    pub value: KindTotals,
}

/// One bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BucketBalance {
    /// Units left.
    #[serde(with = "crate::decimal::DecimalString")]
    pub balance: Decimal,
    /// Units by kind.
    pub quantity: KindTotals,
    /// Money by kind.
    pub value: KindTotals,
    /// By lot id.
    pub lots: BTreeMap<String, LotBalance>,
}

/// One contract.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ContractBalances {
    /// The contract.
    pub contract_id: String,
    /// ISO 4217.
    pub currency: String,
    /// The last position folded for this contract.
    pub position: u64,
    /// By bucket name.
    pub buckets: BTreeMap<String, BucketBalance>,
    /// Billable money by kind (shortfalls, adjustments, uncovered fees).
    #[serde(with = "crate::decimal::DecimalMap")]
    pub billables: BTreeMap<String, Decimal>,
}

/// One step of a replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReplayStep {
    /// Global position.
    pub position: u64,
    /// Version in the contract's stream.
    pub version: u64,
    /// The event id.
    pub event_id: String,
    /// Type.
    pub event_type: String,
    /// When recorded.
    pub recorded_at: DateTime<Utc>,
    /// When effective.
    pub effective_at: Option<DateTime<Utc>>,
    /// Net change per bucket.
    #[serde(with = "crate::decimal::DecimalMap")]
    pub delta: BTreeMap<String, Decimal>,
    /// Balances after the event.
    #[serde(with = "crate::decimal::DecimalMap")]
    pub balances: BTreeMap<String, Decimal>,
    /// Billable money after the event, by kind.
    #[serde(with = "crate::decimal::DecimalMap")]
    pub billables: BTreeMap<String, Decimal>,
    /// The event as stored.
    pub event: serde_json::Value,
}

/// A change between two knowledge times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Change {
    /// Global position.
    pub position: u64,
    /// The event id.
    pub event_id: String,
    /// Type.
    pub event_type: String,
    /// When recorded.
    pub recorded_at: DateTime<Utc>,
    /// When effective (a late entry shows an effective time before the first knowledge time).
    pub effective_at: Option<DateTime<Utc>>,
    /// Net change per bucket.
    #[serde(with = "crate::decimal::DecimalMap")]
    pub delta: BTreeMap<String, Decimal>,
    /// Billable money it added, by kind.
    #[serde(with = "crate::decimal::DecimalMap")]
    pub billables: BTreeMap<String, Decimal>,
    /// Net money per bucket (the lots' value) it moved.
    #[serde(with = "crate::decimal::DecimalMap")]
    pub delta_value: BTreeMap<String, Decimal>,
    /// Its external reference.
    pub reference: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// For a reversal: the event it undid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undoes: Option<Undone>,
}

/// What changed between two knowledge times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Diff {
    /// The contract.
    pub contract_id: String,
    /// The earlier knowledge time.
    pub known_at_before: DateTime<Utc>,
    /// The later knowledge time.
    pub known_at_after: DateTime<Utc>,
    /// Balances as known at the earlier time.
    #[serde(with = "crate::decimal::DecimalMap")]
    pub balances_before: BTreeMap<String, Decimal>,
    /// Balances as known at the later time.
    #[serde(with = "crate::decimal::DecimalMap")]
    pub balances_after: BTreeMap<String, Decimal>,
    /// Billables as known at the earlier time.
    #[serde(with = "crate::decimal::DecimalMap")]
    pub billables_before: BTreeMap<String, Decimal>,
    /// Billables as known at the later time.
    #[serde(with = "crate::decimal::DecimalMap")]
    pub billables_after: BTreeMap<String, Decimal>,
    /// The events recorded in between, in log order.
    pub changes: Vec<Change>,
}

/// One notice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Notice {
    /// The contract.
    pub contract_id: String,
    /// `90`, `60`, `30`, `7` or `request_deadline`.
    pub notice: String,
    /// When it was due (its effective time).
    pub due_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The term's last day.
    pub term_end: chrono::NaiveDate,
    /// Balances that would be forfeited, by bucket.
    #[serde(with = "crate::decimal::DecimalMap")]
    pub balances: BTreeMap<String, Decimal>,
    /// Money that would be forfeited, by bucket (the sum over its lots at risk; absent for
    /// notices recorded before lots were kept on them).
    #[serde(
        with = "crate::decimal::DecimalMap",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub value_at_risk: BTreeMap<String, Decimal>,
    /// What would be forfeited lot by lot, with its money value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub at_risk: Vec<crate::LotAtRisk>,
    /// The money values' currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// The event.
    pub event_id: String,
    /// Its position.
    pub position: u64,
}

/// One billable amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BillableEntry {
    /// The contract.
    pub contract_id: String,
    /// `sab_shortfall`, `sab_shortfall_adjustment` (negative) or `uncovered_cancellation_fee`.
    pub kind: String,
    /// `year-N` or a booking id.
    pub period: String,
    /// Money.
    #[serde(with = "crate::decimal::DecimalString")]
    pub amount: Decimal,
    /// ISO 4217.
    pub currency: String,
    /// The event that recorded it.
    pub event_id: String,
    /// Its position.
    pub position: u64,
    /// Its effective time.
    pub effective_at: Option<chrono::DateTime<chrono::Utc>>,
    /// How it was computed.
    pub derivation: serde_json::Value,
}

/// A contract's balances under a filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Balances {
    /// The contract.
    pub contract_id: String,
    /// The last position counted (0 when none).
    pub position: u64,
    /// Bucket → balance, as shown (`schemas::display`: hours to 2 decimals, credits whole).
    #[serde(with = "crate::decimal::DecimalMap")]
    pub balances: BTreeMap<String, Decimal>,
}

/// `balance_detail`'s answer: the fold and the position and chain hash it was built to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BalanceDetail {
    /// The fold.
    #[serde(flatten)]
    pub balances: ContractBalances,
    /// The last position counted.
    pub built_to_position: u64,
    /// Its chain hash (hex).
    pub built_to_hash: String,
}

/// `notices`' answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NoticesAnswer {
    /// The position the notices projection was built to.
    pub built_to_position: u64,
    /// Its chain hash (hex).
    pub built_to_hash: String,
    /// The notices, contract by contract, in log order.
    pub notices: Vec<Notice>,
}

/// `verify`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VerifyAnswer {
    /// Whether the log verified.
    pub ok: bool,
    /// Events checked.
    pub events_checked: u64,
    /// Streams checked.
    pub streams_checked: u64,
    /// The last position checked.
    pub last_position: u64,
    /// Its chain hash (hex).
    pub last_hash: String,
    /// The first position that failed.
    pub first_bad_position: Option<u64>,
    /// What failed there.
    pub problem: Option<String>,
}

/// One raw event, as `log` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LogEntry {
    /// Global position.
    pub position: u64,
    /// Its stream.
    pub stream: String,
    /// Its version in the stream.
    pub version: u64,
    /// Its id.
    pub event_id: String,
    /// Its type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Its payload's schema version.
    pub schema_version: u32,
    /// When the log appended it (RFC 3339, `+00:00`).
    pub recorded_at: String,
    /// When it happened (RFC 3339, `+00:00`).
    pub effective_at: Option<String>,
    /// The command that made it.
    pub command_id: Option<String>,
    /// The payload (JSON; text when it is not JSON).
    pub payload: serde_json::Value,
    /// Its hash (hex).
    pub hash: String,
}

//! What `ledgerctl serve` publishes on NATS, as types: their JSON Schemas are generated under
//! `schemas/json/nats/` and the AsyncAPI document `schemas/json/asyncapi.json` names the
//! subjects that carry them. Every message also carries the headers `Nats-Msg-Id` (derived from
//! the log position), `Content-Type: application/json`, `Ledger-Type: <name>/<version>` and
//! `Ledger-Position`.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{BillableKind, Bucket, ExpiryNoticeIssued};

/// The version in every published message's `Ledger-Type` header.
pub const MESSAGE_SCHEMA_VERSION: u32 = 1;

/// Where a published message came from: the event that caused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The contract.
    pub contract_id: String,
    /// The event's global log position.
    pub position: u64,
    /// The event's id.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// When the ledger recorded it.
    pub recorded_at: DateTime<Utc>,
    /// When it took effect, if it says.
    pub effective_at: Option<DateTime<Utc>>,
}

/// A bucket's balance moved: the value under `<contract>.<bucket>` in the KV bucket
/// `ledger_balances`, republished live on `ledger.balance.<contract>.<bucket>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BalanceUpdate {
    /// The event that moved it.
    #[serde(flatten)]
    pub source: Source,
    /// The bucket.
    pub bucket: Bucket,
    /// Before the event.
    #[serde(with = "crate::decimal::DecimalString")]
    pub balance_before: Decimal,
    /// After the event.
    #[serde(with = "crate::decimal::DecimalString")]
    pub balance_after: Decimal,
}

/// The event's metadata, as recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishedMetadata {
    /// The command that produced the event.
    pub command_id: Option<String>,
    /// Who asked.
    pub actor: Option<String>,
    /// The conversation the command belongs to.
    pub correlation_id: Option<String>,
    /// The message that caused the command.
    pub causation_id: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// An external reference.
    pub reference: Option<String>,
}

/// A contract event, on `ledger.evt.<contract>.<type>` (stream `LEDGER_EVENTS`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishedEvent {
    /// The contract; null for an event of no contract (the rate card's).
    pub contract_id: Option<String>,
    /// Global log position.
    pub position: u64,
    /// The stream (`contract-<id>`, or `rates`).
    pub stream: String,
    /// Version within the stream.
    pub version: u64,
    /// The event's id.
    pub event_id: String,
    /// The event's type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The payload's schema version.
    pub schema_version: u32,
    /// When the ledger recorded it.
    pub recorded_at: DateTime<Utc>,
    /// When it took effect, if it says.
    pub effective_at: Option<DateTime<Utc>>,
    /// Metadata.
    pub metadata: PublishedMetadata,
    /// The stored payload: valid against `schemas/json/events/<type>.schema.json`.
    pub payload: serde_json::Value,
}

/// A billable amount, on `ledger.shortfall.<contract>` (stream `LEDGER_SHORTFALLS`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PublishedBillable {
    /// The event that billed it.
    #[serde(flatten)]
    pub source: Source,
    /// What it is.
    pub kind: BillableKind,
    /// The period it concerns.
    pub period: String,
    /// Money; negative for an adjustment.
    #[serde(with = "crate::decimal::DecimalString")]
    pub amount: Decimal,
    /// ISO 4217.
    pub currency: String,
}

/// An expiry notice (R15), on `ledger.notice.<contract>` (stream `LEDGER_NOTICES`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PublishedNotice {
    /// The event that issued it.
    #[serde(flatten)]
    pub source: Source,
    /// The notice.
    pub notice: ExpiryNoticeIssued,
}

/// What a service endpoint answers when it refuses (with `Nats-Service-Error-Code`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceRefusal {
    /// The command's id, when one could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// Always false.
    pub ok: bool,
    /// Why.
    pub error: RefusalDetail,
}

/// A refusal's code and message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RefusalDetail {
    /// `invalid_command`, `invalid_query`, `unknown_verb`, `unknown_view`, `unknown_contract`,
    /// `payload_too_large`, `internal`, or a rule's code.
    pub code: String,
    /// The DOMAIN.md rule, for a rule's rejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// What was wrong and what would be right.
    pub message: String,
}

/// The read views, by the names their endpoints (`ledger.qry.<view>`) and verbs take.
pub const VIEWS: [&str; 9] = [
    "balance",
    "balance_detail",
    "audit",
    "shortfalls",
    "notices",
    "replay",
    "diff",
    "verify",
    "log",
];

/// A question's parameters as they travel: one flat object, every field optional; which ones a
/// view needs is checked when it becomes a [`Query`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryParams {
    /// The contract (every view but `shortfalls`, `notices`, `verify` and `log` needs one;
    /// those take it as a filter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract_id: Option<String>,
    /// Effective at or before (RFC 3339 or a date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    /// Recorded at or before (RFC 3339 or a date); `diff` takes two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_at: Option<String>,
    /// `diff`'s later knowledge time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_at_later: Option<String>,
    /// At or before this log position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_position: Option<u64>,
    /// A statement's period: effective at or after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// A statement's period: effective before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// `replay`: up to a log position, or a recorded time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// `log`: the stream to read (else the whole log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// `log`: the first position (or stream version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
    /// `log`: at most this many events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

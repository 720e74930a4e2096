//! Commands as users send them (INTERFACE.md): one JSON object with a `type`, the fields of that
//! type, and the common fields `command_id`, `actor`, `reason`, `reference`. Unknown fields are
//! an error; decimals are strings; times are RFC 3339 with an offset; dates are `YYYY-MM-DD`.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// A command with the fields every command carries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandEnvelope {
    /// Idempotency key: a retry with the same id appends nothing and returns the first result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// Who asked; defaults to the calling user or service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// An external reference (ticket, invoice, timesheet id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The command itself.
    #[serde(flatten)]
    pub body: Command,
}

const COMMON_FIELDS: [&str; 4] = ["command_id", "actor", "reason", "reference"];

/// Every command type's wire name.
pub const COMMAND_TYPES: [&str; 11] = [
    "open_contract",
    "publish_rates",
    "purchase",
    "convert_credits",
    "cancel_booking",
    "reschedule_booking",
    "exchange_booking",
    "convert_sab",
    "consume_hours",
    "terminate_contract",
    "reverse",
];

fn fields_of<T: serde::de::DeserializeOwned>(fields: serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(fields).map_err(|e| {
        let path = e.path().to_string();
        let hint = if path.ends_with("_at") || path.ends_with("_from") {
            " (times are RFC 3339 with an offset, e.g. 2026-03-02T09:00:00Z)"
        } else if path.starts_with("term_") || path.starts_with("holidays") {
            " (dates are YYYY-MM-DD)"
        } else {
            ""
        };
        if path == "." {
            format!("{}{hint}", e.inner())
        } else {
            format!("{path}: {}{hint}", e.inner())
        }
    })
}

/// The largest command, in bytes of JSON, on every path (`submit`, `ledger.cmd.<verb>`): a
/// command is a few hundred bytes; an opening with years of holidays a few dozen kilobytes.
pub const COMMAND_BYTES_MAX: usize = 256 * 1024;

impl CommandEnvelope {
    /// Parses one command from JSON text.
    ///
    /// # Errors
    /// A message naming what is wrong: not JSON, not an object, an unknown `type` or field, a
    /// JSON number where a decimal string belongs, a missing field.
    pub fn from_json(text: &str) -> Result<CommandEnvelope, String> {
        // The same limit wherever a command comes from (a file, stdin, NATS).
        if text.len() > COMMAND_BYTES_MAX {
            return Err(format!(
                "a command is at most {COMMAND_BYTES_MAX} bytes of JSON; this one is {}",
                text.len()
            ));
        }
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        CommandEnvelope::from_value(value)
    }

    /// Parses one command from a JSON value (no size limit: see [`CommandEnvelope::from_json`]).
    ///
    /// # Errors
    /// As [`CommandEnvelope::from_json`].
    pub fn from_value(value: serde_json::Value) -> Result<CommandEnvelope, String> {
        let serde_json::Value::Object(mut object) = value else {
            return Err("a command must be a JSON object".into());
        };
        let mut common: [Option<String>; 4] = Default::default();
        for (slot, name) in common.iter_mut().zip(COMMON_FIELDS) {
            match object.remove(name) {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::String(text)) => *slot = Some(text),
                Some(other) => return Err(format!("{name} must be a string, found {other}")),
            }
        }
        let type_name = match object.remove("type") {
            Some(serde_json::Value::String(name)) => name,
            Some(other) => return Err(format!("\"type\" must be a string, found {other}")),
            None => return Err("\"type\" is required (e.g. \"purchase\")".into()),
        };
        let fields = serde_json::Value::Object(object);
        // Dispatch by hand rather than through serde's internally tagged enum, which buffers the
        // fields and loses the path of an error ("effective_at: …").
        let body = match type_name.as_str() {
            "open_contract" => Command::OpenContract(fields_of(fields)?),
            "publish_rates" => Command::PublishRates(fields_of(fields)?),
            "purchase" => Command::Purchase(fields_of(fields)?),
            "convert_credits" => Command::ConvertCredits(fields_of(fields)?),
            "cancel_booking" => Command::CancelBooking(fields_of(fields)?),
            "reschedule_booking" => Command::RescheduleBooking(fields_of(fields)?),
            "exchange_booking" => Command::ExchangeBooking(fields_of(fields)?),
            "convert_sab" => Command::ConvertSab(fields_of(fields)?),
            "consume_hours" => Command::ConsumeHours(fields_of(fields)?),
            "terminate_contract" => Command::TerminateContract(fields_of(fields)?),
            "reverse" => Command::Reverse(fields_of(fields)?),
            other => {
                return Err(format!(
                    "unknown command type {other:?}; known: {}",
                    COMMAND_TYPES.join(", ")
                ));
            }
        };
        let [command_id, actor, reason, reference] = common;
        Ok(CommandEnvelope {
            command_id,
            actor,
            reason,
            reference,
            body,
        })
    }
}

/// Every command a user can send. Forfeiture, shortfall assessment and notices are not here:
/// the scheduler appends them (DOMAIN.md R10).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// R1.
    OpenContract(OpenContract),
    /// The rate card (not tied to a contract).
    PublishRates(PublishRates),
    /// R2.
    Purchase(Purchase),
    /// R3.
    ConvertCredits(ConvertCredits),
    /// R6.
    CancelBooking(CancelBooking),
    /// R6.
    RescheduleBooking(RescheduleBooking),
    /// R3, R6.
    ExchangeBooking(ExchangeBooking),
    /// R4.
    ConvertSab(ConvertSab),
    /// R5.
    ConsumeHours(ConsumeHours),
    /// R8.
    TerminateContract(TerminateContract),
    /// R11.
    Reverse(Reverse),
}

impl Command {
    /// The wire name of the command's type.
    pub fn type_name(&self) -> &'static str {
        match self {
            Command::OpenContract(_) => "open_contract",
            Command::PublishRates(_) => "publish_rates",
            Command::Purchase(_) => "purchase",
            Command::ConvertCredits(_) => "convert_credits",
            Command::CancelBooking(_) => "cancel_booking",
            Command::RescheduleBooking(_) => "reschedule_booking",
            Command::ExchangeBooking(_) => "exchange_booking",
            Command::ConvertSab(_) => "convert_sab",
            Command::ConsumeHours(_) => "consume_hours",
            Command::TerminateContract(_) => "terminate_contract",
            Command::Reverse(_) => "reverse",
        }
    }

    /// The contract the command concerns (`None` for the rate card).
    pub fn contract_id(&self) -> Option<&str> {
        Some(match self {
            Command::OpenContract(c) => &c.contract_id,
            Command::PublishRates(_) => return None,
            Command::Purchase(c) => &c.contract_id,
            Command::ConvertCredits(c) => &c.contract_id,
            Command::CancelBooking(c) => &c.contract_id,
            Command::RescheduleBooking(c) => &c.contract_id,
            Command::ExchangeBooking(c) => &c.contract_id,
            Command::ConvertSab(c) => &c.contract_id,
            Command::ConsumeHours(c) => &c.contract_id,
            Command::TerminateContract(c) => &c.contract_id,
            Command::Reverse(c) => &c.contract_id,
        })
    }
}

/// The base package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Package {
    /// Core.
    Core,
    /// Advanced.
    Advanced,
    /// Performance.
    Performance,
}

/// A SAB commitment for one support year.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SabCommitment {
    /// Support year, from 1.
    pub year: u32,
    /// Committed incidents.
    pub incidents: u32,
    /// Money value per incident.
    #[serde(with = "crate::decimal::DecimalString")]
    pub value_per_incident: Decimal,
}

/// R1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenContract {
    /// `[A-Za-z0-9_-]{1,64}`.
    pub contract_id: String,
    /// The customer's name.
    pub customer: String,
    /// The base package.
    pub package: Package,
    /// First day of the term.
    pub term_start: NaiveDate,
    /// Last day of the term (inclusive).
    pub term_end: NaiveDate,
    /// ISO 4217.
    pub currency: String,
    /// IANA time zone.
    pub time_zone: String,
    /// Contract holidays (no DSE work).
    #[serde(default)]
    pub holidays: Vec<NaiveDate>,
    /// Fraction 0..=1 of a booking's price charged for a late cancellation; default 1.00.
    #[serde(
        default,
        with = "crate::decimal::OptionalDecimalString",
        skip_serializing_if = "Option::is_none"
    )]
    pub cancellation_fee_rate: Option<Decimal>,
    /// SAB commitments by support year.
    #[serde(default)]
    pub sab_commitments: Vec<SabCommitment>,
    /// When the contract was opened (defaults to the start of the term).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_at: Option<DateTime<Utc>>,
}

/// Publishes rates (credits per unit of a service) in force from a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRates {
    /// From when these rates apply.
    pub effective_from: DateTime<Utc>,
    /// Service code → price in credits.
    #[serde(with = "crate::decimal::DecimalMap")]
    pub rates: BTreeMap<String, Decimal>,
}

/// What a purchase buys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Item {
    /// Whole credits.
    ProactiveCredits,
    /// DSE hours, custom blocks.
    DseHours,
    /// Digital Advisory Services hours, packages of 200/400/800/1600.
    DasHours,
    /// Developer Advanced hours (to `adm_hours`).
    DeveloperAdvanced,
    /// Developer Performance hours (to `adm_hours`).
    DeveloperPerformance,
}

/// R2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Purchase {
    /// The contract.
    pub contract_id: String,
    /// What is bought.
    pub item: Item,
    /// How much.
    #[serde(with = "crate::decimal::DecimalString")]
    pub quantity: Decimal,
    /// Money per unit, in the contract's currency.
    #[serde(with = "crate::decimal::DecimalString")]
    pub unit_price: Decimal,
    /// When it was bought.
    pub effective_at: DateTime<Utc>,
    /// A special-request scope (R2 limits).
    #[serde(default)]
    pub custom_scope: bool,
}

/// R3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConvertCredits {
    /// The contract.
    pub contract_id: String,
    /// The new booking's id, unique in the contract.
    pub booking_id: String,
    /// Service code on the rate card.
    pub service: String,
    /// Units of the service.
    #[serde(with = "crate::decimal::DecimalString")]
    pub quantity: Decimal,
    /// When the service starts.
    pub starts_at: DateTime<Utc>,
    /// When the request was made.
    pub effective_at: DateTime<Utc>,
}

/// R6.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBooking {
    /// The contract.
    pub contract_id: String,
    /// The booking.
    pub booking_id: String,
    /// When the request was made.
    pub effective_at: DateTime<Utc>,
}

/// R6.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RescheduleBooking {
    /// The contract.
    pub contract_id: String,
    /// The booking.
    pub booking_id: String,
    /// The new start.
    pub starts_at: DateTime<Utc>,
    /// When the request was made.
    pub effective_at: DateTime<Utc>,
}

/// R3, R6.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExchangeBooking {
    /// The contract.
    pub contract_id: String,
    /// The booking given up.
    pub booking_id: String,
    /// The new booking's id.
    pub new_booking_id: String,
    /// The new service.
    pub service: String,
    /// Units of the new service.
    #[serde(with = "crate::decimal::DecimalString")]
    pub quantity: Decimal,
    /// The new start.
    pub starts_at: DateTime<Utc>,
    /// When the request was made.
    pub effective_at: DateTime<Utc>,
}

/// Where SAB money is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SabTarget {
    /// The base fee.
    BaseFee,
    /// DSE.
    Dse,
    /// Advanced services.
    AdvancedServices,
}

/// R4.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConvertSab {
    /// The contract.
    pub contract_id: String,
    /// Incidents converted.
    pub incidents: u32,
    /// Money per incident, as set by the vendor at that time.
    #[serde(with = "crate::decimal::DecimalString")]
    pub value_per_incident: Decimal,
    /// Where the money goes.
    pub applied_to: SabTarget,
    /// When.
    pub effective_at: DateTime<Utc>,
}

/// A bucket of the contract.
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
pub enum Bucket {
    /// Credits.
    ProactiveCredits,
    /// Hours.
    DseHours,
    /// Hours.
    DasHours,
    /// Hours (Developer Advanced and Performance).
    AdmHours,
}

impl Bucket {
    /// Every bucket, in display order.
    pub const ALL: [Bucket; 4] = [
        Bucket::ProactiveCredits,
        Bucket::DseHours,
        Bucket::DasHours,
        Bucket::AdmHours,
    ];

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Bucket::ProactiveCredits => "proactive_credits",
            Bucket::DseHours => "dse_hours",
            Bucket::DasHours => "das_hours",
            Bucket::AdmHours => "adm_hours",
        }
    }
}

/// R5.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumeHours {
    /// The contract.
    pub contract_id: String,
    /// `dse_hours`, `das_hours` or `adm_hours`.
    pub bucket: Bucket,
    /// Start of the work.
    pub started_at: DateTime<Utc>,
    /// End of the work.
    pub ended_at: DateTime<Utc>,
}

/// R8.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TerminateContract {
    /// The contract.
    pub contract_id: String,
    /// When the termination takes effect.
    pub effective_at: DateTime<Utc>,
}

/// R11.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reverse {
    /// The contract.
    pub contract_id: String,
    /// The event to reverse.
    pub event_id: String,
}

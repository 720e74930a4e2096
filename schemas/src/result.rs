//! What a command gets back: accepted with the events it appended, or rejected with a stable
//! code, the rule (DOMAIN.md R1–R15) and a message that says what would be right
//! (INTERFACE.md). The codes are a closed list: a client may match on them.

use serde::{Deserialize, Serialize};

/// A rejection's stable snake_case code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// `already_reversed`.
    AlreadyReversed,
    /// `booking_delivered`.
    BookingDelivered,
    /// `booking_exists`.
    BookingExists,
    /// `booking_in_past`.
    BookingInPast,
    /// `booking_not_active`.
    BookingNotActive,
    /// `booking_outside_term`.
    BookingOutsideTerm,
    /// `contract_exists`.
    ContractExists,
    /// `contract_expired`.
    ContractExpired,
    /// `contract_terminated`.
    ContractTerminated,
    /// `developer_hours_out_of_range`.
    DeveloperHoursOutOfRange,
    /// `idempotency_key_reused`.
    IdempotencyKeyReused,
    /// `insufficient_balance`.
    InsufficientBalance,
    /// `invalid_bucket`.
    InvalidBucket,
    /// `invalid_command`.
    InvalidCommand,
    /// `invalid_currency`.
    InvalidCurrency,
    /// `invalid_fee_rate`.
    InvalidFeeRate,
    /// `invalid_package_size`.
    InvalidPackageSize,
    /// `invalid_quantity`.
    InvalidQuantity,
    /// `invalid_sab_commitment`.
    InvalidSabCommitment,
    /// `invalid_term`.
    InvalidTerm,
    /// `invalid_time_zone`.
    InvalidTimeZone,
    /// `lot_in_use`.
    LotInUse,
    /// `not_due`.
    NotDue,
    /// `not_reversible`.
    NotReversible,
    /// `outside_business_hours`.
    OutsideBusinessHours,
    /// `outside_term`.
    OutsideTerm,
    /// `package_not_eligible`.
    PackageNotEligible,
    /// `reason_required`.
    ReasonRequired,
    /// `request_deadline_passed`.
    RequestDeadlinePassed,
    /// `reversal_of_reversal`.
    ReversalOfReversal,
    /// `termination_before_activity`.
    TerminationBeforeActivity,
    /// `unknown_booking`.
    UnknownBooking,
    /// `unknown_contract`.
    UnknownContract,
    /// `unknown_event`.
    UnknownEvent,
    /// `unknown_service`.
    UnknownService,
}

impl Code {
    /// Every code, in name order.
    pub const ALL: [Code; 35] = [
        Code::AlreadyReversed,
        Code::BookingDelivered,
        Code::BookingExists,
        Code::BookingInPast,
        Code::BookingNotActive,
        Code::BookingOutsideTerm,
        Code::ContractExists,
        Code::ContractExpired,
        Code::ContractTerminated,
        Code::DeveloperHoursOutOfRange,
        Code::IdempotencyKeyReused,
        Code::InsufficientBalance,
        Code::InvalidBucket,
        Code::InvalidCommand,
        Code::InvalidCurrency,
        Code::InvalidFeeRate,
        Code::InvalidPackageSize,
        Code::InvalidQuantity,
        Code::InvalidSabCommitment,
        Code::InvalidTerm,
        Code::InvalidTimeZone,
        Code::LotInUse,
        Code::NotDue,
        Code::NotReversible,
        Code::OutsideBusinessHours,
        Code::OutsideTerm,
        Code::PackageNotEligible,
        Code::ReasonRequired,
        Code::RequestDeadlinePassed,
        Code::ReversalOfReversal,
        Code::TerminationBeforeActivity,
        Code::UnknownBooking,
        Code::UnknownContract,
        Code::UnknownEvent,
        Code::UnknownService,
    ];

    /// The code as it travels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Code::AlreadyReversed => "already_reversed",
            Code::BookingDelivered => "booking_delivered",
            Code::BookingExists => "booking_exists",
            Code::BookingInPast => "booking_in_past",
            Code::BookingNotActive => "booking_not_active",
            Code::BookingOutsideTerm => "booking_outside_term",
            Code::ContractExists => "contract_exists",
            Code::ContractExpired => "contract_expired",
            Code::ContractTerminated => "contract_terminated",
            Code::DeveloperHoursOutOfRange => "developer_hours_out_of_range",
            Code::IdempotencyKeyReused => "idempotency_key_reused",
            Code::InsufficientBalance => "insufficient_balance",
            Code::InvalidBucket => "invalid_bucket",
            Code::InvalidCommand => "invalid_command",
            Code::InvalidCurrency => "invalid_currency",
            Code::InvalidFeeRate => "invalid_fee_rate",
            Code::InvalidPackageSize => "invalid_package_size",
            Code::InvalidQuantity => "invalid_quantity",
            Code::InvalidSabCommitment => "invalid_sab_commitment",
            Code::InvalidTerm => "invalid_term",
            Code::InvalidTimeZone => "invalid_time_zone",
            Code::LotInUse => "lot_in_use",
            Code::NotDue => "not_due",
            Code::NotReversible => "not_reversible",
            Code::OutsideBusinessHours => "outside_business_hours",
            Code::OutsideTerm => "outside_term",
            Code::PackageNotEligible => "package_not_eligible",
            Code::ReasonRequired => "reason_required",
            Code::RequestDeadlinePassed => "request_deadline_passed",
            Code::ReversalOfReversal => "reversal_of_reversal",
            Code::TerminationBeforeActivity => "termination_before_activity",
            Code::UnknownBooking => "unknown_booking",
            Code::UnknownContract => "unknown_contract",
            Code::UnknownEvent => "unknown_event",
            Code::UnknownService => "unknown_service",
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A refused command. Nothing was appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rejection {
    /// Stable snake_case code, e.g. `outside_business_hours`.
    pub code: Code,
    /// The DOMAIN.md rule, e.g. `R5`; absent for input errors that no rule names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// What was wrong and what would be right.
    pub message: String,
}

impl Rejection {
    /// A rejection under a rule (`R1`…`R15`; empty: none).
    pub fn new(code: Code, rule: &str, message: impl Into<String>) -> Rejection {
        debug_assert!(
            rule.is_empty()
                || rule
                    .strip_prefix('R')
                    .and_then(|n| n.parse::<u8>().ok())
                    .is_some_and(|n| (1..=15).contains(&n)),
            "rule {rule:?} is not one of R1–R15"
        );
        Rejection {
            code,
            rule: (!rule.is_empty()).then(|| rule.to_owned()),
            message: message.into(),
        }
    }

    /// Malformed or impossible input.
    pub fn invalid(message: impl Into<String>) -> Rejection {
        Rejection::new(Code::InvalidCommand, "", message)
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.rule {
            None => write!(f, "{}: {}", self.code, self.message),
            Some(rule) => write!(f, "{} ({rule}): {}", self.code, self.message),
        }
    }
}

/// One appended event in a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResultEvent {
    /// The log's event id.
    pub event_id: String,
    /// Global position.
    pub position: u64,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
}

/// The answer to a command (INTERFACE.md): `ok` with its events, or a rejection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandResult {
    /// The command's id, when it had one.
    pub command_id: Option<String>,
    /// Accepted?
    pub ok: bool,
    /// What was appended (or had been, for a retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<ResultEvent>>,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Rejection>,
}

impl CommandResult {
    /// A rejection.
    pub fn rejected(command_id: Option<String>, rejection: Rejection) -> CommandResult {
        CommandResult {
            command_id,
            ok: false,
            events: None,
            error: Some(rejection),
        }
    }
}

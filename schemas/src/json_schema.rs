//! JSON Schemas of the wire, generated from the types (schemars) and committed under
//! `schemas/json/`. One schema per command type (with the common fields) and one per event type
//! (the stored payload, `type` included). A test fails when the committed files drift from
//! these.

use schemars::{JsonSchema, schema_for};
use serde_json::{Value, json};

use crate::command::*;
use crate::event::*;

fn with_type(mut schema: Value, type_name: &str, common_fields: bool) -> Value {
    let object = schema.as_object_mut().expect("struct schemas are objects");
    object.insert("title".into(), json!(type_name));
    let properties = object
        .entry("properties")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("properties is an object");
    properties.insert("type".into(), json!({ "const": type_name }));
    if common_fields {
        for (name, description) in [
            (
                "command_id",
                "Idempotency key: a retry with the same id appends nothing and returns the first result.",
            ),
            (
                "actor",
                "Who asked; defaults to the calling user or service.",
            ),
            ("reason", "Why; required by reverse."),
            (
                "reference",
                "An external reference: ticket, invoice, timesheet id.",
            ),
        ] {
            properties.insert(
                name.into(),
                json!({ "type": ["string", "null"], "description": description }),
            );
        }
    }
    let required = object
        .entry("required")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .expect("required is an array");
    required.insert(0, json!("type"));
    schema
}

fn schema_of<T: JsonSchema>() -> Value {
    serde_json::to_value(schema_for!(T)).expect("schemas serialize")
}

/// `(command type, schema)` for every command.
pub fn command_schemas() -> Vec<(&'static str, Value)> {
    let schemas = [
        schema_of::<OpenContract>(),
        schema_of::<PublishRates>(),
        schema_of::<Purchase>(),
        schema_of::<ConvertCredits>(),
        schema_of::<CancelBooking>(),
        schema_of::<RescheduleBooking>(),
        schema_of::<ExchangeBooking>(),
        schema_of::<ConvertSab>(),
        schema_of::<ConsumeHours>(),
        schema_of::<TerminateContract>(),
        schema_of::<Reverse>(),
    ];
    COMMAND_TYPES
        .iter()
        .zip(schemas)
        .map(|(name, schema)| (*name, with_type(schema, name, true)))
        .collect()
}

/// Every event type's wire name.
pub const EVENT_TYPES: [&str; 15] = [
    "contract_opened",
    "rates_published",
    "purchased",
    "credits_converted",
    "booking_cancelled",
    "booking_rescheduled",
    "booking_exchanged",
    "sab_converted",
    "hours_consumed",
    "contract_terminated",
    "balances_forfeited",
    "sab_shortfall_assessed",
    "sab_shortfall_adjusted",
    "event_reversed",
    "expiry_notice_issued",
];

/// `(event type, schema)` for every event, schema version [`EVENT_SCHEMA_VERSION`].
pub fn event_schemas() -> Vec<(&'static str, Value)> {
    let schemas = [
        schema_of::<ContractOpened>(),
        schema_of::<RatesPublished>(),
        schema_of::<Purchased>(),
        schema_of::<CreditsConverted>(),
        schema_of::<BookingCancelled>(),
        schema_of::<BookingRescheduled>(),
        schema_of::<BookingExchanged>(),
        schema_of::<SabConverted>(),
        schema_of::<HoursConsumed>(),
        schema_of::<ContractTerminated>(),
        schema_of::<BalancesForfeited>(),
        schema_of::<SabShortfallAssessed>(),
        schema_of::<SabShortfallAdjusted>(),
        schema_of::<EventReversed>(),
        schema_of::<ExpiryNoticeIssued>(),
    ];
    EVENT_TYPES
        .iter()
        .zip(schemas)
        .map(|(name, schema)| (*name, with_type(schema, name, false)))
        .collect()
}

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

/// `(message name, schema)` for every message `ledgerctl serve` publishes or answers with; the
/// name is also the `Ledger-Type` header's (before `/1`).
pub fn nats_schemas() -> Vec<(&'static str, Value)> {
    use crate::nats::*;
    let titled = |name: &str, mut schema: Value| {
        schema["title"] = json!(name);
        schema
    };
    vec![
        (
            "balance_update",
            titled("balance_update", schema_of::<BalanceUpdate>()),
        ),
        ("event", titled("event", schema_of::<PublishedEvent>())),
        (
            "billable",
            titled("billable", schema_of::<PublishedBillable>()),
        ),
        (
            "expiry_notice",
            titled("expiry_notice", schema_of::<PublishedNotice>()),
        ),
        (
            "service_refusal",
            titled("service_refusal", schema_of::<ServiceRefusal>()),
        ),
        (
            "command_result",
            titled(
                "command_result",
                schema_of::<crate::result::CommandResult>(),
            ),
        ),
    ]
}

/// `(name, schema)` for what an auditor holds (`schemas/json/proofs/`): a signed checkpoint, a
/// statement bundle, a consistency proof. README "Proofs for auditors" explains every byte.
pub fn proof_schemas() -> Vec<(&'static str, Value)> {
    use crate::proof::*;
    let titled = |name: &str, mut schema: Value| {
        schema["title"] = json!(name);
        schema
    };
    vec![
        (
            "checkpoint",
            titled("checkpoint", schema_of::<Checkpoint>()),
        ),
        ("bundle", titled("bundle", schema_of::<Bundle>())),
        (
            "consistency",
            titled("consistency", schema_of::<Consistency>()),
        ),
    ]
}

/// The AsyncAPI 3 document of the ledger's subjects, pointing at the committed schemas.
pub fn asyncapi() -> Value {
    let message = |name: &str, summary: &str| {
        json!({
            "name": name,
            "summary": summary,
            "contentType": "application/json",
            "headers": {
                "type": "object",
                "properties": {
                    "Nats-Msg-Id": {"type": "string", "description": "Derived from the log position; JetStream drops a repeat."},
                    "Ledger-Type": {"type": "string", "const": format!("{name}/{}", crate::nats::MESSAGE_SCHEMA_VERSION)},
                    "Ledger-Position": {"type": "string", "description": "The event's global log position."}
                }
            },
            "payload": {"$ref": format!("./nats/{name}.schema.json")}
        })
    };
    let command = |name: &str, reference: &str| json!({"name": name, "contentType": "application/json", "payload": {"$ref": reference}});
    // One channel per endpoint, each with its request and its reply (a refusal is a reply too).
    let mut channels = serde_json::Map::new();
    let mut operations = serde_json::Map::new();
    let refusal = command("service_refusal", "./nats/service_refusal.schema.json");
    let endpoints = crate::COMMAND_TYPES
        .iter()
        .map(|verb| {
            (
                format!("ledger.cmd.{verb}"),
                format!("cmd_{verb}"),
                command(verb, &format!("./commands/{verb}.schema.json")),
                command("command_result", "./nats/command_result.schema.json"),
            )
        })
        .chain(std::iter::once((
            "ledger.cmd.tick".to_owned(),
            "cmd_tick".to_owned(),
            json!({"name": "tick", "contentType": "application/json", "payload": {"type": "object", "required": ["now"], "additionalProperties": false, "properties": {"now": {"type": "string", "description": "RFC 3339 with an offset, or a date (00:00 UTC); not later than the service's clock."}}}}),
            json!({"name": "tick_results", "contentType": "application/json", "payload": {"type": "array", "items": {"$ref": "./nats/command_result.schema.json"}}}),
        )))
        .chain(crate::nats::VIEWS.iter().map(|view| {
            (
                format!("ledger.qry.{view}"),
                format!("qry_{view}"),
                command("query", "./queries/params.schema.json"),
                command(view, &format!("./queries/{view}.schema.json")),
            )
        }));
    for (address, id, request, answer) in endpoints {
        channels.insert(
            id.clone(),
            json!({
                "address": address,
                "messages": {"request": request, "reply": answer, "refusal": refusal.clone()}
            }),
        );
        operations.insert(
            id.clone(),
            json!({
                "action": "receive",
                "channel": {"$ref": format!("#/channels/{id}")},
                "messages": [{"$ref": format!("#/channels/{id}/messages/request")}],
                "reply": {
                    "channel": {"$ref": format!("#/channels/{id}")},
                    "messages": [
                        {"$ref": format!("#/channels/{id}/messages/reply")},
                        {"$ref": format!("#/channels/{id}/messages/refusal")}
                    ]
                }
            }),
        );
    }
    let mut document = json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Contract Ledger",
            "version": "1.0.0",
            "description": "Commands and queries of the NATS service `ledger` (served by `ledgerctl serve`), and what it publishes to JetStream. Decimals are strings."
        },
        "defaultContentType": "application/json",
        "channels": {
            "balances": {
                "address": "$KV.ledger_balances.{contract}.{bucket}",
                "description": "KV bucket `ledger_balances`, key `<contract>.<bucket>`, 64 revisions kept.",
                "parameters": {"contract": {}, "bucket": {}},
                "messages": {"balance_update": message("balance_update", "A bucket's balance moved.")}
            },
            "balanceFeed": {
                "address": "ledger.balance.{contract}.{bucket}",
                "description": "The KV bucket's writes, republished live.",
                "parameters": {"contract": {}, "bucket": {}},
                "messages": {"balance_update": message("balance_update", "A bucket's balance moved.")}
            },
            "events": {
                "address": "ledger.evt.{contract}.{type}",
                "description": "Stream LEDGER_EVENTS (limits retention, 400 days).",
                "parameters": {"contract": {}, "type": {}},
                "messages": {"event": message("event", "A contract event with its envelope.")}
            },
            "shortfalls": {
                "address": "ledger.shortfall.{contract}",
                "description": "Stream LEDGER_SHORTFALLS.",
                "parameters": {"contract": {}},
                "messages": {"billable": message("billable", "A billable amount.")}
            },
            "notices": {
                "address": "ledger.notice.{contract}",
                "description": "Stream LEDGER_NOTICES.",
                "parameters": {"contract": {}},
                "messages": {"expiry_notice": message("expiry_notice", "An expiry notice (R15).")}
            },
            "checkpoints": {
                "address": "ledger.checkpoint",
                "description": "Stream LEDGER_CHECKPOINTS (limits retention, kept forever): every signed checkpoint `serve --signing-key` makes, so that others keep copies of what the ledger committed to. Nats-Msg-Id `<log id>:ckpt-<size>`.",
                "messages": {"checkpoint": {"name": "checkpoint", "contentType": "application/json", "payload": {"$ref": "./proofs/checkpoint.schema.json"}}}
            }
        },
        "operations": {
            "receiveBalances": {"action": "receive", "channel": {"$ref": "#/channels/balanceFeed"}},
            "receiveEvents": {"action": "receive", "channel": {"$ref": "#/channels/events"}},
            "receiveShortfalls": {"action": "receive", "channel": {"$ref": "#/channels/shortfalls"}},
            "receiveNotices": {"action": "receive", "channel": {"$ref": "#/channels/notices"}},
            "receiveCheckpoints": {"action": "receive", "channel": {"$ref": "#/channels/checkpoints"}}
        }
    });
    document["channels"]
        .as_object_mut()
        .expect("channels")
        .extend(channels);
    document["operations"]
        .as_object_mut()
        .expect("operations")
        .extend(operations);
    document
}

/// `(view, schema)` of every view's reply as the service sends it (`ledger.qry.<view>`), and
/// `params` for the request: what `schemas/json/queries/` holds, kept in step by a test.
pub fn query_schemas() -> Vec<(&'static str, serde_json::Value)> {
    fn reply<T: schemars::JsonSchema>(view: &str) -> serde_json::Value {
        let generator = schemars::generate::SchemaSettings::draft2020_12()
            .for_serialize()
            .into_generator();
        let mut schema =
            serde_json::to_value(generator.into_root_schema_for::<T>()).expect("schemas serialize");
        schema["title"] = serde_json::json!(format!("{view} (reply)"));
        schema
    }
    let mut params = serde_json::to_value(schemars::schema_for!(crate::nats::QueryParams))
        .expect("schemas serialize");
    params["title"] = serde_json::json!("query parameters");
    vec![
        ("params", params),
        ("balance", reply::<crate::reply::Balances>("balance")),
        (
            "balance_detail",
            reply::<crate::reply::BalanceDetail>("balance_detail"),
        ),
        ("audit", reply::<crate::reply::Statement>("audit")),
        (
            "shortfalls",
            reply::<Vec<crate::reply::BillableEntry>>("shortfalls"),
        ),
        ("notices", reply::<crate::reply::NoticesAnswer>("notices")),
        ("replay", reply::<Vec<crate::reply::ReplayStep>>("replay")),
        ("diff", reply::<crate::reply::Diff>("diff")),
        ("verify", reply::<crate::reply::VerifyAnswer>("verify")),
        ("log", reply::<Vec<crate::reply::LogEntry>>("log")),
    ]
}

//! What one event becomes on NATS: pure, so a table test states it.

use std::collections::BTreeMap;

use ledger::RecordedEvent;
use rust_decimal::Decimal;

use crate::BALANCES_BUCKET;

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Where it goes.
    pub subject: String,
    /// Its `Nats-Msg-Id`, derived from the event's position.
    pub id: String,
    /// `event`, `balance_update`, `billable` or `expiry_notice` (its schema's name).
    pub kind: &'static str,
    /// The JSON body.
    pub body: Vec<u8>,
}

/// The subject token that stands for "no contract" (the rate card, raw streams) in
/// `ledger.evt.<contract>.<type>`: `~` is not allowed in a contract id, so it never collides.
pub const NO_CONTRACT: &str = "~";

/// Every message one event makes, moving `balances` (the contract's published balances): the
/// event itself on `ledger.evt.<contract>.<type>` — every event, the rate card's too, so positions
/// on `LEDGER_EVENTS` have no gaps — and, for a contract's event, its balance updates, billables
/// and notice. Message ids are `<log id>:<kind>-<position>…`: a republish is a duplicate, and two
/// logs can never collide.
pub fn messages(
    log_id: &str,
    event: &RecordedEvent,
    balances: &mut BTreeMap<String, Decimal>,
) -> Vec<Outgoing> {
    use schemas::nats::*;
    let mut out = Vec::new();
    let payload: serde_json::Value = serde_json::from_slice(&event.payload).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&event.payload).into())
    });
    fn body<T: serde::Serialize>(message: &T) -> Vec<u8> {
        serde_json::to_vec(message).expect("messages serialize")
    }
    let contract = schemas::contract_of(&event.stream);
    let metadata = &event.metadata;
    out.push(Outgoing {
        subject: format!(
            "ledger.evt.{}.{}",
            contract.unwrap_or(NO_CONTRACT),
            event.event_type.replace('.', "_")
        ),
        id: format!("{log_id}:evt-{}", event.position),
        kind: "event",
        body: body(&PublishedEvent {
            contract_id: contract.map(str::to_owned),
            position: event.position,
            stream: event.stream.clone(),
            version: event.version,
            event_id: event.event_id.to_string(),
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            recorded_at: event.recorded_at,
            effective_at: event.effective_at,
            metadata: PublishedMetadata {
                command_id: metadata.command_id.clone(),
                actor: metadata.actor.clone(),
                correlation_id: metadata.correlation_id.clone(),
                causation_id: metadata.causation_id.clone(),
                reason: metadata.reason.clone(),
                reference: metadata.reference.clone(),
            },
            payload,
        }),
    });
    let Some(contract) = contract else {
        return out;
    };
    let effects = projections::decode_effects(event);
    let source = Source {
        contract_id: contract.to_owned(),
        position: event.position,
        event_id: event.event_id.to_string(),
        event_type: event.event_type.clone(),
        recorded_at: event.recorded_at,
        effective_at: event.effective_at,
    };
    for (bucket, delta) in projections::balances::net_changes(&effects.movements) {
        // A balance that did not move (a cancellation whose fee took back all it returned)
        // is no update: a watcher would see the same number twice.
        if delta.is_zero() {
            continue;
        }
        let before = balances.get(bucket.name()).copied().unwrap_or_default();
        let after = before + delta;
        balances.insert(bucket.name().to_owned(), after);
        out.push(Outgoing {
            subject: format!("$KV.{BALANCES_BUCKET}.{contract}.{}", bucket.name()),
            id: format!("{log_id}:bal-{}-{}", event.position, bucket.name()),
            kind: "balance_update",
            body: body(&BalanceUpdate {
                source: source.clone(),
                bucket,
                balance_before: before,
                balance_after: after,
            }),
        });
    }
    for (index, billable) in effects.billables.iter().enumerate() {
        out.push(Outgoing {
            subject: format!("ledger.shortfall.{contract}"),
            id: format!("{log_id}:bill-{}-{index}", event.position),
            kind: "billable",
            body: body(&PublishedBillable {
                source: source.clone(),
                kind: billable.kind,
                period: billable.period.clone(),
                amount: billable.amount,
                currency: billable.currency.clone(),
            }),
        });
    }
    // Only a notice's payload is parsed a second time, as the typed event.
    if event.event_type == "expiry_notice_issued"
        && let Ok(schemas::Event::ExpiryNoticeIssued(notice)) =
            schemas::Event::from_payload(&event.payload)
    {
        out.push(Outgoing {
            subject: format!("ledger.notice.{contract}"),
            id: format!("{log_id}:notice-{}", event.position),
            kind: "expiry_notice",
            body: body(&PublishedNotice { source, notice }),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(position: u64, payload: &str) -> RecordedEvent {
        let value: serde_json::Value = serde_json::from_str(payload).unwrap();
        RecordedEvent {
            position,
            stream: "contract-C-1".to_owned(),
            version: position,
            event_id: uuid_of(position),
            event_type: value["type"].as_str().unwrap().to_owned(),
            schema_version: 1,
            recorded_at: "2026-03-01T00:00:00Z".parse().unwrap(),
            effective_at: Some("2026-03-01T00:00:00Z".parse().unwrap()),
            metadata: ledger::Metadata::default(),
            payload: payload.as_bytes().to_vec(),
            prev_hash: ledger::GENESIS_HASH,
            hash: ledger::GENESIS_HASH,
        }
    }

    fn uuid_of(position: u64) -> uuid::Uuid {
        uuid::Uuid::from_u128(u128::from(position))
    }

    const EXAMPLES: &str = "../../schemas/json/examples/events";

    fn example(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(EXAMPLES)
            .join(format!("{name}.json"));
        std::fs::read_to_string(path).unwrap()
    }

    /// Given the published balances and one event, then these messages (subject, id, kind) and
    /// these balances after.
    /// One row: the example event, the balances before, the messages (subject, id, kind), the
    /// balances after.
    type Case<'a> = (
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a [(&'a str, &'a str, &'a str)],
        &'a [(&'a str, &'a str)],
    );

    #[test]
    fn what_each_event_becomes() {
        let cases: &[Case] = &[
            (
                "purchased",
                &[],
                &[
                    ("ledger.evt.C-1.purchased", "L:evt-7", "event"),
                    (
                        "$KV.ledger_balances.C-1.proactive_credits",
                        "L:bal-7-proactive_credits",
                        "balance_update",
                    ),
                ],
                &[("proactive_credits", "100")],
            ),
            (
                // Returned 15, fee 15: the balance did not move, so no update.
                "booking_cancelled",
                &[("proactive_credits", "85")],
                &[("ledger.evt.C-1.booking_cancelled", "L:evt-7", "event")],
                &[("proactive_credits", "85")],
            ),
            (
                "sab_shortfall_assessed",
                &[],
                &[
                    ("ledger.evt.C-1.sab_shortfall_assessed", "L:evt-7", "event"),
                    ("ledger.shortfall.C-1", "L:bill-7-0", "billable"),
                ],
                &[],
            ),
            (
                "expiry_notice_issued",
                &[],
                &[
                    ("ledger.evt.C-1.expiry_notice_issued", "L:evt-7", "event"),
                    ("ledger.notice.C-1", "L:notice-7", "expiry_notice"),
                ],
                &[],
            ),
        ];
        for (name, before, expected, after) in cases {
            let mut balances: BTreeMap<String, Decimal> = before
                .iter()
                .map(|(bucket, value)| ((*bucket).to_owned(), value.parse().unwrap()))
                .collect();
            let event = recorded(7, &example(name));
            let out = messages("L", &event, &mut balances);
            let got: Vec<(&str, &str, &str)> = out
                .iter()
                .map(|m| (m.subject.as_str(), m.id.as_str(), m.kind))
                .collect();
            assert_eq!(&got, expected, "{name}");
            let after: BTreeMap<String, Decimal> = after
                .iter()
                .map(|(bucket, value)| ((*bucket).to_owned(), value.parse().unwrap()))
                .collect();
            assert_eq!(balances, after, "{name}");
        }
        // The rate card's events are published too (positions on LEDGER_EVENTS have no gaps),
        // under the no-contract token, with nothing else.
        let mut rates = recorded(8, &example("rates_published"));
        rates.stream = "rates".to_owned();
        let mut balances = BTreeMap::new();
        let out = messages("L", &rates, &mut balances);
        let got: Vec<(&str, &str, &str)> = out
            .iter()
            .map(|m| (m.subject.as_str(), m.id.as_str(), m.kind))
            .collect();
        assert_eq!(got, [("ledger.evt.~.rates_published", "L:evt-8", "event")]);
        let body: serde_json::Value = serde_json::from_slice(&out[0].body).unwrap();
        assert_eq!(body["contract_id"], serde_json::Value::Null);
        assert!(balances.is_empty());
    }
}

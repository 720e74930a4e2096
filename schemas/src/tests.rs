//! Wire-format tests: the INTERFACE.md examples parse; bad input is refused with a message.

use crate::*;

#[test]
fn interface_examples_parse() {
    let lines = [
        r#"{"type":"open_contract","command_id":"c1","contract_id":"C-1001","customer":"Contoso Ltd","package":"advanced","term_start":"2026-01-01","term_end":"2026-12-31","currency":"USD","time_zone":"UTC","holidays":["2026-12-25"],"cancellation_fee_rate":"1.00","sab_commitments":[{"year":1,"incidents":10,"value_per_incident":"500.00"}]}"#,
        r#"{"type":"publish_rates","effective_from":"2026-01-01T00:00:00Z","rates":{"WS-SEC":"7.4"}}"#,
        r#"{"type":"purchase","contract_id":"C-1001","item":"proactive_credits","quantity":"100","unit_price":"250.00","effective_at":"2026-01-01T00:00:00Z","custom_scope":false}"#,
        r#"{"type":"convert_credits","contract_id":"C-1001","booking_id":"B-1","service":"WS-SEC","quantity":"2","starts_at":"2026-03-16T09:00:00Z","effective_at":"2026-02-01T10:00:00Z"}"#,
        r#"{"type":"cancel_booking","contract_id":"C-1001","booking_id":"B-1","effective_at":"2026-03-05T10:00:00Z"}"#,
        r#"{"type":"convert_sab","contract_id":"C-1001","incidents":6,"value_per_incident":"500.00","applied_to":"base_fee","effective_at":"2026-01-20T00:00:00Z"}"#,
        r#"{"type":"consume_hours","contract_id":"C-1001","bucket":"dse_hours","started_at":"2026-03-02T09:00:00Z","ended_at":"2026-03-02T12:30:00Z","reference":"TS-4411"}"#,
        r#"{"type":"reverse","contract_id":"C-1001","event_id":"0190-…","reason":"typo"}"#,
    ];
    for line in lines {
        CommandEnvelope::from_json(line).unwrap_or_else(|e| panic!("{line}: {e}"));
    }
}

#[test]
fn bad_input_is_refused_with_a_message() {
    let cases = [
        ("not json", "not valid JSON"),
        ("[1]", "JSON object"),
        (r#"{"contract_id":"C"}"#, "\"type\" is required"),
        (r#"{"type":"buy"}"#, "unknown command type \"buy\""),
        (
            r#"{"type":"cancel_booking","contract_id":"C","booking_id":"B","effective_at":"2026-03-05T10:00:00Z","colour":"red"}"#,
            "unknown field",
        ),
        (
            r#"{"type":"purchase","contract_id":"C","item":"proactive_credits","quantity":100,"unit_price":"1","effective_at":"2026-01-01T00:00:00Z"}"#,
            "must be a string",
        ),
        (
            r#"{"type":"purchase","contract_id":"C","item":"proactive_credits","quantity":"1e3","unit_price":"1","effective_at":"2026-01-01T00:00:00Z"}"#,
            "not a decimal",
        ),
        (
            r#"{"type":"purchase","contract_id":"C","item":"proactive_credits","quantity":"1","unit_price":250.5,"effective_at":"2026-01-01T00:00:00Z"}"#,
            "unit_price: invalid type: floating point",
        ),
        (
            r#"{"type":"cancel_booking","contract_id":"C","booking_id":"B","effective_at":"2026-03-05T10:00:00"}"#,
            "effective_at",
        ),
        (
            r#"{"type":"cancel_booking","contract_id":"C","booking_id":"B","effective_at":"2026-03-05T10:00:00Z","actor":7}"#,
            "actor must be a string",
        ),
    ];
    for (line, expected) in cases {
        let error = CommandEnvelope::from_json(line).expect_err(line);
        assert!(error.contains(expected), "{line}: {error}");
    }
}

#[test]
fn events_round_trip_through_their_payload() {
    let event = Event::SabConverted(SabConverted {
        incidents: 6,
        value_per_incident: "500.00".parse().unwrap(),
        amount: "3000.00".parse().unwrap(),
        currency: "USD".into(),
        applied_to: SabTarget::BaseFee,
        support_year: 1,
    });
    let payload = event.to_payload();
    let text = String::from_utf8(payload.clone()).unwrap();
    assert!(
        text.contains(r#""type":"sab_converted""#) && text.contains(r#""amount":"3000.00""#),
        "{text}"
    );
    assert_eq!(Event::from_payload(&payload).unwrap(), event);
}

//! The wire's JSON Schemas: generated from the types, committed under `schemas/json/`, and kept in
//! step. `UPDATE_SCHEMAS=1 cargo test` rewrites the files (review the diff). Every command
//! example validates and parses; every event a full scenario writes validates against the
//! schema of its type, and the scenario covers every event type.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use schemas::json_schema::{EVENT_TYPES, asyncapi, command_schemas, event_schemas, nats_schemas};

fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/json")
}

fn updating() -> bool {
    std::env::var_os("UPDATE_SCHEMAS").is_some()
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap() + "\n"
}

fn check_files(folder: &str, schemas: &[(&str, serde_json::Value)]) {
    let dir = schema_dir().join(folder);
    for (name, schema) in schemas {
        let path = dir.join(format!("{name}.schema.json"));
        if updating() {
            std::fs::write(&path, pretty(schema)).unwrap();
        }
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{} is missing; run with UPDATE_SCHEMAS=1", path.display()));
        assert_eq!(
            committed,
            pretty(schema),
            "{} drifted from the code; run with UPDATE_SCHEMAS=1 and review",
            path.display()
        );
    }
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(
        files,
        schemas.len(),
        "{} holds files for types that no longer exist",
        dir.display()
    );
}

#[test]
fn committed_schemas_match_the_code() {
    check_files("commands", &command_schemas());
    check_files("events", &event_schemas());
    check_files("nats", &nats_schemas());
    check_files("queries", &schemas::json_schema::query_schemas());
    check_files("proofs", &schemas::json_schema::proof_schemas());
    let path = schema_dir().join("asyncapi.json");
    if updating() {
        std::fs::write(&path, pretty(&asyncapi())).unwrap();
    }
    let committed = std::fs::read_to_string(&path).expect("asyncapi.json; UPDATE_SCHEMAS=1");
    assert_eq!(committed, pretty(&asyncapi()), "asyncapi.json drifted");
    // Every reference in the AsyncAPI document resolves: a file beside it, or a pointer into
    // the document itself; and every endpoint has a request and a reply.
    let document = asyncapi();
    let mut references = Vec::new();
    collect_references(&document, &mut references);
    assert!(!references.is_empty());
    for reference in &references {
        if let Some(pointer) = reference.strip_prefix('#') {
            assert!(
                document.pointer(pointer).is_some(),
                "asyncapi.json points at {reference}, which it does not hold"
            );
        } else {
            let file = reference.trim_start_matches("./");
            assert!(
                schema_dir().join(file).exists(),
                "asyncapi.json points at {file}"
            );
        }
    }
    let endpoints: Vec<String> = schemas::COMMAND_TYPES
        .iter()
        .map(|verb| format!("ledger.cmd.{verb}"))
        .chain(std::iter::once("ledger.cmd.tick".to_owned()))
        .chain(
            schemas::nats::VIEWS
                .iter()
                .map(|view| format!("ledger.qry.{view}")),
        )
        .collect();
    let channels = document["channels"].as_object().unwrap();
    for endpoint in endpoints {
        let channel = channels
            .values()
            .find(|channel| channel["address"] == endpoint.as_str())
            .unwrap_or_else(|| panic!("asyncapi.json has no channel for {endpoint}"));
        for message in ["request", "reply", "refusal"] {
            assert!(
                channel["messages"][message]["payload"].is_object(),
                "{endpoint} has no {message}"
            );
        }
    }
}

/// Every `$ref` in `value`.
fn collect_references(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(object) => {
            for (key, inner) in object {
                match (key.as_str(), inner) {
                    ("$ref", serde_json::Value::String(reference)) => out.push(reference.clone()),
                    _ => collect_references(inner, out),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for inner in items {
                collect_references(inner, out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_command_has_an_example_that_validates_and_parses() {
    for (name, schema) in command_schemas() {
        let validator = jsonschema::validator_for(&schema).unwrap();
        let path = schema_dir().join(format!("examples/commands/{name}.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{} is missing", path.display()));
        let example: serde_json::Value = serde_json::from_str(&text).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&example)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
        schemas::CommandEnvelope::from_json(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // The schema says what the parser says: a JSON number is not a decimal.
    let purchase = command_schemas()
        .into_iter()
        .find(|(n, _)| *n == "purchase")
        .unwrap()
        .1;
    let validator = jsonschema::validator_for(&purchase).unwrap();
    let number = serde_json::json!({"type":"purchase","contract_id":"C","item":"dse_hours","quantity":10,"unit_price":"1","effective_at":"2026-01-01T00:00:00Z"});
    assert!(!validator.is_valid(&number));
    let unknown = serde_json::json!({"type":"purchase","contract_id":"C","item":"dse_hours","quantity":"10","unit_price":"1","effective_at":"2026-01-01T00:00:00Z","colour":"red"});
    assert!(!validator.is_valid(&unknown));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_a_full_scenario_writes_validates_against_its_schema() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger::Ledger::open(dir.path()).unwrap();
    let handler = commands::Handler::new(ledger.clone(), Arc::new(chrono::Utc::now), "schema-test");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let mut consumed_event = None;
    for file in ["worked-example.jsonl", "sample-contracts.jsonl"] {
        for line in std::fs::read_to_string(data.join(file)).unwrap().lines() {
            let result = handler
                .submit(schemas::CommandEnvelope::from_json(line).unwrap())
                .await
                .unwrap();
            if result.command_id.as_deref() == Some("we-dse-mon") {
                consumed_event = Some(result.events.unwrap()[0].event_id.clone());
            }
        }
    }
    handler
        .tick("2026-03-31T00:00:00Z".parse().unwrap())
        .await
        .unwrap();
    let extras = [
        // A late SAB conversion for an assessed year: an adjustment (R9).
        r#"{"type":"convert_sab","contract_id":"C-1001","incidents":1,"value_per_incident":"500.00","applied_to":"dse","effective_at":"2026-04-01T00:00:00Z"}"#.to_owned(),
        // A reversal (R11).
        format!(r#"{{"type":"reverse","contract_id":"C-1001","event_id":"{}","reason":"entered twice"}}"#, consumed_event.unwrap()),
    ];
    for line in extras {
        let result = handler
            .submit(schemas::CommandEnvelope::from_json(&line).unwrap())
            .await
            .unwrap();
        assert!(result.ok, "{line}: {:?}", result.error);
    }
    handler
        .tick("2027-02-01T00:00:00Z".parse().unwrap())
        .await
        .unwrap();

    let validators: BTreeMap<&str, jsonschema::Validator> = event_schemas()
        .into_iter()
        .map(|(name, schema)| (name, jsonschema::validator_for(&schema).unwrap()))
        .collect();
    let mut first_of_type: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for event in ledger.scan(0) {
        let event = event.unwrap();
        let payload: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
        let validator = validators
            .get(event.event_type.as_str())
            .unwrap_or_else(|| panic!("no schema for {}", event.event_type));
        let errors: Vec<String> = validator
            .iter_errors(&payload)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{} at {}: {errors:?}",
            event.event_type,
            event.position
        );
        first_of_type
            .entry(event.event_type.clone())
            .or_insert(payload);
    }
    let missing: Vec<&&str> = EVENT_TYPES
        .iter()
        .filter(|t| !first_of_type.contains_key(**t))
        .collect();
    assert!(missing.is_empty(), "the scenario never wrote {missing:?}");
    let examples = schema_dir().join("examples/events");
    for (event_type, payload) in &first_of_type {
        let path = examples.join(format!("{event_type}.json"));
        if updating() {
            std::fs::write(&path, pretty(payload)).unwrap();
        }
        let committed: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|_| {
                panic!("{} is missing; run with UPDATE_SCHEMAS=1", path.display())
            }))
            .unwrap();
        assert!(
            validators[event_type.as_str()].is_valid(&committed),
            "{} no longer validates",
            path.display()
        );
    }
}

/// Every view's answer to the worked example (the bytes `ledger.qry.<view>` replies with) and
/// every command result validate against their committed schemas, and every question's
/// parameters against `params`.
#[test]
fn every_query_answer_and_command_result_validates_against_its_schema() {
    use projections::query::{Query, answer};
    use schemas::json_schema::query_schemas;
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/worked-example.jsonl"),
    )
    .unwrap();
    let output = tests::run_ledgerctl(dir.path(), &["submit", "-"], &example);
    let result_schema = nats_schemas()
        .into_iter()
        .find(|(name, _)| *name == "command_result")
        .unwrap()
        .1;
    let results = jsonschema::validator_for(&result_schema).unwrap();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(results.is_valid(&value), "{line}");
    }
    tests::run_ledgerctl(dir.path(), &["tick", "--now", "2026-12-01"], "");
    let ledger = ledger::Ledger::open(dir.path()).unwrap();
    let schemas: BTreeMap<&str, serde_json::Value> = query_schemas().into_iter().collect();
    let params = jsonschema::validator_for(&schemas["params"]).unwrap();
    let questions = [
        (
            "balance",
            r#"{"contract_id":"C-1001","as_of":"2026-03-01"}"#,
        ),
        ("balance_detail", r#"{"contract_id":"C-1001"}"#),
        ("audit", r#"{"contract_id":"C-1001","from":"2026-01-01"}"#),
        ("shortfalls", r#"{}"#),
        ("notices", r#"{"contract_id":"C-1001"}"#),
        ("replay", r#"{"contract_id":"C-1001"}"#),
        (
            "diff",
            r#"{"contract_id":"C-1001","known_at":"2020-01-01","known_at_later":"2030-01-01"}"#,
        ),
        ("verify", r#"{}"#),
        ("log", r#"{"limit":3}"#),
    ];
    for (view, body) in questions {
        assert!(
            params.is_valid(&serde_json::from_str(body).unwrap()),
            "{view}: {body}"
        );
        let query = Query::from_json(view, body.as_bytes()).unwrap();
        let (reply, _) = answer(&ledger, &query).unwrap();
        let reply: serde_json::Value = serde_json::from_slice(&reply.to_json()).unwrap();
        let validator = jsonschema::validator_for(&schemas[view]).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&reply)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{view}: {errors:?}");
    }
}

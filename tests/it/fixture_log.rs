//! Evolution: `tests/data/fixture-store-v1/` is a store written by this version (store format 1,
//! envelope format 1, event schema version 1): the worked example, the sample contracts, a late
//! SAB conversion, a reversal and two ticks. `fixture-log-v1.jsonl` is the same log as
//! `ledgerctl log read` prints it. Every later version must open the store, verify it, fold it,
//! and arrive at the balances recorded beside it. When a format or the event schema changes, keep
//! these files and add a migration or upcaster; never rewrite them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tests::copy_dir;

fn data_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

fn lines(name: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(data_path(name))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_version_1_fixture_store_opens_verifies_and_folds_to_the_recorded_balances() {
    // Opening recovers the journal, which writes: work on a copy.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&data_path("fixture-store-v1"), dir.path());
    let ledger = ledger::Ledger::open(dir.path()).unwrap();
    let report = ledger.verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.problem);

    let expected_log = lines("fixture-log-v1.jsonl");
    assert_eq!(report.events_checked, expected_log.len() as u64);
    for (event, expected) in ledger.scan(0).zip(&expected_log) {
        let event = event.unwrap();
        assert_eq!(
            event.event_id.to_string(),
            expected["event_id"].as_str().unwrap()
        );
        let payload: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
        assert_eq!(payload, expected["payload"], "position {}", event.position);
        // Every stored payload still parses as an event of this build.
        schemas::Event::from_payload(&event.payload)
            .unwrap_or_else(|e| panic!("position {}: {e}", event.position));
    }

    let handler = commands::Handler::new(ledger.clone(), Arc::new(chrono::Utc::now), "fixture");
    for (file, as_of) in [
        ("fixture-log-v1.balances.jsonl", None),
        (
            "fixture-log-v1.balances-as-of-2026-06-30.jsonl",
            Some("2026-06-30T00:00:00Z".parse().unwrap()),
        ),
    ] {
        for expected in lines(file) {
            let contract = expected["contract_id"].as_str().unwrap();
            let filter = commands::handler::BalanceFilter {
                as_of,
                ..Default::default()
            };
            let view = handler.balance(contract, filter).unwrap().unwrap();
            assert_eq!(
                serde_json::to_value(&view).unwrap(),
                expected,
                "{file}: {contract}"
            );
            // The rules' fold accepts the whole history too (R12 is asserted after each event).
            handler.state(contract).await.unwrap();
        }
    }
    // And the old store takes new commands.
    let result = handler
        .submit(schemas::CommandEnvelope::from_json(r#"{"type":"publish_rates","effective_from":"2027-03-01T00:00:00Z","rates":{"WS-NEW":"3"}}"#).unwrap())
        .await
        .unwrap();
    assert!(result.ok, "{:?}", result.error);
    assert!(ledger.verify().unwrap().is_ok());
}

//! The contract rules through `ledgerctl submit`, `tick` and `balance`, as finance would run
//! them: the worked example of DOMAIN.md end to end, bad input line by line, idempotent resubmits,
//! and many tasks spending the same credits at once.

use std::process::Output;
use std::sync::Arc;

fn run(data: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Output {
    tests::run_ledgerctl(data, args, stdin.unwrap_or(""))
}

fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn balances(data: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--format", "json", "balance", "C-1001"];
    args.extend_from_slice(extra);
    let output = run(data, &args, None);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn worked_example() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/worked-example.jsonl"
    ))
    .unwrap()
}

#[test]
fn the_worked_example_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let output = run(data, &["submit", "-"], Some(&worked_example()));
    assert_eq!(
        output.status.code(),
        Some(1),
        "two lines are rejected on purpose"
    );
    let results = json_lines(&output);
    let codes: Vec<String> = results
        .iter()
        .map(|r| {
            if r["ok"] == true {
                "ok".into()
            } else {
                r["error"]["code"].as_str().unwrap().to_owned()
            }
        })
        .collect();
    assert_eq!(
        codes,
        [
            "ok",
            "ok",
            "ok",
            "ok",
            "ok",
            "ok",
            "ok",
            "ok",
            "outside_business_hours",
            "outside_business_hours"
        ]
    );
    assert_eq!(results[8]["error"]["rule"], "R5");
    assert!(
        results[8]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2026-03-07 is a Saturday")
    );

    // Step 2-3 and 6: 85 credits, 396.5 DSE hours.
    let now = balances(data, &[]);
    assert_eq!(now["balances"]["proactive_credits"], "85");
    assert_eq!(
        now["balances"]["dse_hours"], "396.50",
        "hours show 2 decimals"
    );

    // Step 5: the shortfall, assessed at 2026-01-31T00:00 and not before.
    let early = run(data, &["tick", "--now", "2026-01-30T23:59:00Z"], None);
    assert!(early.status.success());
    assert!(json_lines(&early).is_empty());
    let due = run(data, &["tick", "--now", "2026-01-31T00:00:00Z"], None);
    let ticked = json_lines(&due);
    assert_eq!(ticked.len(), 1);
    assert_eq!(ticked[0]["command_id"], "shortfall:C-1001:year-1");
    let position = ticked[0]["events"][0]["position"].as_u64().unwrap();
    let read = run(
        data,
        &[
            "--format",
            "json",
            "log",
            "read",
            "--from",
            &position.to_string(),
            "--limit",
            "1",
        ],
        None,
    );
    let event = &json_lines(&read)[0];
    assert_eq!(event["payload"]["shortfall"], "2000.00");
    assert_eq!(event["payload"]["billables"][0]["amount"], "2000.00");
    assert_eq!(event["payload"]["billables"][0]["currency"], "USD");

    // Step 7: at the end of 2026-12-31 everything is forfeited, once.
    let expiry = json_lines(&run(data, &["tick", "--now", "2027-01-01T00:00:00Z"], None));
    assert_eq!(
        expiry.last().unwrap()["command_id"],
        "forfeit:C-1001:2026-12-31"
    );
    assert!(
        json_lines(&run(data, &["tick", "--now", "2027-02-01T00:00:00Z"], None)).is_empty(),
        "R10: exactly once"
    );
    let after = balances(data, &[]);
    assert_eq!(after["balances"]["proactive_credits"], "0");
    assert_eq!(after["balances"]["dse_hours"], "0.00");

    // Disputes: as of the last day of the term, and as of position 3 (both purchases).
    let as_of = balances(data, &["--as-of", "2026-12-31T23:59:59Z"]);
    assert_eq!(
        (
            as_of["balances"]["proactive_credits"].as_str(),
            as_of["balances"]["dse_hours"].as_str()
        ),
        (Some("85"), Some("396.50"))
    );
    let at_three = balances(data, &["--at-position", "3"]);
    assert_eq!(
        (
            at_three["balances"]["proactive_credits"].as_str(),
            at_three["balances"]["dse_hours"].as_str()
        ),
        (Some("100"), Some("400.00"))
    );
    let known_before = balances(data, &["--known-at", "2000-01-01T00:00:00Z"]);
    assert_eq!(
        (
            known_before["position"].as_u64(),
            known_before["balances"]["proactive_credits"].as_str()
        ),
        (Some(0), Some("0"))
    );

    // After expiry only reads.
    let late = run(
        data,
        &["submit", "-"],
        Some(
            r#"{"type":"consume_hours","contract_id":"C-1001","bucket":"dse_hours","started_at":"2026-03-04T09:00:00Z","ended_at":"2026-03-04T10:00:00Z"}"#,
        ),
    );
    assert_eq!(json_lines(&late)[0]["error"]["code"], "contract_expired");
    assert!(run(data, &["verify"], None).status.success());
}

#[test]
fn resubmitting_appends_nothing_and_a_reused_id_with_other_content_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = json_lines(&run(dir.path(), &["submit", "-"], Some(&worked_example())));
    let position_after = |dir: &std::path::Path| {
        let read = run(
            dir,
            &["--format", "json", "log", "read", "--limit", "100000"],
            None,
        );
        json_lines(&read).len()
    };
    let events = position_after(dir.path());
    let again = json_lines(&run(dir.path(), &["submit", "-"], Some(&worked_example())));
    assert_eq!(
        position_after(dir.path()),
        events,
        "a resubmit appended something"
    );
    for (one, two) in first.iter().zip(&again) {
        if one["ok"] == true {
            assert_eq!(one, two, "the retry must return the first result");
        }
    }
    let reused = json_lines(&run(
        dir.path(),
        &["submit", "-"],
        Some(
            r#"{"type":"purchase","command_id":"we-buy-credits","contract_id":"C-1001","item":"proactive_credits","quantity":"999","unit_price":"250.00","effective_at":"2026-01-01T00:00:00Z"}"#,
        ),
    ));
    assert_eq!(reused[0]["error"]["code"], "idempotency_key_reused");
    assert_eq!(position_after(dir.path()), events);
}

#[test]
fn bad_input_gets_a_coded_line_each_and_the_rest_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    let open = r#"{"type":"open_contract","contract_id":"C-1001","customer":"Contoso","package":"core","term_start":"2026-01-01","term_end":"2026-12-31","currency":"USD","time_zone":"UTC"}"#;
    let lines = [
        (r#"{"type":"purchase", not json"#, "invalid_command"),
        (
            r#"{"type":"buy_everything","contract_id":"C-1001"}"#,
            "invalid_command",
        ),
        (
            r#"{"type":"purchase","contract_id":"C-1001","item":"dse_hours","quantity":"1","unit_price":"1","effective_at":"2026-02-01T00:00:00Z","colour":"red"}"#,
            "invalid_command",
        ),
        (
            r#"{"type":"purchase","contract_id":"C-1001","item":"dse_hours","quantity":10,"unit_price":"1","effective_at":"2026-02-01T00:00:00Z"}"#,
            "invalid_command",
        ),
        (
            r#"{"type":"purchase","contract_id":"C-1001","item":"dse_hours","quantity":"0","unit_price":"1","effective_at":"2026-02-01T00:00:00Z"}"#,
            "invalid_quantity",
        ),
        (
            r#"{"type":"purchase","contract_id":"C-1001","item":"dse_hours","quantity":"-5","unit_price":"1","effective_at":"2026-02-01T00:00:00Z"}"#,
            "invalid_quantity",
        ),
        (
            r#"{"type":"purchase","contract_id":"C-404","item":"dse_hours","quantity":"5","unit_price":"1","effective_at":"2026-02-01T00:00:00Z"}"#,
            "unknown_contract",
        ),
        (
            r#"{"type":"open_contract","contract_id":"C-2","customer":"X","package":"core","term_start":"2026-01-01","term_end":"2026-12-31","currency":"DOLLARS","time_zone":"UTC"}"#,
            "invalid_currency",
        ),
    ];
    let mut input = vec![open.to_owned()];
    input.extend(lines.iter().map(|(l, _)| (*l).to_owned()));
    input.push(r#"{"type":"purchase","contract_id":"C-1001","item":"dse_hours","quantity":"7","unit_price":"1","effective_at":"2026-02-01T00:00:00Z"}"#.to_owned());
    let output = run(dir.path(), &["submit", "-"], Some(&input.join("\n")));
    assert_eq!(output.status.code(), Some(1));
    let results = json_lines(&output);
    assert_eq!(results.len(), lines.len() + 2);
    assert_eq!(results[0]["ok"], true);
    for ((line, code), result) in lines.iter().zip(&results[1..]) {
        assert_eq!(result["ok"], false, "{line}");
        assert_eq!(result["error"]["code"], *code, "{line}: {result}");
        assert!(!result["error"]["message"].as_str().unwrap().is_empty());
    }
    assert!(
        results[4]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("quantity"),
        "{}",
        results[4]
    );
    assert_eq!(
        results.last().unwrap()["ok"],
        true,
        "the line after the bad ones still ran"
    );
    let read = run(dir.path(), &["--format", "json", "log", "read"], None);
    assert_eq!(
        json_lines(&read).len(),
        2,
        "nothing was appended for the bad lines"
    );
    assert_eq!(balances(dir.path(), &[])["balances"]["dse_hours"], "7.00");
}

#[test]
fn balance_and_tick_refuse_bad_options_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), &["submit", "-"], Some(&worked_example()));
    for args in [
        vec!["balance", "C-404"],
        vec!["balance", "C-1001", "--as-of", "yesterday"],
        vec!["balance", "C-1001", "--known-at", "2026-13-01"],
        vec!["balance", "C-1001", "--as-of", "2026-01-01T00:00:00"],
        vec!["tick", "--now", "soon"],
    ] {
        let output = run(dir.path(), &args, None);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(!output.stderr.is_empty());
    }
    // A date alone is 00:00 contract time that day (issue 14), not an error.
    let dated = run(
        dir.path(),
        &["balance", "C-1001", "--known-at", "2026-01-01"],
        None,
    );
    assert_eq!(dated.status.code(), Some(0), "{dated:?}");
    let missing = run(dir.path(), &["submit", "/no/such/file.jsonl"], None);
    assert_eq!(missing.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_spending_the_same_credits_never_overdraw() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger::Ledger::open(dir.path()).unwrap();
    let handler = commands::Handler::new(ledger, Arc::new(chrono::Utc::now), "test");
    let submit = |json: String| {
        let handler = handler.clone();
        async move {
            handler
                .submit(schemas::CommandEnvelope::from_json(&json).unwrap())
                .await
                .unwrap()
        }
    };
    for line in [
        r#"{"type":"open_contract","contract_id":"C-1","customer":"X","package":"core","term_start":"2026-01-01","term_end":"2026-12-31","currency":"USD","time_zone":"UTC"}"#,
        r#"{"type":"purchase","contract_id":"C-1","item":"proactive_credits","quantity":"100","unit_price":"1","effective_at":"2026-01-01T00:00:00Z"}"#,
        r#"{"type":"publish_rates","effective_from":"2026-01-01T00:00:00Z","rates":{"ONE":"1"}}"#,
    ] {
        assert!(submit(line.to_owned()).await.ok);
    }
    let mut tasks = Vec::new();
    for task in 0..40 {
        let json = format!(
            r#"{{"type":"convert_credits","contract_id":"C-1","booking_id":"B-{task}","service":"ONE","quantity":"7","starts_at":"2026-06-01T09:00:00Z","effective_at":"2026-02-01T00:00:00Z"}}"#
        );
        tasks.push(tokio::spawn(submit(json)));
    }
    let mut accepted = 0;
    for task in tasks {
        let result = task.await.unwrap();
        if result.ok {
            accepted += 1;
        } else {
            assert_eq!(result.error.unwrap().code, "insufficient_balance");
        }
    }
    assert_eq!(accepted, 14, "100 credits hold 14 bookings of 7");
    let view = handler.balance("C-1", Default::default()).unwrap().unwrap();
    assert_eq!(view.balances["proactive_credits"].to_string(), "2");
}

/// Two handlers on one log, each with its own cache of the contract: a handler whose cached
/// state is behind decides on what the log holds — it neither overdraws (its append's expected
/// version fails, it reads and decides again) nor refuses what the log allows (a rejection is
/// decided again on a fresh read before it is answered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_with_a_stale_cache_decides_on_what_the_log_holds() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger::Ledger::open(dir.path()).unwrap();
    let first = commands::Handler::new(ledger.clone(), Arc::new(chrono::Utc::now), "first");
    let second = commands::Handler::new(ledger.clone(), Arc::new(chrono::Utc::now), "second");
    let submit = |handler: &commands::Handler, json: &str| {
        let handler = handler.clone();
        let envelope = schemas::CommandEnvelope::from_json(json).unwrap();
        async move { handler.submit(envelope).await.unwrap() }
    };
    // Each consumption starts on its own day (DAS hours may run past a day).
    let consume = |day: i64, hours: i64| {
        let start = "2026-02-01T00:00:00Z"
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
            + chrono::Duration::days(day);
        let end = start + chrono::Duration::hours(hours);
        format!(
            r#"{{"type":"consume_hours","contract_id":"C-1","bucket":"das_hours","started_at":"{}","ended_at":"{}"}}"#,
            start.to_rfc3339(),
            end.to_rfc3339()
        )
    };
    let open = r#"{"type":"open_contract","contract_id":"C-1","customer":"X","package":"core","term_start":"2026-01-01","term_end":"2026-12-31","currency":"USD","time_zone":"UTC"}"#;
    let buy = r#"{"type":"purchase","contract_id":"C-1","item":"das_hours","quantity":"200","unit_price":"150.00","effective_at":"2026-01-01T00:00:00Z"}"#;
    assert!(submit(&first, open).await.ok);
    let bought = submit(&first, buy).await;
    assert!(bought.ok, "{:?}", bought.error);
    // Both caches warm: 200 hours bought.
    assert!(submit(&first, &consume(2, 1)).await.ok);
    assert!(submit(&second, &consume(3, 1)).await.ok);
    // `second` spends 197 of the 198 left; `first` still believes 199 are left.
    assert!(submit(&second, &consume(4, 197)).await.ok);
    let overdraw = submit(&first, &consume(20, 2)).await;
    assert_eq!(
        overdraw.error.map(|e| e.code.as_str()),
        Some("insufficient_balance"),
        "1 hour left, 2 asked"
    );
    // `first` now knows 1 hour is left; `second` buys 200 more, which `first` has not seen.
    assert!(submit(&second, buy).await.ok);
    let allowed = submit(&first, &consume(21, 3)).await;
    assert!(allowed.ok, "201 hours left, 3 asked: {:?}", allowed.error);
    let view = first.balance("C-1", Default::default()).unwrap().unwrap();
    assert_eq!(view.balances["das_hours"].to_string(), "198");
    let cold = commands::Handler::new(ledger, Arc::new(chrono::Utc::now), "cold");
    let (cold, warm) = (
        cold.state("C-1").await.unwrap(),
        first.state("C-1").await.unwrap(),
    );
    assert_eq!((cold.version, &cold.totals), (warm.version, &warm.totals));
    assert_eq!(warm.version, 7, "open, two purchases, four consumptions");
}

/// Issue 15: the handler keeps a bounded number of contracts warm; a contract whose state was
/// dropped is read from its stream again and decides exactly as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warm_state_cache_is_bounded_and_a_dropped_state_is_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger::Ledger::open(dir.path()).unwrap();
    let handler = commands::Handler::new(ledger, Arc::new(chrono::Utc::now), "test")
        .with_warm_contracts_max(8);
    let submit = |json: String| {
        let handler = handler.clone();
        async move {
            handler
                .submit(schemas::CommandEnvelope::from_json(&json).unwrap())
                .await
                .unwrap()
        }
    };
    for i in 0..40 {
        let open = format!(
            r#"{{"type":"open_contract","contract_id":"W-{i}","customer":"X","package":"core","term_start":"2026-01-01","term_end":"2026-12-31","currency":"USD","time_zone":"UTC"}}"#
        );
        assert!(submit(open).await.ok);
        let buy = format!(
            r#"{{"type":"purchase","contract_id":"W-{i}","item":"dse_hours","quantity":"2","unit_price":"1","effective_at":"2026-01-01T00:00:00Z"}}"#
        );
        assert!(submit(buy).await.ok);
        assert!(
            handler.warm_contracts() <= 8,
            "{} warm",
            handler.warm_contracts()
        );
    }
    // W-0 was dropped long ago: its state is read again, so 2 hours are there and 3 are not.
    let consume = |hours: u32| {
        format!(
            r#"{{"type":"consume_hours","contract_id":"W-0","bucket":"dse_hours","started_at":"2026-03-02T09:00:00Z","ended_at":"2026-03-02T{:02}:00:00Z"}}"#,
            9 + hours
        )
    };
    let refused = submit(consume(3)).await;
    assert_eq!(
        refused.error.map(|e| e.code.as_str()),
        Some("insufficient_balance")
    );
    assert!(submit(consume(2)).await.ok);
}

/// Issue 17: `submit` of a file runs the lines of different contracts concurrently (one fsync
/// for many), yet answers in file order, keeps each contract's commands in file order and a
/// `publish_rates` between what comes before and after it: the same answers and balances as
/// submitting the lines one at a time; and nothing extra on stderr when it is not a terminal.
#[test]
fn a_history_file_is_answered_in_file_order_with_the_results_of_one_line_at_a_time() {
    let read = |name: &str| {
        std::fs::read_to_string(format!("{}/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    };
    let files = [
        read("worked-example.jsonl"),
        read("sample-contracts.jsonl"),
        read("late-entries.jsonl"),
    ];
    let mut per_file: Vec<Vec<&str>> = files.iter().map(|f| f.lines().collect()).collect();
    // Round-robin across the files (each file's order kept), a line that does not parse and a
    // command refused by the rules in the middle.
    let mut lines: Vec<String> = Vec::new();
    while per_file.iter().any(|f| !f.is_empty()) {
        for file in &mut per_file {
            if !file.is_empty() {
                lines.push(file.remove(0).to_owned());
            }
        }
        if lines.len() == 12 {
            lines.push(r#"{"type":"purchase","command_id":"broken""#.to_owned());
            lines.push(
                r#"{"type":"purchase","command_id":"no-such","contract_id":"C-404","item":"proactive_credits","quantity":"1","unit_price":"1.00"}"#
                    .to_owned(),
            );
        }
    }
    let history = lines.join("\n") + "\n";

    let work = tempfile::tempdir().unwrap();
    let together = run(
        &work.path().join("together"),
        &["submit", "-"],
        Some(&history),
    );
    assert_eq!(together.status.code(), Some(1), "a line was rejected");
    assert!(
        together.stderr.is_empty(),
        "nothing extra on stderr: {}",
        String::from_utf8_lossy(&together.stderr)
    );
    let one_by_one: Vec<serde_json::Value> = lines
        .iter()
        .flat_map(|line| {
            json_lines(&run(
                &work.path().join("apart"),
                &["submit", "-"],
                Some(line),
            ))
        })
        .collect();
    let together = json_lines(&together);
    assert_eq!(together.len(), lines.len());
    // What a result says apart from where its events landed in the global order.
    let gist = |result: &serde_json::Value| {
        (
            result["command_id"].clone(),
            result["ok"].clone(),
            result["error"]["code"].clone(),
            result["events"]
                .as_array()
                .map(|events| {
                    events
                        .iter()
                        .map(|e| (e["type"].clone(), e["version"].clone()))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        )
    };
    for (i, (a, b)) in together.iter().zip(&one_by_one).enumerate() {
        assert_eq!(gist(a), gist(b), "line {}: {}", i + 1, lines[i]);
    }
    for contract in ["C-1001", "C-2002", "C-4004"] {
        let balance = |store: &str| {
            let out = run(
                &work.path().join(store),
                &["--format", "json", "balance", contract],
                None,
            );
            let value: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
            value["balances"].clone()
        };
        assert_eq!(balance("together"), balance("apart"), "{contract}");
    }
}

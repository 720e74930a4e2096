//! The read side as finance runs it: audit statements in every format (table, JSON, CSV, HTML)
//! as snapshot tests on the
//! keep-forever fixture store (fixed ids and times), shortfalls with their derivation, bad
//! input, and rebuild == incremental, byte for byte, over a generated history of ≥ 100k events.
//! `UPDATE_SNAPSHOTS=1` rewrites the snapshots under `tests/data/snapshots/` (review the diff).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use projections::Projection;
use projections::balances::Balances;
use projections::shortfalls::Shortfalls;
use tests::{copy_dir, run_ledgerctl};

fn data_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

fn fixture_copy() -> tempfile::TempDir {
    store_copy("fixture-store-v1")
}

fn store_copy(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&data_path(name), dir.path());
    dir
}

fn snapshot(name: &str, actual: &str) {
    let path = data_path("snapshots").join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} is missing; run with UPDATE_SNAPSHOTS=1", path.display()));
    assert_eq!(
        actual,
        expected,
        "{} changed; run with UPDATE_SNAPSHOTS=1 and review the diff",
        path.display()
    );
}

#[test]
fn audit_statements_match_their_snapshots_in_every_format() {
    let dir = fixture_copy();
    for (contract, period) in [
        ("C-1001", vec![]),
        ("C-2002", vec![]),
        (
            "C-1001",
            vec![
                "--from",
                "2026-03-01T00:00:00Z",
                "--to",
                "2026-06-30T00:00:00Z",
            ],
        ),
    ] {
        for format in ["json", "csv", "table", "html"] {
            let mut args = vec!["--format", format, "audit", contract];
            args.extend(&period);
            let output = run_ledgerctl(dir.path(), &args, "");
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let text = String::from_utf8(output.stdout).unwrap();
            let suffix = if period.is_empty() { "" } else { "-mar-jun" };
            snapshot(&format!("audit-{contract}{suffix}.{format}"), &text);
            if format == "json" {
                let statement: serde_json::Value = serde_json::from_str(&text).unwrap();
                for roll in statement["roll_forward"].as_array().unwrap() {
                    assert_eq!(roll["reconciles"], true, "{roll}");
                }
                assert_eq!(statement["built_to_position"], 45);
            }
            if format == "html" {
                // Self-contained: no external assets, one inline chart per bucket that moved.
                assert!(
                    !text.contains("src=") && !text.contains("href="),
                    "external asset in the page"
                );
                assert!(text.contains("<svg") && text.contains("Roll-forward"));
            }
            if format == "csv" {
                // Opens cleanly in a spreadsheet: every row has the header's width.
                let mut reader = csv::Reader::from_reader(text.as_bytes());
                let width = reader.headers().unwrap().len();
                for record in reader.records() {
                    assert_eq!(record.unwrap().len(), width);
                }
            }
        }
    }
}

/// `store-late-entries/` holds `late-entries.jsonl` (a backdated lot drawn first, a late
/// reschedule whose fee the balance cannot cover, in America/New_York), then a tick past the
/// term and a reversal after the term whose returned hours are forfeited in the same append.
#[test]
fn audit_of_late_entries_a_reversal_after_the_term_and_a_reschedule_fee_matches_its_snapshots() {
    let dir = store_copy("store-late-entries");
    for format in ["json", "csv", "table", "html"] {
        let output = run_ledgerctl(dir.path(), &["--format", format, "audit", "C-4004"], "");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).unwrap();
        snapshot(&format!("audit-C-4004.{format}"), &text);
        if format == "json" {
            let statement: serde_json::Value = serde_json::from_str(&text).unwrap();
            let lines = statement["lines"].as_array().unwrap();
            // Lines run by effective time (then position): the reversal after the term stands
            // at the consumption's time, and says what it undid.
            let effective: Vec<chrono::DateTime<chrono::FixedOffset>> = lines
                .iter()
                .map(|l| l["effective_at"].as_str().unwrap().parse().unwrap())
                .collect();
            assert!(effective.windows(2).all(|w| w[0] <= w[1]), "{effective:?}");
            let reversal = lines
                .iter()
                .find(|l| l["event_type"] == "event_reversed")
                .unwrap();
            assert_eq!(reversal["undoes"]["event_type"], "hours_consumed");
            assert_eq!(reversal["effective_at"], "2026-03-02T11:00:00-05:00");
            let last = lines.last().unwrap();
            assert_eq!(last["event_type"], "balances_forfeited");
            assert_eq!(last["position"], 15);
            assert_eq!(
                statement["billables"]["uncovered_cancellation_fee"],
                "2000.00"
            );
            assert_eq!(
                statement["totals_value"]["proactive_credits"]["converted"], "3800.00",
                "the backdated lot at 180.00 is drawn first"
            );
            for roll in statement["roll_forward"].as_array().unwrap() {
                assert_eq!(roll["reconciles"], true, "{roll}");
            }
        }
    }
}

#[test]
fn shortfalls_list_every_billable_with_its_derivation() {
    let dir = fixture_copy();
    let output = run_ledgerctl(dir.path(), &["--format", "json", "shortfalls"], "");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    let summary: Vec<(String, String, String, String)> = entries
        .iter()
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap().to_owned();
            (
                text("contract_id"),
                text("kind"),
                text("period"),
                text("amount"),
            )
        })
        .collect();
    let expected = [
        ("C-2002", "uncovered_cancellation_fee", "B-21", "2805.00"),
        ("C-1001", "sab_shortfall", "year-1", "2000.00"),
        ("C-1001", "sab_shortfall_adjustment", "year-1", "-500.00"),
    ];
    let mut sorted = summary.clone();
    sorted.sort_by_key(|e| (e.0.clone(), e.1.clone()));
    let mut want: Vec<(String, String, String, String)> = expected
        .iter()
        .map(|(a, b, c, d)| ((*a).into(), (*b).into(), (*c).into(), (*d).into()))
        .collect();
    want.sort_by_key(|e| (e.0.clone(), e.1.clone()));
    assert_eq!(sorted, want);
    let shortfall = entries
        .iter()
        .find(|e| e["kind"] == "sab_shortfall")
        .unwrap();
    assert_eq!(shortfall["derivation"]["committed_amount"], "5000.00");
    assert_eq!(shortfall["derivation"]["converted_amount"], "3000.00");
    assert_eq!(shortfall["currency"], "USD");
    let one = run_ledgerctl(
        dir.path(),
        &["--format", "json", "shortfalls", "C-2002"],
        "",
    );
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&one.stdout).unwrap();
    assert_eq!(entries.len(), 1);
}

#[test]
fn bad_read_input_is_a_clear_error_with_exit_2() {
    let dir = fixture_copy();
    for (args, says) in [
        (vec!["audit", "C-404"], "no contract C-404"),
        (
            vec![
                "audit",
                "C-1001",
                "--from",
                "2026-06-01T00:00:00Z",
                "--to",
                "2026-01-01T00:00:00Z",
            ],
            "--from is after --to",
        ),
        (vec!["audit", "C-1001", "--from", "June"], "--from"),
        (vec!["shortfalls", "C-404"], "no contract C-404"),
    ] {
        let output = run_ledgerctl(dir.path(), &args, "");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_equals_incremental_byte_for_byte_over_100k_events() {
    const CONTRACTS: usize = 32;
    const EVENTS_MIN: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger::Ledger::open(dir.path()).unwrap();
    let handler = commands::Handler::new(ledger.clone(), Arc::new(chrono::Utc::now), "generator");
    let submit = move |json: String| {
        let handler = handler.clone();
        async move {
            let result = handler
                .submit(schemas::CommandEnvelope::from_json(&json).unwrap())
                .await
                .unwrap();
            assert!(result.ok, "{json}: {:?}", result.error);
        }
    };
    for contract in 0..CONTRACTS {
        submit(format!(r#"{{"type":"open_contract","contract_id":"G-{contract}","customer":"Gen","package":"core","term_start":"2026-01-01","term_end":"2026-12-31","currency":"USD","time_zone":"UTC","sab_commitments":[{{"year":1,"incidents":3,"value_per_incident":"100.00"}}]}}"#)).await;
        for lot in 1..=3 {
            submit(format!(r#"{{"type":"purchase","contract_id":"G-{contract}","item":"das_hours","quantity":"1600","unit_price":"{}.00","effective_at":"2026-01-0{lot}T00:00:00Z"}}"#, 100 + lot)).await;
        }
    }
    // Incremental: the projections catch up every ~10k events while the history grows.
    let balances = ledger.projection_store(Balances::NAME).unwrap();
    let shortfalls = ledger.projection_store(Shortfalls::NAME).unwrap();
    let per_contract = EVENTS_MIN.div_ceil(CONTRACTS as u64);
    let mut written = 0;
    while written < per_contract {
        let chunk = (per_contract - written).min(320);
        let mut tasks = Vec::new();
        for contract in 0..CONTRACTS {
            let submit = submit.clone();
            let start = written;
            tasks.push(tokio::spawn(async move {
                for minute in start..start + chunk {
                    let from = chrono::DateTime::parse_from_rfc3339("2026-01-10T00:00:00Z").unwrap().to_utc() + chrono::Duration::minutes(minute as i64 * 3);
                    let to = from + chrono::Duration::minutes(1 + (minute % 2) as i64);
                    submit(format!(r#"{{"type":"consume_hours","contract_id":"G-{contract}","bucket":"das_hours","started_at":"{}","ended_at":"{}"}}"#, from.to_rfc3339(), to.to_rfc3339())).await;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        written += chunk;
        projections::catch_up::<Balances>(&ledger, &balances, &mut |_| {}).unwrap();
        projections::catch_up::<Shortfalls>(&ledger, &shortfalls, &mut |_| {}).unwrap();
    }
    let handler = commands::Handler::new(ledger.clone(), Arc::new(chrono::Utc::now), "generator");
    handler
        .tick("2027-01-01T00:00:00Z".parse().unwrap())
        .await
        .unwrap();
    projections::catch_up::<Balances>(&ledger, &balances, &mut |_| {}).unwrap();
    projections::catch_up::<Shortfalls>(&ledger, &shortfalls, &mut |_| {}).unwrap();
    assert!(
        ledger.committed_position() >= EVENTS_MIN,
        "only {} events",
        ledger.committed_position()
    );

    // The incremental catch-ups above read ~10k events each through `Ledger::scan`; a rebuild of
    // 100k events reads ahead on other threads (`Ledger::scan_ahead`): both must fold the same.
    assert!(ledger.committed_position() >= projections::limits::READ_AHEAD_FROM_EVENTS);
    for (name, incremental) in [(Balances::NAME, &balances), (Shortfalls::NAME, &shortfalls)] {
        let rebuilt = ledger.projection_store(&format!("{name}_rebuilt")).unwrap();
        let checkpoint = if name == Balances::NAME {
            projections::rebuild::<Balances>(&ledger, &rebuilt, &mut |_| {}).unwrap()
        } else {
            projections::rebuild::<Shortfalls>(&ledger, &rebuilt, &mut |_| {}).unwrap()
        };
        assert_eq!(Some(checkpoint), incremental.checkpoint().unwrap());
        let a = incremental.entries(b"").unwrap();
        let b = rebuilt.entries(b"").unwrap();
        assert_eq!(a.len(), CONTRACTS, "{name}");
        assert!(
            a == b,
            "{name}: rebuilt state differs from incremental state"
        );
    }
    // `ledgerctl rebuild` folds all four persisted projections in one scan: the same bytes as
    // each caught up on its own.
    let notices = ledger
        .projection_store(projections::notices::Notices::NAME)
        .unwrap();
    projections::catch_up::<projections::notices::Notices>(&ledger, &notices, &mut |_| {}).unwrap();
    let timeline = ledger
        .projection_store(projections::timeline::NAME)
        .unwrap();
    projections::timeline::catch_up(&ledger, &timeline).unwrap();
    let incremental: Vec<_> = projections::PERSISTED
        .iter()
        .map(|name| {
            let store = ledger.projection_store(name).unwrap();
            (store.entries(b"").unwrap(), store.checkpoint().unwrap())
        })
        .collect();
    for (name, (entries, _)) in projections::PERSISTED.iter().zip(&incremental) {
        assert!(entries.len() > 1, "{name} holds more than its checkpoint");
    }
    let mut pages = 0;
    let built = projections::rebuild_all(&ledger, &mut |_| pages += 1).unwrap();
    assert_eq!(built.position, ledger.committed_position());
    assert!(
        pages >= 2,
        "progress after each page and at the end: {pages}"
    );
    for (name, (entries, checkpoint)) in projections::PERSISTED.iter().zip(&incremental) {
        let store = ledger.projection_store(name).unwrap();
        assert_eq!(store.checkpoint().unwrap(), Some(built), "{name}");
        assert_eq!(*checkpoint, Some(built), "{name}");
        assert!(
            store.entries(b"").unwrap() == *entries,
            "{name}: rebuild_all differs from the incremental state"
        );
    }

    // And the projection agrees with the rules' own fold.
    let entry = balances.get(b"G-0").unwrap().unwrap();
    let state: projections::balances::ContractBalances = serde_json::from_slice(&entry).unwrap();
    let view = handler.balance("G-0", Default::default()).unwrap().unwrap();
    for (bucket, balance) in &view.balances {
        assert_eq!(
            state.buckets[bucket].balance.normalize(),
            *balance,
            "{bucket}"
        );
    }
}

#[test]
fn replay_and_diff_answer_what_we_knew_then_and_what_is_true_now() {
    let dir = fixture_copy();
    let log: Vec<serde_json::Value> = std::fs::read_to_string(data_path("fixture-log-v1.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let recorded = |position: usize| {
        log[position - 1]["recorded_at"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    let replay = run_ledgerctl(
        dir.path(),
        &["--format", "json", "replay", "C-1001", "--until", "8"],
        "",
    );
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let steps: Vec<serde_json::Value> = String::from_utf8(replay.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(steps.len(), 7, "C-1001's events up to position 8");
    assert_eq!(steps.last().unwrap()["balances"]["dse_hours"], "396.50");
    assert_eq!(steps[3]["event_type"], "credits_converted");
    assert_eq!(steps[3]["event"]["credits_unrounded"], "14.8");
    let by_time = run_ledgerctl(
        dir.path(),
        &[
            "--format",
            "json",
            "replay",
            "C-1001",
            "--until",
            &recorded(8),
        ],
        "",
    );
    assert_eq!(
        String::from_utf8(by_time.stdout).unwrap().lines().count(),
        7
    );

    // Known just after the DSE work was entered, and known now.
    let diff = run_ledgerctl(
        dir.path(),
        &[
            "--format",
            "json",
            "diff",
            "C-1001",
            "--known-at",
            &recorded(8),
            "--known-at",
            "2030-01-01T00:00:00Z",
        ],
        "",
    );
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stderr)
    );
    let diff: serde_json::Value = serde_json::from_slice(&diff.stdout).unwrap();
    assert_eq!(diff["balances_before"]["dse_hours"], "396.50");
    assert_eq!(diff["balances_before"]["proactive_credits"], "85");
    assert_eq!(diff["balances_after"]["dse_hours"], "0.00");
    assert_eq!(diff["billables_after"]["sab_shortfall"], "2000.00");
    assert_eq!(
        diff["billables_after"]["sab_shortfall_adjustment"],
        "-500.00"
    );
    let types: Vec<&str> = diff["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["event_type"].as_str().unwrap())
        .collect();
    assert!(
        types.contains(&"event_reversed") && types.contains(&"balances_forfeited"),
        "{types:?}"
    );
    let reversal = diff["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["event_type"] == "event_reversed")
        .unwrap();
    assert_eq!(reversal["delta"]["dse_hours"], "3.50");
    // The reversal says what it undid, why, and the money that moved back.
    assert_eq!(reversal["undoes"]["event_type"], "hours_consumed");
    assert!(
        reversal["undoes"]["position"].as_u64().is_some(),
        "{reversal}"
    );
    assert!(reversal["reason"].is_string(), "{reversal}");
    assert!(
        reversal["delta_value"]["dse_hours"]
            .as_str()
            .is_some_and(
                |v| v.parse::<rust_decimal::Decimal>().unwrap() > rust_decimal::Decimal::ZERO
            ),
        "{reversal}"
    );

    // Spreadsheet forms: CSV with a header, every row as wide, never JSON.
    for args in [
        vec!["--format", "csv", "replay", "C-1001"],
        vec![
            "--format",
            "csv",
            "diff",
            "C-1001",
            "--known-at",
            &recorded(8),
            "--known-at",
            "2030-01-01",
        ],
    ] {
        let output = run_ledgerctl(dir.path(), &args, "");
        assert!(output.status.success(), "{args:?}");
        let text = String::from_utf8(output.stdout).unwrap();
        assert!(!text.trim_start().starts_with('{'), "{args:?} printed JSON");
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let width = reader.headers().unwrap().len();
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert!(rows.len() > 1, "{args:?}: {text}");
        assert!(rows.iter().all(|r| r.len() == width));
        if args.contains(&"diff") {
            assert!(
                rows.iter()
                    .any(|r| &r[3] == "event_reversed" && &r[11] == "hours_consumed"),
                "{text}"
            );
        }
    }

    for args in [
        vec!["replay", "C-404"],
        vec!["diff", "C-1001", "--known-at", "2026-01-01T00:00:00Z"],
        vec!["replay", "C-1001", "--until", "soon"],
    ] {
        let output = run_ledgerctl(dir.path(), &args, "");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn notices_and_balance_detail_show_what_would_be_forfeited_and_money_by_lot() {
    let dir = fixture_copy();
    let output = run_ledgerctl(dir.path(), &["--format", "json", "notices", "C-1001"], "");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let notices: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    let points: Vec<&str> = notices
        .iter()
        .map(|n| n["notice"].as_str().unwrap())
        .collect();
    assert_eq!(points, ["90", "60", "request_deadline", "30", "7"]);
    assert_eq!(notices[0]["balances"]["proactive_credits"], "85");
    assert_eq!(notices[0]["due_at"], "2026-10-02T00:00:00Z");
    assert!(
        notices[0].get("at_risk").is_none(),
        "a notice recorded before lots were kept on it shows none"
    );

    // A notice recorded now carries the money at risk, lot by lot, as shown (minor units,
    // hours to 2 decimals), in every format.
    let fresh = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(data_path("worked-example.jsonl")).unwrap();
    run_ledgerctl(fresh.path(), &["submit", "-"], &example);
    let tick = run_ledgerctl(fresh.path(), &["tick", "--now", "2026-10-05"], "");
    assert!(tick.status.success());
    let output = run_ledgerctl(fresh.path(), &["--format", "json", "notices"], "");
    let notices: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(notices[0]["balances"]["adm_hours"], "0.00");
    assert_eq!(notices[0]["currency"], "USD");
    assert_eq!(notices[0]["value_at_risk"]["dse_hours"], "79300.00");
    assert_eq!(notices[0]["value_at_risk"]["proactive_credits"], "21250.00");
    assert_eq!(
        notices[0]["at_risk"][1],
        serde_json::json!({"bucket":"dse_hours","lot":"L3","quantity":"396.50","unit_price":"200.00","value":"79300.00"})
    );
    let csv = run_ledgerctl(fresh.path(), &["--format", "csv", "notices"], "");
    let csv = String::from_utf8(csv.stdout).unwrap();
    assert!(
        csv.contains(",dse_hours,L3,396.50,200.00,79300.00,USD,"),
        "{csv}"
    );
    let table = run_ledgerctl(fresh.path(), &["--format", "table", "notices"], "");
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.contains("dse_hours 396.50 (79300.00 USD)")
            && table.contains("lot dse_hours L3 396.50 × 200.00 = 79300.00 USD"),
        "{table}"
    );

    let output = run_ledgerctl(
        dir.path(),
        &["--format", "json", "balance", "C-2002", "--detail"],
        "",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let detail: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let credits = &detail["buckets"]["proactive_credits"];
    assert_eq!(
        credits["lots"]["L3"]["value"]["fees"], "1785.00",
        "7 credits of fee at 255.00"
    );
    assert_eq!(credits["quantity"]["forfeited"], "5");
    assert_eq!(detail["billables"]["uncovered_cancellation_fee"], "2805.00");
    assert_eq!(detail["built_to_position"], 45);

    // As of a date before the term ended nothing was forfeited yet; the same lots.
    let output = run_ledgerctl(
        dir.path(),
        &[
            "--format",
            "json",
            "balance",
            "C-2002",
            "--detail",
            "--as-of",
            "2026-06-01",
        ],
        "",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let early: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let credits = &early["buckets"]["proactive_credits"];
    assert!(
        credits["quantity"]["forfeited"]
            .as_str()
            .unwrap()
            .parse::<rust_decimal::Decimal>()
            .unwrap()
            .is_zero()
    );
    assert!(credits["lots"]["L3"].is_object());
    assert!(early["built_to_position"].as_u64().unwrap() < 45);
    let at = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["--format", "json", "balance", "C-2002"];
        all.extend(args);
        serde_json::from_slice(&run_ledgerctl(dir.path(), &all, "").stdout).unwrap()
    };
    // --detail agrees with the plain balance under the same filter.
    for filter in [["--as-of", "2026-06-01"], ["--at-position", "20"]] {
        let plain = at(&filter);
        let mut detail_args = filter.to_vec();
        detail_args.push("--detail");
        let detail = at(&detail_args);
        for (bucket, balance) in plain["balances"].as_object().unwrap() {
            let d: rust_decimal::Decimal = detail["buckets"][bucket]["balance"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            let b: rust_decimal::Decimal = balance.as_str().unwrap().parse().unwrap();
            assert_eq!(d, b, "{filter:?} {bucket}");
        }
    }
    let unknown = run_ledgerctl(dir.path(), &["notices", "C-404"], "");
    assert_eq!(unknown.status.code(), Some(2));
}

/// Issue 14: a purchase effective exactly at 2026-04-01T00:00Z is in Q2 only, so Q1's closing is
/// Q2's opening (half-open periods); and a late consumption cannot spend a lot bought after it,
/// so `balance --as-of` is never negative.
#[test]
fn quarters_tile_and_a_late_entry_never_spends_a_later_purchase() {
    let dir = tempfile::tempdir().unwrap();
    let commands = [
        r#"{"type":"open_contract","contract_id":"C-Q","customer":"Contoso","package":"core","term_start":"2026-01-01","term_end":"2026-12-31","currency":"USD","time_zone":"UTC"}"#,
        r#"{"type":"purchase","contract_id":"C-Q","item":"dse_hours","quantity":"10","unit_price":"100.00","effective_at":"2026-01-05T00:00:00Z"}"#,
        r#"{"type":"purchase","contract_id":"C-Q","item":"dse_hours","quantity":"10","unit_price":"150.00","effective_at":"2026-04-01T00:00:00Z"}"#,
        r#"{"type":"consume_hours","contract_id":"C-Q","bucket":"dse_hours","started_at":"2026-02-02T09:00:00Z","ended_at":"2026-02-02T17:00:00Z"}"#,
        r#"{"type":"consume_hours","contract_id":"C-Q","bucket":"dse_hours","started_at":"2026-02-03T09:00:00Z","ended_at":"2026-02-03T17:00:00Z"}"#,
    ]
    .join("\n");
    let output = run_ledgerctl(dir.path(), &["submit"], &commands);
    assert_eq!(
        output.status.code(),
        Some(1),
        "the second consumption is rejected"
    );
    let results = String::from_utf8(output.stdout).unwrap();
    let last: serde_json::Value = serde_json::from_str(results.lines().last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "insufficient_balance", "{last}");
    let message = last["error"]["message"].as_str().unwrap();
    assert!(message.contains("had 2 available"), "{message}");
    let as_of = run_ledgerctl(
        dir.path(),
        &[
            "--format",
            "json",
            "balance",
            "C-Q",
            "--as-of",
            "2026-02-15T00:00:00Z",
        ],
        "",
    );
    let balance: serde_json::Value = serde_json::from_slice(&as_of.stdout).unwrap();
    assert_eq!(balance["balances"]["dse_hours"], "2.00", "{balance}");
    let quarter = |from: &str, to: &str| -> serde_json::Value {
        let output = run_ledgerctl(
            dir.path(),
            &[
                "--format", "json", "audit", "C-Q", "--from", from, "--to", to,
            ],
            "",
        );
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let q1 = quarter("2026-01-01T00:00:00Z", "2026-04-01T00:00:00Z");
    let q2 = quarter("2026-04-01T00:00:00Z", "2026-07-01T00:00:00Z");
    assert_eq!(q1["closing"], q2["opening"]);
    assert_eq!(q1["closing"]["dse_hours"], "2.00");
    assert_eq!(q2["closing"]["dse_hours"], "12.00");
    let positions = |q: &serde_json::Value| -> Vec<u64> {
        q["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["position"].as_u64().unwrap())
            .collect()
    };
    let (p1, p2) = (positions(&q1), positions(&q2));
    assert!(p1.iter().all(|p| !p2.contains(p)), "{p1:?} {p2:?}");
}

/// Issue 14: `audit --known-at K` reproduces the statement exactly as it was issued at K (same
/// lines, totals and stamp), whatever was recorded after K, backdated entries and reversals
/// included; and a date alone is 00:00 in the contract's zone (Berlin, across the change to
/// summer time on 2026-03-29).
#[test]
fn a_statement_known_at_its_issue_time_is_the_statement_as_issued() {
    let dir = tempfile::tempdir().unwrap();
    let first = [
        r#"{"type":"open_contract","command_id":"b-open","contract_id":"C-B","customer":"Fabrikam","package":"core","term_start":"2026-02-01","term_end":"2027-01-31","currency":"EUR","time_zone":"Europe/Berlin"}"#,
        r#"{"type":"purchase","command_id":"b-p1","contract_id":"C-B","item":"dse_hours","quantity":"10","unit_price":"100.00","effective_at":"2026-03-02T09:00:00+01:00"}"#,
        r#"{"type":"consume_hours","command_id":"b-c1","contract_id":"C-B","bucket":"dse_hours","started_at":"2026-03-30T09:00:00+02:00","ended_at":"2026-03-30T12:20:00+02:00"}"#,
    ]
    .join("\n");
    assert!(
        run_ledgerctl(dir.path(), &["submit"], &first)
            .status
            .success()
    );
    let audit = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["--format", "json", "audit", "C-B"];
        args.extend(extra);
        let output = run_ledgerctl(dir.path(), &args, "");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let issued = audit(&[]);
    let read = run_ledgerctl(dir.path(), &["--format", "json", "log", "read"], "");
    let last: serde_json::Value = serde_json::from_str(
        String::from_utf8(read.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    let issued_at = last["recorded_at"].as_str().unwrap().to_owned();

    // After K: a backdated purchase, and the consumption reversed.
    let consumption = issued["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["event_type"] == "hours_consumed")
        .unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let later = [
        r#"{"type":"purchase","command_id":"b-p0","contract_id":"C-B","item":"dse_hours","quantity":"5","unit_price":"90.00","effective_at":"2026-02-02T09:00:00+01:00"}"#.to_owned(),
        format!(
            r#"{{"type":"reverse","command_id":"b-r1","contract_id":"C-B","event_id":"{consumption}","reason":"billed twice"}}"#
        ),
    ]
    .join("\n");
    let output = run_ledgerctl(dir.path(), &["submit"], &later);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let now = audit(&[]);
    assert_ne!(
        now["lines"], issued["lines"],
        "the history did change after K"
    );

    let mut reproduced = audit(&["--known-at", &issued_at]);
    assert_eq!(
        reproduced["known_at"]
            .as_str()
            .map(|k| k.parse::<chrono::DateTime<chrono::Utc>>().unwrap()),
        Some(issued_at.parse().unwrap())
    );
    reproduced.as_object_mut().unwrap().remove("known_at");
    assert_eq!(reproduced, issued, "the statement as issued at K");

    // The Berlin statement: local times with their offset, CET before the change, CEST after.
    let lines = issued["lines"].as_array().unwrap();
    assert_eq!(issued["time_zone"], "Europe/Berlin");
    assert_eq!(lines[0]["effective_at"], "2026-02-01T00:00:00+01:00");
    assert_eq!(lines[2]["effective_at"], "2026-03-30T12:20:00+02:00");
    assert_eq!(
        lines[2]["delta"]["dse_hours"], "-3.33",
        "200 minutes, to 2 decimals"
    );
    assert_eq!(lines[2]["delta_value"]["dse_hours"], "-333.00");

    // A date alone is 00:00 contract time: 2026-03-30 starts at 22:00Z the day before (CEST).
    let by_date = audit(&["--from", "2026-03-30", "--to", "2026-04-01"]);
    let by_time = audit(&[
        "--from",
        "2026-03-29T22:00:00Z",
        "--to",
        "2026-03-31T22:00:00Z",
    ]);
    assert_eq!(by_date, by_time);
    assert_eq!(by_date["from"], "2026-03-30T00:00:00+02:00");
    assert_eq!(by_date["opening"]["dse_hours"], "15.00");
}

//! The ledger beside PostgreSQL 15 (issue 6), at a small N so the comparison cannot rot: the
//! same events in an events table (bigserial global position, unique (stream, version), jsonb
//! payload) appended with the same expected-version check, and the same point-in-time balance
//! query in SQL, give the ledger's answers. Timing is the benchmark's business, not this test's.

use std::collections::BTreeMap;
use std::path::Path;

use rust_decimal::Decimal;
use tests::{Postgres, ledgerctl};

/// The same SQL files the benchmark runs (`tools/sql/`).
const SCHEMA: &str = include_str!("../../tools/sql/schema.sql");
const APPEND: &str = include_str!("../../tools/sql/append.sql");
const BALANCE_AS_OF: &str = include_str!("../../tools/sql/balance_as_of.sql");

#[test]
fn postgres_and_the_ledger_agree_on_the_same_events() {
    // The ledger's side: the worked example and the samples, through the rules.
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    for file in ["worked-example.jsonl", "sample-contracts.jsonl"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("data")
            .join(file);
        let status = ledgerctl(&data)
            .arg("submit")
            .arg(&path)
            .output()
            .unwrap()
            .status;
        assert!(status.code().unwrap() <= 1);
    }
    for now in ["2026-03-31T00:00:00Z", "2027-02-01T00:00:00Z"] {
        let status = ledgerctl(&data)
            .args(["tick", "--now", now])
            .output()
            .unwrap()
            .status;
        assert!(status.success());
    }
    let log = ledgerctl(&data)
        .args(["log", "read", "--limit", "100000", "--format", "json"])
        .output()
        .unwrap();
    let events: Vec<serde_json::Value> = String::from_utf8(log.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.len() > 30);

    // PostgreSQL's side: the same events, each appended with its expected version.
    let server = Postgres::start().unwrap();
    let mut db = postgres::Client::connect(&server.url(), postgres::NoTls).unwrap();
    db.batch_execute(SCHEMA).unwrap();
    for event in &events {
        let version = event["version"].as_i64().unwrap();
        let inserted = db
            .execute(
                APPEND,
                &[
                    &event["stream"].as_str().unwrap(),
                    &(version - 1),
                    &event["event_id"].as_str().unwrap(),
                    &event["type"].as_str().unwrap(),
                    &event["recorded_at"].as_str().unwrap(),
                    &event["effective_at"].as_str(),
                    &event["payload"].to_string(),
                ],
            )
            .unwrap();
        assert_eq!(inserted, 1, "{event}");
        // The same append again, with the same (now stale) expected version: refused.
        let again = db
            .execute(
                APPEND,
                &[
                    &event["stream"].as_str().unwrap(),
                    &(version - 1),
                    &uuid_like(event),
                    &event["type"].as_str().unwrap(),
                    &event["recorded_at"].as_str().unwrap(),
                    &event["effective_at"].as_str(),
                    &event["payload"].to_string(),
                ],
            )
            .unwrap();
        assert_eq!(again, 0, "a stale expected version must append nothing");
    }
    // Global positions are the ledger's, in the same order.
    let positions: Vec<i64> = db
        .query("SELECT position FROM events ORDER BY position", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let ledger_positions: Vec<i64> = events
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, ledger_positions);

    // The same point-in-time balances.
    let mut compared = 0;
    for contract in ["C-1001", "C-2002", "C-3003"] {
        for as_of in [
            "2026-02-01T23:59:59Z",
            "2026-03-31T00:00:00Z",
            "2027-06-01T00:00:00Z",
        ] {
            let output = ledgerctl(&data)
                .args(["balance", contract, "--as-of", as_of, "--format", "json"])
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let view: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            let ledger: BTreeMap<String, Decimal> = view["balances"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(b, v)| (b.clone(), v.as_str().unwrap().parse().unwrap()))
                .collect();
            let mut sql: BTreeMap<String, Decimal> =
                ledger.keys().map(|b| (b.clone(), Decimal::ZERO)).collect();
            for row in db
                .query(BALANCE_AS_OF, &[&format!("contract-{contract}"), &as_of])
                .unwrap()
            {
                let amount: String = row.get(1);
                sql.insert(row.get(0), amount.parse().unwrap());
            }
            assert_eq!(sql, ledger, "{contract} as of {as_of}");
            compared += 1;
        }
    }
    assert_eq!(compared, 9);
}

/// Another event id (the last hex digit changed), so only the expected version can refuse the
/// second append.
fn uuid_like(event: &serde_json::Value) -> String {
    let mut id = event["event_id"].as_str().unwrap().to_owned();
    let last = id.pop().unwrap();
    id.push(if last == '0' { '1' } else { '0' });
    id
}

/// `ledgerctl bench suite` on a 12,000-event log, each timed workload `millis` long, no NATS.
fn small_suite(work: &std::path::Path, millis: u64) -> std::process::Command {
    let mut command = std::process::Command::new(tests::ledgerctl_path());
    command
        .args([
            "bench",
            "suite",
            "--sizes",
            "12000",
            "--no-nats",
            "--millis",
        ])
        .arg(millis.to_string())
        .arg("--work-dir")
        .arg(work);
    command
}

/// `ledgerctl bench suite` at a small N (timing is not checked): it starts PostgreSQL itself,
/// copies the log into it, and fails when the ledger's and PostgreSQL's as-of answers differ;
/// its table has every workload row with a figure on both sides. So the suite cannot rot.
#[test]
fn the_benchmark_suite_runs_at_a_small_n_and_the_answers_agree() {
    let work = tempfile::tempdir().unwrap();
    let out = small_suite(work.path(), 150).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("PostgreSQL 15."), "versions: {stdout}");
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| log events"))
        .map(|l| l.split(" | ").map(str::trim).collect())
        .collect();
    for workload in [
        "raw_write_fsync",
        "raw_fjall_batch_1000_syncall",
        "durable_appends_1_writers",
        "durable_appends_16_writers",
        "durable_appends_256_writers",
        "commands_embedded_64_contracts",
        "rebuild_all_4_projections_one_scan",
        "balance_as_of_contract_with_10k_events",
        "generate_history_and_copy_it_into_postgresql",
        "open_log_read_limit_1_12000_events",
        "open_balance_12000_events",
        "submit_file_",
        "bundle_10000_event_contract_",
        "verify_bundle_10000_events",
        "append_writers_256_checkpoint_every_second",
    ] {
        let found: Vec<_> = rows.iter().filter(|r| r[1].starts_with(workload)).collect();
        assert!(!found.is_empty(), "no {workload} row in\n{stdout}");
        for row in found {
            assert!(!row[2].is_empty() && !row[2].starts_with('0'), "{row:?}");
        }
    }
    // Appends are compared with the raw loop the same writers could at best drive: write+fsync
    // for one writer, fjall batches of as many events as writers, in both layouts.
    for (workload, baseline) in [
        (
            "durable_appends_1_writers",
            "raw write+fsync, best of 3 rounds",
        ),
        (
            "durable_appends_16_writers",
            "raw fjall SyncAll batches of 16",
        ),
        (
            "durable_appends_256_writers",
            "raw fjall SyncAll batches of 256",
        ),
        (
            "durable_appends_256_writers",
            "raw fjall SyncAll batches of 256, event + stream index entry (format 1), best of 3 rounds",
        ),
        (
            "durable_appends_256_writers",
            "raw fjall SyncAll batches of 256, event + stream index entry (format 1), median of 3 rounds",
        ),
        (
            "durable_appends_256_writers",
            "raw fjall SyncAll batches of 1000",
        ),
    ] {
        assert!(
            rows.iter().any(|r| r[1] == workload
                && r[3] == baseline
                && !r[4].is_empty()
                && !r[4].starts_with('0')),
            "no {workload} row beside {baseline:?} in\n{stdout}"
        );
    }
    // The 256 writers' rows say what each side cost in CPU, and how far that CPU lets the
    // ledger go on this machine's cores.
    for row in rows
        .iter()
        .filter(|r| r[1] == "durable_appends_256_writers" && r[3].starts_with("raw fjall"))
    {
        assert!(
            row[2].contains("µs CPU/event]") && row[4].contains("µs CPU/event]"),
            "{row:?}"
        );
    }
    // Issue 17's targets are judged against the raw loop's best round, never a slow one: 256
    // writers like for like (event + index entry in batches of 256), one writer beside
    // write+fsync; rebuilding balances beside PostgreSQL's SQL.
    let best_like_for_like =
        "raw fjall SyncAll batches of 256, event + stream index entry (format 1), best of 3 rounds";
    for row in rows
        .iter()
        .filter(|r| r[1] == "durable_appends_256_writers")
    {
        assert_eq!(row[6] == "≥ 0.9×", row[3] == best_like_for_like, "{row:?}");
    }
    assert!(
        rows.iter().any(|r| r[1] == "durable_appends_1_writers"
            && r[3] == "raw write+fsync, best of 3 rounds"
            && r[6] == "≥ 0.9×"),
        "{stdout}"
    );
    assert!(
        rows.iter().any(|r| r[1] == "rebuild_balances (median of 3 rounds)"
            && r[3]
                == "PostgreSQL: every balance in SQL (balances_all.sql), best of 3 alternating rounds"
            && r[6] == "≥ 1×"),
        "{stdout}"
    );
    assert!(
        rows.iter().any(
            |r| r[1].starts_with("durable_appends_256_writers: CPU ceiling")
                && r[3] == best_like_for_like
                && !r[2].starts_with('0')
        ),
        "no CPU ceiling row in\n{stdout}"
    );
    // Every size-dependent row names the log size it ran at: the generated log (≥ 12,000 events).
    let steps: Vec<u64> = rows
        .iter()
        .filter_map(|r| r[0].trim_start_matches("| ").parse().ok())
        .collect();
    assert!(
        steps.iter().all(|&n| n >= 12_000) && steps.len() >= 10,
        "{steps:?}"
    );
    // No temporary store or PostgreSQL data directory is left behind.
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
}

/// Ctrl-C in the middle of `ledgerctl bench suite` leaves nothing behind: the PostgreSQL it
/// started is stopped and its temporary stores are deleted, and it exits with 130.
#[test]
fn an_interrupted_benchmark_suite_stops_postgresql_and_removes_its_stores() {
    use std::io::BufRead;
    let work = tempfile::tempdir().unwrap();
    let mut child = small_suite(work.path(), 4000)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    // PostgreSQL is up once the appends start.
    let started = stderr
        .by_ref()
        .map(Result::unwrap)
        .any(|line| line.contains(": durable appends"));
    assert!(started, "the suite ended before its appends");
    let drain = std::thread::spawn(move || stderr.map(Result::unwrap).collect::<Vec<_>>());
    let suite_dir = std::fs::read_dir(work.path())
        .unwrap()
        .next()
        .expect("the suite's temporary directory")
        .unwrap()
        .path();
    let pid_file = suite_dir.join("postgres/pgdata/postmaster.pid");
    let postmaster: u32 = std::fs::read_to_string(&pid_file)
        .expect("PostgreSQL's pid file")
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(std::path::Path::new(&format!("/proc/{postmaster}")).exists());

    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    let said = drain.join().unwrap().join("\n");
    assert_eq!(status.code(), Some(130), "{said}");
    assert!(said.contains("interrupted: stopping PostgreSQL"), "{said}");
    assert_eq!(
        std::fs::read_dir(work.path()).unwrap().count(),
        0,
        "left behind in {}",
        work.path().display()
    );
    // The postmaster removed its pid file before exiting; give it a moment to be gone.
    let gone = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        !std::path::Path::new(&format!("/proc/{postmaster}")).exists()
    });
    assert!(gone, "PostgreSQL (pid {postmaster}) still runs");
}

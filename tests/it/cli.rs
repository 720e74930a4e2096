//! `ledgerctl` as a user runs it: raw events in and out, exit codes, bad input, a held store,
//! help text, and the append benchmark's small run (so it cannot rot).

use tests::ledgerctl;

fn run_with_stdin(data: &std::path::Path, args: &[&str], stdin: &str) -> std::process::Output {
    tests::run_ledgerctl(data, args, stdin)
}

#[test]
fn log_append_reports_each_line_and_keeps_going_after_a_rejection() {
    let dir = tempfile::tempdir().unwrap();
    let input = [
        r#"{"stream":"contract-C-1","type":"opened","payload":{"customer":"Contoso"},"expected":"no_stream","command_id":"open-1"}"#,
        r#"{"stream":"contract-C-1","type":"opened","payload":{},"expected":"no_stream"}"#,
        r#"not json"#,
        r#"{"stream":"contract-C-1","type":"bought","payload":{"quantity":"100"},"expected":1,"unknown":true}"#,
        r#"{"stream":"contract-C-1","type":"bought","payload":{"quantity":"100"},"expected":1,"effective_at":"2026-01-01T00:00:00Z"}"#,
        r#"{"stream":"contract-C-1","type":"opened","payload":{"customer":"Contoso"},"expected":"no_stream","command_id":"open-1"}"#,
    ]
    .join("\n");
    let output = run_with_stdin(dir.path(), &["log", "append", "-"], &input);
    assert_eq!(
        output.status.code(),
        Some(1),
        "a rejected line makes exit 1"
    );
    let results: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let oks: Vec<bool> = results.iter().map(|r| r["ok"].as_bool().unwrap()).collect();
    assert_eq!(oks, vec![true, false, false, false, true, true]);
    assert!(
        results[1]["error"]
            .as_str()
            .unwrap()
            .contains("version conflict")
    );
    assert!(results[2]["error"].as_str().unwrap().contains("not JSON"));
    assert!(
        results[3]["error"]
            .as_str()
            .unwrap()
            .contains("unknown field")
    );
    assert_eq!(results[4]["events"][0]["position"], 2);
    assert_eq!(results[5]["duplicate"], true);
    assert_eq!(results[5]["events"][0]["position"], 1);

    let read = ledgerctl(dir.path())
        .args(["--format", "json", "log", "read"])
        .output()
        .unwrap();
    assert!(read.status.success());
    let events: Vec<serde_json::Value> = String::from_utf8(read.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "rejected lines appended nothing");
    assert_eq!(events[0]["payload"]["customer"], "Contoso");
    assert_eq!(events[0]["command_id"], "open-1");
    assert_eq!(events[1]["effective_at"], "2026-01-01T00:00:00+00:00");
}

#[test]
fn a_store_held_by_another_process_is_refused_at_once_with_its_pid() {
    let dir = tempfile::tempdir().unwrap();
    let _held = ledger::Ledger::open(dir.path()).unwrap();
    let started = std::time::Instant::now();
    let output = ledgerctl(dir.path())
        .args(["log", "read"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("in use by pid {}", std::process::id())),
        "{stderr}"
    );
    assert!(stderr.contains("--nats"), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

/// Issue 14: every verb but `submit`, `log append` and `serve` refuses a `--data` that holds no
/// store, with exit 2 and the same message, and leaves nothing behind in that directory.
#[test]
fn every_read_verb_on_a_missing_store_says_so_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("mistyped");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for data in [&missing, &empty] {
        for args in [
            vec!["verify"],
            vec!["shortfalls"],
            vec!["notices"],
            vec!["rebuild"],
            vec!["balance", "C-1"],
            vec!["balance", "C-1", "--detail"],
            vec!["audit", "C-1"],
            vec!["replay", "C-1"],
            vec![
                "diff",
                "C-1",
                "--known-at",
                "2026-01-01",
                "--known-at",
                "2026-02-01",
            ],
            vec!["tick", "--now", "2026-01-01"],
            vec!["log", "read"],
        ] {
            let output = ledgerctl(data).args(&args).output().unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(
                stderr.contains(&format!(
                    "no store at {} (set --data or LEDGER_DATA)",
                    data.display()
                )),
                "{args:?}: {stderr}"
            );
            assert!(output.stdout.is_empty(), "{args:?}");
        }
    }
    assert!(!missing.exists(), "a mistyped --data is not created");
    assert_eq!(
        std::fs::read_dir(&empty).unwrap().count(),
        0,
        "nothing left behind"
    );
}

/// Issue 14: logs carry no ANSI colours into a pipe; a client that cannot reach NATS names the
/// URL once (not the error twice); `serve` gives up on a NATS it never reached after
/// `--nats-connect-wait` seconds with exit 2, naming the URL.
#[test]
fn unreachable_nats_is_named_once_and_serve_gives_up_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let port = tests::free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let output = ledgerctl(dir.path())
        .args(["--nats", &url, "balance", "C-1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach NATS at {url}")),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("Connection refused").count(),
        1,
        "the cause once: {stderr}"
    );

    let output = ledgerctl(dir.path())
        .args(["serve", "--nats", &url, "--nats-connect-wait", "1"])
        .env("LEDGER_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach NATS at {url} after 1 s")),
        "{stderr}"
    );
    assert!(
        stderr.contains("NATS not reachable yet; retrying"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "no ANSI escapes into a pipe: {stderr:?}"
    );
}

#[test]
fn help_lists_the_verbs() {
    let output = ledgerctl(std::path::Path::new("."))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for verb in ["verify", "log", "bench"] {
        assert!(help.contains(verb), "{help}");
    }
    assert!(!help.contains("load"), "the test helper stays hidden");
}

#[test]
fn bench_append_small_run_reports_every_workload_with_ratios() {
    let work = tempfile::tempdir().unwrap();
    let output = ledgerctl(work.path())
        .args([
            "bench",
            "append",
            "--millis",
            "150",
            "--writers",
            "1,8",
            "--scan-events",
            "3000",
        ])
        .arg("--work-dir")
        .arg(work.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let field = |line: &str, key: &str| -> Option<String> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")).map(str::to_owned))
    };
    let workloads: Vec<String> = stdout
        .lines()
        .filter(|l| l.starts_with("BENCH "))
        .map(|l| {
            let rate: f64 = field(l, "per_sec").unwrap().parse().unwrap();
            assert!(rate > 0.0, "{l}");
            field(l, "workload").unwrap()
        })
        .collect();
    for expected in [
        "raw_write_fsync",
        "raw_fjall_batch_1000_syncall",
        "append_writers_1",
        "append_writers_8",
        "scan_decode_3000_events",
    ] {
        assert!(
            workloads.iter().any(|w| w == expected),
            "{expected} missing in:\n{stdout}"
        );
    }
    let writers_1 = stdout
        .lines()
        .find(|l| l.contains("workload=append_writers_1 "))
        .unwrap();
    assert!(
        field(writers_1, "ratio").is_some() && field(writers_1, "p99_us").is_some(),
        "{writers_1}"
    );
    // Every append and raw fjall line says what it cost in CPU; n > 1 writers get a ceiling.
    for line in stdout.lines().filter(|l| {
        l.contains("workload=append_writers_") || l.contains("workload=raw_fjall_batch_")
    }) {
        if line.contains("_cpu_ceiling_") {
            assert!(field(line, "ratio").is_some(), "{line}");
        } else {
            let cpu: f64 = field(line, "cpu_us_per_event").unwrap().parse().unwrap();
            assert!(cpu > 0.0, "{line}");
        }
    }
    assert!(
        workloads
            .iter()
            .any(|w| w.starts_with("append_writers_8_cpu_ceiling_")),
        "no ceiling in:\n{stdout}"
    );
    assert!(stdout.lines().next().unwrap().starts_with("MACHINE "));
}

#[test]
fn bench_commands_small_run_reports_both_workloads_with_ratios() {
    let work = tempfile::tempdir().unwrap();
    let output = ledgerctl(work.path())
        .args(["bench", "commands", "--millis", "150", "--contracts", "1,4"])
        .args(["--import-lines", "400", "--import-rounds", "1"])
        .arg("--work-dir")
        .arg(work.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    for workload in [
        "commands_embedded_contracts_1 ",
        "commands_embedded_contracts_4 ",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.contains(&format!("workload={workload}")))
            .unwrap_or_else(|| panic!("{workload} missing in:\n{stdout}"));
        assert!(
            line.contains("baseline=raw_append_same_concurrency") && line.contains(" ratio="),
            "{line}"
        );
    }
    assert!(
        stdout.contains("workload=submit_file_448_lines_64_contracts")
            && stdout.contains("baseline=commands_embedded_contracts_64_median"),
        "{stdout}"
    );
}

/// A small run of `ledgerctl bench ARGS… --work-dir W`: its stdout, after checking it succeeded
/// and printed every one of `needles`.
fn bench_small_run(args: &[&str], needles: &[&str]) -> String {
    let work = tempfile::tempdir().unwrap();
    let output = ledgerctl(work.path())
        .arg("bench")
        .args(args)
        .arg("--work-dir")
        .arg(work.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    for needle in needles {
        assert!(stdout.contains(needle), "{needle} missing in:\n{stdout}");
    }
    stdout
}

#[test]
fn bench_open_small_run_reports_both_verbs_beside_a_small_store() {
    bench_small_run(
        &["open", "--events", "3000", "--rounds", "1"],
        &[
            "workload=open_log_read_limit_1_3000_events",
            "workload=open_log_read_limit_1_30000_events",
            "baseline=open_log_read_limit_1_100_events",
            "workload=open_balance_3000_events",
            "baseline=open_balance_100_events",
        ],
    );
}

#[test]
fn bench_projections_small_run_reports_rebuild_memory_and_as_of() {
    bench_small_run(
        &["projections", "--events", "3000", "--contracts", "3"],
        &[
            "workload=rebuild_balances_",
            "baseline=raw_scan_decode_same_log",
            "workload=rebuild_peak_memory",
            "workload=balance_as_of contract_events=10000",
        ],
    );
}

#[test]
fn bench_proofs_small_run_reports_each_row_with_its_target() {
    bench_small_run(
        &[
            "proofs",
            "--events",
            "2000",
            "--contracts",
            "4",
            "--millis",
            "200",
            "--rounds",
            "1",
        ],
        &[
            "workload=bundle_10000_event_contract_",
            "baseline=audit_json_same_contract_per_s_median",
            "workload=verify_bundle_10000_events",
            "workload=append_writers_256_checkpoint_every_second",
            "baseline=append_writers_256_median",
            "workload=log_tree_storage",
        ],
    );
}

/// Issue 14: a store on read-only media (an auditor's copy) answers every read verb as the
/// writable store does, leaves the media untouched, and a verb that would write (`tick`) says
/// why it cannot, each cause once. Needs root for the read-only bind mount (CI runs as root).
#[test]
fn a_store_on_read_only_media_can_be_read_and_is_never_written() {
    struct Mount(std::path::PathBuf);
    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    let data = source.join("data");
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/worked-example.jsonl");
    let submitted = ledgerctl(&data)
        .args(["submit", example.to_str().unwrap()])
        .output()
        .unwrap();
    assert_ne!(submitted.status.code(), Some(2));
    let read_only = dir.path().join("read-only");
    std::fs::create_dir(&read_only).unwrap();
    for args in [
        vec![
            "--bind",
            source.to_str().unwrap(),
            read_only.to_str().unwrap(),
        ],
        vec!["-o", "remount,bind,ro", read_only.to_str().unwrap()],
    ] {
        let status = std::process::Command::new("mount")
            .args(&args)
            .status()
            .unwrap();
        assert!(status.success(), "a read-only bind mount needs root");
    }
    let _mount = Mount(read_only.clone());
    let copy = read_only.join("data");
    let listing = |dir: &std::path::Path| {
        let mut names: Vec<_> = walk(dir);
        names.sort();
        names
    };
    let verbs = [
        vec!["balance", "C-1001"],
        vec!["balance", "C-1001", "--detail", "--as-of", "2026-03-01"],
        vec!["audit", "C-1001", "--format", "csv"],
        vec!["shortfalls"],
        vec!["notices"],
        vec!["replay", "C-1001"],
        vec!["verify"],
        vec!["log", "read"],
    ];
    // The answers of the writable store first: reading it writes (projections, journals).
    let expected: Vec<_> = verbs
        .iter()
        .map(|args| ledgerctl(&data).args(args).output().unwrap().stdout)
        .collect();
    let before = listing(&data);
    for (args, expected) in verbs.iter().zip(expected) {
        let from_media = ledgerctl(&copy).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&from_media.stderr);
        assert_eq!(from_media.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(
            stderr.contains("is read-only; reading a temporary copy"),
            "{stderr}"
        );
        assert_eq!(
            String::from_utf8_lossy(&from_media.stdout),
            String::from_utf8_lossy(&expected),
            "{args:?}"
        );
    }
    let tick = ledgerctl(&copy)
        .args(["tick", "--now", "2027-01-02"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&tick.stderr);
    assert_eq!(tick.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.matches("Read-only file system").count(),
        1,
        "{stderr}"
    );
    assert_eq!(listing(&data), before, "the media is unchanged");
}

/// Every file under `dir` with its length and modification time.
fn walk(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64, std::time::SystemTime)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let metadata = entry.metadata().unwrap();
        if metadata.is_dir() {
            files.extend(walk(&entry.path()));
        } else {
            files.push((entry.path(), metadata.len(), metadata.modified().unwrap()));
        }
    }
    files
}

/// Long work shows its progress (count, whole-number rate with thousands separators) when stderr
/// is a terminal, and writes nothing extra when it is not: `log append` of a file and `verify`,
/// run under a pseudo-terminal (util-linux `script`) and plainly.
#[test]
fn long_work_shows_progress_on_a_terminal_and_nothing_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("history.jsonl");
    let lines: String = (0..30_000)
        .map(|i| {
            format!(
                "{{\"stream\":\"s-{}\",\"type\":\"t\",\"payload\":{{}}}}\n",
                i % 64
            )
        })
        .collect();
    std::fs::write(&file, lines).unwrap();
    let plain_store = dir.path().join("plain");
    let plain = ledgerctl(&plain_store)
        .args(["log", "append"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(plain.status.success());
    assert!(
        plain.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    let verified = ledgerctl(&plain_store).arg("verify").output().unwrap();
    assert!(verified.status.success());
    assert!(
        verified.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );

    let on_a_terminal = |args: &str| {
        let command = format!(
            "{} --data {} {args}",
            tests::ledgerctl_path().display(),
            dir.path().join("tty").display()
        );
        let output = std::process::Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .output()
            .expect("util-linux script runs");
        assert!(output.status.success(), "{command}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let appended = on_a_terminal(&format!("log append {}", file.display()));
    let drawn = |text: &str, noun: &str| {
        text.split("\r\u{1b}[2K").any(|line| {
            let line = line.trim_end();
            line.contains(&format!(" {noun} · ")) && line.contains("/s") && !line.contains('.')
        })
    };
    assert!(
        drawn(&appended, "lines"),
        "no progress line in {:?}",
        &appended[..appended.len().min(400)]
    );
    let verify = on_a_terminal("verify");
    assert!(drawn(&verify, "events"), "no progress line in {verify:?}");
    assert!(verify.contains("checked 30000 events"), "{verify:?}");
}

/// `bench nats` at a small N against a real nats-server: commands over NATS beside the raw echo
/// and beside the same callers embedded, with the 0.5 target (issue 17); the subscriber latency,
/// the balance queries and the publisher's drain.
#[test]
fn bench_nats_small_run_reports_commands_beside_embedded_and_the_echo() {
    let stdout = bench_small_run(
        &[
            "nats",
            "--millis",
            "300",
            "--clients",
            "4",
            "--publish-events",
            "500",
        ],
        &[
            "workload=commands_over_nats_4_clients",
            "baseline=raw_nats_request_reply_echo",
            "baseline=commands_embedded_4_callers_same_run",
            "workload=append_to_subscriber_latency",
            "workload=publisher_drain_",
        ],
    );
    assert!(
        stdout.lines().any(
            |line| line.contains("baseline=commands_embedded_4_callers_same_run")
                && line.contains("target=0.5")
                && line.contains(" meets=")
        ),
        "{stdout}"
    );
}

//! The event log's API: expected versions, racing writers, idempotency across restarts, limits,
//! the directory lock, the format check, reads and subscriptions.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ledger::{Append, Error, ExpectedVersion, Ledger, LedgerOptions, NewEvent};

fn event(payload: &str) -> NewEvent {
    NewEvent::new("thing_happened", payload.as_bytes().to_vec())
}

fn append_n(ledger: &Ledger, stream: &str, n: usize) {
    let events = (0..n).map(|i| event(&format!("{stream}-{i}"))).collect();
    ledger
        .append_blocking(Append::new(stream, ExpectedVersion::Any, events))
        .unwrap();
}

#[test]
fn expected_version_table() {
    use ExpectedVersion::*;
    // (events already in the stream, expected, accepted?)
    let table: &[(usize, ExpectedVersion, bool)] = &[
        (0, Any, true),
        (2, Any, true),
        (0, NoStream, true),
        (1, NoStream, false),
        (0, StreamExists, false),
        (1, StreamExists, true),
        (0, Exact(0), true),
        (0, Exact(1), false),
        (3, Exact(3), true),
        (3, Exact(2), false),
        (3, Exact(4), false),
    ];
    for backend in tests::Backend::ALL {
        eprintln!("{backend:?}");
        let dir = tempfile::tempdir().unwrap();
        let opened = backend.open(dir.path());
        let ledger = opened.ledger.clone();
        for (row, &(existing, expected, accepted)) in table.iter().enumerate() {
            let stream = format!("row-{row}");
            if existing > 0 {
                append_n(&ledger, &stream, existing);
            }
            let before = ledger.committed_position();
            let result =
                ledger.append_blocking(Append::new(stream.as_str(), expected, vec![event("x")]));
            match (accepted, result) {
                (true, Ok(appended)) => {
                    assert_eq!(appended.stream_version(), existing as u64 + 1, "row {row}");
                    assert_eq!(appended.last_position(), before + 1, "row {row}");
                }
                (
                    false,
                    Err(Error::VersionConflict {
                        expected: e,
                        actual,
                        ..
                    }),
                ) => {
                    assert_eq!((e, actual), (expected, existing as u64), "row {row}");
                    assert_eq!(
                        ledger.committed_position(),
                        before,
                        "row {row} wrote something"
                    );
                }
                (accepted, other) => {
                    panic!("row {row}: expected accepted={accepted}, got {other:?}")
                }
            }
        }
        opened.assert_mirror_holds_the_log();
    }
}

#[test]
fn multi_event_appends_are_consecutive_in_stream_and_log() {
    for backend in tests::Backend::ALL {
        eprintln!("{backend:?}");
        let dir = tempfile::tempdir().unwrap();
        let opened = backend.open(dir.path());
        let ledger = opened.ledger.clone();
        append_n(&ledger, "a", 1);
        let appended = ledger
            .append_blocking(Append::new(
                "b",
                ExpectedVersion::NoStream,
                vec![event("1"), event("2"), event("3")],
            ))
            .unwrap();
        let got: Vec<(u64, u64)> = appended
            .events
            .iter()
            .map(|e| (e.position, e.version))
            .collect();
        assert_eq!(got, vec![(2, 1), (3, 2), (4, 3)]);
        let stream = ledger.read_stream("b", 1, 100).unwrap();
        assert_eq!(
            stream.iter().map(|e| e.payload.clone()).collect::<Vec<_>>(),
            vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]
        );
        let backward = ledger.read_stream_backward("b", None, 2).unwrap();
        assert_eq!(
            backward.iter().map(|e| e.version).collect::<Vec<_>>(),
            vec![3, 2]
        );
        let from_two = ledger.read_stream_backward("b", Some(2), 10).unwrap();
        assert_eq!(
            from_two.iter().map(|e| e.version).collect::<Vec<_>>(),
            vec![2, 1]
        );
        let all = ledger.read_all(2, 2).unwrap();
        assert_eq!(
            all.iter().map(|e| e.position).collect::<Vec<_>>(),
            vec![2, 3]
        );
        // A stream whose name is a prefix of another's does not see the other's events.
        append_n(&ledger, "b1", 2);
        assert_eq!(ledger.read_stream("b", 1, 100).unwrap().len(), 3);
        assert_eq!(ledger.stream_version("b").unwrap(), 3);
        assert_eq!(ledger.stream_version("nothing").unwrap(), 0);
        assert_eq!(ledger.stream_ids("").unwrap(), vec!["a", "b", "b1"]);
        assert_eq!(ledger.stream_ids("b").unwrap(), vec!["b", "b1"]);
        assert!(ledger.stream_ids("c").unwrap().is_empty());
        opened.assert_mirror_holds_the_log();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_win_each_version_exactly_once() {
    const TASKS: usize = 24;
    const WINS_PER_TASK: usize = 15;
    for backend in tests::Backend::ALL {
        eprintln!("{backend:?}");
        let dir = tempfile::tempdir().unwrap();
        let opened = backend.open(dir.path());
        let ledger = opened.ledger.clone();
        let mut handles = Vec::new();
        for task in 0..TASKS {
            let ledger = ledger.clone();
            handles.push(tokio::spawn(async move {
                let mut wins = Vec::new();
                let mut conflicts = 0;
                while wins.len() < WINS_PER_TASK {
                    let version = ledger.stream_version("contested").unwrap();
                    let append = Append::new(
                        "contested",
                        ExpectedVersion::Exact(version),
                        vec![event(&format!("{task}"))],
                    );
                    match ledger.append(append).await {
                        Ok(appended) => wins.push(appended.stream_version()),
                        Err(Error::VersionConflict { actual, .. }) => {
                            assert!(actual > version);
                            conflicts += 1;
                        }
                        Err(other) => panic!("{other}"),
                    }
                }
                (wins, conflicts)
            }));
        }
        let mut versions = Vec::new();
        let mut conflicts = 0;
        for handle in handles {
            let (wins, lost) = handle.await.unwrap();
            versions.extend(wins);
            conflicts += lost;
        }
        versions.sort_unstable();
        let expected: Vec<u64> = (1..=(TASKS * WINS_PER_TASK) as u64).collect();
        assert_eq!(versions, expected, "each version won exactly once, no gaps");
        assert!(
            conflicts > 0,
            "the race never happened: no conflict was seen"
        );
        let events = ledger.read_stream("contested", 1, 10_000).unwrap();
        for (index, event) in events.iter().enumerate() {
            assert_eq!(event.version, index as u64 + 1);
            assert_eq!(event.position, index as u64 + 1);
        }
        assert!(ledger.verify().unwrap().is_ok());
        opened.assert_mirror_holds_the_log();
    }
}

#[test]
fn idempotent_retry_after_restart_returns_the_first_result_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let ledger = Ledger::open(dir.path()).unwrap();
        append_n(&ledger, "other", 2);
        ledger
            .append_blocking(
                Append::new("s", ExpectedVersion::NoStream, vec![event("a"), event("b")])
                    .command_id("cmd-1"),
            )
            .unwrap()
    };
    assert!(!first.duplicate);
    let ledger = Ledger::open(dir.path()).unwrap();
    let before = ledger.committed_position();
    // Same id, same content: the first answer, even though NoStream no longer holds.
    let retry = ledger
        .append_blocking(
            Append::new("s", ExpectedVersion::NoStream, vec![event("a"), event("b")])
                .command_id("cmd-1"),
        )
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.events, first.events);
    assert_eq!(ledger.committed_position(), before);
    // Same id, other content: rejected, nothing written.
    let reused = ledger.append_blocking(
        Append::new("s", ExpectedVersion::Any, vec![event("c")]).command_id("cmd-1"),
    );
    assert!(
        matches!(reused, Err(Error::IdempotencyKeyReused { ref command_id }) if command_id == "cmd-1")
    );
    assert_eq!(ledger.committed_position(), before);
    let (_, remembered) = ledger.command("cmd-1").unwrap().unwrap();
    assert_eq!(remembered.events, first.events);
    assert!(ledger.command("cmd-2").unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_command_id_raced_in_one_batch_is_written_once() {
    for backend in tests::Backend::ALL {
        eprintln!("{backend:?}");
        let dir = tempfile::tempdir().unwrap();
        let opened = backend.open(dir.path());
        let ledger = opened.ledger.clone();
        let mut handles = Vec::new();
        for _ in 0..16 {
            let ledger = ledger.clone();
            handles.push(tokio::spawn(async move {
                ledger
                    .append(
                        Append::new("s", ExpectedVersion::Any, vec![event("once")])
                            .command_id("dup"),
                    )
                    .await
                    .unwrap()
            }));
        }
        let mut positions = HashSet::new();
        let mut originals = 0;
        for handle in handles {
            let appended = handle.await.unwrap();
            positions.insert(appended.last_position());
            originals += usize::from(!appended.duplicate);
        }
        assert_eq!(positions.len(), 1);
        assert_eq!(originals, 1);
        assert_eq!(ledger.committed_position(), 1);
        opened.assert_mirror_holds_the_log();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_id_retried_while_its_first_batch_commits_is_written_once() {
    // The writer decides batch N+1 while batch N is still being committed: a retry staged then
    // must find the first attempt among the batches in flight, and one staged after the commit
    // must find it in the store. Background writers keep the committer busy throughout.
    const COMMANDS: usize = 200;
    for backend in tests::Backend::ALL {
        eprintln!("{backend:?}");
        let dir = tempfile::tempdir().unwrap();
        let opened = backend.open(dir.path());
        let ledger = opened.ledger.clone();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut background = Vec::new();
        for writer in 0..8 {
            let (ledger, stop) = (ledger.clone(), stop.clone());
            background.push(tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let append = Append::new(
                        format!("load-{writer}"),
                        ExpectedVersion::Any,
                        vec![event("load")],
                    );
                    ledger.append(append).await.unwrap();
                }
            }));
        }
        for command in 0..COMMANDS {
            let id = format!("cmd-{command}");
            let stream = format!("s-{}", command % 7);
            let attempt = |content: &'static str| {
                let (ledger, id, stream) = (ledger.clone(), id.clone(), stream.clone());
                tokio::spawn(async move {
                    let append = Append::new(stream, ExpectedVersion::Any, vec![event(content)]);
                    ledger.append(append.command_id(id)).await
                })
            };
            // Queued one after the other, so they usually land in consecutive batches.
            let first = attempt("same");
            tokio::task::yield_now().await;
            let retry = attempt("same");
            let first = first.await.unwrap().unwrap();
            // Sent once the first answer is in: it meets either the in-flight record (not yet
            // pruned) or the store's.
            let reused = attempt("other");
            let retry = retry.await.unwrap().unwrap();
            let after = attempt("same").await.unwrap().unwrap();
            assert_eq!(
                u8::from(first.duplicate) + u8::from(retry.duplicate),
                1,
                "{id}: exactly one attempt writes"
            );
            assert_eq!(first.events, retry.events, "{id}");
            assert!(after.duplicate, "{id}");
            assert_eq!(after.events, first.events, "{id}");
            assert!(
                matches!(
                    reused.await.unwrap(),
                    Err(Error::IdempotencyKeyReused { .. })
                ),
                "{id}: other content under the same id"
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for handle in background {
            handle.await.unwrap();
        }
        let mut written = 0;
        for stream in 0..7 {
            written += ledger
                .read_stream(&format!("s-{stream}"), 1, 10_000)
                .unwrap()
                .len();
        }
        assert_eq!(written, COMMANDS, "one event per command id");
        assert!(ledger.verify().unwrap().is_ok());
        opened.assert_mirror_holds_the_log();
    }
}

#[test]
fn limits_are_enforced_with_nothing_written() {
    for backend in tests::Backend::ALL {
        eprintln!("{backend:?}");
        let dir = tempfile::tempdir().unwrap();
        let opened = backend.open(dir.path());
        let ledger = opened.ledger.clone();
        let too_many = (0..=ledger::limits::EVENTS_PER_APPEND_MAX)
            .map(|_| event("x"))
            .collect();
        let oversize = NewEvent::new("big", vec![0u8; ledger::limits::EVENT_BYTES_MAX + 1]);
        let cases: Vec<(&str, Append)> = vec![
            (
                "stream id",
                Append::new("", ExpectedVersion::Any, vec![event("x")]),
            ),
            (
                "stream id",
                Append::new("has space", ExpectedVersion::Any, vec![event("x")]),
            ),
            (
                "stream id",
                Append::new(
                    "x".repeat(ledger::limits::STREAM_ID_BYTES_MAX + 1),
                    ExpectedVersion::Any,
                    vec![event("x")],
                ),
            ),
            ("events", Append::new("s", ExpectedVersion::Any, vec![])),
            (
                "events per append",
                Append::new("s", ExpectedVersion::Any, too_many),
            ),
            (
                "event size",
                Append::new("s", ExpectedVersion::Any, vec![oversize]),
            ),
            (
                "event type",
                Append::new(
                    "s",
                    ExpectedVersion::Any,
                    vec![NewEvent::new("bad type!", b"x".to_vec())],
                ),
            ),
            (
                "command id",
                Append::new("s", ExpectedVersion::Any, vec![event("x")]).command_id("with space"),
            ),
        ];
        for (what, append) in cases {
            match ledger.append_blocking(append) {
                Err(Error::Invalid { what: got, detail }) => {
                    assert_eq!(got, what, "{detail}");
                    assert!(!detail.is_empty());
                }
                other => panic!("{what}: expected Invalid, got {other:?}"),
            }
        }
        assert_eq!(ledger.committed_position(), 0);
        assert_eq!(ledger.read_all(0, 10).unwrap().len(), 0);
        opened.assert_mirror_holds_the_log();
    }
}

#[test]
fn a_held_directory_fails_at_once_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let _held = Ledger::open(dir.path()).unwrap();
    let started = std::time::Instant::now();
    match Ledger::open(dir.path()) {
        Err(Error::Locked { holder, .. }) => {
            assert_eq!(holder, format!("pid {}", std::process::id()));
        }
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("expected Locked, got a second handle"),
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "open waited instead of failing"
    );
}

#[test]
fn an_unknown_format_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    drop(Ledger::open(dir.path()).unwrap());
    {
        let db = fjall::Database::builder(dir.path().join("store"))
            .open()
            .unwrap();
        let meta = db
            .keyspace("meta", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        meta.insert("format", 99u32.to_be_bytes()).unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    match Ledger::open(dir.path()) {
        Err(error @ Error::UnsupportedFormat { .. }) => {
            let message = error.to_string();
            assert!(message.contains("format 99"), "{message}");
            assert!(
                message.contains(&format!("format {}", ledger::STORE_FORMAT)),
                "{message}"
            );
        }
        Err(other) => panic!("expected UnsupportedFormat, got {other}"),
        Ok(_) => panic!("opened a store of an unknown format"),
    }
}

#[test]
fn recorded_time_never_goes_backwards_even_when_the_clock_does() {
    let dir = tempfile::tempdir().unwrap();
    let times: Arc<std::sync::Mutex<Vec<DateTime<Utc>>>> = Arc::new(std::sync::Mutex::new(vec![
        "2026-01-01T00:00:00Z".parse().unwrap(),
        "2025-01-01T00:00:00Z".parse().unwrap(),
        "2026-06-01T00:00:00Z".parse().unwrap(),
    ]));
    let clock_times = times.clone();
    let options = LedgerOptions {
        clock: Arc::new(move || clock_times.lock().unwrap().remove(0)),
        ..LedgerOptions::default()
    };
    let ledger = Ledger::open_with(dir.path(), options).unwrap();
    for _ in 0..3 {
        append_n(&ledger, "s", 1);
    }
    let recorded: Vec<String> = ledger
        .read_all(0, 10)
        .unwrap()
        .iter()
        .map(|e| e.recorded_at.to_rfc3339())
        .collect();
    assert_eq!(
        recorded,
        vec![
            "2026-01-01T00:00:00+00:00",
            "2026-01-01T00:00:00+00:00",
            "2026-06-01T00:00:00+00:00"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_catches_up_then_goes_live_without_gap_or_duplicate() {
    for backend in tests::Backend::ALL {
        eprintln!("{backend:?}");
        let dir = tempfile::tempdir().unwrap();
        let opened = backend.open(dir.path());
        let ledger = opened.ledger.clone();
        // More than one page before subscribing, so catch-up spans pages.
        let before = ledger::limits::SUBSCRIPTION_PAGE_MAX as u64 + 37;
        for chunk in 0..before.div_ceil(100) {
            let n = (before - chunk * 100).min(100);
            let events = (0..n).map(|_| event("before")).collect();
            ledger
                .append(Append::new("s", ExpectedVersion::Any, events))
                .await
                .unwrap();
        }
        let mut subscription = ledger.subscribe(0);
        let mut late = ledger.subscribe(before + 1);
        let writer = {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                for i in 0..300 {
                    let stream = format!("live-{}", i % 7);
                    ledger
                        .append(Append::new(
                            stream,
                            ExpectedVersion::Any,
                            vec![event("live")],
                        ))
                        .await
                        .unwrap();
                }
            })
        };
        let total = before + 300;
        for expected in 1..=total {
            let got = subscription.next().await.unwrap();
            assert_eq!(got.position, expected);
        }
        for expected in before + 1..=total {
            assert_eq!(late.next().await.unwrap().position, expected);
        }
        writer.await.unwrap();
        // Nothing more is delivered until something more is written.
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(50), subscription.next()).await;
        assert!(
            waited.is_err(),
            "delivered an event that was never appended"
        );
        append_n_async(&ledger).await;
        assert_eq!(subscription.next().await.unwrap().position, total + 1);
        opened.assert_mirror_holds_the_log();
    }
}

async fn append_n_async(ledger: &Ledger) {
    ledger
        .append(Append::new("s", ExpectedVersion::Any, vec![event("after")]))
        .await
        .unwrap();
}

/// `scan` reads the log through one fjall iterator per `SCAN_CHUNK_EVENTS` (so a long rebuild
/// does not pin one snapshot): across chunk boundaries it yields every position once, in order,
/// from any start, and still ends at the head committed when it was created.
#[test]
fn scan_crosses_chunks_without_gap_or_duplicate_and_ends_at_its_head() {
    for backend in tests::Backend::ALL {
        eprintln!("{backend:?}");
        let dir = tempfile::tempdir().unwrap();
        let opened = backend.open(dir.path());
        let ledger = opened.ledger.clone();
        let chunk = ledger::limits::SCAN_CHUNK_EVENTS;
        let total = 2 * chunk + 123;
        for block in 0..total.div_ceil(1000) {
            let n = (total - block * 1000).min(1000) as usize;
            append_n(&ledger, &format!("s-{block}"), n);
        }
        assert_eq!(ledger.committed_position(), total);
        for from in [
            0,
            1,
            chunk - 1,
            chunk,
            chunk + 1,
            2 * chunk + 100,
            total,
            total + 5,
        ] {
            let head = ledger.committed_position();
            let mut scan = ledger.scan(from);
            // Appended after the scan was created: not part of it.
            if from == chunk {
                append_n(&ledger, "late", 10);
            }
            let positions: Vec<u64> = scan.by_ref().map(|e| e.unwrap().position).collect();
            let first = from.max(1);
            let expected: Vec<u64> = (first..=head).collect();
            assert!(
                positions == expected,
                "scan from {from}: {} events {:?}..{:?}, expected {} from {first} to {head}",
                positions.len(),
                positions.first(),
                positions.last(),
                expected.len()
            );
        }
        assert_eq!(
            ledger.scan(total + 1).count(),
            10,
            "the late events, by a new scan"
        );
        opened.assert_mirror_holds_the_log();
    }
}

/// `scan_ahead` (what a rebuild reads through, issue 17) hands out exactly what `scan` does:
/// every event whole and in order, across its chunks and its readers' turns, from any start,
/// ending at the head committed when it was created; its readers decode into events recycled
/// from earlier chunks, so metadata that comes and goes from one event to the next must not
/// leak from one into another. Dropped half-way, it stops.
#[test]
fn scan_ahead_hands_out_what_scan_does_whatever_the_readers() {
    for backend in tests::Backend::ALL {
        eprintln!("{backend:?}");
        let dir = tempfile::tempdir().unwrap();
        let opened = backend.open(dir.path());
        let ledger = opened.ledger.clone();
        let chunk = ledger::limits::SCAN_AHEAD_CHUNK_EVENTS;
        let total = 7 * chunk + 321;
        let mut appended = 0;
        while appended < total {
            let n = (total - appended).min(997);
            let events = (appended..appended + n)
                .map(|i| {
                    let mut event = event(&"p".repeat((i % 7) as usize * 50));
                    event.effective_at = (i % 3 == 0).then(Utc::now);
                    event.metadata.command_id = (i % 2 == 0).then(|| format!("cmd-{i}"));
                    event.metadata.reason = (i % 5 == 0).then(|| "r".repeat((i % 11) as usize));
                    event
                })
                .collect();
            ledger
                .append_blocking(Append::new(
                    format!("s-{}", appended % 5),
                    ExpectedVersion::Any,
                    events,
                ))
                .unwrap();
            appended += n;
        }
        assert_eq!(ledger.committed_position(), total);
        for readers in [1, 2, 3] {
            for from in [0, 1, chunk, chunk + 1, 3 * chunk - 1, total, total + 1] {
                let head = ledger.committed_position();
                let mut scan = ledger.scan_ahead(from, readers);
                if from == chunk {
                    append_n(&ledger, "late", 3);
                }
                let mut got = Vec::new();
                while let Some(events) = scan.next_chunk() {
                    let events = events.unwrap();
                    assert!(!events.is_empty(), "an empty chunk");
                    got.extend_from_slice(events);
                }
                let want: Vec<_> = ledger
                    .scan(from)
                    .map(Result::unwrap)
                    .take_while(|e| e.position <= head)
                    .collect();
                assert!(
                    got == want,
                    "{readers} readers from {from}: {} events, expected {}",
                    got.len(),
                    want.len()
                );
                assert!(scan.next_chunk().is_none(), "it stays ended");
            }
        }
        // Dropped after one chunk: its readers stop at their next hand-over; nothing hangs.
        let mut scan = ledger.scan_ahead(1, 2);
        assert_eq!(scan.next_chunk().unwrap().unwrap().len() as u64, chunk);
        drop(scan);
        opened.assert_mirror_holds_the_log();
    }
    // The readers hold handles on the ledger: once a scan is dropped, none is left running, so
    // the last handle the caller drops closes the store and the directory opens again at once.
    let dir = tempfile::tempdir().unwrap();
    for round in 0..5 {
        let ledger = Ledger::open(dir.path()).unwrap_or_else(|e| panic!("round {round}: {e}"));
        if round == 0 {
            for _ in 0..8 {
                append_n(&ledger, "s", 1000);
            }
        }
        let mut scan = ledger.scan_ahead(1, 2);
        assert!(scan.next_chunk().unwrap().is_ok());
        drop(scan);
        drop(ledger);
    }
}

/// Issue 17: a clean close leaves (almost) no journal for the next open to replay — without
/// it every open replayed up to 64 MB per database, 1.8 s at 1M events — and loses nothing:
/// the log, the index and projection state read back whole, twice over (the close's scratch
/// keyspace is reused).
#[test]
fn a_clean_close_leaves_little_journal_and_everything_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let payload = "x".repeat(400);
    let mut total = 0u64;
    for round in 0..2u64 {
        let ledger = Ledger::open(dir.path()).unwrap();
        let before = ledger::journal_bytes(dir.path());
        // ~12 MB of journal: past what a close leaves.
        for stream in 0..30 {
            let events = (0..1000)
                .map(|i| event(&format!("{round}-{stream}-{i}-{payload}")))
                .collect();
            ledger
                .append_blocking(Append::new(
                    format!("s-{stream}"),
                    ExpectedVersion::Any,
                    events,
                ))
                .unwrap();
        }
        total += 30_000;
        let store = ledger.projection_store("close_test").unwrap();
        let entries = (0..5000u32)
            .map(|i| {
                (
                    format!("k{round}-{i}").into_bytes(),
                    payload.clone().into_bytes(),
                )
            })
            .collect();
        let (position, hash) = ledger.head().unwrap();
        store
            .commit(entries, ledger::Checkpoint { position, hash })
            .unwrap();
        drop(store);
        assert!(
            ledger::journal_bytes(dir.path()) > before + 12_000_000,
            "round {round}: the writes are in the journal"
        );
        drop(ledger);
        let left = ledger::journal_bytes(dir.path());
        assert!(
            left <= ledger::limits::CLOSE_LOG_JOURNAL_KEEP_BYTES
                + ledger::limits::CLOSE_INDEX_JOURNAL_KEEP_BYTES,
            "round {round}: {left} bytes of journal left after a clean close"
        );

        let ledger = Ledger::open(dir.path()).unwrap();
        assert_eq!(ledger.committed_position(), total);
        assert!(ledger.verify().unwrap().is_ok());
        assert_eq!(ledger.stream_version("s-29").unwrap(), total / 30);
        let last = ledger.read_stream_backward("s-7", None, 1).unwrap();
        assert!(
            String::from_utf8_lossy(&last[0].payload).starts_with(&format!("{round}-7-999-")),
            "round {round}"
        );
        let store = ledger.projection_store("close_test").unwrap();
        assert_eq!(store.checkpoint().unwrap().unwrap().position, total);
        for r in 0..=round {
            assert_eq!(
                store.get(format!("k{r}-4999").as_bytes()).unwrap(),
                Some(payload.clone().into_bytes()),
                "round {round}: projection entries of round {r}"
            );
        }
    }
}

//! The stream index follows the log from a database of its own (`DIR/index`), never fsync'd, and
//! is caught up at open. These tests take it away, swap in another store's, tamper with it and
//! migrate a format 1 store, and check that reads and `verify` still say what the log says.

use std::path::{Path, PathBuf};

use fjall::{Database, KeyspaceCreateOptions, PersistMode};
use ledger::{Append, ExpectedVersion, Ledger, NewEvent};
use tests::{copy_dir, stream_positions};

/// `events` events over `streams` streams named `prefix-N`; returns each stream's positions.
fn build(dir: &Path, prefix: &str, streams: u64, events: u64) -> Vec<(String, Vec<u64>)> {
    let ledger = Ledger::open(dir).unwrap();
    let mut expected: Vec<(String, Vec<u64>)> = (0..streams)
        .map(|s| (format!("{prefix}-{s}"), Vec::new()))
        .collect();
    for i in 0..events {
        let (stream, positions) = &mut expected[(i % streams) as usize];
        let appended = ledger
            .append_blocking(Append::new(
                stream.clone(),
                ExpectedVersion::Any,
                vec![NewEvent::new("thing_happened", format!("{i}").into_bytes())],
            ))
            .unwrap();
        positions.push(appended.last_position());
    }
    expected
}

fn assert_reads(ledger: &Ledger, expected: &[(String, Vec<u64>)]) {
    for (stream, positions) in expected {
        assert_eq!(&stream_positions(ledger, stream), positions, "{stream}");
        let backward: Vec<u64> = ledger
            .read_stream_backward(stream, None, usize::MAX)
            .unwrap()
            .iter()
            .map(|event| event.position)
            .collect();
        assert_eq!(
            backward,
            positions.iter().rev().copied().collect::<Vec<_>>()
        );
        assert_eq!(
            ledger.stream_version(stream).unwrap(),
            positions.len() as u64
        );
    }
    let report = ledger.verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.problem);
}

fn data_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

#[test]
fn a_deleted_index_is_built_again_from_the_log_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let expected = build(dir.path(), "c", 5, 300);
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    assert_reads(&ledger, &expected);
    assert_eq!(ledger.stream_ids("c-").unwrap().len(), 5);
    // And appends go on from the right versions.
    let next = ledger
        .append_blocking(Append::new(
            "c-0",
            ExpectedVersion::Exact(60),
            vec![NewEvent::new("thing_happened", b"more".to_vec())],
        ))
        .unwrap();
    assert_eq!(next.stream_version(), 61);
}

#[test]
fn another_stores_index_is_refused_and_built_again() {
    // An index copied from another store: once longer than the log (its checkpoint is past the
    // head), once shorter (its checkpoint names another event).
    for (ours, theirs) in [(50, 400), (400, 50)] {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let expected = build(dir.path(), "mine", 3, ours);
        build(other.path(), "theirs", 4, theirs);
        std::fs::remove_dir_all(dir.path().join("index")).unwrap();
        copy_dir(&other.path().join("index"), &dir.path().join("index"));
        let ledger = Ledger::open(dir.path()).unwrap();
        assert_reads(&ledger, &expected);
        assert!(
            ledger.stream_ids("theirs").unwrap().is_empty(),
            "{ours}/{theirs}: the other store's streams are gone"
        );
    }
}

#[test]
fn verify_names_an_index_entry_that_points_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), "c", 2, 20);
    {
        let db = Database::builder(dir.path().join("index")).open().unwrap();
        let streams = db
            .keyspace("streams", KeyspaceCreateOptions::default)
            .unwrap();
        // c-1 version 3 is at position 6; make the index say 8.
        let mut key = b"c-1\0".to_vec();
        key.extend_from_slice(&3u64.to_be_bytes());
        assert_eq!(&*streams.get(&key).unwrap().unwrap(), &6u64.to_be_bytes());
        streams.insert(&key, 8u64.to_be_bytes()).unwrap();
        db.persist(PersistMode::SyncAll).unwrap();
    }
    let report = ledger::verify_path(dir.path()).unwrap();
    let problem = report.problem.expect("the bad entry is found");
    assert_eq!(problem.position, 6, "{}", problem.detail);
    assert!(
        problem.detail.contains("c-1 version 3"),
        "{}",
        problem.detail
    );
}

#[test]
fn a_format_1_store_is_indexed_marked_format_2_and_loses_its_old_index() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&data_path("fixture-store-v1"), dir.path());
    let format = |dir: &Path| {
        let db = Database::builder(dir.join("store")).open().unwrap();
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default).unwrap();
        let format =
            u32::from_be_bytes((*meta.get("format").unwrap().unwrap()).try_into().unwrap());
        (format, db.keyspace_exists("streams"))
    };
    assert_eq!(format(dir.path()), (1, true));
    assert!(!dir.path().join("index").exists());

    let streams = {
        let ledger = Ledger::open(dir.path()).unwrap();
        let mut streams: Vec<(String, Vec<u64>)> = Vec::new();
        for event in ledger.scan(0) {
            let event = event.unwrap();
            match streams.iter_mut().find(|(s, _)| *s == event.stream) {
                Some((_, positions)) => positions.push(event.position),
                None => streams.push((event.stream, vec![event.position])),
            }
        }
        assert!(streams.len() > 2, "the fixture has several streams");
        assert_reads(&ledger, &streams);
        streams
    };
    assert_eq!(format(dir.path()), (ledger::STORE_FORMAT, false));
    // Opened again as format 2: the same answers, nothing to migrate.
    let ledger = Ledger::open(dir.path()).unwrap();
    assert_reads(&ledger, &streams);
}

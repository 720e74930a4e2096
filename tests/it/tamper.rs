//! Tamper tests: change, remove or reorder an event's bytes out of band (with fjall directly,
//! the ledger closed); `verify` and `ledgerctl verify` name the first bad position.

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use ledger::{Append, ExpectedVersion, Ledger, NewEvent};
use tests::ledgerctl;

fn build_log(dir: &std::path::Path, events: u64) {
    let ledger = Ledger::open(dir).unwrap();
    for i in 0..events {
        let event = NewEvent::new(
            "credits_purchased",
            format!(r#"{{"quantity":"{i}"}}"#).into_bytes(),
        );
        ledger
            .append_blocking(Append::new(
                format!("contract-{}", i % 3),
                ExpectedVersion::Any,
                vec![event],
            ))
            .unwrap();
    }
    assert!(ledger.verify().unwrap().is_ok());
}

fn with_raw_log(dir: &std::path::Path, change: impl FnOnce(&Keyspace)) {
    let db = Database::builder(dir.join("store")).open().unwrap();
    let log = db.keyspace("log", KeyspaceCreateOptions::default).unwrap();
    change(&log);
    db.persist(PersistMode::SyncAll).unwrap();
}

fn first_bad_position(dir: &std::path::Path) -> Option<u64> {
    let report = ledger::verify_path(dir).unwrap();
    report.problem.map(|p| p.position)
}

#[test]
fn a_changed_byte_is_named() {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), 10);
    with_raw_log(dir.path(), |log| {
        let mut bytes = log.get(5u64.to_be_bytes()).unwrap().unwrap().to_vec();
        // The quantity digit inside the payload: the envelope still decodes, the hash breaks.
        let at = payload_digit(&bytes, "4");
        bytes[at] = b'9';
        log.insert(5u64.to_be_bytes(), bytes).unwrap();
    });
    assert_eq!(first_bad_position(dir.path()), Some(5));
}

#[test]
fn a_rehashed_change_breaks_the_next_link() {
    // Someone who recomputes the changed event's own hash still breaks the chain after it.
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), 10);
    with_raw_log(dir.path(), |log| {
        let mut bytes = log.get(6u64.to_be_bytes()).unwrap().unwrap().to_vec();
        let at = payload_digit(&bytes, "5");
        bytes[at] = b'7';
        let body = bytes.len() - 32;
        let hash = sha256(&bytes[..body]);
        bytes[body..].copy_from_slice(&hash);
        log.insert(6u64.to_be_bytes(), bytes).unwrap();
    });
    assert_eq!(first_bad_position(dir.path()), Some(7));
}

#[test]
fn a_removed_event_is_named() {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), 10);
    with_raw_log(dir.path(), |log| log.remove(7u64.to_be_bytes()).unwrap());
    assert_eq!(first_bad_position(dir.path()), Some(7));
}

#[test]
fn reordered_events_are_named() {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), 10);
    with_raw_log(dir.path(), |log| {
        let three = log.get(3u64.to_be_bytes()).unwrap().unwrap();
        let four = log.get(4u64.to_be_bytes()).unwrap().unwrap();
        log.insert(3u64.to_be_bytes(), four).unwrap();
        log.insert(4u64.to_be_bytes(), three).unwrap();
    });
    assert_eq!(first_bad_position(dir.path()), Some(3));
}

#[test]
fn ledgerctl_verify_exits_1_with_the_position_and_0_when_intact() {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), 12);
    let ok = ledgerctl(dir.path())
        .args(["--format", "json", "verify"])
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["events_checked"], 12);

    with_raw_log(dir.path(), |log| {
        let mut bytes = log.get(12u64.to_be_bytes()).unwrap().unwrap().to_vec();
        let last = bytes.len() - 40;
        bytes[last] ^= 0xff;
        log.insert(12u64.to_be_bytes(), bytes).unwrap();
    });
    let broken = ledgerctl(dir.path())
        .args(["--format", "json", "verify"])
        .output()
        .unwrap();
    assert_eq!(broken.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&broken.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["first_bad_position"], 12);
    let table = ledgerctl(dir.path())
        .args(["--format", "table", "verify"])
        .output()
        .unwrap();
    assert_eq!(table.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&table.stdout).contains("BROKEN at position 12"));
}

/// Where the quantity digit sits inside the payload (not in a hash or id that happens to hold
/// the same byte).
fn payload_digit(envelope: &[u8], digit: &str) -> usize {
    let needle = format!(r#""quantity":"{digit}""#);
    let start = envelope
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .expect("payload in envelope");
    start + needle.len() - 2
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

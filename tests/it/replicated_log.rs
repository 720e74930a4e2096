//! The log's replication seam without a network: a writer whose replicator applies each batch to
//! a second real store (a mirror), as `serve --replicated` does through LEDGER_LOG. The mirror
//! must hold the same bytes (positions, versions, hashes, command ids), refuse a batch that does
//! not follow, and take over as the writer where the first one stopped.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use tests::{IntoMirror, log_of};

use ledger::{Append, Error, ExpectedVersion, Ledger, LedgerOptions, NewEvent};

fn event(text: &str) -> NewEvent {
    NewEvent::new("thing_happened", text.as_bytes().to_vec())
}

#[test]
fn a_mirror_holds_the_writers_log_and_takes_over_where_it_stopped() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mirror = Ledger::open_with(dirs.1.path(), LedgerOptions::mirror()).unwrap();
    assert!(!mirror.is_writer());
    let refused =
        mirror.append_blocking(Append::new("s-1", ExpectedVersion::Any, vec![event("x")]));
    assert!(
        matches!(refused, Err(Error::NotWriter { .. })),
        "{refused:?}"
    );

    let replicator = Arc::new(IntoMirror {
        mirror: mirror.clone(),
        sequence: AtomicU64::new(0),
        kept: Mutex::new(Vec::new()),
        bytes_max: 64 * 1024,
    });
    let writer = Ledger::open_with(dirs.0.path(), LedgerOptions::mirror()).unwrap();
    writer.start_writer(Some(replicator.clone())).unwrap();
    // Many concurrent appends (batches of several), some idempotent, one large enough to need a
    // batch of its own under the 64 KiB limit.
    std::thread::scope(|scope| {
        for t in 0..8 {
            let writer = writer.clone();
            scope.spawn(move || {
                for i in 0..25 {
                    let append = Append::new(
                        format!("s-{}", i % 5),
                        ExpectedVersion::Any,
                        vec![event(&format!("{t}-{i}")), event("second")],
                    )
                    .command_id(format!("cmd-{t}-{i}"));
                    writer.append_blocking(append).unwrap();
                }
            });
        }
    });
    let big = NewEvent::new("big", vec![b'x'; 40 * 1024]);
    writer
        .append_blocking(Append::new("s-big", ExpectedVersion::NoStream, vec![big]))
        .unwrap();
    let too_big = NewEvent::new("big", vec![b'x'; 70 * 1024]);
    let refused = writer.append_blocking(Append::new("s-big", ExpectedVersion::Any, vec![too_big]));
    assert!(matches!(refused, Err(Error::Invalid { .. })), "{refused:?}");
    assert_eq!(writer.committed_position(), 401);
    assert_eq!(mirror.committed_position(), 401);
    assert_eq!(log_of(&writer), log_of(&mirror));
    assert_eq!(
        writer.replicated_sequence().unwrap(),
        mirror.replicated_sequence().unwrap()
    );
    assert!(mirror.verify().unwrap().is_ok());
    assert_eq!(mirror.stream_version("s-3").unwrap(), 80);
    let (hash, first) = mirror
        .command("cmd-3-7")
        .unwrap()
        .expect("the mirror knows the id");
    assert_eq!(
        Some((hash, first.clone())),
        writer.command("cmd-3-7").unwrap()
    );

    // A batch that does not continue the log is refused and writes nothing.
    let kept = replicator.kept.lock().unwrap().clone();
    let (sequence, old) = kept[1].clone();
    let again = mirror.apply_replicated(sequence, &old.bytes);
    assert!(matches!(again, Err(Error::Corrupt { .. })), "{again:?}");
    let mut flipped = kept.last().unwrap().1.bytes.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 1;
    assert!(mirror.apply_replicated(999, &flipped).is_err());
    assert_eq!(mirror.committed_position(), 401);

    // Failover: the old writer stops, the mirror becomes the writer and continues the chain; a
    // retry of a command the old writer wrote returns its first result.
    writer.stop_writer();
    mirror.start_writer(None).unwrap();
    let retry = mirror
        .append_blocking(
            Append::new(
                "s-2",
                ExpectedVersion::Any,
                vec![event("3-7"), event("second")],
            )
            .command_id("cmd-3-7"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(retry.duplicate);
    assert_eq!(retry.events, first.events);
    let next = mirror
        .append_blocking(Append::new(
            "s-9",
            ExpectedVersion::NoStream,
            vec![event("after")],
        ))
        .unwrap();
    assert_eq!(next.events[0].position, 402);
    let report = mirror.verify().unwrap();
    assert!(report.is_ok(), "{report:?}");
}

#[test]
fn an_exported_store_applies_to_an_empty_mirror_batch_by_batch_with_the_same_bytes() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let source = Ledger::open(dirs.0.path()).unwrap();
    for i in 0..50 {
        let events = (0..1 + i % 4).map(|k| event(&format!("{i}-{k}"))).collect();
        let append = Append::new(format!("s-{}", i % 3), ExpectedVersion::Any, events);
        let append = if i % 2 == 0 {
            append.command_id(format!("c-{i}"))
        } else {
            append
        };
        source.append_blocking(append).unwrap();
    }
    let mirror = Ledger::open_with(dirs.1.path(), LedgerOptions::mirror()).unwrap();
    let mut sequence = 0;
    let mut previous_end = 0;
    for batch in source.export_batches(1, 7, 64 * 1024).unwrap() {
        let batch = batch.unwrap();
        assert_eq!(batch.first_position, previous_end + 1);
        assert!(
            batch.last_position - batch.first_position < 7 + 3,
            "{batch:?}"
        );
        previous_end = batch.last_position;
        sequence += 1;
        assert_eq!(
            mirror.apply_replicated(sequence, &batch.bytes).unwrap(),
            batch.last_position
        );
    }
    assert_eq!(previous_end, source.committed_position());
    assert_eq!(log_of(&source), log_of(&mirror));
    for i in (0..50).step_by(2) {
        let id = format!("c-{i}");
        assert_eq!(
            source.command(&id).unwrap(),
            mirror.command(&id).unwrap(),
            "{id}"
        );
    }
    // Resuming from the middle gives the same tail.
    let tail: Vec<_> = source
        .export_batches(40, 1000, 64 * 1024)
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    assert_eq!(tail.first().unwrap().first_position, 40);
    assert_eq!(tail.last().unwrap().last_position, previous_end);
}

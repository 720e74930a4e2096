//! A failed write acknowledges nothing: the store lives on a 4 MiB tmpfs that fills up under
//! concurrent appends. Every append acknowledged before the failure is readable; every caller
//! waiting when it failed gets an error; the writer stops and later appends are refused. And a
//! full disk under the stream index alone stops the index, not the log.
//! Needs root for `mount` (CI runs as root).

use std::process::Command;

use ledger::{Append, Error, ExpectedVersion, Ledger, NewEvent};

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Mounts a tmpfs of `size` (e.g. `4m`) on `dir`, unmounted when the guard drops.
fn tmpfs(dir: &std::path::Path, size: &str) -> Mount {
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .expect("run mount");
    assert!(status.success(), "mounting a tmpfs needs root");
    Mount(dir.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_writer_and_acks_nothing_unwritten() {
    let dir = tempfile::tempdir().unwrap();
    let _mount = tmpfs(dir.path(), "4m");

    let ledger = Ledger::open(dir.path().join("data")).unwrap();
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            loop {
                let event = NewEvent::new("filler", vec![b'x'; 16 * 1024]);
                match ledger
                    .append(Append::new(
                        format!("w{writer}"),
                        ExpectedVersion::Any,
                        vec![event],
                    ))
                    .await
                {
                    Ok(appended) => acked.push(appended.last_position()),
                    Err(error) => return (acked, error),
                }
            }
        }));
    }
    let mut acked = Vec::new();
    for task in tasks {
        let (positions, error) = task.await.unwrap();
        assert!(
            matches!(error, Error::WriterStopped { .. }),
            "expected the writer to stop, got {error}"
        );
        acked.extend(positions);
    }
    assert!(
        !acked.is_empty(),
        "the disk filled before anything was written"
    );
    for position in &acked {
        let events = ledger.read_all(*position, 1).unwrap();
        assert_eq!(
            events.first().map(|e| e.position),
            Some(*position),
            "acked {position} is unreadable"
        );
    }
    let later = ledger
        .append(Append::new(
            "after",
            ExpectedVersion::Any,
            vec![NewEvent::new("e", b"x".to_vec())],
        ))
        .await;
    match later {
        Err(Error::WriterStopped { cause }) => assert!(cause.contains("failed"), "{cause}"),
        other => panic!("an append after the failure must be refused, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_index_disk_stops_the_index_not_the_log() {
    // Only the stream index lives on a 1 MiB tmpfs: when it fills up, the log goes on taking
    // appends, stream reads report the index's failure instead of answering from a stale index,
    // and a reopen with room again builds the index from the log.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let index = data.join("index");
    std::fs::create_dir_all(&index).unwrap();
    let mount = tmpfs(&index, "1m");

    let ledger = Ledger::open(&data).unwrap();
    // Long stream ids make big index entries: the index fills long before the log's disk.
    let stream = |i: u64| format!("{}-{}", "s".repeat(100), i % 64);
    let mut appended = 0u64;
    let stopped = loop {
        assert!(appended < 2_000_000, "the index never filled its 1 MiB");
        let appends = (0..256).map(|k| {
            let ledger = ledger.clone();
            let stream = stream(appended + k);
            async move {
                ledger
                    .append(Append::new(
                        stream,
                        ExpectedVersion::Any,
                        vec![NewEvent::new("e", b"x".to_vec())],
                    ))
                    .await
            }
        });
        for result in futures::future::join_all(appends).await {
            result.expect("the log keeps taking appends while the index fails");
        }
        appended += 256;
        match ledger.read_stream(&stream(0), 1, 1) {
            Ok(_) => {}
            Err(Error::IndexStopped { cause }) => break cause,
            Err(other) => panic!("expected the index to stop, got {other}"),
        }
    };
    assert!(stopped.contains("stream index"), "{stopped}");
    assert!(matches!(
        ledger.stream_version(&stream(0)),
        Err(Error::IndexStopped { .. })
    ));
    // The log itself is whole.
    ledger
        .append(Append::new(
            "after",
            ExpectedVersion::Any,
            vec![NewEvent::new("e", b"x".to_vec())],
        ))
        .await
        .expect("appends go on");
    let committed = ledger.committed_position();
    assert_eq!(committed, appended + 1);
    assert_eq!(ledger.scan(0).count() as u64, committed);
    drop(ledger);
    drop(mount);

    // Room again (the tmpfs is gone, and with it the index): rebuilt from the log at open.
    let ledger = Ledger::open(&data).unwrap();
    let per_stream = ledger.read_stream(&stream(0), 1, usize::MAX).unwrap();
    assert_eq!(per_stream.len() as u64, appended / 64);
    assert_eq!(ledger.stream_version("after").unwrap(), 1);
    assert!(ledger.verify().unwrap().is_ok());
}

/// Issue 15: a command the log cannot record is an operational failure, not a rejection: on a
/// full disk `submit` stops with exit 2 naming the cause (embedded), and the NATS service answers
/// 500 `internal`, which `ledgerctl --nats submit` reports the same way; never 422 `rejected`
/// or exit 1.
#[test]
fn a_full_disk_is_an_internal_failure_not_a_rejection() {
    let commands: String = std::iter::once(
        r#"{"type":"open_contract","command_id":"open","contract_id":"C-1","customer":"X","package":"core","term_start":"2026-01-01","term_end":"2026-12-31","currency":"USD","time_zone":"UTC"}"#.to_owned(),
    )
    .chain((0..600).map(|i| {
        format!(
            r#"{{"type":"purchase","command_id":"buy-{i}","contract_id":"C-1","item":"proactive_credits","quantity":"1","unit_price":"1.00","effective_at":"2026-01-02T00:00:00Z","reason":"{}"}}"#,
            "x".repeat(20_000)
        )
    }))
    .collect::<Vec<_>>()
    .join("\n");
    let check = |output: std::process::Output, how: &str| {
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{how}: {stderr}");
        assert!(
            stdout.lines().count() >= 1,
            "{how}: some were recorded first"
        );
        assert!(
            stdout.lines().all(|line| line.contains(r#""ok":true"#)),
            "{how}: the failure is no result line: {stdout}"
        );
        assert!(
            stderr.contains("not recorded") && stderr.contains("command_id buy-"),
            "{how}: {stderr}"
        );
    };

    let dir = tempfile::tempdir().unwrap();
    let _mount = tmpfs(dir.path(), "4m");
    let embedded = tests::run_ledgerctl(&dir.path().join("embedded"), &["submit", "-"], &commands);
    check(embedded, "embedded");

    let served = tempfile::tempdir().unwrap();
    let _served_mount = tmpfs(served.path(), "4m");
    let nats = tests::NatsServer::start().unwrap();
    let serve = tests::Serve::start(&served.path().join("data"), &nats.url(), &[]).unwrap();
    let over_nats = tests::run_ledgerctl(
        &served.path().join("unused"),
        &["--nats", &nats.url(), "submit", "-"],
        &commands,
    );
    let stderr = String::from_utf8_lossy(&over_nats.stderr).into_owned();
    check(over_nats, "over NATS");
    assert!(stderr.contains("(500)"), "{stderr}");
    drop(serve);
}

//! A failed write acknowledges nothing: the store lives on a 4 MiB tmpfs that fills up under
//! concurrent appends. Every append acknowledged before the failure is readable; every caller
//! waiting when it failed gets an error; the writer stops and later appends are refused.
//! Needs root for `mount` (CI runs as root).

use std::process::Command;

use ledger::{Append, Error, ExpectedVersion, Ledger, NewEvent};

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_writer_and_acks_nothing_unwritten() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(dir.path())
        .status()
        .expect("run mount");
    assert!(status.success(), "mounting a tmpfs needs root");
    let _mount = Mount(dir.path().to_owned());

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

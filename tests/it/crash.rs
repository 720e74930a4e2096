//! Crash test: `ledgerctl load` appends under concurrent load and prints each acknowledged append;
//! we SIGKILL it at random moments, reopen the store and check that every acknowledged event is
//! there and intact, that no append is partly visible, that positions and versions are dense,
//! and that `verify` passes. `CRASH_CYCLES` raises the cycle count (default 20); `CRASH_SEED`
//! replays a run.
//!
//! The same checks run on both of the log's backends: the embedded store (`SyncAll` per batch),
//! and the replicated log on a real 3-node JetStream cluster (`load --replicated`: each batch
//! acknowledged by the cluster before its local commit), where the store checked is a fresh
//! copy made from LEDGER_LOG after each kill, and the killed writer's own store must catch up
//! from it when the next load starts.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use ledger::Ledger;
use tests::{Rng, ledgerctl, stream_positions};

struct Ack {
    first_position: u64,
    count: u64,
    stream: String,
    first_version: u64,
    append_id: String,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut words = line.split_whitespace();
    if words.next()? != "ack" {
        return None;
    }
    Some(Ack {
        first_position: words.next()?.parse().ok()?,
        count: words.next()?.parse().ok()?,
        stream: words.next()?.to_owned(),
        first_version: words.next()?.parse().ok()?,
        append_id: words.next()?.to_owned(),
    })
}

/// Runs one load process, SIGKILLs it once it acknowledged `kill_after_acks` appends (a moment
/// in the middle of the load, chosen by count, not by a pause), returns the acknowledged appends.
fn run_and_kill(data: &std::path::Path, kill_after_acks: usize, nats: Option<&str>) -> Vec<Ack> {
    let mut command = ledgerctl(data);
    if let Some(urls) = nats {
        command.args(["--nats", urls]);
    }
    command.args(["load", "--writers", "16", "--streams", "6"]);
    if nats.is_some() {
        command.arg("--replicated");
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ledgerctl load");
    let stdout = child.stdout.take().unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    let (reached_tx, reached_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("ready") {
                let _ = ready_tx.send(());
                if kill_after_acks == 0 {
                    let _ = reached_tx.send(());
                }
            } else if let Some(ack) = parse_ack(&line) {
                acks.push(ack);
                if acks.len() == kill_after_acks {
                    let _ = reached_tx.send(());
                }
            }
        }
        acks
    });
    if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = child.kill();
        let output = child.wait_with_output().unwrap();
        panic!(
            "load never became ready: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert!(
        reached_rx.recv_timeout(Duration::from_secs(60)).is_ok(),
        "the load never reached {kill_after_acks} acknowledged appends"
    );
    // SIGKILL: no destructor, no flush, no fsync of ours runs.
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    reader.join().unwrap()
}

/// The stream index's checkpoint as the killed process left it (the index is not fsync'd).
fn index_checkpoint(data: &std::path::Path) -> u64 {
    let db = fjall::Database::builder(data.join("index")).open().unwrap();
    let meta = db
        .keyspace("meta", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    meta.get("indexed_to").unwrap().map_or(0, |bytes| {
        u64::from_be_bytes(bytes[..8].try_into().unwrap())
    })
}

/// Checks the reopened store; returns its committed position and how far the stream index was
/// behind it before the open caught it up.
fn check_store(data: &std::path::Path, acks: &[Ack]) -> (u64, u64) {
    let indexed_before = index_checkpoint(data);
    let ledger = Ledger::open(data).expect("reopen after SIGKILL");
    for ack in acks {
        for offset in 0..ack.count {
            let position = ack.first_position + offset;
            let events = ledger.read_all(position, 1).unwrap();
            let event = events
                .first()
                .unwrap_or_else(|| panic!("acknowledged position {position} is missing"));
            assert_eq!(event.position, position);
            assert_eq!(event.stream, ack.stream);
            assert_eq!(event.version, ack.first_version + offset);
            let payload: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
            assert_eq!(
                payload["append"],
                ack.append_id.as_str(),
                "position {position}"
            );
            assert_eq!(payload["index"], offset);
        }
    }
    // No append partly visible: every append's events are all there, consecutive.
    let mut appends: HashMap<String, Vec<(u64, u64, u64)>> = HashMap::new();
    let mut last_version: HashMap<String, u64> = HashMap::new();
    for (expected_position, event) in (1..).zip(ledger.scan(0)) {
        let event = event.unwrap();
        assert_eq!(event.position, expected_position, "positions are dense");
        let version = last_version.entry(event.stream.clone()).or_insert(0);
        assert_eq!(
            event.version,
            *version + 1,
            "versions of {} are dense",
            event.stream
        );
        *version = event.version;
        let payload: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
        let id = payload["append"].as_str().unwrap().to_owned();
        let index = payload["index"].as_u64().unwrap();
        let count = payload["count"].as_u64().unwrap();
        appends
            .entry(id)
            .or_default()
            .push((event.position, index, count));
    }
    for (id, events) in &appends {
        let count = events[0].2;
        assert_eq!(events.len() as u64, count, "append {id} is partly visible");
        for (offset, (position, index, _)) in events.iter().enumerate() {
            assert_eq!(*index, offset as u64);
            assert_eq!(
                *position,
                events[0].0 + offset as u64,
                "append {id} is not consecutive"
            );
        }
    }
    // Every stream read through the index (caught up at open) is what the log holds.
    let mut streams: HashMap<String, Vec<u64>> = HashMap::new();
    for event in ledger.scan(0) {
        let event = event.unwrap();
        streams
            .entry(event.stream)
            .or_default()
            .push(event.position);
    }
    for (stream, positions) in &streams {
        assert_eq!(
            &stream_positions(&ledger, stream),
            positions,
            "stream {stream} read through the index"
        );
        assert_eq!(
            ledger.stream_version(stream).unwrap(),
            positions.len() as u64
        );
    }
    let report = ledger.verify().unwrap();
    assert!(report.is_ok(), "verify after SIGKILL: {:?}", report.problem);
    let committed = ledger.committed_position();
    (committed, committed.saturating_sub(indexed_before))
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_event() {
    let cycles: usize = std::env::var("CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut rng = Rng::from_env("CRASH_SEED");
    let dir = tempfile::tempdir().unwrap();
    let mut total_acks = 0;
    let mut last_position = 0;
    let mut cycles_index_behind = 0;
    let mut most_behind = 0;
    for cycle in 0..cycles {
        let kill_after_acks = rng.below(3_000) as usize;
        let acks = run_and_kill(dir.path(), kill_after_acks, None);
        total_acks += acks.len();
        let (position, index_behind) = check_store(dir.path(), &acks);
        assert!(position >= last_position, "cycle {cycle}: the log shrank");
        last_position = position;
        cycles_index_behind += usize::from(index_behind > 0);
        most_behind = most_behind.max(index_behind);
    }
    eprintln!(
        "{cycles} SIGKILL cycles, {total_acks} acknowledged appends checked, log at {last_position}; \
         the stream index was behind the log after {cycles_index_behind} kills (at most {most_behind} events)"
    );
    assert!(
        total_acks > 0,
        "the load never acknowledged anything: nothing was tested"
    );
    assert!(
        cycles_index_behind > 0,
        "no kill left the stream index behind the log: its catch-up at open was not tested"
    );
}

/// A fresh store made from LEDGER_LOG alone, batch by batch, as any mirror applies it.
fn copy_of_the_replicated_log(urls: &str, into: &std::path::Path) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ledger = Ledger::open_with(into, ledger::LedgerOptions::mirror()).unwrap();
    runtime.block_on(async {
        let servers: Vec<async_nats::ServerAddr> =
            urls.split(',').map(|url| url.parse().unwrap()).collect();
        let client = async_nats::connect(servers).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut log = js.get_stream("LEDGER_LOG").await.unwrap();
        let last = log.info().await.unwrap().state.last_sequence;
        for sequence in 1..=last {
            let message = log.get_raw_message(sequence).await.unwrap();
            ledger
                .apply_replicated(sequence, &message.payload)
                .unwrap_or_else(|e| panic!("LEDGER_LOG batch {sequence} does not follow: {e}"));
        }
    });
}

#[test]
fn sigkill_under_load_on_the_replicated_log_loses_no_acknowledged_event() {
    let cycles: usize = std::env::var("CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(8, |cycles: usize| cycles.div_ceil(2));
    let mut rng = Rng::from_env("CRASH_SEED");
    let work = tempfile::tempdir().unwrap();
    let cluster = tests::NatsCluster::start_in(Some(work.path()), &[true, true, true]).unwrap();
    let urls = cluster.urls();
    let writer_store = work.path().join("writer");
    let mut acks = Vec::new();
    let mut last_position = 0;
    let mut cycles_writer_behind = 0;
    for cycle in 0..cycles {
        let kill_after_acks = 1 + rng.below(2_000) as usize;
        let acked = run_and_kill(&writer_store, kill_after_acks, Some(&urls));
        assert!(
            acked.len() >= kill_after_acks,
            "cycle {cycle}: {} acknowledged",
            acked.len()
        );
        acks.extend(acked);
        // Every append acknowledged in any cycle is in the replicated log, whole; the killed
        // writer's own store is no longer than it.
        let copy = tempfile::tempdir_in(work.path()).unwrap();
        copy_of_the_replicated_log(&urls, copy.path());
        let (position, _) = check_store(copy.path(), &acks);
        assert!(position >= last_position, "cycle {cycle}: the log shrank");
        last_position = position;
        let local = Ledger::open_with(&writer_store, ledger::LedgerOptions::mirror())
            .unwrap()
            .committed_position();
        assert!(
            local <= position,
            "cycle {cycle}: the killed writer's store holds {local}, past the log's {position}"
        );
        cycles_writer_behind += usize::from(local < position);
    }
    // The killed writer's store catches up from the log and ends as the copy does.
    let copy = tempfile::tempdir_in(work.path()).unwrap();
    copy_of_the_replicated_log(&urls, copy.path());
    let output = ledgerctl(&writer_store)
        .args(["--nats", &urls, "load", "--replicated", "--writers", "0"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (writer, copy) = (
        Ledger::open(&writer_store).unwrap(),
        Ledger::open(copy.path()).unwrap(),
    );
    assert_eq!(writer.committed_position(), last_position);
    assert_eq!(
        writer.read_all(last_position, 1).unwrap()[0].hash,
        copy.read_all(last_position, 1).unwrap()[0].hash,
        "the writer's store and the copy end on the same chain hash"
    );
    eprintln!(
        "{cycles} SIGKILL cycles on a 3-node cluster, {} acknowledged appends checked, log at \
         {last_position}; the killed writer's store was behind the log after {cycles_writer_behind}",
        acks.len()
    );
}

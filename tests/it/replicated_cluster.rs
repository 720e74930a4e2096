//! High availability on a real 3-node JetStream cluster on loopback, with three real
//! `ledgerctl serve --replicated` instances: the writer is SIGKILLed under load from clients that
//! retry with the same command ids, another instance takes over, and every command lands exactly
//! once, with the same log (positions, hashes) on every instance. Each test has a cluster of its
//! own.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tests::{NatsCluster, Serve};

fn replicated_serve(data: &Path, cluster: &NatsCluster, instance: &str) -> Serve {
    Serve::start(
        data,
        &cluster.urls(),
        &[
            "--replicated",
            "--nats-monitor",
            &cluster.monitors(),
            "--instance",
            instance,
            "--lease-seconds",
            "2",
        ],
    )
}

/// Which running instance (other than `skip`) logged that it became the writer.
fn writer_among(instances: &[Option<Serve>], skip: Option<usize>) -> Option<usize> {
    instances.iter().enumerate().find_map(|(i, serve)| {
        let serve = serve.as_ref()?;
        (Some(i) != skip && serve.log().contains("is the writer")).then_some(i)
    })
}

fn wait_for_writer(instances: &[Option<Serve>], skip: Option<usize>) -> usize {
    let started = Instant::now();
    loop {
        if let Some(writer) = writer_among(instances, skip) {
            return writer;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no instance became the writer"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends one command until it is answered, retrying with the same body (and command_id) while no
/// writer answers or the writer could not record it.
async fn submit_until_answered(
    client: &async_nats::Client,
    verb: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    let started = Instant::now();
    let bytes = serde_json::to_vec(body).unwrap();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{verb} {body} was never answered"
        );
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            client.request(format!("ledger.cmd.{verb}"), bytes.clone().into()),
        )
        .await;
        let Ok(Ok(message)) = answer else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let code = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Service-Error-Code"))
            .map(|v| v.as_str().to_owned());
        if code.as_deref() == Some("500") {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let reply: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(reply["ok"], true, "{verb} {body}: {reply}");
        return reply;
    }
}

fn open_contract(id: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "open_contract", "command_id": format!("{id}-open"), "contract_id": id,
        "customer": "Load Ltd", "package": "advanced", "term_start": "2026-01-01",
        "term_end": "2026-12-31", "currency": "USD", "time_zone": "UTC", "holidays": [],
        "cancellation_fee_rate": "1.00", "sab_commitments": []
    })
}

fn purchase(contract: &str, i: usize) -> serde_json::Value {
    serde_json::json!({
        "type": "purchase", "command_id": format!("{contract}-buy-{i}"), "contract_id": contract,
        "item": "proactive_credits", "quantity": "1", "unit_price": "250.00",
        "effective_at": "2026-01-01T00:00:00Z"
    })
}

/// Polls the instances' status records until each of `names` reports `position`.
async fn wait_all_at(js: &async_nats::jetstream::Context, names: &[&str], position: u64) {
    let instances = js.get_key_value("ledger_instances").await.unwrap();
    let started = Instant::now();
    loop {
        let mut at = Vec::new();
        for name in names {
            let entry = instances.get(*name).await.unwrap();
            let status: Option<serde_json::Value> =
                entry.map(|bytes| serde_json::from_slice(&bytes).unwrap());
            at.push(status.and_then(|s| s["position"].as_u64()).unwrap_or(0));
        }
        if at.iter().all(|&p| p == position) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "instances {names:?} at {at:?}, not all at {position}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_node_that_does_not_fsync_each_write_is_refused_by_name() {
    let cluster = NatsCluster::start_with_sync(&[true, true, false]);
    let data = tempfile::tempdir().unwrap();
    let output = tests::ledgerctl(&data.path().join("d"))
        .args([
            "serve",
            "--nats",
            &cluster.urls(),
            "--replicated",
            "--nats-monitor",
        ])
        .arg(cluster.monitors())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("node n3") && stderr.contains("sync_interval: always"),
        "{stderr}"
    );
    // Nothing was created on the cluster.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = async_nats::connect(cluster.url(0)).await.unwrap();
        let js = async_nats::jetstream::new(client);
        assert!(js.get_stream("LEDGER_LOG").await.is_err());
    });
}

#[test]
fn the_writer_is_killed_under_load_and_every_command_lands_once_on_every_instance() {
    let cluster = NatsCluster::start();
    let dirs = tempfile::tempdir().unwrap();
    let data: Vec<_> = (1..=3).map(|i| dirs.path().join(format!("i{i}"))).collect();
    let names = ["i1", "i2", "i3"];
    let mut instances: Vec<Option<Serve>> = (0..3)
        .map(|i| Some(replicated_serve(&data[i], &cluster, names[i])))
        .collect();
    let first_writer = wait_for_writer(&instances, None);

    // The worked example through the CLI, over the cluster's URLs: eight accepted, the two
    // DSE entries outside business hours rejected (exit 1), as on the embedded store.
    let worked = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/worked-example.jsonl"),
    )
    .unwrap();
    let output = tests::run_ledgerctl(
        &data[0],
        &["--nats", &cluster.urls(), "submit", "-"],
        &worked,
    );
    let accepted = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.contains(r#""ok":true"#))
        .count();
    assert!(
        output.status.code() == Some(1) && accepted == 8,
        "{}{}\nwriter's log: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        instances[first_writer].as_ref().unwrap().log()
    );

    // Four clients, each opening a contract and buying 30 times, retrying with the same ids.
    const CLIENTS: usize = 4;
    const PURCHASES: usize = 30;
    let answered = Arc::new(AtomicUsize::new(0));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let urls = cluster.urls();
    let load = {
        let answered = answered.clone();
        runtime.spawn(async move {
            let servers: Vec<async_nats::ServerAddr> =
                urls.split(',').map(|u| u.parse().unwrap()).collect();
            let client = async_nats::ConnectOptions::new()
                .connect(servers)
                .await
                .unwrap();
            let mut tasks = Vec::new();
            for c in 0..CLIENTS {
                let client = client.clone();
                let answered = answered.clone();
                tasks.push(tokio::spawn(async move {
                    let contract = format!("C-L{c}");
                    submit_until_answered(&client, "open_contract", &open_contract(&contract))
                        .await;
                    let mut results = Vec::new();
                    for i in 0..PURCHASES {
                        let body = purchase(&contract, i);
                        let first = submit_until_answered(&client, "purchase", &body).await;
                        answered.fetch_add(1, Ordering::SeqCst);
                        // A retry after the answer gives the first result (R14).
                        if i % 10 == 0 {
                            let again = submit_until_answered(&client, "purchase", &body).await;
                            assert_eq!(again["events"], first["events"], "{again}");
                        }
                        results.push(first);
                    }
                    results
                }));
            }
            let mut all = Vec::new();
            for task in tasks {
                all.extend(task.await.unwrap());
            }
            all
        })
    };
    // Kill the writer once a third of the purchases are in.
    let started = Instant::now();
    while answered.load(Ordering::SeqCst) < CLIENTS * PURCHASES / 3 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the load made no progress"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let killed_at = Instant::now();
    instances[first_writer].take().unwrap().kill();
    let second_writer = wait_for_writer(&instances, Some(first_writer));
    let failover = killed_at.elapsed();
    let results = runtime.block_on(load).unwrap();
    assert_eq!(results.len(), CLIENTS * PURCHASES);
    eprintln!(
        "failover: the writer was killed; {failover:?} until another instance was the writer"
    );
    assert!(
        failover < Duration::from_secs(10),
        "failover took {failover:?}"
    );

    // The killed instance comes back as a mirror and catches up; every instance reaches the end.
    instances[first_writer] = Some(replicated_serve(
        &data[first_writer],
        &cluster,
        names[first_writer],
    ));
    let head = runtime.block_on(async {
        let client = async_nats::connect(cluster.urls().split(',').next().unwrap())
            .await
            .unwrap();
        let js = async_nats::jetstream::new(client);
        let mut log = js.get_stream("LEDGER_LOG").await.unwrap();
        let last = log.info().await.unwrap().state.last_sequence;
        let message = log.get_raw_message(last).await.unwrap();
        let positions = message.headers.get("Ledger-Positions").unwrap().to_string();
        let head: u64 = positions.rsplit('-').next().unwrap().parse().unwrap();
        wait_all_at(&js, &names, head).await;
        // The lease names the writer that took over.
        let lease = js.get_key_value("ledger_writer").await.unwrap();
        let holder = lease.get("writer").await.unwrap().unwrap();
        assert_eq!(std::str::from_utf8(&holder).unwrap(), names[second_writer]);
        head
    });
    for serve in instances.iter_mut() {
        let status = serve.take().unwrap().terminate();
        assert!(status.success(), "serve exited with {status}");
    }

    // Every instance holds the same verified log, and each command's events are there once.
    let mut heads = Vec::new();
    for dir in &data {
        let ledger = ledger::Ledger::open(dir).unwrap();
        let report = ledger.verify().unwrap();
        assert!(report.is_ok(), "{}: {report:?}", dir.display());
        heads.push(ledger.head().unwrap());
        assert_eq!(ledger.committed_position(), head);
        let mut per_command: HashMap<String, usize> = HashMap::new();
        for event in ledger.scan(1) {
            let event = event.unwrap();
            if let Some(id) = event.metadata.command_id.clone() {
                *per_command.entry(id).or_default() += 1;
            }
        }
        for c in 0..CLIENTS {
            assert_eq!(per_command.get(&format!("C-L{c}-open")), Some(&1));
            for i in 0..PURCHASES {
                assert_eq!(
                    per_command.get(&format!("C-L{c}-buy-{i}")),
                    Some(&1),
                    "C-L{c}-buy-{i} in {}",
                    dir.display()
                );
            }
            assert_eq!(
                ledger.stream_version(&format!("contract-C-L{c}")).unwrap(),
                1 + PURCHASES as u64
            );
        }
    }
    assert!(heads.windows(2).all(|w| w[0] == w[1]), "{heads:?}");
}

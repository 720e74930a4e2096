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

/// One cluster test at a time: each runs six processes (three nodes, three instances) and
/// measures failover; on two cores, two at once would measure each other.
static ONE_CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_cluster_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_CLUSTER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn replicated_serve(data: &Path, cluster: &NatsCluster, instance: &str) -> Serve {
    replicated_serve_with(data, cluster, instance, &[])
}

fn replicated_serve_with(
    data: &Path,
    cluster: &NatsCluster,
    instance: &str,
    more: &[&str],
) -> Serve {
    let monitors = cluster.monitors();
    let mut args = vec![
        "--replicated",
        "--nats-monitor",
        &monitors,
        "--instance",
        instance,
        "--lease-seconds",
        "2",
    ];
    args.extend_from_slice(more);
    Serve::start(data, &cluster.urls(), &args).unwrap()
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
            Duration::from_secs(1),
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
    let started = Instant::now();
    loop {
        // Right after a node or the whole cluster restarted, the bucket may not answer yet.
        let mut at = Vec::new();
        if let Ok(instances) = js.get_key_value("ledger_instances").await {
            for name in names {
                let entry = instances.get(*name).await.ok().flatten();
                let status: Option<serde_json::Value> =
                    entry.and_then(|bytes| serde_json::from_slice(&bytes).ok());
                at.push(status.and_then(|s| s["position"].as_u64()).unwrap_or(0));
            }
        }
        if at.len() == names.len() && at.iter().all(|&p| p == position) {
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
    let _one = one_cluster_at_a_time();
    let cluster = NatsCluster::start_with_sync(&[true, true, false]).unwrap();
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

/// Clients that open a contract each and buy `purchases` times, every command retried with the
/// same id until answered; `answered` counts purchases answered, `answer_times` when each was.
struct Load {
    answered: Arc<AtomicUsize>,
    answer_times: Arc<std::sync::Mutex<Vec<Instant>>>,
    task: tokio::task::JoinHandle<Vec<serde_json::Value>>,
    clients: usize,
    purchases: usize,
    prefix: String,
}

impl Load {
    fn start(
        runtime: &tokio::runtime::Runtime,
        urls: &str,
        prefix: &str,
        clients: usize,
        purchases: usize,
    ) -> Load {
        let answered = Arc::new(AtomicUsize::new(0));
        let answer_times = Arc::new(std::sync::Mutex::new(Vec::new()));
        let urls = urls.to_owned();
        let task = {
            let answered = answered.clone();
            let answer_times = answer_times.clone();
            let prefix = prefix.to_owned();
            runtime.spawn(async move {
                let servers: Vec<async_nats::ServerAddr> =
                    urls.split(',').map(|u| u.parse().unwrap()).collect();
                let client = async_nats::ConnectOptions::new()
                    .max_reconnects(None)
                    .connect(servers)
                    .await
                    .unwrap();
                let mut tasks = Vec::new();
                for c in 0..clients {
                    let client = client.clone();
                    let answered = answered.clone();
                    let answer_times = answer_times.clone();
                    let contract = format!("{prefix}{c}");
                    tasks.push(tokio::spawn(async move {
                        submit_until_answered(&client, "open_contract", &open_contract(&contract))
                            .await;
                        let mut results = Vec::new();
                        for i in 0..purchases {
                            let body = purchase(&contract, i);
                            let first = submit_until_answered(&client, "purchase", &body).await;
                            answered.fetch_add(1, Ordering::SeqCst);
                            answer_times.lock().unwrap().push(Instant::now());
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
        Load {
            answered,
            answer_times,
            task,
            clients,
            purchases,
            prefix: prefix.to_owned(),
        }
    }

    /// Waits until `share` of all purchases were answered.
    fn wait_for_share(&self, numerator: usize, denominator: usize) {
        let started = Instant::now();
        while self.answered.load(Ordering::SeqCst)
            < self.clients * self.purchases * numerator / denominator
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the load made no progress"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for every answer; returns the longest gap between two answers.
    fn finish(&mut self, runtime: &tokio::runtime::Runtime) -> Duration {
        let results = runtime.block_on(&mut self.task).unwrap();
        assert_eq!(results.len(), self.clients * self.purchases);
        let times = self.answer_times.lock().unwrap();
        let mut sorted = times.clone();
        sorted.sort();
        sorted
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }

    /// Each of its commands has its events exactly once in `ledger`.
    fn check_once(
        &self,
        ledger: &ledger::Ledger,
        per_command: &HashMap<String, usize>,
        what: &str,
    ) {
        for c in 0..self.clients {
            let contract = format!("{}{c}", self.prefix);
            assert_eq!(
                per_command.get(&format!("{contract}-open")),
                Some(&1),
                "{contract} in {what}"
            );
            for i in 0..self.purchases {
                assert_eq!(
                    per_command.get(&format!("{contract}-buy-{i}")),
                    Some(&1),
                    "{contract}-buy-{i} in {what}"
                );
            }
            assert_eq!(
                ledger
                    .stream_version(&format!("contract-{contract}"))
                    .unwrap(),
                1 + self.purchases as u64
            );
        }
    }
}

/// The position of the last event in LEDGER_LOG (from its last batch's header).
async fn stream_head(js: &async_nats::jetstream::Context) -> u64 {
    let mut log = js.get_stream("LEDGER_LOG").await.unwrap();
    let last = log.info().await.unwrap().state.last_sequence;
    let message = log.get_raw_message(last).await.unwrap();
    let positions = message.headers.get("Ledger-Positions").unwrap().to_string();
    positions.rsplit('-').next().unwrap().parse().unwrap()
}

/// Every batch in LEDGER_LOG, read back in order: their positions tile 1..=head with no gap and
/// no overlap.
async fn check_stream_dense(js: &async_nats::jetstream::Context) -> u64 {
    let mut log = js.get_stream("LEDGER_LOG").await.unwrap();
    let last = log.info().await.unwrap().state.last_sequence;
    let mut next = 1u64;
    for sequence in 1..=last {
        let message = log.get_raw_message(sequence).await.unwrap();
        let positions = message.headers.get("Ledger-Positions").unwrap().to_string();
        let (first, end) = positions.split_once('-').unwrap();
        assert_eq!(first.parse::<u64>().unwrap(), next, "batch {sequence}");
        next = end.parse::<u64>().unwrap() + 1;
    }
    next - 1
}

/// The stream read back dense (see `check_stream_dense`), then every instance at its head;
/// returns the head.
async fn dense_and_everywhere(js: &async_nats::jetstream::Context) -> u64 {
    let head = check_stream_dense(js).await;
    wait_all_at(js, &NAMES, head).await;
    head
}

fn connect_js(runtime: &tokio::runtime::Runtime, urls: &str) -> async_nats::jetstream::Context {
    runtime.block_on(async {
        let servers: Vec<async_nats::ServerAddr> =
            urls.split(',').map(|u| u.parse().unwrap()).collect();
        let client = async_nats::ConnectOptions::new()
            .max_reconnects(None)
            .connect(servers)
            .await
            .unwrap();
        async_nats::jetstream::new(client)
    })
}

/// Stops every instance (SIGTERM, exit 0) and checks that each holds the same verified log,
/// ending at `head`, with every command of `loads` once.
fn stop_and_check(
    instances: &mut [Option<Serve>],
    data: &[std::path::PathBuf],
    head: u64,
    loads: &[&Load],
) {
    for serve in instances.iter_mut() {
        let status = serve.take().unwrap().terminate();
        assert!(status.success(), "serve exited with {status}");
    }
    let mut heads = Vec::new();
    for dir in data {
        let ledger = ledger::Ledger::open(dir).unwrap();
        let report = ledger.verify().unwrap();
        assert!(report.is_ok(), "{}: {report:?}", dir.display());
        heads.push(ledger.head().unwrap());
        assert_eq!(ledger.committed_position(), head, "{}", dir.display());
        let mut per_command: HashMap<String, usize> = HashMap::new();
        for event in ledger.scan(1) {
            let event = event.unwrap();
            if let Some(id) = event.metadata.command_id.clone() {
                *per_command.entry(id).or_default() += 1;
            }
        }
        for load in loads {
            load.check_once(&ledger, &per_command, &dir.display().to_string());
        }
    }
    assert!(heads.windows(2).all(|w| w[0] == w[1]), "{heads:?}");
}

struct Instances {
    data: Vec<std::path::PathBuf>,
    serves: Vec<Option<Serve>>,
    _dirs: tempfile::TempDir,
}

const NAMES: [&str; 3] = ["i1", "i2", "i3"];

fn start_instances(cluster: &NatsCluster) -> Instances {
    let dirs = tempfile::tempdir().unwrap();
    let data: Vec<_> = NAMES.iter().map(|name| dirs.path().join(name)).collect();
    let serves = (0..3)
        .map(|i| Some(replicated_serve(&data[i], cluster, NAMES[i])))
        .collect();
    Instances {
        data,
        serves,
        _dirs: dirs,
    }
}

#[test]
fn the_writer_is_killed_under_load_and_every_command_lands_once_on_every_instance() {
    let _one = one_cluster_at_a_time();
    let cluster = NatsCluster::start().unwrap();
    let Instances {
        data,
        serves: mut instances,
        _dirs,
    } = start_instances(&cluster);
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

    // Any instance answers the worked example's balance exactly as the embedded store does.
    let embedded = tempfile::tempdir().unwrap();
    tests::run_ledgerctl(&embedded.path().join("d"), &["submit", "-"], &worked);
    let urls = cluster.urls();
    for args in [
        &["--format", "json", "balance", "C-1001"][..],
        &[
            "--format",
            "json",
            "balance",
            "C-1001",
            "--as-of",
            "2026-02-15T00:00:00Z",
        ][..],
        &["--format", "json", "replay", "C-1001"][..],
    ] {
        let local = tests::run_ledgerctl(&embedded.path().join("d"), args, "");
        let remote_args: Vec<&str> = ["--nats", urls.as_str()]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        let remote = tests::run_ledgerctl(&data[0], &remote_args, "");
        assert!(
            local.status.success() && remote.status.success(),
            "{args:?}"
        );
        // JSON (lines for replay), less what differs by store: event ids and recorded times.
        let json = |out: &std::process::Output| -> Vec<serde_json::Value> {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|line| {
                    let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
                    if let Some(object) = value.as_object_mut() {
                        object.remove("event_id");
                        object.remove("recorded_at");
                    }
                    value
                })
                .collect()
        };
        let (local, remote) = (json(&local), json(&remote));
        assert!(!local.is_empty(), "{args:?}");
        assert_eq!(local, remote, "{args:?}");
    }

    // Four clients, each opening a contract and buying 30 times; the writer is killed once a
    // third of the purchases are in.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut load = Load::start(&runtime, &cluster.urls(), "C-L", 4, 30);
    load.wait_for_share(1, 3);
    let killed_at = Instant::now();
    instances[first_writer].take().unwrap().kill();
    let second_writer = wait_for_writer(&instances, Some(first_writer));
    let failover = killed_at.elapsed();
    let gap = load.finish(&runtime);
    eprintln!(
        "failover: the writer was killed; {failover:?} until another instance was the writer, \
         {gap:?} the longest wait between two answers"
    );
    // Measured, not a performance gate (see `bench replicated`): only a broken failover fails.
    assert!(
        failover < Duration::from_secs(30),
        "failover took {failover:?}"
    );

    // The killed instance comes back as a mirror and catches up; every instance reaches the end.
    instances[first_writer] = Some(replicated_serve(
        &data[first_writer],
        &cluster,
        NAMES[first_writer],
    ));
    let js = connect_js(&runtime, &cluster.urls());
    let head = runtime.block_on(async {
        let head = dense_and_everywhere(&js).await;
        assert_eq!(head, stream_head(&js).await);
        // The lease names the writer that took over.
        let lease = js.get_key_value("ledger_writer").await.unwrap();
        let holder = lease.get("writer").await.unwrap().unwrap();
        assert_eq!(std::str::from_utf8(&holder).unwrap(), NAMES[second_writer]);
        head
    });
    stop_and_check(&mut instances, &data, head, &[&load]);
}

#[test]
fn a_stalled_writer_that_wakes_up_appends_nothing_and_steps_down() {
    let _one = one_cluster_at_a_time();
    let cluster = NatsCluster::start().unwrap();
    let Instances {
        data,
        serves: mut instances,
        _dirs,
    } = start_instances(&cluster);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut before = Load::start(&runtime, &cluster.urls(), "C-B", 2, 5);
    before.finish(&runtime);
    let old = wait_for_writer(&instances, None);

    // Stalled past its lease, with a command waiting in its socket: only it subscribes to
    // commands, so the request reaches it and gets no answer.
    instances[old].as_ref().unwrap().pause(true);
    let js = connect_js(&runtime, &cluster.urls());
    let stale = open_contract("C-S");
    runtime.block_on(async {
        let answer = tokio::time::timeout(
            Duration::from_millis(500),
            js.client().request(
                "ledger.cmd.purchase",
                serde_json::to_vec(&stale).unwrap().into(),
            ),
        )
        .await;
        assert!(!matches!(answer, Ok(Ok(_))), "a stopped writer answered");
    });
    let new = wait_for_writer(&instances, Some(old));
    // The new writer takes commands, the stale one among them (its client retries).
    let mut after = Load::start(&runtime, &cluster.urls(), "C-A", 2, 5);
    after.finish(&runtime);
    let client = js.client();
    runtime.block_on(submit_until_answered(&client, "open_contract", &stale));

    // Woken up, the old writer handles the stale request and renews: both fail, it appends
    // nothing and steps down to a mirror.
    instances[old].as_ref().unwrap().pause(false);
    assert!(
        instances[old]
            .as_ref()
            .unwrap()
            .wait_for_log("stepping down to a mirror", Duration::from_secs(20)),
        "{}",
        instances[old].as_ref().unwrap().log()
    );
    let head = runtime.block_on(async {
        let head = dense_and_everywhere(&js).await;
        let lease = js.get_key_value("ledger_writer").await.unwrap();
        let holder = lease.get("writer").await.unwrap().unwrap();
        assert_eq!(std::str::from_utf8(&holder).unwrap(), NAMES[new]);
        head
    });
    stop_and_check(&mut instances, &data, head, &[&before, &after]);
    let ledger = ledger::Ledger::open(&data[old]).unwrap();
    let stale_events = ledger
        .scan(1)
        .map(|e| e.unwrap())
        .filter(|e| e.metadata.command_id.as_deref() == Some("C-S-open"))
        .count();
    assert_eq!(stale_events, 1);
}

#[test]
fn the_logs_leader_node_is_killed_under_load_then_the_whole_cluster_restarts() {
    let _one = one_cluster_at_a_time();
    let mut cluster = NatsCluster::start().unwrap();
    let Instances {
        data,
        serves: mut instances,
        _dirs,
    } = start_instances(&cluster);
    wait_for_writer(&instances, None);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let js = connect_js(&runtime, &cluster.urls());
    let mut load = Load::start(&runtime, &cluster.urls(), "C-N", 4, 30);
    load.wait_for_share(1, 3);
    let leader = runtime.block_on(async {
        let mut log = js.get_stream("LEDGER_LOG").await.unwrap();
        let info = log.info().await.unwrap();
        info.cluster.as_ref().unwrap().leader.clone().unwrap()
    });
    let node = cluster.node_named(&leader);
    cluster.kill(node);
    let gap = load.finish(&runtime);
    eprintln!("leader node {leader} killed: the longest wait between two answers was {gap:?}");
    if gap >= Duration::from_secs(10) {
        for (i, serve) in instances.iter().enumerate() {
            eprintln!("=== instance {i}\n{}", serve.as_ref().unwrap().log());
        }
    }
    // The ≤ 10 s target is measured (printed here, and by `bench replicated`); the test fails
    // only when the log stays unavailable far longer, i.e. when failover is broken.
    assert!(gap < Duration::from_secs(30), "unavailable for {gap:?}");
    cluster.restart(node).unwrap();
    let head = runtime.block_on(async { dense_and_everywhere(&js).await });

    // The whole cluster restarts (every node SIGKILLed): the instances reconnect, one becomes
    // the writer, and the log goes on from where it was.
    cluster.restart_all().unwrap();
    let mut later = Load::start(&runtime, &cluster.urls(), "C-R", 2, 5);
    later.finish(&runtime);
    let js = connect_js(&runtime, &cluster.urls());
    let end = runtime.block_on(async { dense_and_everywhere(&js).await });
    assert_eq!(
        end,
        head + 2 * 6,
        "two more contracts, opened and bought five times each"
    );
    stop_and_check(&mut instances, &data, end, &[&load, &later]);
}

fn data_file(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("data")
            .join(name),
    )
    .unwrap()
}

fn migrate(data: &Path, cluster: &NatsCluster) -> std::process::Output {
    tests::ledgerctl(data)
        .args([
            "migrate",
            "--nats",
            &cluster.urls(),
            "--nats-monitor",
            &cluster.monitors(),
        ])
        .output()
        .unwrap()
}

#[test]
fn an_embedded_store_migrates_goes_on_after_more_writes_and_a_foreign_store_is_refused() {
    let _one = one_cluster_at_a_time();
    let cluster = NatsCluster::start().unwrap();
    let dirs = tempfile::tempdir().unwrap();
    let source = dirs.path().join("i1");
    // An embedded store with the worked example, relayed; then more written while embedded, and
    // relayed again: the second run goes on from the stream's end.
    tests::run_ledgerctl(
        &source,
        &["submit", "-"],
        &data_file("worked-example.jsonl"),
    );
    let first = migrate(&source, &cluster);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    tests::run_ledgerctl(
        &source,
        &["submit", "-"],
        &data_file("sample-contracts.jsonl"),
    );
    assert!(
        !String::from_utf8_lossy(&first.stderr).contains('\r'),
        "no progress drawn when stderr is not a terminal"
    );
    // The second run on a terminal (util-linux `script`): its relay draws a progress line.
    let command = format!(
        "{} --data {} migrate --nats {} --nats-monitor {}",
        tests::ledgerctl_path().display(),
        source.display(),
        cluster.urls(),
        cluster.monitors()
    );
    let second = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success(), "{stderr}");
    assert!(stderr.contains("positions 1-8 already"), "{stderr}");
    assert!(
        stderr.contains("\r\u{1b}[2K") && stderr.contains(" events relayed · "),
        "{stderr:?}"
    );
    let head = ledger::Ledger::open(&source).unwrap().head().unwrap();

    // A store with another history is not relayed into that log.
    let foreign = dirs.path().join("foreign");
    tests::run_ledgerctl(
        &foreign,
        &["submit", "-"],
        &data_file("sample-contracts.jsonl"),
    );
    let refused = migrate(&foreign, &cluster);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a prefix"), "{stderr}");

    // The migrated directory and two empty ones serve as instances; all reach the head, and a
    // command lands after it.
    let data: Vec<_> = NAMES.iter().map(|name| dirs.path().join(name)).collect();
    let mut instances: Vec<Option<Serve>> = (0..3)
        .map(|i| Some(replicated_serve(&data[i], &cluster, NAMES[i])))
        .collect();
    wait_for_writer(&instances, None);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let js = connect_js(&runtime, &cluster.urls());
    runtime.block_on(async {
        assert_eq!(check_stream_dense(&js).await, head.0);
        wait_all_at(&js, &NAMES, head.0).await;
    });
    let mut later = Load::start(&runtime, &cluster.urls(), "C-M", 1, 3);
    later.finish(&runtime);
    let end = runtime.block_on(async { dense_and_everywhere(&js).await });
    assert_eq!(end, head.0 + 4);

    // `status` names the writer, the log's leader and every instance at the head.
    let status = tests::ledgerctl(&data[0])
        .args(["--nats", &cluster.urls(), "--format", "json", "status"])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(
        NAMES.contains(&status["writer"].as_str().unwrap()),
        "{status}"
    );
    assert_eq!(status["log"]["head_position"], end, "{status}");
    assert_eq!(status["log"]["replicas"], 3, "{status}");
    assert!(
        status["log"]["leader"].as_str().unwrap().starts_with('n'),
        "{status}"
    );
    let instances_status = status["instances"].as_array().unwrap();
    assert_eq!(instances_status.len(), 3, "{status}");
    assert!(instances_status.iter().all(|i| i["lag"] == 0), "{status}");
    assert_eq!(
        instances_status
            .iter()
            .filter(|i| i["role"] == "writer")
            .count(),
        1,
        "{status}"
    );
    stop_and_check(&mut instances, &data, end, &[&later]);
    let ledger = ledger::Ledger::open(&data[1]).unwrap();
    let relayed = ledger.read_all(head.0, 1).unwrap();
    assert_eq!(
        (relayed[0].position, relayed[0].hash),
        head,
        "the relayed log keeps its hashes"
    );
}

/// The newest checkpoint on `ledger.checkpoint` once one of at least `size` is there.
async fn published_checkpoint(
    js: &async_nats::jetstream::Context,
    size: u64,
    instances: &[Option<Serve>],
) -> serde_json::Value {
    let started = Instant::now();
    loop {
        if let Ok(stream) = js.get_stream("LEDGER_CHECKPOINTS").await
            && let Ok(message) = stream
                .get_last_raw_message_by_subject("ledger.checkpoint")
                .await
        {
            let checkpoint: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
            if checkpoint["size"].as_u64() >= Some(size) {
                return checkpoint;
            }
        }
        let logs: Vec<String> = instances.iter().flatten().map(Serve::log).collect();
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no checkpoint of size {size} published: {logs:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue 19 on the replicated log: the writer signs checkpoints naming the replicated log (not
/// its own store), the writer that takes over after a SIGKILL goes on signing the same log, and
/// on any instance's copy a bundle and a consistency proof verify against checkpoints another
/// instance made: same bytes, same positions, same roots.
#[test]
fn checkpoints_on_the_replicated_log_are_the_same_log_on_every_instance() {
    let _one = one_cluster_at_a_time();
    let cluster = NatsCluster::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let key = work.path().join("key");
    let out = tests::run_ledgerctl(
        &work.path().join("unused"),
        &["keygen", "--out", key.to_str().unwrap()],
        "",
    );
    assert!(out.status.success());
    let public = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let data: Vec<_> = NAMES.iter().map(|name| work.path().join(name)).collect();
    let signing = [
        "--signing-key",
        key.to_str().unwrap(),
        "--checkpoint-seconds",
        "1",
    ];
    let mut instances: Vec<Option<Serve>> = (0..3)
        .map(|i| {
            Some(replicated_serve_with(
                &data[i], &cluster, NAMES[i], &signing,
            ))
        })
        .collect();
    let first_writer = wait_for_writer(&instances, None);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let js = connect_js(&runtime, &cluster.urls());
    let client = js.client();
    let submit = |contract: &str, purchases: std::ops::Range<usize>| {
        runtime.block_on(async {
            if purchases.start == 0 {
                submit_until_answered(&client, "open_contract", &open_contract(contract)).await;
            }
            let mut head = 0;
            for i in purchases {
                let reply =
                    submit_until_answered(&client, "purchase", &purchase(contract, i)).await;
                head = reply["events"][0]["position"].as_u64().unwrap();
            }
            head
        })
    };
    let head = submit("C-P", 0..5);
    let older = runtime.block_on(published_checkpoint(&js, head, &instances));

    instances[first_writer].take().unwrap().kill();
    let second_writer = wait_for_writer(&instances, Some(first_writer));
    let head = submit("C-P", 5..10);
    let newer = runtime.block_on(published_checkpoint(&js, head, &instances));
    assert_eq!(
        older["store_id"], newer["store_id"],
        "two writers, one log: {older} {newer}"
    );
    assert!(
        older["store_id"]
            .as_str()
            .unwrap()
            .starts_with("LEDGER_LOG-"),
        "{older}"
    );
    runtime.block_on(wait_all_at(
        &js,
        &NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != first_writer)
            .map(|(_, n)| *n)
            .collect::<Vec<_>>(),
        head,
    ));
    for serve in instances.iter_mut().filter(|s| s.is_some()) {
        assert!(serve.take().unwrap().terminate().success());
    }

    let files = work.path();
    std::fs::write(files.join("older.json"), older.to_string()).unwrap();
    std::fs::write(files.join("newer.json"), newer.to_string()).unwrap();
    let mirror = (0..3)
        .find(|&i| i != first_writer && i != second_writer)
        .unwrap();
    // The mirror never wrote and never signed: it proves what the two writers signed.
    let out = tests::run_ledgerctl(
        &data[mirror],
        &[
            "prove-consistency",
            "--from",
            files.join("older.json").to_str().unwrap(),
            "--to",
            files.join("newer.json").to_str().unwrap(),
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(files.join("proof.json"), &out.stdout).unwrap();
    let out = tests::run_ledgerctl(
        &data[mirror],
        &[
            "verify-consistency",
            files.join("older.json").to_str().unwrap(),
            files.join("newer.json").to_str().unwrap(),
            files.join("proof.json").to_str().unwrap(),
            "--public-key",
            &public,
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A bundle from the mirror's copy and one from the second writer's verify, against
    // checkpoints with the same log root.
    let mut roots = Vec::new();
    for i in [mirror, second_writer] {
        let bundle = files.join(format!("bundle-{i}.json"));
        let out = tests::run_ledgerctl(
            &data[i],
            &[
                "--signing-key",
                key.to_str().unwrap(),
                "audit",
                "C-P",
                "--bundle",
                bundle.to_str().unwrap(),
            ],
            "",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = tests::run_ledgerctl(
            &data[i],
            &[
                "verify-bundle",
                bundle.to_str().unwrap(),
                "--public-key",
                &public,
            ],
            "",
        );
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let bundle: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
        assert_eq!(bundle["checkpoint"]["store_id"], newer["store_id"]);
        roots.push((
            bundle["checkpoint"]["size"].clone(),
            bundle["checkpoint"]["log_root"].clone(),
            bundle["checkpoint"]["heads_root"].clone(),
        ));
    }
    assert_eq!(roots[0], roots[1], "two copies, one log");
}

//! `ledgerctl serve` against a real nats-server: commands and queries through the service, the
//! CLI over `--nats`, balances in the KV bucket and events in their stream, bad requests, a
//! killed and restarted service. Every process is real; nothing is mocked.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tests::{NatsServer, Serve, ledgerctl};

fn worked_example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/worked-example.jsonl")
}

fn run(command: &mut std::process::Command) -> (i32, String, String) {
    let output = command.output().expect("run ledgerctl");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `ledgerctl --nats URL ARGS…` (no --data: the service owns the store).
fn remote(url: &str, args: &[&str]) -> (i32, String, String) {
    let mut command = std::process::Command::new(tests::ledgerctl_path());
    command
        .arg("--nats")
        .arg(url)
        .args(args)
        .env_remove("LEDGER_DATA");
    run(&mut command)
}

/// A child's stdout lines as they come, on a channel, read by a thread of their own.
fn lines_of(
    child: &mut std::process::Child,
) -> (
    std::sync::mpsc::Receiver<String>,
    std::thread::JoinHandle<()>,
) {
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    (lines_rx, reader)
}

/// A decimal string's value (the same number may be written `396.50` or `396.5`).
fn decimal(value: &serde_json::Value) -> rust_decimal::Decimal {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{value} is not a decimal string"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Every value in `ledger_balances`, decoded, once the publisher reached `position`.
async fn balances_in_kv(
    client: &async_nats::Client,
    position: u64,
) -> BTreeMap<String, serde_json::Value> {
    let js = async_nats::jetstream::new(client.clone());
    let started = Instant::now();
    loop {
        let kv = js
            .get_key_value("ledger_balances")
            .await
            .expect("the bucket");
        let mut keys = kv.keys().await.expect("keys");
        let mut values: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        while let Some(key) = keys.next().await {
            let key = key.expect("a key");
            let entry = kv.get(&key).await.expect("get").expect("a value");
            values.insert(key, serde_json::from_slice(&entry).expect("JSON"));
        }
        let published = values
            .values()
            .filter_map(|v: &serde_json::Value| v["position"].as_u64())
            .max()
            .unwrap_or(0);
        if published >= position {
            return values;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the publisher did not reach position {position} (at {published})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the publisher says (KV `ledger_publisher`, key `position`) that everything up to
/// `position` is published.
async fn published_to(client: &async_nats::Client, position: u64) {
    let js = async_nats::jetstream::new(client.clone());
    let started = Instant::now();
    loop {
        let said = match js.get_key_value("ledger_publisher").await {
            Ok(bucket) => bucket
                .get("position")
                .await
                .ok()
                .flatten()
                .and_then(|value| String::from_utf8_lossy(&value).parse::<u64>().ok())
                .unwrap_or(0),
            Err(_) => 0,
        };
        if said >= position {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the publisher did not reach position {position} (at {said})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The log's head, as the service answers `verify`.
fn head_over_nats(url: &str) -> u64 {
    let (code, out, stderr) = remote(url, &["--format", "json", "verify"]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    report["last_position"].as_u64().unwrap()
}

/// Reads every message in the ledger's streams and KV bucket (once the publisher reached
/// `head`) and validates each body against the schema its `Ledger-Type` header names, and each
/// event's payload against its event type's schema. Returns how many of each kind it saw.
async fn validate_published(client: &async_nats::Client, head: u64) -> BTreeMap<String, usize> {
    use async_nats::jetstream::consumer;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/json");
    let load = |path: std::path::PathBuf| -> jsonschema::Validator {
        let schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        jsonschema::validator_for(&schema).unwrap()
    };
    let js = async_nats::jetstream::new(client.clone());
    let mut counts = BTreeMap::new();
    published_to(client, head).await;
    for name in [
        "LEDGER_EVENTS",
        "LEDGER_SHORTFALLS",
        "LEDGER_NOTICES",
        "KV_ledger_balances",
    ] {
        let stream = js.get_stream(name).await.unwrap();
        let expected = stream.cached_info().state.messages as usize;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig::default())
            .await
            .unwrap();
        let mut messages = consumer.messages().await.unwrap().take(expected);
        while let Some(message) = messages.next().await {
            let message = message.unwrap();
            let headers = message.headers.clone().expect("headers");
            let kind = headers
                .get("Ledger-Type")
                .expect("Ledger-Type")
                .as_str()
                .to_owned();
            let (kind, version) = kind.split_once('/').expect("<name>/<version>");
            assert_eq!(version, "1");
            assert!(
                headers.get("Nats-Msg-Id").is_some() && headers.get("Ledger-Position").is_some()
            );
            let body: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
            let validator = load(dir.join(format!("nats/{kind}.schema.json")));
            let errors: Vec<String> = validator
                .iter_errors(&body)
                .map(|e| e.to_string())
                .collect();
            assert!(
                errors.is_empty(),
                "{kind} on {}: {errors:?}\n{body}",
                message.subject
            );
            if kind == "event" {
                let event_type = body["type"].as_str().unwrap();
                let validator = load(dir.join(format!("events/{event_type}.schema.json")));
                assert!(validator.is_valid(&body["payload"]), "{body}");
            }
            *counts.entry(kind.to_owned()).or_insert(0) += 1;
        }
    }
    counts
}

#[test]
fn serve_runs_the_worked_example_and_publishes_its_balances() {
    let nats = NatsServer::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("served");
    let serve = Serve::start(&data, &nats.url(), &["--now", "2027-06-01T00:00:00Z"]).unwrap();

    // The same file through the service and through an embedded store.
    let file = worked_example();
    let file = file.to_str().unwrap();
    let (code, served, stderr) = remote(&nats.url(), &["submit", file]);
    let embedded_data = work.path().join("embedded");
    let (embedded_code, embedded, _) = run(ledgerctl(&embedded_data).args(["submit", file]));
    assert_eq!(code, embedded_code, "{stderr}");
    let shape = |out: &str| -> Vec<(bool, Vec<String>)> {
        out.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| {
                let types = v["events"]
                    .as_array()
                    .map(|e| e.iter().map(|e| e["type"].to_string()).collect())
                    .unwrap_or_default();
                (v["ok"] == true, types)
            })
            .collect()
    };
    assert_eq!(shape(&served), shape(&embedded));
    assert!(!served.is_empty());

    // Balance, shortfalls, audit and replay over NATS equal the embedded answers.
    for args in [
        vec!["balance", "C-1001"],
        vec!["balance", "C-1001", "--as-of", "2026-02-15T00:00:00Z"],
        vec!["shortfalls"],
    ] {
        let mut with_format = args.clone();
        with_format.extend(["--format", "json"]);
        let (code, over_nats, stderr) = remote(&nats.url(), &with_format);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        let (_, local, _) = run(ledgerctl(&embedded_data).args(&with_format));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&over_nats).unwrap(),
            serde_json::from_str::<serde_json::Value>(&local).unwrap(),
            "{args:?}"
        );
    }
    let (code, audit, stderr) = remote(&nats.url(), &["audit", "C-1001", "--format", "csv"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        audit.lines().count() > 5 && audit.contains("C-1001"),
        "{audit}"
    );
    let (code, _, stderr) = remote(&nats.url(), &["balance", "NOPE"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no contract NOPE"), "{stderr}");

    // The KV bucket holds each bucket's balance as `balance` says, with the moving event.
    let (_, balance, _) = remote(&nats.url(), &["balance", "C-1001", "--format", "json"]);
    let balance: serde_json::Value = serde_json::from_str(&balance).unwrap();
    let head = balance["position"].as_u64().unwrap();
    runtime().block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let values = balances_in_kv(&client, head).await;
        for (bucket, amount) in balance["balances"].as_object().unwrap() {
            let key = format!("C-1001.{bucket}");
            match values.get(&key) {
                Some(value) => {
                    assert_eq!(
                        decimal(&value["balance_after"]),
                        decimal(amount),
                        "{key}: {value}"
                    );
                    assert!(value["event_id"].is_string() && value["event_type"].is_string());
                }
                None => assert!(
                    decimal(amount).is_zero(),
                    "{key} never moved but is {amount}"
                ),
            }
        }
        // The service is discoverable.
        let ping = client
            .request("$SRV.PING.ledger", "".into())
            .await
            .expect("$SRV.PING answers");
        let ping: serde_json::Value = serde_json::from_slice(&ping.payload).unwrap();
        assert_eq!(ping["name"], "ledger");
        let info = client.request("$SRV.INFO.ledger", "".into()).await.unwrap();
        let info = String::from_utf8_lossy(&info.payload).into_owned();
        assert!(
            info.contains("ledger.cmd.purchase") && info.contains("ledger.qry.balance"),
            "{info}"
        );
    });

    // The samples and two ticks make billables and notices too; then every message published
    // so far validates against the schema its `Ledger-Type` names.
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample-contracts.jsonl");
    let (code, _, stderr) = remote(&nats.url(), &["submit", samples.to_str().unwrap()]);
    assert!(code <= 1, "{stderr}");
    for now in ["2026-03-31T00:00:00Z", "2027-02-01T00:00:00Z"] {
        let (code, _, stderr) = remote(&nats.url(), &["tick", "--now", now]);
        assert_eq!(code, 0, "{stderr}");
    }
    let head = head_over_nats(&nats.url());
    runtime().block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let counts = validate_published(&client, head).await;
        for kind in ["event", "balance_update", "billable", "expiry_notice"] {
            assert!(
                counts.get(kind).copied().unwrap_or(0) > 0,
                "no {kind} seen: {counts:?}"
            );
        }
    });

    // SIGTERM drains and releases the store.
    let status = serve.terminate();
    assert!(status.success(), "serve exited {status:?}");
    let (code, _, stderr) = run(ledgerctl(&data).args(["verify"]));
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn bad_requests_get_an_error_reply_with_a_code_and_the_service_keeps_serving() {
    let nats = NatsServer::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let _serve = Serve::start(&work.path().join("data"), &nats.url(), &[]).unwrap();
    runtime().block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let ask = |subject: &'static str, body: Vec<u8>| {
            let client = client.clone();
            async move {
                let reply = client.request(subject, body.into()).await.expect("a reply");
                let code = reply
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Service-Error-Code"))
                    .map(|v| v.as_str().to_owned());
                let body: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
                if code.is_some() && body["ok"] == false && body["events"].is_null() {
                    let schema = Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("../schemas/json/nats/service_refusal.schema.json");
                    let schema: serde_json::Value =
                        serde_json::from_str(&std::fs::read_to_string(schema).unwrap()).unwrap();
                    let validator = jsonschema::validator_for(&schema).unwrap();
                    assert!(validator.is_valid(&body), "not a service_refusal: {body}");
                }
                (code, body)
            }
        };
        let (code, body) = ask("ledger.cmd.purchase", b"{not json".to_vec()).await;
        assert_eq!(code.as_deref(), Some("400"));
        assert_eq!(body["error"]["code"], "invalid_command", "{body}");
        // Every verb and view is its own endpoint: an unknown one has no responder at all.
        let unknown = client.request("ledger.cmd.buy", "{}".into()).await;
        assert!(
            matches!(&unknown, Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders),
            "{unknown:?}"
        );
        // No client may bring time-driven events forward past the service's clock.
        let (code, body) = ask("ledger.cmd.tick", br#"{"now":"2100-01-01T00:00:00Z"}"#.to_vec()).await;
        assert_eq!(code.as_deref(), Some("403"));
        assert_eq!(body["error"]["code"], "clock_in_future", "{body}");
        let (code, body) = ask("ledger.cmd.open_contract", vec![b' '; 300 * 1024]).await;
        assert_eq!(code.as_deref(), Some("413"));
        assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
        let (code, body) = ask(
            "ledger.cmd.purchase",
            br#"{"type":"open_contract","contract_id":"X"}"#.to_vec(),
        )
        .await;
        assert_eq!(code.as_deref(), Some("400"));
        assert!(body["error"]["message"].as_str().unwrap().contains("does not match"));
        let nope = client.request("ledger.qry.nope", "{}".into()).await;
        assert!(
            matches!(&nope, Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders),
            "{nope:?}"
        );
        // Still serving: a valid command is accepted, and a rule rejection says which rule.
        let open = br#"{"contract_id":"N-1","customer":"N","package":"core","term_start":"2026-01-01","term_end":"2026-12-31","currency":"USD","time_zone":"UTC","holidays":[],"cancellation_fee_rate":"1.00","sab_commitments":[]}"#;
        let (code, body) = ask("ledger.cmd.open_contract", open.to_vec()).await;
        assert_eq!(code, None, "{body}");
        assert_eq!(body["ok"], true, "{body}");
        let (code, body) = ask("ledger.cmd.open_contract", open.to_vec()).await;
        assert_eq!(code.as_deref(), Some("422"), "{body}");
        assert_eq!(body["ok"], false);
        assert!(body["error"].get("rule").is_some(), "a rule's rejection names it");
        // Every refusal above is counted where discovery shows it, per endpoint.
        let stats = client
            .request("$SRV.STATS.ledger", "".into())
            .await
            .unwrap();
        let stats: serde_json::Value = serde_json::from_slice(&stats.payload).unwrap();
        let endpoint = |name: &str| {
            stats["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == name)
                .cloned()
                .unwrap_or_else(|| panic!("no endpoint {name}: {stats}"))
        };
        assert_eq!(endpoint("cmd_purchase")["num_errors"], 2, "{stats}");
        assert_eq!(endpoint("cmd_open_contract")["num_errors"], 2, "{stats}");
        assert_eq!(endpoint("cmd_open_contract")["num_requests"], 3, "{stats}");
        assert_eq!(endpoint("cmd_tick")["num_errors"], 1, "{stats}");
        assert!(
            endpoint("cmd_open_contract")["last_error"]
                .to_string()
                .contains("rejected"),
            "{stats}"
        );
        let info = client.request("$SRV.INFO.ledger", "".into()).await.unwrap();
        let info: serde_json::Value = serde_json::from_slice(&info.payload).unwrap();
        let subjects: Vec<&str> = info["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["subject"].as_str().unwrap())
            .collect();
        for subject in ["ledger.cmd.purchase", "ledger.cmd.tick", "ledger.qry.audit", "ledger.qry.verify"] {
            assert!(subjects.contains(&subject), "{subject} not in {subjects:?}");
        }
        assert!(
            info["endpoints"].as_array().unwrap().iter().all(|e| e["queue_group"] == "ledger"),
            "{info}"
        );
    });
}

#[test]
fn a_killed_service_restarts_and_publishes_each_balance_update_exactly_once() {
    let nats = NatsServer::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let serve = Serve::start(&data, &nats.url(), &[]).unwrap();
    // Many small consumptions, so the publisher is mid-way when the service dies.
    let mut lines = vec![
        r#"{"type":"open_contract","command_id":"k-open","contract_id":"K-1","customer":"K","package":"core","term_start":"2026-01-01","term_end":"2026-12-31","currency":"USD","time_zone":"UTC","holidays":[],"cancellation_fee_rate":"1.00","sab_commitments":[]}"#.to_owned(),
        r#"{"type":"purchase","command_id":"k-buy","contract_id":"K-1","item":"das_hours","quantity":"1600","unit_price":"150.00","effective_at":"2026-01-01T00:00:00Z"}"#.to_owned(),
    ];
    for i in 0..300 {
        let day = 5 + (i / 8) % 20;
        let hour = 9 + i % 8;
        lines.push(format!(
            r#"{{"type":"consume_hours","command_id":"k-{i}","contract_id":"K-1","bucket":"das_hours","started_at":"2026-02-{day:02}T{hour:02}:00:00Z","ended_at":"2026-02-{day:02}T{hour:02}:01:00Z"}}"#
        ));
    }
    let file = work.path().join("load.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let mut submit = std::process::Command::new(tests::ledgerctl_path())
        .args(["--nats", &nats.url(), "submit", file.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // SIGKILL the service while commands are still arriving and being published.
    runtime().block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let started = Instant::now();
        loop {
            if let Ok(mut stream) = js.get_stream("LEDGER_EVENTS").await
                && stream.info().await.unwrap().state.messages >= 60
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "nothing published"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    serve.kill();
    // The client's request in flight has lost its server; it is not what this test is about.
    submit.kill().ok();
    let interrupted = submit.wait().unwrap();
    // Restarted: the same store, the same NATS; what was not checkpointed is published again
    // with the same message ids, which JetStream drops. The client resubmits the whole file:
    // command ids make that safe.
    let serve = Serve::start(&data, &nats.url(), &[]).unwrap();
    let (code, out, stderr) = remote(&nats.url(), &["submit", file.to_str().unwrap()]);
    assert_eq!(code, 0, "after {interrupted:?}: {stderr}\n{out}");
    let (_, balance, _) = remote(&nats.url(), &["balance", "K-1", "--format", "json"]);
    let balance: serde_json::Value = serde_json::from_str(&balance).unwrap();
    let head = balance["position"].as_u64().unwrap();
    runtime().block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let values = balances_in_kv(&client, head).await;
        assert_eq!(
            decimal(&values["K-1.das_hours"]["balance_after"]),
            decimal(&balance["balances"]["das_hours"])
        );
        let js = async_nats::jetstream::new(client.clone());
        let kv = js.get_key_value("ledger_balances").await.unwrap();
        let mut history = kv.history("K-1.das_hours").await.unwrap();
        let mut positions = Vec::new();
        while let Some(entry) = history.next().await {
            let entry = entry.unwrap();
            let value: serde_json::Value = serde_json::from_slice(&entry.value).unwrap();
            positions.push(value["position"].as_u64().unwrap());
        }
        // KV keeps the last 64 revisions: strictly increasing, so none twice, none reordered.
        assert!(positions.len() >= 2);
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
        assert_eq!(*positions.last().unwrap(), head);
        // The events stream: one message per contract event, each position once.
        let mut stream = js.get_stream("LEDGER_EVENTS").await.unwrap();
        let started = Instant::now();
        loop {
            let count = stream.info().await.unwrap().state.messages;
            if count >= head {
                assert_eq!(count, head, "no event twice in LEDGER_EVENTS");
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "events: {count}/{head}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert!(serve.terminate().success());
}

#[test]
fn readers_may_read_but_not_command() {
    let config = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/nats/users.conf"),
    )
    .unwrap();
    let nats = NatsServer::start_with_config(Some(&config)).unwrap();
    let work = tempfile::tempdir().unwrap();
    let _serve = Serve::start(
        &work.path().join("data"),
        &nats.url(),
        &["--nats-user", "ledger", "--nats-password", "ledger-secret"],
    )
    .unwrap();
    let as_user = |user: &str, password: &str, args: &[&str]| {
        let inbox = format!("_INBOX_{user}");
        let mut all = vec![
            "--nats-user",
            user,
            "--nats-password",
            password,
            "--nats-inbox-prefix",
            &inbox,
        ];
        all.extend(args);
        remote(&nats.url(), &all)
    };
    let file = worked_example();
    let (code, out, stderr) = as_user(
        "operator",
        "operator-secret",
        &["submit", file.to_str().unwrap()],
    );
    assert_ne!(code, 2, "the operator may command: {stderr}\n{out}");
    assert!(out.contains(r#""ok":true"#));

    // A reader's command is refused by the server, at once and clearly; nothing is appended.
    let started = Instant::now();
    let open = r#"{"type":"open_contract","contract_id":"R-1","customer":"R","package":"core","term_start":"2026-01-01","term_end":"2026-12-31","currency":"USD","time_zone":"UTC","holidays":[],"cancellation_fee_rate":"1.00","sab_commitments":[]}"#;
    let commands = work.path().join("reader.jsonl");
    std::fs::write(&commands, open).unwrap();
    let (code, out, stderr) = as_user(
        "reader",
        "reader-secret",
        &["submit", commands.to_str().unwrap()],
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        stderr.to_lowercase().contains("permissions violation"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused at once"
    );
    let (code, _, stderr) = as_user("operator", "operator-secret", &["balance", "R-1"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no contract R-1"), "{stderr}");

    // A reader may query, and read the balances bucket.
    let (code, out, stderr) = as_user(
        "reader",
        "reader-secret",
        &["balance", "C-1001", "--format", "json"],
    );
    assert_eq!(code, 0, "{stderr}");
    let head = serde_json::from_str::<serde_json::Value>(&out).unwrap()["position"]
        .as_u64()
        .unwrap();
    runtime().block_on(async {
        let reader = async_nats::ConnectOptions::with_user_and_password(
            "reader".into(),
            "reader-secret".into(),
        )
        .custom_inbox_prefix("_INBOX_reader")
        .connect(nats.url())
        .await
        .unwrap();
        let values = balances_in_kv(&reader, head).await;
        assert!(
            values.contains_key("C-1001.proactive_credits"),
            "{values:?}"
        );
        // But may not write to it.
        let js = async_nats::jetstream::new(reader.clone());
        let kv = js.get_key_value("ledger_balances").await.unwrap();
        assert!(
            kv.put("C-1001.proactive_credits", "{}".into())
                .await
                .is_err()
        );
        // Nor read another user's replies, nor delete a consumer that is not its own.
        let mut errors = reader_errors(&nats.url()).await;
        let _spy = errors.0.subscribe("_INBOX.>").await.unwrap();
        errors.0.flush().await.ok();
        let violation = tokio::time::timeout(Duration::from_secs(10), errors.1.recv())
            .await
            .expect("the server answers the subscription")
            .unwrap();
        assert!(
            violation.to_lowercase().contains("permissions violation"),
            "{violation}"
        );
        let ledger_user = async_nats::ConnectOptions::with_user_and_password(
            "ledger".into(),
            "ledger-secret".into(),
        )
        .connect(nats.url())
        .await
        .unwrap();
        let ledger_js = async_nats::jetstream::new(ledger_user);
        let stream = ledger_js.get_stream("LEDGER_EVENTS").await.unwrap();
        stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                durable_name: Some("billing".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let events = js.get_stream("LEDGER_EVENTS").await;
        let deleted = match events {
            Ok(stream) => stream.delete_consumer("billing").await.is_ok(),
            Err(_) => false,
        };
        assert!(!deleted, "a reader deleted the ledger's durable consumer");
        let still = ledger_js.get_stream("LEDGER_EVENTS").await.unwrap();
        assert!(still.consumer_info("billing").await.is_ok());
    });
}

/// A reader's connection (with its own inboxes) and the server errors it hears.
async fn reader_errors(
    url: &str,
) -> (
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let client =
        async_nats::ConnectOptions::with_user_and_password("reader".into(), "reader-secret".into())
            .custom_inbox_prefix("_INBOX_reader")
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let async_nats::Event::ServerError(error) = event {
                        let _ = tx.send(error.to_string());
                    }
                }
            })
            .connect(url)
            .await
            .unwrap();
    (client, rx)
}

/// Commands for `contracts` contracts: an opening, a DAS lot, then `per_contract` one-minute
/// consumptions each, all with command ids (a resubmission is safe). One file per client.
fn load_files(dir: &Path, contracts: usize, per_contract: usize, clients: usize) -> Vec<String> {
    let mut files = vec![Vec::new(); clients];
    for c in 0..contracts {
        let lines = &mut files[c % clients];
        lines.push(format!(
            r#"{{"type":"open_contract","command_id":"f-open-{c}","contract_id":"F-{c}","customer":"F","package":"core","term_start":"2026-01-01","term_end":"2026-12-31","currency":"USD","time_zone":"UTC","holidays":[],"cancellation_fee_rate":"1.00","sab_commitments":[]}}"#
        ));
        lines.push(format!(
            r#"{{"type":"purchase","command_id":"f-buy-{c}","contract_id":"F-{c}","item":"das_hours","quantity":"1600","unit_price":"150.00","effective_at":"2026-01-01T00:00:00Z"}}"#
        ));
        for i in 0..per_contract {
            // One business minute each: 60 a hour, 8 hours a day, from 2026-02-02 (a Monday).
            let day = 2 + i / 480;
            let hour = 9 + (i / 60) % 8;
            let minute = i % 60;
            let (end_hour, end_minute) = ((hour * 60 + minute + 1) / 60, (minute + 1) % 60);
            lines.push(format!(
                r#"{{"type":"consume_hours","command_id":"f-{c}-{i}","contract_id":"F-{c}","bucket":"das_hours","started_at":"2026-02-{day:02}T{hour:02}:{minute:02}:00Z","ended_at":"2026-02-{day:02}T{end_hour:02}:{end_minute:02}:00Z"}}"#
            ));
        }
    }
    files
        .into_iter()
        .enumerate()
        .map(|(i, lines)| {
            let path = dir.join(format!("client-{i}.jsonl"));
            std::fs::write(&path, lines.join("\n")).unwrap();
            path.to_str().unwrap().to_owned()
        })
        .collect()
}

/// Every message of a stream, in stream order: (subject, Ledger-Position).
async fn stream_positions(js: &async_nats::jetstream::Context, name: &str) -> Vec<(String, u64)> {
    use async_nats::jetstream::consumer;
    let mut stream = js.get_stream(name).await.unwrap();
    let expected = stream.info().await.unwrap().state.messages as usize;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap().take(expected);
    let mut out = Vec::new();
    while let Some(message) = messages.next().await {
        let message = message.unwrap();
        let position = message
            .headers
            .as_ref()
            .unwrap()
            .get("Ledger-Position")
            .unwrap();
        out.push((
            message.subject.to_string(),
            position.as_str().parse().unwrap(),
        ));
    }
    out
}

#[test]
fn nats_server_killed_under_load_loses_and_doubles_no_published_message() {
    let commands: usize = std::env::var("NATS_FAULT_COMMANDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let contracts = 50;
    let per_contract = commands / contracts - 2;
    let mut nats = NatsServer::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let serve = Serve::start(&data, &nats.url(), &[]).unwrap();
    let files = load_files(work.path(), contracts, per_contract, 4);
    let submit = |file: &str| {
        std::process::Command::new(tests::ledgerctl_path())
            .args(["--nats", &nats.url(), "--nats-timeout", "3", "submit", file])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let clients: Vec<_> = files.iter().map(|f| submit(f)).collect();
    // Kill nats-server once a quarter of the events are published, restart it on its port.
    runtime().block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let started = Instant::now();
        loop {
            if let Ok(mut stream) = js.get_stream("LEDGER_EVENTS").await
                && stream.info().await.unwrap().state.messages as usize >= commands / 4
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the load did not start"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    nats.kill();
    // Restarted once the service noticed it was gone (its connection dropped), so the outage is
    // real to it.
    assert!(
        serve.wait_for_log("disconnected", Duration::from_secs(20)),
        "serve never noticed: {}",
        serve.log()
    );
    nats.restart().unwrap();
    // Each client either finished after reconnecting or failed with a clear error.
    for client in clients {
        let output = client.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        match output.status.code() {
            Some(0) => {}
            Some(2) => assert!(
                [
                    "did not answer",
                    "no ledger service",
                    "cannot reach NATS",
                    "request to"
                ]
                .iter()
                .any(|phrase| stderr.contains(phrase)),
                "an unclear error: {stderr}"
            ),
            other => panic!("submit exited {other:?}: {stderr}"),
        }
    }
    // Once the service is back (it reconnects on its own), resubmitting everything is safe
    // (command ids) and completes the load.
    runtime().block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let started = Instant::now();
        while client.request("$SRV.PING.ledger", "".into()).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "serve did not reconnect"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    for file in &files {
        let (code, _, stderr) = remote(&nats.url(), &["submit", file]);
        assert_eq!(code, 0, "{stderr}");
    }
    // Everything published before the stop (the resubmitted load arrives faster than the
    // publisher recovers from the outage: it works through the backlog while serving).
    let head = head_over_nats(&nats.url());
    runtime().block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        published_to(&client, head).await;
    });
    let log = serve.log();
    eprintln!(
        "serve saw a stream lose acknowledged messages and published again: {}",
        log.contains("a stream lost acknowledged messages")
    );
    let (status, log) = serve.terminate_with_log();
    assert!(
        status.success(),
        "serve drains and exits 0: {status}\n{}",
        log.lines()
            .filter(|line| !line.contains(" INFO ") && !line.contains(" WARN "))
            .collect::<Vec<_>>()
            .join("\n")
    );

    assert_published_equals_log(&data, &nats.url(), commands);
}

/// Reads the store (serve stopped) and NATS: LEDGER_EVENTS holds every event exactly once in
/// position order, with no gap, and the KV bucket each balance update exactly once in position order
/// per key (the last 64 revisions it keeps).
fn assert_published_equals_log(data: &Path, url: &str, min_events: usize) {
    let commands = min_events;
    // What the log says must have been published, from the store itself.
    let (code, log, stderr) =
        run(ledgerctl(data).args(["log", "read", "--limit", "10000000", "--format", "json"]));
    assert_eq!(code, 0, "{stderr}");
    let mut contract_events = Vec::new();
    let mut balance_updates = std::collections::BTreeSet::new();
    for line in log.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        // Every event is on LEDGER_EVENTS (the rate card's too): positions have no gaps.
        let position = event["position"].as_u64().unwrap();
        contract_events.push(position);
        let Some(contract) = event["stream"].as_str().unwrap().strip_prefix("contract-") else {
            continue;
        };
        for movement in event["payload"]["movements"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let bucket = movement["bucket"].as_str().unwrap();
            balance_updates.insert((format!("$KV.ledger_balances.{contract}.{bucket}"), position));
        }
    }
    assert!(
        contract_events.len() >= commands,
        "{} events",
        contract_events.len()
    );
    runtime().block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        // Every contract event exactly once, in position order.
        let events = stream_positions(&js, "LEDGER_EVENTS").await;
        let positions: Vec<u64> = events.iter().map(|(_, p)| *p).collect();
        assert_eq!(
            positions, contract_events,
            "LEDGER_EVENTS differs from the log"
        );
        // Every balance update exactly once, in position order per key.
        let updates = stream_positions(&js, "KV_ledger_balances").await;
        let mut last: BTreeMap<&str, u64> = BTreeMap::new();
        for (subject, position) in &updates {
            let previous = last.insert(subject, *position).unwrap_or(0);
            assert!(
                previous < *position,
                "{subject}: {position} after {previous}"
            );
        }
        // The bucket keeps the last 64 revisions of each key: those, exactly.
        let mut expected: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for (subject, position) in &balance_updates {
            expected.entry(subject).or_default().push(*position);
        }
        let mut seen: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for (subject, position) in &updates {
            seen.entry(subject).or_default().push(*position);
        }
        assert_eq!(seen.len(), expected.len(), "keys in the bucket");
        for (subject, positions) in expected {
            let kept = &positions[positions.len().saturating_sub(64)..];
            assert_eq!(seen[subject], kept, "{subject} differs from the log");
        }
    });
}

#[test]
fn a_stream_that_lost_acknowledged_messages_is_filled_again_from_the_log() {
    let mut nats = NatsServer::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let serve = Serve::start(&data, &nats.url(), &[]).unwrap();
    let files = load_files(work.path(), 5, 40, 1);
    let (code, _, stderr) = remote(&nats.url(), &["submit", &files[0]]);
    assert_eq!(code, 0, "{stderr}");
    assert!(serve.terminate().success());
    // What a nats-server that died before syncing loses: the tail of its streams. The streams
    // deny deletes, so the loss is made as a crash makes it: the server killed, the end of
    // LEDGER_EVENTS' last message block cut off, the server started again (it recovers what
    // the block still holds, and rebuilds its duplicate table from it).
    let held = |nats: &NatsServer| {
        runtime().block_on(async {
            let client = async_nats::connect(nats.url()).await.unwrap();
            let js = async_nats::jetstream::new(client);
            let mut stream = js.get_stream("LEDGER_EVENTS").await.unwrap();
            stream.info().await.unwrap().state.messages
        })
    };
    let before = held(&nats);
    nats.kill();
    let blocks = nats.store().join("jetstream/$G/streams/LEDGER_EVENTS/msgs");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&blocks)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    let last_block = files
        .iter()
        .rev()
        .find(|path| path.extension().is_some_and(|e| e == "blk"))
        .expect("a message block")
        .clone();
    let length = std::fs::metadata(&last_block).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last_block)
        .unwrap()
        .set_len(length * 7 / 10)
        .unwrap();
    // The stream's saved state would tell the server what it had; a crash leaves it stale.
    for path in &files {
        if path.extension().is_some_and(|e| e == "db" || e == "idx") {
            std::fs::remove_file(path).ok();
        }
    }
    nats.restart().unwrap();
    let after = held(&nats);
    assert!(
        after < before,
        "the stream lost nothing ({before} messages, then {after})"
    );
    let serve = Serve::start(&data, &nats.url(), &[]).unwrap();
    let started = Instant::now();
    while !serve.log().contains("a stream lost acknowledged messages") {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no rewind: {}",
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(serve.terminate().success());
    assert_published_equals_log(&data, &nats.url(), 200);
}

#[test]
fn a_late_subscriber_catches_up_and_ends_with_the_ledgers_balances() {
    let nats = NatsServer::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let serve = Serve::start(&work.path().join("data"), &nats.url(), &[]).unwrap();
    let files = load_files(work.path(), 3, 60, 2);
    let (code, _, stderr) = remote(&nats.url(), &["submit", &files[0]]);
    assert_eq!(code, 0, "{stderr}");
    // Started after the first half: it must first get every bucket's current value, then the
    // second half live. Each contract has one bucket that moves (das_hours): 3 keys, and the
    // second file's 2 + 60 commands on one contract move it 61 times.
    let mut watcher = std::process::Command::new(tests::ledgerctl_path())
        .args([
            "--nats",
            &nats.url(),
            "watch",
            "--count",
            &(2 + 61).to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Its lines as they come; the first means it is watching (current values come first).
    let (lines_rx, reader) = lines_of(&mut watcher);
    let first = lines_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the watcher printed the current values");
    let (code, _, stderr) = remote(&nats.url(), &["submit", &files[1]]);
    assert_eq!(code, 0, "{stderr}");
    let mut lines = vec![first];
    while let Ok(line) = lines_rx.recv_timeout(Duration::from_secs(20)) {
        lines.push(line);
    }
    reader.join().unwrap();
    let output = watcher.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut last: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../schemas/json/nats/balance_update.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert_eq!(lines.len(), 2 + 61, "every line it was asked for");
    for line in &lines {
        let update: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(validator.is_valid(&update), "{update}");
        let key = format!(
            "{}.{}",
            update["contract_id"].as_str().unwrap(),
            update["bucket"].as_str().unwrap()
        );
        if let Some(previous) = last.get(&key) {
            assert!(
                previous["position"].as_u64() < update["position"].as_u64(),
                "in order"
            );
        }
        last.insert(key, update);
    }
    assert_eq!(last.len(), 3, "{last:?}");
    for contract in ["F-0", "F-1", "F-2"] {
        let (code, out, stderr) = remote(&nats.url(), &["balance", contract, "--format", "json"]);
        assert_eq!(code, 0, "{stderr}");
        let balance: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            decimal(&last[&format!("{contract}.das_hours")]["balance_after"]),
            decimal(&balance["balances"]["das_hours"]),
            "{contract}"
        );
    }
    assert!(serve.terminate().success());
}

#[test]
fn a_token_server_serves_with_the_token_and_refuses_without_it() {
    let nats =
        NatsServer::start_with_config(Some("authorization { token: \"s3cret-token\" }")).unwrap();
    let work = tempfile::tempdir().unwrap();
    let serve = Serve::start(
        &work.path().join("data"),
        &nats.url(),
        &["--nats-token", "s3cret-token"],
    )
    .unwrap();
    let file = worked_example();
    let mut with_token = std::process::Command::new(tests::ledgerctl_path());
    with_token
        .args(["--nats", &nats.url(), "submit", file.to_str().unwrap()])
        .env("NATS_TOKEN", "s3cret-token");
    let (code, out, stderr) = run(&mut with_token);
    assert_ne!(code, 2, "{stderr}");
    assert!(out.contains(r#""ok":true"#));
    let (code, _, stderr) = remote(&nats.url(), &["balance", "C-1001"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot reach NATS at"), "{stderr}");
    assert!(
        !stderr.contains("s3cret"),
        "no secret in messages: {stderr}"
    );
    // A paused server (SIGSTOP) answers nothing: the client gives up with a clear error at its
    // timeout, and serves again once resumed.
    nats.pause(true);
    let mut paused = std::process::Command::new(tests::ledgerctl_path());
    paused
        .args([
            "--nats",
            &nats.url(),
            "--nats-timeout",
            "2",
            "balance",
            "C-1001",
        ])
        .env("NATS_TOKEN", "s3cret-token");
    let (code, _, stderr) = run(&mut paused);
    nats.pause(false);
    assert_eq!(code, 2);
    assert!(
        ["did not answer", "cannot reach NATS", "request to"]
            .iter()
            .any(|p| stderr.contains(p)),
        "{stderr}"
    );
    let mut again = std::process::Command::new(tests::ledgerctl_path());
    again
        .args([
            "--nats",
            &nats.url(),
            "balance",
            "C-1001",
            "--format",
            "json",
        ])
        .env("NATS_TOKEN", "s3cret-token");
    let started = Instant::now();
    loop {
        let (code, out, stderr) = run(&mut again);
        if code == 0 {
            assert!(out.contains("C-1001"));
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{stderr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(serve.terminate().success());
}

#[test]
fn over_tls_the_service_and_the_cli_connect_with_the_ca_and_not_without_it() {
    // A CA and a server certificate for 127.0.0.1, made here (rcgen), never committed.
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&server_key, &ca, &ca_key)
            .unwrap();
    let ca_pem = dir.path().join("ca.pem");
    let cert_pem = dir.path().join("server-cert.pem");
    let key_pem = dir.path().join("server-key.pem");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    std::fs::write(&cert_pem, server.pem()).unwrap();
    std::fs::write(&key_pem, server_key.serialize_pem()).unwrap();
    let nats = NatsServer::start_with_config(Some(&format!(
        "tls {{ cert_file: {:?}, key_file: {:?} }}",
        cert_pem.display().to_string(),
        key_pem.display().to_string()
    )))
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let ca_arg = ca_pem.to_str().unwrap();
    let serve = Serve::start(
        &work.path().join("data"),
        &nats.url(),
        &["--nats-ca", ca_arg],
    )
    .unwrap();
    let file = worked_example();
    let (code, out, stderr) = remote(
        &nats.url(),
        &["--nats-ca", ca_arg, "submit", file.to_str().unwrap()],
    );
    assert_ne!(code, 2, "{stderr}");
    assert!(out.contains(r#""ok":true"#));
    let (code, _, stderr) = remote(&nats.url(), &["balance", "C-1001"]);
    assert_eq!(code, 2, "without the CA the client must not connect");
    assert!(stderr.contains("cannot reach NATS at"), "{stderr}");
    assert!(serve.terminate().success());
}

/// Issue 16 #7, issue 15: every read verb over NATS prints byte for byte what the embedded store
/// prints, in every format, with the same exit code (both answer through
/// `projections::query`): asked while `serve` holds the store, then asked again of the same
/// store once it stopped.
#[test]
fn every_read_verb_over_nats_prints_what_the_store_prints() {
    let nats = NatsServer::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let serve = Serve::start(&data, &nats.url(), &[]).unwrap();
    let (code, _, stderr) = remote(&nats.url(), &["submit", worked_example().to_str().unwrap()]);
    assert_eq!(
        code, 1,
        "two lines of the worked example are rejected: {stderr}"
    );
    let (code, _, stderr) = remote(&nats.url(), &["tick", "--now", "2026-12-01T00:00:00Z"]);
    assert_eq!(code, 0, "{stderr}");
    let verbs: Vec<Vec<&str>> = vec![
        vec!["balance", "C-1001"],
        vec!["balance", "C-1001", "--as-of", "2026-03-01"],
        vec!["balance", "C-1001", "--detail"],
        vec![
            "balance",
            "C-1001",
            "--detail",
            "--known-at",
            "2030-01-01",
            "--as-of",
            "2026-03-01",
        ],
        vec!["audit", "C-1001"],
        vec![
            "audit",
            "C-1001",
            "--from",
            "2026-03-01",
            "--to",
            "2026-04-01",
        ],
        vec!["shortfalls"],
        vec!["notices"],
        vec!["notices", "C-1001"],
        vec!["replay", "C-1001"],
        vec![
            "diff",
            "C-1001",
            "--known-at",
            "2020-01-01",
            "--known-at",
            "2030-01-01",
        ],
        vec!["verify"],
        vec!["log", "read", "--limit", "5"],
        vec!["balance", "C-404"],
        vec!["audit", "C-1001", "--from", "June"],
    ];
    let formats = ["table", "json", "csv"];
    let mut over_nats = Vec::new();
    for args in &verbs {
        for format in formats {
            let mut all = vec!["--format", format];
            all.extend(args.iter().copied());
            over_nats.push((all.join(" "), remote(&nats.url(), &all)));
        }
    }
    assert!(serve.terminate().success());
    let mut index = 0;
    for args in &verbs {
        for format in formats {
            let mut all = vec!["--format", format];
            all.extend(args.iter().copied());
            let output = ledgerctl(&data).args(&all).output().unwrap();
            let (name, (code, stdout, stderr)) = &over_nats[index];
            index += 1;
            assert_eq!(output.status.code(), Some(*code), "{name}: {stderr}");
            assert_eq!(
                String::from_utf8_lossy(&output.stdout),
                *stdout,
                "{name} prints the same over NATS"
            );
            if *code == 2 {
                assert!(!stderr.is_empty(), "{name}");
            }
        }
    }
}

/// Issue 16 #4: a nats-server that lost its whole store (emptied, or a new one on the same
/// address) gets the streams and buckets back from `serve`, and every event published again
/// from the log, said in serve's log.
#[test]
fn an_emptied_nats_server_gets_its_streams_back_and_everything_published_again() {
    let mut nats = NatsServer::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let serve = Serve::start(&data, &nats.url(), &[]).unwrap();
    let files = load_files(work.path(), 3, 20, 1);
    let (code, _, stderr) = remote(&nats.url(), &["submit", &files[0]]);
    assert_eq!(code, 0, "{stderr}");
    nats.restart_empty().unwrap();
    assert!(
        serve.wait_for_log("the streams were gone", Duration::from_secs(30)),
        "{}",
        serve.log()
    );
    let head = head_over_nats(&nats.url());
    runtime().block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        published_to(&client, head).await;
    });
    assert!(serve.terminate().success());
    assert_published_equals_log(&data, &nats.url(), 3 * 22);
}

/// Issue 16 #5: SIGTERM ends serve within 10 s whatever NATS does — here a SIGSTOPped server
/// while a backlog is being published — with exit 1 and the position it published to.
#[test]
fn sigterm_ends_serve_within_ten_seconds_even_when_nats_does_not_answer() {
    use ledger::{Append, ExpectedVersion, NewEvent};
    let nats = NatsServer::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    // A backlog the publisher has not published yet: 100,000 raw events written beforehand.
    {
        let ledger = ledger::Ledger::open(&data).unwrap();
        for chunk in 0..100 {
            let events = (0..1000)
                .map(|i| NewEvent::new("thing_happened", format!("{{\"i\":{i}}}").into_bytes()))
                .collect();
            ledger
                .append_blocking(Append::new(
                    format!("raw-{chunk}"),
                    ExpectedVersion::Any,
                    events,
                ))
                .unwrap();
        }
    }
    let serve = Serve::start(&data, &nats.url(), &[]).unwrap();
    nats.pause(true);
    let started = Instant::now();
    let status = serve.terminate();
    let took = started.elapsed();
    nats.pause(false);
    let log = std::fs::read_to_string(data.with_extension("serve.log")).unwrap();
    assert!(took < Duration::from_secs(10), "took {took:?}: {log}");
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("published to position") && log.contains("of 100000"),
        "{log}"
    );
}

/// Issue 16 #3: one store per NATS account. A second serve on another store refuses to start,
/// naming the first store, its host and pid; the first store's own restart takes its claim
/// over; every message id carries the store's identity.
#[test]
fn a_second_serve_on_another_store_refuses_to_start_and_names_the_first() {
    let nats = NatsServer::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let first = Serve::start(&work.path().join("a"), &nats.url(), &[]).unwrap();
    let store_id = first
        .log()
        .split("store ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("serve names its store")
        .to_owned();
    let second = ledgerctl(&work.path().join("b"))
        .args(["serve", "--nats", &nats.url(), "--tick-seconds", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("store {store_id}"))
            && stderr.contains(&format!("pid {}", first.child.id())),
        "{stderr}"
    );
    let (code, _, stderr) = remote(&nats.url(), &["submit", worked_example().to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    // SIGKILLed, its claim still live: the same store takes it over at once.
    first.kill();
    let again = Serve::start(&work.path().join("a"), &nats.url(), &[]).unwrap();
    runtime().block_on(async {
        use async_nats::jetstream::consumer;
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let stream = js.get_stream("LEDGER_EVENTS").await.unwrap();
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig::default())
            .await
            .unwrap();
        let mut messages = consumer.messages().await.unwrap().take(1);
        let message = messages.next().await.unwrap().unwrap();
        let id = message
            .headers
            .as_ref()
            .unwrap()
            .get("Nats-Msg-Id")
            .unwrap();
        assert_eq!(id.as_str(), format!("{store_id}:evt-1"));
    });
    assert!(again.terminate().success());
}

/// Issue 16 #6: `watch` outlives a nats-server restart: it reconnects, resumes after the last
/// update it printed, and prints every update once, in order; `--from-position P` prints what
/// came after P.
#[test]
fn watch_survives_a_server_restart_without_a_gap_or_a_repeat() {
    let mut nats = NatsServer::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let serve = Serve::start(&work.path().join("data"), &nats.url(), &[]).unwrap();
    // One contract: open, buy and 40 consumptions, in two halves (20 balance updates, then 21).
    let lines: Vec<String> = std::fs::read_to_string(&load_files(work.path(), 1, 40, 1)[0])
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let (first, second) = lines.split_at(21);
    let halves: Vec<std::path::PathBuf> = [first, second]
        .iter()
        .enumerate()
        .map(|(i, half)| {
            let path = work.path().join(format!("half-{i}.jsonl"));
            std::fs::write(&path, half.join("\n")).unwrap();
            path
        })
        .collect();
    let (code, _, stderr) = remote(&nats.url(), &["submit", halves[0].to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    // The current value, then the second half's 21 updates.
    let mut watcher = std::process::Command::new(tests::ledgerctl_path())
        .args(["--nats", &nats.url(), "watch", "F-0", "--count", "22"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_rx, reader) = lines_of(&mut watcher);
    let current = lines_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the current value");
    nats.restart().unwrap();
    runtime().block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let started = Instant::now();
        while client.request("$SRV.PING.ledger", "".into()).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "serve did not reconnect"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let (code, _, stderr) = remote(&nats.url(), &["submit", halves[1].to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let mut lines = vec![current];
    while let Ok(line) = lines_rx.recv_timeout(Duration::from_secs(30)) {
        lines.push(line);
    }
    reader.join().unwrap();
    let output = watcher.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let positions: Vec<u64> = lines
        .iter()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["position"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(positions.len(), 22, "{lines:?}");
    assert!(
        positions.windows(2).all(|p| p[0] < p[1]),
        "in order, once each: {positions:?}"
    );
    // A consumer that kept its place: everything after the first value it saw.
    let (code, out, stderr) = remote(
        &nats.url(),
        &[
            "watch",
            "F-0",
            "--from-position",
            &positions[0].to_string(),
            "--count",
            "21",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let resumed: Vec<u64> = out
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["position"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(resumed, positions[1..]);
    assert!(serve.terminate().success());
}

/// Issue 16 #8: one size limit on every path. A 70 KB opening (years of holidays) is accepted
/// by the embedded store and over NATS alike; one over the limit is refused by both with the
/// same words, and the refusal line carries its command_id.
#[test]
fn one_size_limit_for_a_command_wherever_it_comes_from() {
    let holidays = |days: usize| -> String {
        (0..days)
            .map(|d| {
                let date = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()
                    + chrono::Days::new(d as u64 % 365);
                format!("\"{date}\"")
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let open = |id: &str, days: usize| {
        format!(
            r#"{{"type":"open_contract","command_id":"{id}","contract_id":"{id}","customer":"Big","package":"core","term_start":"2026-01-01","term_end":"2026-12-31","currency":"USD","time_zone":"UTC","holidays":[{}]}}"#,
            holidays(days)
        )
    };
    let big = open("BIG-70K", 5_400);
    let huge = open("BIG-300K", 24_000);
    assert!(
        big.len() > 70_000 && big.len() < 256 * 1024,
        "{}",
        big.len()
    );
    assert!(huge.len() > 256 * 1024, "{}", huge.len());
    let input = format!("{big}\n{huge}\n");
    let work = tempfile::tempdir().unwrap();
    let embedded = tests::run_ledgerctl(&work.path().join("embedded"), &["submit", "-"], &input);
    let nats = NatsServer::start().unwrap();
    let serve = Serve::start(&work.path().join("served"), &nats.url(), &[]).unwrap();
    let over_nats = tests::run_ledgerctl(
        &work.path().join("unused"),
        &["--nats", &nats.url(), "submit", "-"],
        &input,
    );
    assert!(serve.terminate().success());
    for (how, output) in [("embedded", embedded), ("over NATS", over_nats)] {
        assert_eq!(output.status.code(), Some(1), "{how}");
        let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines[0]["ok"], true, "{how}: {}", lines[0]);
        assert_eq!(lines[1]["ok"], false, "{how}");
        assert_eq!(lines[1]["command_id"], "BIG-300K", "{how}: {}", lines[1]);
        assert!(
            lines[1]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("at most 262144 bytes"),
            "{how}: {}",
            lines[1]
        );
    }
}

/// Issue 16 #2: answers bigger than one message (an audit statement and a replay of 2,400
/// events, over 1 MB each against the server's 1 MB max_payload) come in pages under a cursor;
/// `ledgerctl --nats` fetches them all and prints exactly what the store prints.
#[test]
fn big_answers_come_in_pages_and_print_what_the_store_prints() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let file = &load_files(work.path(), 1, 2_400, 1)[0];
    let submitted = ledgerctl(&data).args(["submit", file]).output().unwrap();
    assert_eq!(submitted.status.code(), Some(0));
    let nats = NatsServer::start().unwrap();
    let serve = Serve::start(&data, &nats.url(), &[]).unwrap();
    let verbs = [
        vec!["--format", "json", "audit", "F-0"],
        vec!["--format", "json", "replay", "F-0"],
    ];
    let mut over_nats = Vec::new();
    for args in &verbs {
        let (code, out, stderr) = remote(&nats.url(), args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(out.len() > 1_048_576, "{args:?}: only {} bytes", out.len());
        over_nats.push(out);
    }
    assert!(serve.terminate().success());
    for (args, remote_out) in verbs.iter().zip(over_nats) {
        let local = ledgerctl(&data).args(args).output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&local.stdout),
            remote_out,
            "{args:?}"
        );
    }
}

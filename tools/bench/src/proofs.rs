//! `bench proofs` (issue 19): on a generated log (contract P-0 with 10,000 events), a statement
//! bundle beside `audit --format json` of the same contract, alternated; `verify-bundle` of it;
//! appends by 256 writers with a signed checkpoint every second beside the same appends without,
//! alternated; and the log tree's storage beside the log's.
//!
//! Expected before measuring: a bundle is the statement plus one envelope read and one
//! inclusion proof per event — 10,000 proofs of ~20 hashes, most of them the same subtrees
//! (memoised), on top of a statement that already reads every event — so ~1.5× the audit;
//! verification hashes ~30 per event, ~300k SHA-256 for 10k events: tens of ms; a checkpoint
//! reads the hashes of the events since the last one (~250k a second here, the last 32 bytes of
//! each envelope), the stored block roots and each stream's head: ≤ 5 % of one core; the tree
//! keeps 16 + 1 hashes per 256 events (2.1 bytes per event) beside envelopes of ~300 bytes.
//!
//! Measured first (300k events): with every leaf hash kept (32 bytes per event) the tree was
//! 8–10 % of the log and a checkpoint under 256 writers took 2 s (each event decoded in full to
//! get its hash); a bundle took 4× the audit, most of it `format!` per byte of hex.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use fjall::{Database, KeyspaceCreateOptions};
use ledger::Ledger;

use crate::{Line, Report, Row, concurrent_appends, generate_history, median, print_machine};

#[derive(Args)]
pub struct ProofsBenchArgs {
    /// Events in the generated log (spread over the contracts; P-0 gets 10,000).
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) events: u64,
    /// Contracts in the generated log.
    #[arg(long, default_value_t = 1_000)]
    pub(crate) contracts: u64,
    /// How long each append round runs, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub(crate) millis: u64,
    /// Alternating rounds of each comparison.
    #[arg(long, default_value_t = 5)]
    pub(crate) rounds: usize,
    /// Where the temporary store goes; default: the current directory.
    #[arg(long, default_value = ".")]
    pub(crate) work_dir: PathBuf,
}

fn best(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::MIN, f64::max)
}

pub fn run(args: ProofsBenchArgs, report: &mut Report) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.work_dir)?;
    let work = tempfile::Builder::new()
        .prefix("ledger-bench-")
        .tempdir_in(&args.work_dir)?;
    print_machine(work.path());
    let dir = work.path().join("log");
    let ledger = Ledger::open(&dir)?;
    let started = Instant::now();
    generate_history(&ledger, args.events, args.contracts)?;
    let events = ledger.committed_position();
    eprintln!(
        "generated {events} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let key = std::sync::Arc::new(proofs::SigningKey::generate()?);
    // The log tree's first build (what a store made before proofs existed pays once).
    let started = Instant::now();
    let mut tree = ledger.log_tree()?;
    let size = tree.size();
    ledger::merkle::root(&mut tree, size)?;
    let first_build = started.elapsed();
    drop(tree);
    println!(
        "BENCH workload=log_tree_first_build events={events} seconds={:.2}",
        first_build.as_secs_f64()
    );
    let contract = "P-0";
    let contract_events = ledger.stream_version(&schemas::contract_stream(contract))?;

    // Bundle and audit take turns; each round's time in seconds.
    let (mut audits, mut bundles, mut verifies) = (Vec::new(), Vec::new(), Vec::new());
    let mut bundle_bytes = 0;
    for round in 0..args.rounds {
        let started = Instant::now();
        let statement =
            projections::audit::statement(&ledger, contract, projections::audit::Period::default())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        std::hint::black_box(serde_json::to_vec_pretty(&statement)?);
        audits.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        let bundle = proofs::make_bundle(
            &ledger,
            contract,
            projections::audit::Period::default(),
            &key,
        )?;
        let text = serde_json::to_vec_pretty(&bundle)?;
        bundles.push(started.elapsed().as_secs_f64());
        bundle_bytes = text.len();
        // What `verify-bundle FILE` does after reading the file.
        let started = Instant::now();
        let parsed: schemas::proof::Bundle = serde_json::from_slice(&text)?;
        proofs::verify_bundle(&parsed, &key.public())
            .map_err(|failure| anyhow::anyhow!("the bundle does not verify: {failure}"))?;
        verifies.push(started.elapsed().as_secs_f64());
        eprintln!(
            "round {round}: audit {:.0} ms, bundle {:.0} ms, verify {:.0} ms",
            audits[round] * 1e3,
            bundles[round] * 1e3,
            verifies[round] * 1e3
        );
    }
    let audit_best = 1.0 / audits.iter().copied().fold(f64::MAX, f64::min);
    let audit_rate = 1.0 / median(&mut audits);
    let bundle_rate = 1.0 / median(&mut bundles);
    let verify_s = median(&mut verifies);
    Line {
        workload: format!("bundle_{contract_events}_event_contract_{events}_event_log_per_s"),
        per_sec: bundle_rate,
        p50_us: None,
        p99_us: None,
        baseline: Some(("audit_json_same_contract_per_s_median".into(), audit_rate)),
        // ≤ 2× the audit's time.
        target_ratio: Some(0.5),
        cpu_us_per_event: None,
    }
    .print(report);
    println!(
        "BENCH workload=bundle_vs_audit_best_round audit_best_per_sec={audit_best:.2} bundle_median_per_sec={bundle_rate:.2} ratio={:.3} bundle_bytes={bundle_bytes}",
        bundle_rate / audit_best
    );
    let meets = if verify_s <= 1.0 { "yes" } else { "no" };
    println!(
        "BENCH workload=verify_bundle_{contract_events}_events median_ms={:.0} target_ms=1000 meets={meets}",
        verify_s * 1e3
    );
    report.record(Row {
        step: String::new(),
        workload: format!("verify_bundle_{contract_events}_events"),
        ledger: format!("{:.0} ms", verify_s * 1e3),
        baseline: "target".into(),
        baseline_figure: "1000 ms".into(),
        speedup: Some(1.0 / verify_s),
        target: Some(1.0),
        memory: String::new(),
    });

    // 256 writers with and without a checkpoint every second, alternated.
    let runtime = tokio::runtime::Runtime::new()?;
    let duration = Duration::from_millis(args.millis);
    let (mut plain, mut signed, mut made) = (Vec::new(), Vec::new(), 0usize);
    let mut checkpoint_ms = Vec::new();
    for round in 0..args.rounds {
        let (rate, _) = runtime.block_on(concurrent_appends(&ledger, 256, duration))?;
        plain.push(rate);
        // Steady state: the tree caught up to here, as a checkpoint a second keeps it.
        proofs::make_checkpoint(&ledger, &key)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let checkpointer = {
            let ledger = ledger.clone();
            let stop = stop.clone();
            let key = key.clone();
            std::thread::spawn(move || -> anyhow::Result<Vec<f64>> {
                let mut took = Vec::new();
                let mut next = Instant::now() + Duration::from_secs(1);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let started = Instant::now();
                    proofs::make_checkpoint(&ledger, &key)?;
                    took.push(started.elapsed().as_secs_f64() * 1e3);
                    while Instant::now() < next && !stop.load(std::sync::atomic::Ordering::Relaxed)
                    {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    next += Duration::from_secs(1);
                }
                Ok(took)
            })
        };
        let (rate, _) = runtime.block_on(concurrent_appends(&ledger, 256, duration))?;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let took = checkpointer
            .join()
            .map_err(|_| anyhow::anyhow!("the checkpoint thread panicked"))??;
        made += took.len();
        checkpoint_ms.extend(took);
        signed.push(rate);
        eprintln!(
            "round {round}: 256 writers {:.0}/s; with a checkpoint a second {:.0}/s",
            plain[round], signed[round]
        );
    }
    let plain_best = best(&plain);
    let plain_median = median(&mut plain);
    let signed_median = median(&mut signed);
    let checkpoint_median = median(&mut checkpoint_ms);
    Line {
        workload: "append_writers_256_checkpoint_every_second".into(),
        per_sec: signed_median,
        p50_us: None,
        p99_us: None,
        baseline: Some(("append_writers_256_median".into(), plain_median)),
        target_ratio: Some(0.95),
        cpu_us_per_event: None,
    }
    .print(report);
    println!(
        "BENCH workload=checkpoint_under_256_writers checkpoints={made} checkpoint_median_ms={checkpoint_median:.1} plain_best_per_sec={plain_best:.0} ratio_to_best={:.3}",
        signed_median / plain_best
    );
    drop(runtime);

    // Storage: the log tree's keyspace beside the log's, key and value bytes as written.
    let mut tree = ledger.log_tree()?;
    let size = tree.size();
    ledger::merkle::root(&mut tree, size)?;
    drop(tree);
    drop(ledger);
    let db = Database::builder(dir.join("store")).open()?;
    let bytes = |name: &str| -> anyhow::Result<(u64, u64)> {
        let keyspace = db.keyspace(name, KeyspaceCreateOptions::default)?;
        let mut total = 0u64;
        for entry in keyspace.iter() {
            let (key, value) = entry.into_inner()?;
            total += (key.len() + value.len()) as u64;
        }
        Ok((total, keyspace.disk_space()))
    };
    let (log_bytes, log_disk) = bytes("log")?;
    let (tree_bytes, tree_disk) = bytes("proj.merkle")?;
    let share = tree_bytes as f64 / log_bytes as f64;
    let meets = if share <= 0.10 { "yes" } else { "no" };
    println!(
        "BENCH workload=log_tree_storage events={size} tree_bytes={tree_bytes} log_bytes={log_bytes} share={share:.3} tree_disk={tree_disk} log_disk={log_disk} target_share=0.10 meets={meets}"
    );
    report.record(Row {
        step: String::new(),
        workload: format!("log_tree_storage_{size}_events"),
        ledger: format!(
            "{:.1} MB ({:.1} B/event)",
            tree_bytes as f64 / 1e6,
            tree_bytes as f64 / size as f64
        ),
        baseline: "log keyspace".into(),
        baseline_figure: format!("{:.1} MB", log_bytes as f64 / 1e6),
        speedup: None,
        target: None,
        memory: format!("{:.1} % of the log (target ≤ 10 %)", share * 100.0),
    });
    Ok(ExitCode::SUCCESS)
}

//! `ledgerctl`: the command-line program. Glue only: it parses arguments, opens the store, calls
//! the crates and prints. No rule of the domain lives here.

mod contract;
mod html;
mod limits;
mod load;
mod nats;
mod pipeline;
mod proof;
mod raw;
mod views;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Contract Ledger: an event-sourced ledger for prepaid enterprise-support contracts.
#[derive(Parser)]
#[command(name = "ledgerctl", version, about, long_about = None)]
struct Cli {
    /// The embedded store's directory.
    #[arg(
        long,
        global = true,
        env = "LEDGER_DATA",
        default_value = "./ledger-data"
    )]
    data: PathBuf,

    /// Output format where output is tabular (default: table on a terminal, json otherwise);
    /// html is for `audit`.
    #[arg(long, global = true, value_enum)]
    format: Option<Format>,

    #[command(flatten)]
    nats: nats::NatsArgs,

    /// An Ed25519 signing key file (ledgerctl keygen) for checkpoints and statement bundles.
    #[arg(
        long,
        global = true,
        env = "LEDGER_SIGNING_KEY",
        hide_short_help = true
    )]
    signing_key: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
    Csv,
    /// A printable page (audit only).
    Html,
}

#[derive(Subcommand)]
enum Command {
    /// Run commands from a JSON-lines file or stdin, one result line each; exit 0 when all were
    /// accepted, 1 when any was rejected (the rest still ran), 2 on unusable input or options.
    Submit {
        /// The file, or - for stdin.
        #[arg(default_value = "-")]
        file: PathBuf,
    },
    /// Append every time-driven event due at TIME: expiry forfeiture (R8), SAB shortfall
    /// assessments (R9), expiry notices (R15). Each exactly once, however often it runs (R10).
    Tick {
        /// RFC 3339 with an offset, e.g. 2027-01-01T00:00:00Z.
        #[arg(long)]
        now: String,
    },
    /// A contract's bucket balances, by effective time (--as-of), recorded time (--known-at)
    /// and/or log position (--at-position); times are RFC 3339 or a date (00:00 contract time).
    Balance {
        /// The contract id.
        contract: String,
        /// Count only what was effective at or before this time.
        #[arg(long)]
        as_of: Option<String>,
        /// Count only what the ledger had recorded by this time.
        #[arg(long)]
        known_at: Option<String>,
        /// Count only events up to this global position.
        #[arg(long)]
        at_position: Option<u64>,
        /// Quantities and money by movement kind and by lot (R13), and billable totals; with
        /// --as-of, --known-at or --at-position, of only the events those let through.
        #[arg(long)]
        detail: bool,
    },
    /// Expiry notices (R15): per contract and notice point, what would be forfeited.
    Notices {
        /// Only this contract.
        contract: Option<String>,
    },
    /// Every movement of a contract with running balances, totals and a roll-forward that
    /// reconciles; --from/--to bound the period by effective time, half-open (from ≤ t < to).
    Audit {
        /// The contract id.
        contract: String,
        /// Period start (RFC 3339, or a date: 00:00 contract time): earlier movements make up
        /// the opening balances.
        #[arg(long)]
        from: Option<String>,
        /// Period end, excluded (RFC 3339, or a date: 00:00 contract time): movements at or
        /// after it are left out.
        #[arg(long)]
        to: Option<String>,
        /// Reproduce the statement as it was issued at this recorded time (RFC 3339 or a date):
        /// only what was recorded by then, stamped with the log's head as it stood then.
        #[arg(long)]
        known_at: Option<String>,
        /// Write the statement with its proof to FILE (a JSON bundle a customer verifies offline
        /// with verify-bundle): every event of the contract, each one's inclusion proof, the
        /// stream's head, and a new checkpoint signed with --signing-key.
        #[arg(long, value_name = "FILE", conflicts_with = "known_at")]
        bundle: Option<PathBuf>,
    },
    /// Make an Ed25519 signing key for checkpoints and bundles: FILE (mode 0600) holds it; the
    /// public key is printed, to hand to whoever verifies.
    Keygen {
        /// Where to write the key (never over an existing file).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print the public key of --signing-key again (64 hex digits), with its key id on stderr.
    PublicKey,
    /// A signed checkpoint of the log now (its size, chain hash, RFC 9162 roots of the log and of
    /// the stream heads), kept in the store and printed as JSON. Needs --signing-key.
    Checkpoint,
    /// Check a statement bundle offline, with no store: the signature, every event's hash and
    /// inclusion proof, that none is missing, and the statement built again from the events.
    /// Exit 0, or 1 naming the first item that fails.
    VerifyBundle {
        /// The bundle (audit --bundle).
        file: PathBuf,
        /// The signer's public key: 64 hex digits, or a file holding them.
        #[arg(long)]
        public_key: String,
    },
    /// An RFC 9162 consistency proof that an older checkpoint's log is a prefix of a newer one's
    /// (default: the newest checkpoint kept in the store), printed as JSON.
    ProveConsistency {
        /// The older checkpoint (a file).
        #[arg(long)]
        from: PathBuf,
        /// The newer checkpoint (a file).
        #[arg(long)]
        to: Option<PathBuf>,
    },
    /// Check offline that the older checkpoint's log is a prefix of the newer one's. Exit 0, or
    /// 1 naming what fails.
    VerifyConsistency {
        /// The older checkpoint.
        old: PathBuf,
        /// The newer checkpoint.
        new: PathBuf,
        /// The proof (prove-consistency).
        proof: PathBuf,
        /// The signer's public key: 64 hex digits, or a file holding them.
        #[arg(long)]
        public_key: String,
    },
    /// Billable amounts (SAB shortfalls, adjustments, uncovered reschedule fees) with their
    /// derivation, for one contract or all.
    Shortfalls {
        /// Only this contract.
        contract: Option<String>,
    },
    /// Rebuild every projection from position 0, with progress.
    Rebuild,
    /// The long-running service: owns --data and serves it on --nats (commands and queries as
    /// the NATS service `ledger`, balances/events/billables/notices published to JetStream, the
    /// scheduler on a timer). SIGTERM or Ctrl-C drains and exits 0.
    Serve(service::ServeArgs),
    /// A contract's history event by event with the balances after each.
    Replay {
        /// The contract id.
        contract: String,
        /// Stop at a log position (a number) or at a recorded time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
    },
    /// Which events changed which numbers between two knowledge (recorded) times.
    Diff {
        /// The contract id.
        contract: String,
        /// The two knowledge times, RFC 3339 (give the flag twice).
        #[arg(long = "known-at", num_args = 1)]
        known_at: Vec<String>,
    },
    /// Over --nats: print balance updates as JSON lines — first every bucket's current value
    /// (from the KV bucket `ledger_balances`), then each change as it is published.
    Watch {
        /// Only this contract.
        contract: Option<String>,
        /// Stop after this many lines.
        #[arg(long)]
        count: Option<usize>,
        /// Start after this log position (a consumer that kept its place): every update the
        /// bucket still holds (64 per key) that came later, then the live ones.
        #[arg(long)]
        from_position: Option<u64>,
    },
    /// Check the whole log's hash chain and indexes; exit 1 and the first bad position when broken.
    Verify,
    /// Over --nats, a replicated log's state: the writer, LEDGER_LOG's leader and replicas, and
    /// each instance's role, mirror position and lag.
    Status,
    /// Relay a verified embedded store (--data) into an empty LEDGER_LOG on the cluster at
    /// --nats, same positions and hashes; run again after an interruption to go on.
    Migrate(service::replicated::MigrateArgs),
    /// Append and read raw events (no contract rules): for inspecting and seeding a store.
    #[command(subcommand)]
    Log(raw::LogCommand),
    /// Benchmarks, each beside its baseline measured in the same run.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Test helper: append under concurrent load forever, printing each acknowledged append.
    #[command(hide = true)]
    Load(load::LoadArgs),
}

/// mimalloc, not glibc's malloc: fjall's memtables are many small allocations freed together
/// when a memtable is flushed, and glibc keeps those pages (its per-thread arenas only give back
/// the top of a heap); mimalloc returns freed pages to the system. Measured with `ledgerctl
/// bench projections --events 1000000`: see BENCHMARKS.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let code = run();
    // The temporary copy of a read-only store goes with the process.
    drop(READ_ONLY_COPY.lock().expect("not poisoned").take());
    code
}

fn run() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LEDGER_LOG")
                // async-nats logs a failed connect itself; the error we return names it once.
                .unwrap_or_else(|_| "warn,async_nats::connector=off".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, never into a log file or a pipe.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let format = cli.format.unwrap_or(if std::io::stdout().is_terminal() {
        Format::Table
    } else {
        Format::Json
    });
    if format == Format::Html && !matches!(cli.command, Command::Audit { .. }) {
        eprintln!("ledgerctl: --format html is for audit; use table, json or csv here");
        return ExitCode::from(2);
    }
    if let Command::Status = cli.command {
        return finish(service::replicated::status(
            &cli.nats,
            format == Format::Json,
        ));
    }
    if let Command::Migrate(args) = &cli.command {
        // Progress on a terminal: the verification, then the relay, each its own line.
        let mut shown: Option<(service::replicated::MigratePhase, pipeline::Progress)> = None;
        let migrated =
            service::replicated::migrate(&cli.data, &cli.nats, args, &mut |phase, done, total| {
                if shown.as_ref().is_none_or(|(at, _)| *at != phase) {
                    if let Some((_, mut progress)) = shown.take() {
                        progress.finish();
                    }
                    let noun = match phase {
                        service::replicated::MigratePhase::Verify => "events verified",
                        service::replicated::MigratePhase::Relay => "events relayed",
                    };
                    shown = Some((phase, pipeline::Progress::new(noun, Some(total))));
                }
                if let Some((_, progress)) = shown.as_mut() {
                    progress.update(done, done);
                }
            });
        if let Some((_, mut progress)) = shown.take() {
            progress.finish();
        }
        return finish(migrated);
    }
    match &cli.command {
        Command::Keygen { out } => return finish(proof::keygen(out)),
        Command::PublicKey => return finish(proof::public_key(cli.signing_key.as_deref())),
        Command::Checkpoint => {
            return finish(proof::checkpoint(&cli.data, cli.signing_key.as_deref()));
        }
        Command::VerifyBundle { file, public_key } => {
            return finish(proof::verify_bundle(file, public_key));
        }
        Command::ProveConsistency { from, to } => {
            return finish(proof::prove_consistency(&cli.data, from, to.as_ref()));
        }
        Command::VerifyConsistency {
            old,
            new,
            proof: proof_file,
            public_key,
        } => return finish(proof::verify_consistency(old, new, proof_file, public_key)),
        Command::Audit {
            contract,
            from,
            to,
            bundle: Some(out),
            ..
        } => {
            if cli.nats.nats.is_some() {
                return finish(Err(anyhow::anyhow!(
                    "audit --bundle runs where the store is (--data), not over --nats"
                )));
            }
            return finish(proof::bundle(
                &cli.data,
                contract,
                (from.as_deref(), to.as_deref()),
                out,
                cli.signing_key.as_deref(),
            ));
        }
        _ => {}
    }
    if let Some(query) = read_query(&cli.command) {
        let outcome = query.and_then(|query| {
            let answer = match &cli.nats.nats {
                Some(_) => nats::ask(&cli.nats, &query)?,
                None => answer_here(&cli.data, &query)?,
            };
            views::print(&answer, format)
        });
        return finish(outcome);
    }
    if cli.nats.nats.is_some() && !matches!(cli.command, Command::Serve(_) | Command::Load(_)) {
        let outcome = remote(&cli.nats, cli.command);
        return match outcome {
            Ok(code) => code,
            Err(error) => {
                eprintln!("ledgerctl: {error:#}");
                ExitCode::from(2)
            }
        };
    }
    let outcome = match cli.command {
        Command::Submit { file } => contract::submit(&cli.data, &file),
        Command::Tick { now } => contract::tick(&cli.data, &now, cli.signing_key.as_deref()),
        Command::Rebuild => views::rebuild(&cli.data),
        Command::Serve(args) => {
            let key = cli
                .signing_key
                .as_deref()
                .map(proof::signing_key_file)
                .transpose();
            key.and_then(|key| service::serve::run(&cli.data, &cli.nats, &args, key))
        }
        Command::Watch { .. } => Err(anyhow::anyhow!(
            "watch follows a running serve: give --nats URL (or NATS_URL)"
        )),
        Command::Log(command) => raw::run(&cli.data, command),
        Command::Bench(command) => bench::run(command),
        Command::Load(args) => load::run(&cli.data, &cli.nats, args),
        Command::Status | Command::Migrate(_) => unreachable!("handled above"),
        Command::Balance { .. }
        | Command::Notices { .. }
        | Command::Audit { .. }
        | Command::Shortfalls { .. }
        | Command::Replay { .. }
        | Command::Diff { .. }
        | Command::Verify => unreachable!("read verbs are answered above"),
        Command::Keygen { .. }
        | Command::PublicKey
        | Command::Checkpoint
        | Command::VerifyBundle { .. }
        | Command::ProveConsistency { .. }
        | Command::VerifyConsistency { .. } => unreachable!("proof verbs are answered above"),
    };
    finish(outcome)
}

/// The exit code of a verb's outcome; an error is printed and exits 2.
fn finish(outcome: anyhow::Result<ExitCode>) -> ExitCode {
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ledgerctl: {}", error_text(&error));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, each cause once: many errors print their source in their own text
/// too, and "Read-only file system: Read-only file system" helps nobody.
fn error_text(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// The question a read verb asks (`None` for the other verbs), or what is wrong with its flags.
fn read_query(command: &Command) -> Option<anyhow::Result<projections::query::Query>> {
    use projections::query::{Query, TextFilter};
    Some(Ok(match command {
        Command::Balance {
            contract,
            as_of,
            known_at,
            at_position,
            detail,
        } => {
            let contract_id = contract.clone();
            let filter = TextFilter {
                as_of: as_of.clone(),
                known_at: known_at.clone(),
                at_position: *at_position,
            };
            if *detail {
                Query::BalanceDetail {
                    contract_id,
                    filter,
                }
            } else {
                Query::Balance {
                    contract_id,
                    filter,
                }
            }
        }
        Command::Audit {
            contract,
            from,
            to,
            known_at,
            ..
        } => Query::Audit {
            contract_id: contract.clone(),
            from: from.clone(),
            to: to.clone(),
            known_at: known_at.clone(),
        },
        Command::Shortfalls { contract } => Query::Shortfalls {
            contract_id: contract.clone(),
        },
        Command::Notices { contract } => Query::Notices {
            contract_id: contract.clone(),
        },
        Command::Replay { contract, until } => Query::Replay {
            contract_id: contract.clone(),
            until: until.clone(),
        },
        Command::Diff { contract, known_at } => {
            let [earlier, later] = known_at.as_slice() else {
                return Some(Err(anyhow::anyhow!(
                    "diff takes --known-at twice: the earlier and the later knowledge time"
                )));
            };
            Query::Diff {
                contract_id: contract.clone(),
                earlier: earlier.clone(),
                later: later.clone(),
            }
        }
        Command::Verify => Query::Verify,
        Command::Log(raw::LogCommand::Read {
            from,
            stream,
            limit,
        }) => Query::Log {
            stream: stream.clone(),
            start: *from,
            limit: *limit,
        },
        _ => return None,
    }))
}

/// Answers a read question from the store at `data`. `verify` checks the store files
/// themselves (`ledger::verify_path`), so that a damaged store is reported, not refused at open.
fn answer_here(
    data: &std::path::Path,
    query: &projections::query::Query,
) -> anyhow::Result<projections::query::Answer> {
    use projections::query::{Answer, Query, QueryError};
    if let Query::Verify = query {
        let store = readable_store(data)?;
        let mut progress = pipeline::Progress::new("events", None);
        let report = ledger::verify_path_with_progress(store, &mut |position| {
            progress.update(position, 0);
        });
        progress.finish();
        let report = report?;
        return Ok(Answer::Verify(projections::query::verify_answer(&report)));
    }
    let ledger = read_ledger(data)?;
    match projections::query::answer(&ledger, query) {
        Ok((answer, _)) => Ok(answer),
        Err(QueryError::UnknownContract(contract)) => {
            anyhow::bail!("no contract {contract} in {}", data.display())
        }
        Err(error) => Err(error.into()),
    }
}

/// A verb's name, for messages.
fn verb_name(command: &Command) -> &'static str {
    match command {
        Command::Rebuild => "rebuild",
        Command::Log(_) => "log append",
        Command::Bench(_) => "bench",
        Command::Load(_) => "load",
        _ => "this verb",
    }
}

/// A verb sent to `ledgerctl serve` over NATS (`--nats URL`).
fn remote(nats: &nats::NatsArgs, command: Command) -> anyhow::Result<ExitCode> {
    use nats::Remote;
    let verb = match &command {
        Command::Submit { file } => Remote::Submit(file),
        Command::Watch {
            contract,
            count,
            from_position,
        } => {
            return nats::watch(nats, contract.as_deref(), *count, *from_position);
        }
        Command::Tick { now } => Remote::Tick(now),
        other => anyhow::bail!(
            "over --nats the service answers submit, tick, watch and every read verb; run {} \
             where the store is (--data)",
            verb_name(other)
        ),
    };
    nats::run(nats, verb)
}

/// Opens an existing store to change it (`tick`, `rebuild`). A directory that holds no store is
/// refused before anything is written to it, so a mistyped `--data` leaves nothing behind.
fn open_ledger(data: &std::path::Path) -> anyhow::Result<ledger::Ledger> {
    require_store(data)?;
    create_ledger(data)
}

/// Opens an existing store to read it. A store on read-only media (a copy handed to an auditor)
/// is read through a temporary copy: fjall replays its journal at open, which writes, so even a
/// reader cannot open it in place. Nothing is ever written to the original.
fn read_ledger(data: &std::path::Path) -> anyhow::Result<ledger::Ledger> {
    let path = readable_store(data)?;
    create_ledger(&path)
}

/// Opens the store at `data`, creating it when there is none.
fn create_ledger(data: &std::path::Path) -> anyhow::Result<ledger::Ledger> {
    ledger::Ledger::open(data).map_err(anyhow::Error::from)
}

fn require_store(data: &std::path::Path) -> anyhow::Result<()> {
    if !data.join("store").is_dir() {
        anyhow::bail!("no store at {} (set --data or LEDGER_DATA)", data.display());
    }
    Ok(())
}

/// The temporary copy of a read-only store, removed when `main` returns.
static READ_ONLY_COPY: std::sync::Mutex<Option<tempfile::TempDir>> = std::sync::Mutex::new(None);

/// `data` itself when it can be written, else a temporary copy of it (said on stderr).
fn readable_store(data: &std::path::Path) -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    require_store(data)?;
    let probe = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(data.join("LOCK"));
    match probe {
        Ok(_) => return Ok(data.to_owned()),
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
            ) => {}
        Err(error) => {
            return Err(error).with_context(|| format!("opening {}", data.join("LOCK").display()));
        }
    }
    let copy = tempfile::Builder::new()
        .prefix("ledger-read-only-")
        .tempdir()
        .context("making a temporary directory for a copy of the read-only store")?;
    eprintln!(
        "ledgerctl: {} is read-only; reading a temporary copy without changing it",
        data.display()
    );
    for part in ["store", "index"] {
        let from = data.join(part);
        if from.is_dir() {
            copy_tree(&from, &copy.path().join(part))
                .with_context(|| format!("copying the read-only store {}", from.display()))?;
        }
    }
    let path = copy.path().to_owned();
    *READ_ONLY_COPY.lock().expect("not poisoned") = Some(copy);
    Ok(path)
}

/// Copies a directory tree (regular files and directories).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// A JSON-lines input: a file, or stdin for `-`.
/// `open_input`, with the file's size when it has one (for progress).
fn open_input_sized(
    file: &std::path::Path,
) -> anyhow::Result<(Box<dyn std::io::BufRead>, Option<u64>)> {
    let size = (file != std::path::Path::new("-"))
        .then(|| std::fs::metadata(file).ok().map(|m| m.len()))
        .flatten();
    Ok((open_input(file)?, size))
}

/// The runtime that runs a file's lines concurrently (`pipeline`).
fn pipeline_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(limits::PIPELINE_THREADS_MAX);
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?)
}

fn open_input(file: &std::path::Path) -> anyhow::Result<Box<dyn std::io::BufRead>> {
    use anyhow::Context;
    Ok(if file == std::path::Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
        ))
    })
}

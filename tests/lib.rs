//! Helpers shared by the integration tests: where `ledgerctl` is, temporary stores, a small
//! seeded random source whose seed is printed so a failure can be replayed. The child processes
//! (nats-server, a 3-node cluster, PostgreSQL, `ledgerctl serve`) come from `tools/harness`,
//! which the benchmarks share.

pub use harness::{NatsCluster, NatsServer, Postgres, Serve, free_port, http_get};

use std::path::PathBuf;
use std::process::Command;

/// The `ledgerctl` binary of this build (`harness::ledgerctl_path`). `.ci/run` builds it first.
pub fn ledgerctl_path() -> PathBuf {
    harness::ledgerctl_path().unwrap()
}

/// A `ledgerctl` command with `--data DIR`.
pub fn ledgerctl(data: &std::path::Path) -> Command {
    let mut command = Command::new(ledgerctl_path());
    command.arg("--data").arg(data);
    command.env_remove("LEDGER_DATA");
    command
}

/// Runs `ledgerctl --data DIR ARGS…` with `stdin` as its standard input and waits for it.
pub fn run_ledgerctl(data: &std::path::Path, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = ledgerctl(data)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ledgerctl");
    // A verb that does not read stdin may exit first; a broken pipe then is not a failure.
    let _ = child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes());
    child.wait_with_output().expect("wait for ledgerctl")
}

/// The positions of a stream's events as `read_stream` returns them (through the stream index).
pub fn stream_positions(ledger: &ledger::Ledger, stream: &str) -> Vec<u64> {
    ledger
        .read_stream(stream, 1, usize::MAX)
        .unwrap()
        .iter()
        .map(|event| event.position)
        .collect()
}

/// Copies a directory tree (a committed fixture store) so a test can open it: opening recovers
/// the journal, which writes.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("create the copy's directory");
    for entry in std::fs::read_dir(from).expect("read the fixture directory") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy a fixture file");
        }
    }
}

/// A xorshift generator: enough randomness for kill timings and load shapes.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `env_var` when set, else from the clock; prints the seed either way.
    pub fn from_env(env_var: &str) -> Rng {
        let seed = std::env::var(env_var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("seed {env_var}={seed}");
        Rng(seed | 1)
    }

    /// The next value in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

/// The log's durable commit behind its seam (`ledger::Replicator`): the embedded fjall commit, or
/// a replicated one that applies every batch to a second real store before the local commit (as
/// `serve --replicated` does through LEDGER_LOG, without a network). The log API tables and the
/// crash tests run against each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `Ledger::open`: one store, `SyncAll` per batch.
    Embedded,
    /// A writer replicating into a mirror store; the mirror must end with the same log.
    Replicated,
}

impl Backend {
    /// Every backend.
    pub const ALL: [Backend; 2] = [Backend::Embedded, Backend::Replicated];

    /// Opens a writer on `dir` with `options` (its `writer` flag is the backend's to set).
    pub fn open_with(self, dir: &std::path::Path, options: ledger::LedgerOptions) -> Opened {
        match self {
            Backend::Embedded => Opened {
                ledger: ledger::Ledger::open_with(dir, options).unwrap(),
                mirror: None,
            },
            Backend::Replicated => {
                let mirror_dir = tempfile::tempdir().unwrap();
                let mirror =
                    ledger::Ledger::open_with(mirror_dir.path(), ledger::LedgerOptions::mirror())
                        .unwrap();
                let replicator = std::sync::Arc::new(IntoMirror {
                    mirror: mirror.clone(),
                    sequence: std::sync::atomic::AtomicU64::new(0),
                    kept: std::sync::Mutex::new(Vec::new()),
                    // As the test cluster's max_payload (8 MB), less room for headers.
                    bytes_max: 8 * 1024 * 1024 - 4 * 1024,
                });
                let ledger = ledger::Ledger::open_with(
                    dir,
                    ledger::LedgerOptions {
                        writer: false,
                        ..options
                    },
                )
                .unwrap();
                ledger.start_writer(Some(replicator)).unwrap();
                Opened {
                    ledger,
                    mirror: Some((mirror, mirror_dir)),
                }
            }
        }
    }

    /// Opens a writer on `dir` with the default options.
    pub fn open(self, dir: &std::path::Path) -> Opened {
        self.open_with(dir, ledger::LedgerOptions::default())
    }
}

/// A writer opened on a backend; for the replicated one, its mirror.
pub struct Opened {
    /// The writer.
    pub ledger: ledger::Ledger,
    mirror: Option<(ledger::Ledger, tempfile::TempDir)>,
}

impl Opened {
    /// The replicated backend's mirror holds exactly the writer's log: the same positions,
    /// streams, versions and hashes. (Nothing to check for the embedded one.)
    pub fn assert_mirror_holds_the_log(&self) {
        if let Some((mirror, _)) = &self.mirror {
            assert_eq!(
                mirror.committed_position(),
                self.ledger.committed_position()
            );
            assert_eq!(log_of(mirror), log_of(&self.ledger), "the mirror's log");
            assert!(mirror.verify().unwrap().is_ok());
        }
    }
}

/// Every event of a log as (position, stream, version, hash).
pub fn log_of(ledger: &ledger::Ledger) -> Vec<(u64, String, u64, [u8; 32])> {
    ledger
        .scan(1)
        .map(|e| e.unwrap())
        .map(|e| (e.position, e.stream, e.version, e.hash))
        .collect()
}

/// Replicates into a mirror store, keeping each batch (as a stream would) for tests to replay.
pub struct IntoMirror {
    /// The mirror.
    pub mirror: ledger::Ledger,
    /// The last sequence handed out.
    pub sequence: std::sync::atomic::AtomicU64,
    /// Every batch with its sequence.
    pub kept: std::sync::Mutex<Vec<(u64, ledger::WireBatch)>>,
    /// The largest batch it carries (a NATS server's max_payload, less headers).
    pub bytes_max: usize,
}

impl ledger::Replicator for IntoMirror {
    fn replicate(&self, batch: &ledger::WireBatch) -> Result<u64, String> {
        let sequence = self
            .sequence
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        self.mirror
            .apply_replicated(sequence, &batch.bytes)
            .map_err(|e| e.to_string())?;
        self.kept.lock().unwrap().push((sequence, batch.clone()));
        Ok(sequence)
    }

    fn batch_bytes_max(&self) -> usize {
        self.bytes_max
    }
}

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

//! Real child processes for the tests and the benchmarks alike: a nats-server (one node, or three
//! clustered on loopback), PostgreSQL 15 and `ledgerctl serve`. Each starts on free loopback
//! ports in a directory of its own, is waited for on a condition (a ports file, `/healthz`, a
//! connection, a log line), never on a pause, and is stopped when dropped.
//!
//! Not here: any assertion about the ledger, any workload. Every start returns an error that says
//! what to install or what the child printed, so a benchmark can report it and a test can
//! `expect` it.

mod nats;
mod postgres;
mod process;

pub use crate::nats::{NatsCluster, NatsServer, free_port, http_get};
pub use crate::postgres::Postgres;
pub use crate::process::{Serve, ledgerctl_path, signal};

/// Polls `ready` every `every` until it answers `Some`, or fails with `what` after `within`.
pub fn wait_until<T>(
    within: std::time::Duration,
    every: std::time::Duration,
    mut ready: impl FnMut() -> Option<T>,
    what: impl FnOnce() -> String,
) -> anyhow::Result<T> {
    let started = std::time::Instant::now();
    loop {
        if let Some(value) = ready() {
            return Ok(value);
        }
        if started.elapsed() >= within {
            anyhow::bail!("{} (waited {within:?})", what());
        }
        std::thread::sleep(every);
    }
}

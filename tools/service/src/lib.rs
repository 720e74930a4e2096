//! The ledger as a NATS service: the `ledger` service's endpoints (`ledger.cmd.<verb>`,
//! `ledger.qry.<view>`), the scheduler's timer, the publisher started beside them
//! (`projections/publisher`), and `serve` wiring them to one store; `replicated` runs the same
//! over a log replicated on a JetStream cluster (one fenced writer, every instance a mirror),
//! with `migrate` and `status`.
//!
//! Not here: any rule (`commands`), any view's arithmetic (`projections`), rendering (`tools`).

pub mod checkpointer;
pub mod claim;
mod connect;
mod endpoints;
pub mod limits;
pub mod replicated;
pub mod serve;

pub use connect::{NatsArgs, refusals};
pub use limits::{CONNECT_WAIT_SECONDS, READ_YOUR_WRITES_WAIT, REQUEST_BYTES_MAX, REQUEST_TIMEOUT};
pub use serve::ServeArgs;

/// A time flag not tied to a contract (`tick --now`, `serve --now`): RFC 3339 with an offset,
/// or a date alone (00:00 UTC that day).
///
/// # Errors
/// Text that is neither, naming `flag`.
pub fn parse_time(flag: &str, text: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    projections::time::parse(flag, text, chrono_tz::Tz::UTC).map_err(anyhow::Error::msg)
}

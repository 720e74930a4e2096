//! The NATS publisher: an outbox over the log whose sink is JetStream. Every event past its
//! checkpoint becomes messages — the event itself on `ledger.evt.<contract>.<type>`, each
//! changed balance into the KV bucket `ledger_balances` (republished on
//! `ledger.balance.<contract>.<bucket>`), billables on `ledger.shortfall.<contract>`, notices on
//! `ledger.notice.<contract>` — each with a `Nats-Msg-Id` derived from its log position, so a
//! republish after a crash is dropped by JetStream as a duplicate. The checkpoint moves only
//! after JetStream acknowledged everything before it; when a stream lost acknowledged messages
//! (a nats-server restarted without them), the publisher rewinds and publishes again.
//!
//! - `topology`: the streams and the bucket, their retention and duplicate window;
//! - `messages`: what one event becomes (pure, table-tested);
//! - `outbox`: the loop, the rewind, and `Publisher::published_to`.
//!
//! Not here: the NATS service's endpoints (`tools/service`), any rule, any read model but the
//! published balances it keeps beside its checkpoint.

pub mod limits;
mod messages;
mod outbox;
mod topology;

pub use crate::messages::{NO_CONTRACT, Outgoing, messages};
pub use crate::outbox::{Publisher, PublisherHandle};
pub use crate::topology::set_up;

/// The KV bucket of current balances, key `<contract>.<bucket>`.
pub const BALANCES_BUCKET: &str = "ledger_balances";
/// Every event, `ledger.evt.<contract>.<type>`.
pub const EVENTS_STREAM: &str = "LEDGER_EVENTS";
/// Billables, `ledger.shortfall.<contract>`.
pub const SHORTFALLS_STREAM: &str = "LEDGER_SHORTFALLS";
/// Expiry notices, `ledger.notice.<contract>`.
pub const NOTICES_STREAM: &str = "LEDGER_NOTICES";
/// The KV bucket where the publisher says how far it got: key [`PROGRESS_KEY`], the last log
/// position whose messages are all published and acknowledged. A consumer that saw a command's
/// `Ledger-Position` P can wait for P here before it reads the feeds.
pub const PROGRESS_BUCKET: &str = "ledger_publisher";
/// The key in [`PROGRESS_BUCKET`].
pub const PROGRESS_KEY: &str = "position";
/// The publisher's checkpoint and per-contract balances (a projection keyspace).
pub const PUBLISHER: &str = "publisher";
pub use crate::limits::*;

/// Schema version of every published body (`Ledger-Type: <type>/<version>`).
pub const MESSAGE_SCHEMA_VERSION: u32 = schemas::nats::MESSAGE_SCHEMA_VERSION;

/// Why publishing stopped or a batch failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The log could not be read, or the publisher's state written.
    #[error("the log: {0}")]
    Log(#[from] ledger::Error),
    /// NATS refused or did not answer.
    #[error("NATS: {0}")]
    Nats(String),
    /// The publisher's own state did not decode.
    #[error("the publisher's state: {0}")]
    State(#[from] serde_json::Error),
    /// Told to stop while NATS failed: it stopped short of the head.
    #[error("published to position {published} of {head} and stopped ({cause})")]
    Stopped {
        /// The last position published and acknowledged.
        published: u64,
        /// The log's head.
        head: u64,
        /// The last failure.
        cause: String,
    },
}

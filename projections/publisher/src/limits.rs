//! Every limit of the publisher, in one place, with how they relate.

use std::time::Duration;

/// Events published between two checkpoints.
pub const PUBLISH_BATCH_EVENTS_MAX: usize = 2048;
/// Publishes whose acks may be outstanding at once (async-nats blocks past ~5,000).
pub const PUBLISH_ACKS_IN_FLIGHT_MAX: usize = 512;
/// How long a message's id is remembered by JetStream for de-duplication.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
/// How long the publisher waits to write its progress (a hint) before it goes on without.
pub const PROGRESS_WRITE_WAIT: Duration = Duration::from_secs(2);
/// At most how often the progress bucket is written while events keep coming (each write is a
/// JetStream publish the server stores), and so how long after the publisher caught up its
/// position is said.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(50);
/// How long published messages are kept.
pub const RETENTION: Duration = Duration::from_secs(400 * 24 * 60 * 60);

const _: () = assert!(
    PUBLISH_ACKS_IN_FLIGHT_MAX < 5_000,
    "async-nats blocks a publisher with about 5,000 acks outstanding"
);
const _: () = assert!(
    PUBLISH_ACKS_IN_FLIGHT_MAX <= PUBLISH_BATCH_EVENTS_MAX,
    "the acks window fits in one batch"
);
const _: () = assert!(
    PROGRESS_EVERY.as_millis() < PROGRESS_WRITE_WAIT.as_millis(),
    "progress is said more often than a write of it may take"
);

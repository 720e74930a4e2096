//! Every limit and timeout of the NATS service, in one place, with how they relate.

use std::time::Duration;

/// How long the CLI waits for the service to answer one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest command or query body the service reads; a larger one is refused with
/// `payload_too_large` (a command is a few hundred bytes).
pub const REQUEST_BYTES_MAX: usize = 64 * 1024;

/// How long `serve` keeps trying its first NATS connection by default.
pub const CONNECT_WAIT_SECONDS: u64 = 30;

/// How long a query with `min_position` waits for this instance to hold that position (read
/// your writes; a replicated instance's mirror may lag) before it is answered 503.
pub const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(5);

/// Room left in a message for its headers, below the server's max_payload.
pub const HEADER_ROOM_BYTES: usize = 4 * 1024;
/// How long the writer keeps retrying one batch's publish (no quorum, a leader election) before
/// it gives up and stops. A leader election took 4–8 s here.
pub const REPLICATE_DEADLINE: Duration = Duration::from_secs(30);
/// Batches submitted to LEDGER_LOG and not yet written locally: while one batch's R3 ack is
/// on its way, the next ones are already sent (each fenced by its predecessor's sequence).
pub const REPLICATE_WINDOW: usize = 4;
/// How long one publish waits for its ack before it is sent again (same id: the stream drops a
/// second copy). Short, so that a leader election costs little more than itself.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a mirror's consumer may deliver nothing before the mirror checks the stream.
pub const MIRROR_IDLE_CHECK: Duration = Duration::from_secs(2);

/// How long an instance keeps trying to set up the cluster's streams and buckets at start.
pub const SET_UP_DEADLINE: Duration = Duration::from_secs(90);

/// The events per batch a migration publishes (as the writer's group commits would).
pub const MIGRATE_BATCH_EVENTS: usize = 1_000;

/// nats-server's default `max_payload`: a request body must fit in one message.
const NATS_PAYLOAD_DEFAULT_BYTES: usize = 1024 * 1024;

const _: () = assert!(
    REQUEST_BYTES_MAX + HEADER_ROOM_BYTES <= NATS_PAYLOAD_DEFAULT_BYTES,
    "a request fits in one message of a default server"
);
const _: () = assert!(REPLICATE_WINDOW >= 1, "at least one batch in flight");
const _: () = assert!(
    ACK_TIMEOUT.as_secs() < REPLICATE_DEADLINE.as_secs(),
    "an unanswered publish is sent again before the writer gives up"
);
const _: () = assert!(
    MIGRATE_BATCH_EVENTS <= ledger::limits::EVENTS_PER_BATCH_MAX,
    "a migrated batch is one the writer could have made"
);

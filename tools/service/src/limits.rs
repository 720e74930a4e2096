//! Every limit and timeout of the NATS service, in one place, with how they relate.

use std::time::Duration;

/// How long the CLI waits for the service to answer one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest command or query body the service reads, the same limit as a command anywhere
/// (`schemas::COMMAND_BYTES_MAX`); a larger one is refused with `payload_too_large`.
pub const REQUEST_BYTES_MAX: usize = schemas::COMMAND_BYTES_MAX;

/// How long `serve` keeps trying its first NATS connection by default.
pub const CONNECT_WAIT_SECONDS: u64 = 30;

/// How long a paged answer is kept for its pages to be fetched.
pub const PAGE_CURSOR_TTL: Duration = Duration::from_secs(60);

/// Paged answers kept at once (the oldest goes first).
pub const PAGE_CURSORS_MAX: usize = 16;

/// The largest answer a query pages; a bigger one is refused (413 `answer_too_large`).
pub const ANSWER_BYTES_MAX: usize = 256 * 1024 * 1024;

/// How long `serve` takes at most to stop after SIGTERM or Ctrl-C, whatever NATS does: past
/// it, it exits 1 saying how far the publisher got (the next serve publishes the rest).
pub const STOP_WAIT: Duration = Duration::from_secs(8);

/// How long a service's claim on its NATS account lives without a renewal (a crashed serve's
/// claim expires after it).
pub const CLAIM_TTL: Duration = Duration::from_secs(10);

/// How often a running service renews its claim.
pub const CLAIM_RENEW_EVERY: Duration = Duration::from_secs(3);

/// How long a published checkpoint waits for JetStream's acknowledgement before it is left in
/// the store unpublished.
pub const CHECKPOINT_PUBLISH_WAIT: Duration = Duration::from_secs(5);

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
const _: () = assert!(
    CLAIM_RENEW_EVERY.as_secs() * 3 <= CLAIM_TTL.as_secs(),
    "a claim is renewed at least three times in its life"
);
const _: () = assert!(STOP_WAIT.as_secs() < 10, "serve stops within 10 s");

//! Every limit of the event log, in one place. Each is enforced before anything is written, with
//! an error that names the limit; none of them is a tuning knob that changes results.

/// Largest event payload plus metadata, in bytes. Contract events are a few hundred bytes; a
/// megabyte leaves room for imports without letting one event stall the group commit.
pub const EVENT_BYTES_MAX: usize = 1024 * 1024;

/// Most events in one `append` call. One call lands atomically in one fjall batch.
pub const EVENTS_PER_APPEND_MAX: usize = 1_000;

/// Longest stream id, in bytes. Stream ids are ASCII: `[A-Za-z0-9_.:-]`.
pub const STREAM_ID_BYTES_MAX: usize = 128;

/// Longest event type name, in bytes. Type names are ASCII: `[A-Za-z0-9_.-]`.
pub const EVENT_TYPE_BYTES_MAX: usize = 128;

/// Longest command id (idempotency key), in bytes, printable ASCII without spaces.
pub const COMMAND_ID_BYTES_MAX: usize = 200;

/// Longest metadata string (actor, reason, reference, correlation, causation), in bytes.
pub const METADATA_FIELD_BYTES_MAX: usize = 4 * 1024;

/// Appends that may wait for the writer. Callers beyond it wait for room (backpressure).
pub const APPEND_QUEUE_MAX: usize = 8_192;

/// Most events the writer gathers into one fjall batch and one fsync (group commit).
pub const EVENTS_PER_BATCH_MAX: usize = 4_096;

/// Events a subscription reads from the store at a time; the most it ever buffers.
pub const SUBSCRIPTION_PAGE_MAX: usize = 512;

/// Most events one `read_*` call returns.
pub const READ_PAGE_MAX: usize = 100_000;

/// Events `Ledger::scan` reads through one fjall iterator (one snapshot) before it opens the
/// next; see `Ledger::scan`.
pub const SCAN_CHUNK_EVENTS: u64 = 16_384;

/// Events a read-ahead reader of `Ledger::scan_ahead` decodes into one chunk (one fjall
/// iterator): ~0.5–1 MB of decoded events.
pub const SCAN_AHEAD_CHUNK_EVENTS: u64 = 2_048;

/// Decoded chunks each read-ahead reader may hold ready for the consumer: what bounds a
/// read-ahead scan's memory (readers × (this + 1) chunks).
pub const SCAN_AHEAD_CHUNKS_QUEUED: usize = 2;

/// Committed batches the indexer may fall behind by; past it the committer waits (backpressure),
/// so a stream read never waits for more than this many batches to be indexed.
pub const INDEX_QUEUE_BATCHES_MAX: usize = 64;

/// Events indexed per fjall batch when `Ledger::open` catches the stream index up with the log.
pub const INDEX_CATCH_UP_BATCH_EVENTS: u64 = 16_384;

/// How long the indexer lets committed batches gather before it writes them, unless a reader is
/// waiting for the index (then it writes at once). One index write per one-event append cost a
/// lone writer about a fifth of its rate on 2 cores; gathering for 2 ms turns that into one
/// write per ~10 appends, and a stream read never waits for it.
pub const INDEX_GATHER_MAX: std::time::Duration = std::time::Duration::from_millis(2);

/// Index entries pending after which the indexer writes without gathering further.
pub const INDEX_GATHER_ENTRIES: usize = 4_096;

/// Committed events the writer keeps in memory for the log tree (`recent.rs`), once a log tree
/// is asked for: a second of appends at the highest rate measured here (~250k/s), ~20 MB.
pub const RECENT_HEADS_MAX: usize = 1 << 18;

/// Memtable bytes of each projection keyspace made from now on (fjall's default is 64 MiB):
/// a rebuild writes all of them at once, and each one's memtable was resident in full.
pub const PROJECTION_MEMTABLE_BYTES: u64 = 16 << 20;

/// Journal bytes of the log's database (`DIR/store`) a clean close leaves for the next open to
/// replay before it pads the journal so that fjall releases it (`Store::flush_for_close`).
/// fjall replays a journal item by item, ~1.5 µs each here whatever their size (a keyspace
/// lookup per item): 1 MiB is ~2,500 events with their deduplication entries, ~5 ms; a close
/// after a few commands costs only a flush, one past it ~0.2 s of padding.
pub const CLOSE_LOG_JOURNAL_KEEP_BYTES: u64 = 1 << 20;

/// The same for the stream index's database (`DIR/index`), whose items are ~42 bytes (one per
/// event): 128 KiB is ~3,000 items, ~5 ms of replay. At 4 MiB, as it was, a store of 30,000
/// events opened in 62 ms against 9.6 ms for one of 100.
pub const CLOSE_INDEX_JOURNAL_KEEP_BYTES: u64 = 128 << 10;

// How the limits relate, checked when the crate compiles.
const _: () = assert!(
    EVENTS_PER_APPEND_MAX <= EVENTS_PER_BATCH_MAX,
    "one append lands in one batch"
);
const _: () = assert!(
    SUBSCRIPTION_PAGE_MAX <= READ_PAGE_MAX,
    "a subscription page is one read"
);
const _: () = assert!(
    EVENTS_PER_APPEND_MAX * EVENT_BYTES_MAX <= 1 << 30,
    "one append stays under a GiB"
);

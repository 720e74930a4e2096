//! Every limit of the read side, in one place, with how they relate to the log's.

/// Events folded between two commits of a projection; a page's changed entries are what a
/// catch-up holds in memory.
pub const PROJECTION_PAGE_EVENTS_MAX: usize = 100_000;

/// Events a fold must be behind before it reads the log ahead on other threads
/// (`Ledger::scan_ahead`): below this, starting the readers costs more than they save.
pub const READ_AHEAD_FROM_EVENTS: u64 = 65_536;

/// Most read-ahead threads a fold starts (fewer on a machine with fewer cores).
pub const READ_AHEAD_READERS_MAX: usize = 2;

/// Events `log read` (the `log` view) returns when no limit is given.
pub const LOG_READ_EVENTS_DEFAULT: usize = 1_000;

const _: () = assert!(
    LOG_READ_EVENTS_DEFAULT <= ledger::limits::READ_PAGE_MAX,
    "the default log read is one read of the log"
);
const _: () = assert!(
    PROJECTION_PAGE_EVENTS_MAX as u64 >= ledger::limits::SCAN_CHUNK_EVENTS,
    "a page spans at least one scan chunk"
);

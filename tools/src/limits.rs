//! The `ledgerctl` binary's own limits (each crate keeps its own; the log's are in
//! `ledger::limits`).

/// Lines of a `submit` or `log append` file in flight at once: enough for the log's group
/// commit to gather many per fsync (64 concurrent callers reach ~the handler's rate, `bench
/// commands`), few enough that a failure leaves little sent but unanswered.
pub const SUBMIT_IN_FLIGHT: usize = 64;

/// Worker threads of the runtime that runs them: this machine's cores, at most 4.
pub const PIPELINE_THREADS_MAX: usize = 4;

const _: () = assert!(SUBMIT_IN_FLIGHT >= 1);

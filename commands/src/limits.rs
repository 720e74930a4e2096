//! Every limit of the rules' handler, in one place, with how they relate to the log's.

/// Attempts at a command when its stream keeps changing under it (expected-version conflicts)
/// before the handler gives up with `HandlerError::Contended`.
pub const HANDLER_RETRIES_MAX: usize = 8;

/// Events read from a stream per page while loading a contract's state.
pub const LOAD_PAGE_MAX: usize = 10_000;

/// Contracts whose folded state the handler keeps warm. Past it, the idle ones are dropped (a
/// dropped state is read from its stream again when next needed), so memory follows the
/// contracts in use, not every contract ever seen.
pub const WARM_CONTRACTS_MAX: usize = 10_000;

const _: () = assert!(
    LOAD_PAGE_MAX <= ledger::limits::READ_PAGE_MAX,
    "a load page is one read of the log"
);
const _: () = assert!(HANDLER_RETRIES_MAX >= 1, "at least one attempt");

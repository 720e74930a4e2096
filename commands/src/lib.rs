//! The rules of DOMAIN.md (R1–R15): `decide` and `evolve`, pure and deterministic; the handler
//! that loads a contract, decides, and appends with an expected version; the scheduler's due
//! time-driven commands.
//!
//! **Invariant:** `decide`, `evolve` and `due` never touch the log, NATS or the wall clock; time
//! arrives with the command. Only `handler` does IO, through the `ledger` crate's API.

pub mod calendar;
mod currency;
pub mod decide;
pub mod handler;
pub mod limits;
pub mod rejection;
pub mod schedule;
pub mod state;

pub use decide::{Decided, decide};
pub use handler::{CommandResult, Handler, HandlerError};
pub use rejection::Rejection;
pub use schedule::{TimeDriven, decide_time_driven, due};
pub use state::{ContractState, EventMeta, RateCard, Status};

#[cfg(test)]
mod tests;

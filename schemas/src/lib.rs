//! The wire: commands as users send them, events as the log stores them, their serde forms.
//! Decimals travel as strings; unknown fields are rejected.
//!
//! Not here: any rule (see `commands`), any IO.

pub mod command;
pub mod decimal;
pub mod display;
mod effects;
pub mod event;
pub mod json_schema;
pub mod nats;
pub mod proof;
pub mod reply;
pub mod result;

pub use command::*;
pub use event::*;
pub use result::{Code, CommandResult, Rejection, ResultEvent};

/// Contract streams are named `contract-<id>`; this prefix is the one place that says so.
pub const CONTRACT_STREAM_PREFIX: &str = "contract-";
/// The rate card's stream.
pub const RATES_STREAM: &str = "rates";

/// The stream of a contract.
pub fn contract_stream(contract_id: &str) -> String {
    format!("{CONTRACT_STREAM_PREFIX}{contract_id}")
}

/// The contract a stream belongs to, if it is a contract's stream.
pub fn contract_of(stream: &str) -> Option<&str> {
    stream.strip_prefix(CONTRACT_STREAM_PREFIX)
}

#[cfg(test)]
mod tests;

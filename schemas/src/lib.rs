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

pub use command::*;
pub use event::*;

#[cfg(test)]
mod tests;

//! The rules: `decide(state, command, now)` and `evolve(state, event)`, the handler and the
//! scheduler.
//!
//! Empty until the contract domain lands (issue 3); nothing here pretends otherwise.

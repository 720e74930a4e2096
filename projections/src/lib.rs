//! Balances, audit statements, billable shortfalls and notices as folds over the log, with their
//! checkpoints, and the NATS publisher.
//!
//! Empty until the projections land (issue 4); nothing here pretends otherwise.

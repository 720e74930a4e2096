//! The one integration-test binary: the event log through its API and through `ledgerctl`,
//! against real fjall directories and real killed processes.

mod cli;
mod contract_cli;
mod contract_model;
mod crash;
mod disk_full;
mod fixture_log;
mod log_api;
mod log_model;
mod nats_service;
mod postgres_side;
mod projection_views;
mod proofs;
mod replicated_cluster;
mod replicated_log;
mod stream_index;
mod tamper;
mod wire_schemas;

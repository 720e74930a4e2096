//! The wire: command, event and published-message types, their JSON Schemas and upcasters.
//!
//! Empty until the contract domain lands (issue 3); nothing here pretends otherwise.

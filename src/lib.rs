//! `runner` runs AI coding tasks and plain commands in hardened Docker sandboxes.
//! See docs/architecture.md for how the modules fit together.

pub mod agent;
pub mod attempt;
pub mod cli;
pub mod job;
pub mod llm;
pub mod repo;
pub mod result;
pub mod sandbox;
pub mod scheduler;
pub mod serve;
pub mod state;
pub mod store;

//! ferry: a scheduled batch-sync engine.
//!
//! Data flows one way: a [`connectors`] source is read by [`detect`], which
//! writes changes into the durable queue in [`state`]; [`sync`] claims queued
//! tasks and writes them through a [`connectors`] target. Before any of it,
//! [`schema`] checks the job's fields against both systems' columns.
//! [`runner`] drives one run of a job; [`config`] shapes everything; [`cli`]
//! is the thin edge.
pub mod cli;
pub mod config;
pub mod connectors;
pub mod detect;
pub mod exit;
pub mod fault;
pub mod metrics;
pub mod model;
pub mod progress;
pub mod push;
pub mod reach;
pub mod redact;
pub mod rules;
pub mod runner;
pub mod schedule;
pub mod schema;
pub mod sort;
pub mod sql_error;
pub mod sql_log;
pub mod state;
pub mod sync;
pub mod verify;

//! flowhost's edges: what crosses into and out of the product, written once for every way
//! in and out.
//!
//! - [`intake`]: NDJSON lines in. A bounded line splitter and the line intake (checked line
//!   by line, appended in batches of one transaction) that `flowhost ingest` and
//!   `POST /v1/records` both use.
//! - [`views`]: NDJSON lines out. The view, value and parked-record lines and the exports
//!   that page through the store, for `flowhost export` and the HTTP view routes alike.
//! - [`models`]: which models exist (the "unknown model" message) and the plugin listing.
//! - [`group`]: group commit: appends from many callers share transactions.
//! - [`hosts`]: which processes are at work on the database, and what each holds.
//! - [`broker`]: what the NATS edge says of itself, for health and metrics.
//!
//! The CLI (`host/flowhost`), the HTTP API (`host/server`) and the NATS edge (`host/nats`)
//! are thin adapters over it.

pub mod broker;
pub mod group;
pub mod hosts;
pub mod intake;
pub mod models;
pub mod views;

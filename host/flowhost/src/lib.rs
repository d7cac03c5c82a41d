//! What the flowhost binaries share: configuration (`config`, `settings`), composition of
//! store, registry and engine (`app`), file intake (`ingest`) and the demo's workload
//! generator (`workload`). The product binary (`src/main.rs`) and the benchmarks
//! (`host/bench`) are built on it.

pub mod app;
pub mod config;
pub mod ingest;
pub mod settings;
pub mod workload;

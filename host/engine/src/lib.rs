//! flowhost's stage workers.
//!
//! Each stage of each model is a loop that leases the stage, takes a batch, makes **one**
//! plugin call for it (on a blocking thread: one hop per batch), and commits the batch's
//! whole outcome in one transaction. Association of one model is sequential (one lease per
//! model) so that its decisions follow intake order; models, and the two stages of a model,
//! run in parallel.

mod associate;
mod holder;
mod plugins;
mod project;
mod run;

pub use plugins::PluginSet;
pub use run::{RunReport, StageReport};

use flowhost_core::batch::BatchConfig;
use flowhost_store::{CommitError, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// How the engine batches and leases.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub associate: BatchConfig,
    pub project: BatchConfig,
    /// How long a lease lasts without renewal (each batch renews it).
    pub lease_ttl: Duration,
    /// How often an idle worker looks for new work (records ingested by other processes).
    pub idle_poll: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            associate: BatchConfig {
                min: 50,
                max: 5_000,
                initial: 1_000,
                target: Duration::from_millis(250),
            },
            project: BatchConfig {
                min: 20,
                max: 2_000,
                initial: 500,
                target: Duration::from_millis(250),
            },
            lease_ttl: Duration::from_secs(30),
            idle_poll: Duration::from_millis(100),
        }
    }
}

/// Why the engine stopped.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error("a stage worker of {model} failed: {message}")]
    Worker { model: String, message: String },
}

/// The stage workers over one store and one set of plugins. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    plugins: PluginSet,
    config: EngineConfig,
    holder: String,
}

impl Engine {
    pub fn new(store: Store, plugins: PluginSet, config: EngineConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                plugins,
                config,
                holder: holder::new_holder_id(),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn plugins(&self) -> &PluginSet {
        &self.inner.plugins
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// This worker's lease holder id (`host/pid/random`).
    pub fn holder(&self) -> &str {
        &self.inner.holder
    }
}

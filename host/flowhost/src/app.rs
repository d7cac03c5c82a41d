//! Composition: open the store, open the plugin registry over the plugins folder, build the
//! engine.

use anyhow::Result;
use flowhost_engine::{Engine, EngineConfig};
use flowhost_registry::{Registry, RegistryConfig};
use flowhost_runtime::{Runtime, RuntimeConfig};
use flowhost_store::{Store, StoreOptions};

/// What every command that touches data is given: the database, the plugins folder (with
/// the versions folder and per-model limits), and the plugins' default limits.
pub struct Env {
    pub db: String,
    pub store: StoreOptions,
    pub registry: RegistryConfig,
    pub limits: RuntimeConfig,
    pub engine: EngineConfig,
}

impl Env {
    /// The defaults over a database and a plugins folder (the benchmarks' set-up).
    pub fn new(db: &str, plugins: &std::path::Path) -> Self {
        Self {
            db: db.to_string(),
            store: StoreOptions::default(),
            registry: RegistryConfig::new(plugins),
            limits: RuntimeConfig::default(),
            engine: EngineConfig::default(),
        }
    }

    /// From the loaded configuration.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            db: config.database.url.clone(),
            store: config.store_options(),
            registry: config.registry(),
            limits: config.runtime(),
            engine: config.engine(),
        }
    }

    /// Opens the database with the configured pool.
    pub async fn open_store(&self) -> Result<Store> {
        Store::open_with(&self.db, &self.store)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// Opens the database with default options, with the URL in the error.
pub async fn open_store(url: &str) -> Result<Store> {
    Store::open(url).await.map_err(|e| anyhow::anyhow!("{e}"))
}

/// Loads and validates the plugins folder, and makes current what the database says
/// should be. A refused file is reported (one line naming it) and skipped.
pub async fn open_registry(env: &Env, store: &Store) -> Result<Registry> {
    let runtime = Runtime::new(env.limits.clone())?;
    let registry = Registry::open(store.clone(), runtime, env.registry.clone()).await?;
    let (models, refused) = registry.status();
    for error in models
        .into_iter()
        .filter_map(|m| m.last_error)
        .chain(refused)
    {
        eprintln!("{error}");
    }
    Ok(registry)
}

/// Store, registry and engine, ready to run.
pub async fn engine(env: &Env, config: EngineConfig) -> Result<(Engine, Registry)> {
    let store = env.open_store().await?;
    let registry = open_registry(env, &store).await?;
    let engine = Engine::new(store, registry.plugins().clone(), config)
        .with_shadows(registry.shadows().clone());
    // A commit that finds a model's version changed by another process asks for the plugin
    // set to be brought up to date: the registry syncs with the database.
    if let Some(mut changes) = engine.take_version_changes() {
        let registry = registry.clone();
        tokio::spawn(async move {
            while changes.recv().await.is_some() {
                // Several requests at once need one sync.
                while changes.try_recv().is_ok() {}
                if let Err(e) = registry.sync().await {
                    tracing::warn!("cannot read the current plugin versions: {e}");
                }
            }
        });
    }
    Ok((engine, registry))
}

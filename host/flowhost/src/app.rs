//! Composition: open the store, open the plugin registry over the plugins folder, build the
//! engine.

use anyhow::Result;
use flowhost_engine::{Engine, EngineConfig};
use flowhost_registry::{Registry, RegistryConfig};
use flowhost_runtime::{Runtime, RuntimeConfig};
use flowhost_store::Store;

/// What every command that touches data is given: the database, the plugins folder (with
/// the versions folder and per-model limits), and the plugins' default limits.
pub struct Env {
    pub db: String,
    pub registry: RegistryConfig,
    pub limits: RuntimeConfig,
}

/// Opens the database, with the URL in the error.
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
    let store = open_store(&env.db).await?;
    let registry = open_registry(env, &store).await?;
    let engine = Engine::new(store, registry.plugins().clone(), config);
    engine.set_refresh(std::sync::Arc::new(registry.clone()));
    Ok((engine, registry))
}

//! Composition: open the store, load the plugins folder, build the engine.

use anyhow::{Context, Result};
use flowhost_engine::{Engine, EngineConfig, PluginSet};
use flowhost_runtime::{Runtime, RuntimeConfig};
use flowhost_store::{ModelInfo, Store};
use std::path::{Path, PathBuf};

/// What every command that touches data is given: the database, the plugins folder, and
/// the plugins' limits.
pub struct Env {
    pub db: String,
    pub plugins: PathBuf,
    pub limits: RuntimeConfig,
}

/// Opens the database, with the URL in the error.
pub async fn open_store(url: &str) -> Result<Store> {
    Store::open(url).await.map_err(|e| anyhow::anyhow!("{e}"))
}

/// Loads every `*.wasm` of the folder. A file that fails is reported (one line naming it)
/// and skipped: one broken plugin does not stop the others.
pub fn load_plugins(dir: &Path, limits: &RuntimeConfig) -> Result<PluginSet> {
    let runtime = Runtime::new(limits.clone())?;
    let set = PluginSet::new();
    if !dir.exists() {
        tracing::warn!("plugins folder {} does not exist", dir.display());
        return Ok(set);
    }
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the plugins folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
        .collect();
    files.sort();
    for file in files {
        match runtime.load(&file) {
            Ok(plugin) => {
                let model = plugin.description().model.clone();
                if let Some(existing) = set.get(&model) {
                    eprintln!(
                        "{}: model '{model}' is already defined by {}; ignoring this file",
                        file.display(),
                        existing.file()
                    );
                    continue;
                }
                set.insert(plugin);
            }
            Err(e) => eprintln!("{e}"),
        }
    }
    Ok(set)
}

/// Records the plugins' models in the store so intake knows them even while a plugin is away.
pub async fn register(store: &Store, plugins: &PluginSet) -> Result<()> {
    let models: Vec<ModelInfo> = plugins
        .models()
        .into_iter()
        .filter_map(|m| plugins.get(&m))
        .map(|p| ModelInfo {
            name: p.description().model.clone(),
            kind: p.description().kind.as_str().to_string(),
            plugin_version: p.version().to_string(),
        })
        .collect();
    store
        .register_models(&models)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Store, plugins and engine, ready to run.
pub async fn engine(env: &Env, config: EngineConfig) -> Result<Engine> {
    let store = open_store(&env.db).await?;
    let plugins = load_plugins(&env.plugins, &env.limits)?;
    register(&store, &plugins).await?;
    Ok(Engine::new(store, plugins, config))
}

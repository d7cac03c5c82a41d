//! The current plugin of each model. Workers look the plugin up at the start of every batch,
//! so replacing an entry swaps the model's logic between batches; a batch in flight keeps
//! the plugin it started with (it holds a clone).

use dashmap::DashMap;
use flowhost_runtime::Plugin;
use std::sync::Arc;

/// model → current plugin. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct PluginSet {
    map: Arc<DashMap<String, Plugin>>,
}

impl PluginSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `plugin` current for its model; returns the one it replaced.
    pub fn insert(&self, plugin: Plugin) -> Option<Plugin> {
        self.map.insert(plugin.description().model.clone(), plugin)
    }

    /// Removes a model's plugin (its records wait until one returns).
    pub fn remove(&self, model: &str) -> Option<Plugin> {
        self.map.remove(model).map(|(_, p)| p)
    }

    /// The current plugin of a model.
    pub fn get(&self, model: &str) -> Option<Plugin> {
        self.map.get(model).map(|p| p.value().clone())
    }

    /// The models with a plugin, sorted.
    pub fn models(&self) -> Vec<String> {
        let mut models: Vec<String> = self.map.iter().map(|e| e.key().clone()).collect();
        models.sort();
        models
    }
}

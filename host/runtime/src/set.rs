//! The current plugin of each model, between the registry (which writes it) and the engine
//! (which reads it). Workers look the plugin up at the start of every batch, so replacing an
//! entry swaps the model's logic between batches; a batch in flight keeps the plugin it
//! started with (it holds a clone).

use crate::Plugin;
use dashmap::DashMap;
use std::sync::Arc;
use std::time::Duration;

/// model → current plugin. Cheap to clone (shared).
#[derive(Clone)]
pub struct PluginSet {
    map: Arc<DashMap<String, Plugin>>,
    /// Bumped at every change, so a reader can wait for one.
    changes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for PluginSet {
    fn default() -> Self {
        Self {
            map: Arc::default(),
            changes: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }
}

impl PluginSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `plugin` current for its model; returns the one it replaced.
    pub fn insert(&self, plugin: Plugin) -> Option<Plugin> {
        let old = self.map.insert(plugin.description().model.clone(), plugin);
        self.changes.send_modify(|n| *n += 1);
        old
    }

    /// Removes a model's plugin (its records wait until one returns).
    pub fn remove(&self, model: &str) -> Option<Plugin> {
        let old = self.map.remove(model).map(|(_, p)| p);
        self.changes.send_modify(|n| *n += 1);
        old
    }

    /// Waits until `model`'s current plugin is `version`, at most `within`; returns whether
    /// it is.
    pub async fn wait_for(&self, model: &str, version: &str, within: Duration) -> bool {
        let mut changes = self.changes.subscribe();
        let is_current = |set: &PluginSet| set.get(model).is_some_and(|p| p.version() == version);
        tokio::time::timeout(within, async {
            while !is_current(self) {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        })
        .await
        .is_ok()
            && is_current(self)
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

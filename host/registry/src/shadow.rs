//! The shadow folder (`<plugins>/shadow/`): a file there is a candidate version of its
//! model. It is validated like any plugin file (compile, `describe`, probe batch), then
//! called beside the live version on every live association batch (the engine's shadow
//! task), writing only to the shadow tables. It never becomes current by being there:
//! `flowhost plugins promote` moves it into the folder, where it is swapped in as usual.

use crate::{Checked, FileState, Registry, short};
use flowhost_runtime::PluginSet;
use flowhost_store::ShadowRun;
use std::path::{Path, PathBuf};

/// The shadow folder's name inside the plugins folder.
pub const SHADOW_DIR: &str = "shadow";

impl Registry {
    /// The candidate versions of shadow runs, by model (read by the engine).
    pub fn shadows(&self) -> &PluginSet {
        &self.inner.shadows
    }

    /// `<plugins>/shadow`.
    pub fn shadow_dir(&self) -> PathBuf {
        self.inner.config.dir.join(SHADOW_DIR)
    }

    pub(crate) fn is_shadow_file(&self, path: &Path) -> bool {
        path.parent() == Some(self.shadow_dir().as_path())
    }

    /// A validated candidate: it starts (or starts over) its model's shadow run.
    pub(crate) async fn shadow_checked(&self, path: &Path, hash: String, checked: Checked) {
        let plugin = checked.plugin;
        let model = plugin.description().model.clone();
        let file = path.display().to_string();
        let (other, replaced) = {
            let state = self.inner.state.lock().expect("registry state");
            let other = state
                .shadow_files
                .iter()
                .find(|(p, f)| *p != path && f.model.as_deref() == Some(model.as_str()))
                .map(|(p, _)| p.display().to_string());
            let replaced = state.shadow_files.get(path).and_then(|f| f.model.clone());
            (other, replaced)
        };
        if let Some(other) = other {
            let error = crate::FileError {
                file,
                step: crate::Step::Conflict,
                message: format!("a shadow run of '{model}' is already going with {other}"),
                at: std::time::SystemTime::now(),
            };
            self.refuse(path, Some(hash), error).await;
            return;
        }
        if let Some(old) = replaced.filter(|old| *old != model) {
            self.end_shadow_of(&old, &format!("{file} now holds a candidate of '{model}'"))
                .await;
        }
        let run = ShadowRun {
            model: model.clone(),
            version: plugin.version().to_string(),
            file: file.clone(),
            ..Default::default()
        };
        // A run of this very candidate that is still going (a restart, or another process
        // of this database looking at the folder) goes on; anything else starts over.
        let going = match self.inner.store.shadow(&model, 0).await {
            Ok(Some((r, _))) => r.version == run.version && r.ended.is_none(),
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(model, file, "cannot read the shadow run: {e}");
                return;
            }
        };
        if !going && let Err(e) = self.inner.store.start_shadow(&run).await {
            tracing::warn!(model, file, "cannot start the shadow run: {e}");
            return;
        }
        let live = self.inner.plugins.get(&model);
        self.inner.shadows.insert(plugin.clone());
        {
            let mut state = self.inner.state.lock().expect("registry state");
            state.files.remove(path);
            state.shadow_files.insert(
                path.to_path_buf(),
                FileState {
                    hash: Some(hash),
                    model: Some(model.clone()),
                    error: None,
                },
            );
        }
        let _ = self.inner.store.forget_file(&file).await;
        match live {
            Some(live) if live.version() == plugin.version() => tracing::warn!(
                model,
                file,
                version = short(plugin.version()),
                "shadow run started, but the candidate is the live version: nothing will differ"
            ),
            Some(live) => tracing::info!(
                model,
                file,
                candidate = short(plugin.version()),
                live = short(live.version()),
                "shadow run started: the candidate is called on every live batch and its differences recorded"
            ),
            None => tracing::warn!(
                model,
                file,
                "shadow run started, but the model has no live version to compare with yet"
            ),
        }
    }

    /// A file left the shadow folder: its run ends (its findings stay readable).
    pub(crate) async fn shadow_removed(&self, path: &Path) {
        let file = path.display().to_string();
        let known = {
            let mut state = self.inner.state.lock().expect("registry state");
            state.files.remove(path);
            state.shadow_files.remove(path)
        };
        let _ = self.inner.store.forget_file(&file).await;
        if let Some(model) = known.and_then(|k| k.model) {
            self.end_shadow_of(&model, &format!("{file} left the shadow folder"))
                .await;
        }
    }

    async fn end_shadow_of(&self, model: &str, why: &str) {
        if let Some(candidate) = self.inner.shadows.remove(model) {
            match self
                .inner
                .store
                .end_shadow(model, candidate.version(), why)
                .await
            {
                Ok(_) => tracing::info!(model, "shadow run ended: {why}"),
                Err(e) => tracing::warn!(model, "cannot end the shadow run: {e}"),
            }
        }
    }
}

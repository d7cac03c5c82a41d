//! `flowhost plugins rollback`: make an earlier version of a model current.

use crate::{archive, short};
use flowhost_runtime::Runtime;
use flowhost_store::{CurrentChange, Store, VersionSource};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("model '{0}' is not known to this database")]
    UnknownModel(String),
    #[error("model '{model}' has no earlier version to roll back to (versions kept: {kept})")]
    NoEarlier { model: String, kept: usize },
    #[error("model '{model}' has no version starting with '{to}'; kept: {kept}")]
    NoSuchVersion {
        model: String,
        to: String,
        kept: String,
    },
    #[error("'{to}' matches several versions of '{model}': {matches}; give more digits")]
    Ambiguous {
        model: String,
        to: String,
        matches: String,
    },
    #[error("version {version} of '{model}' cannot be loaded from {file}: {message}")]
    Unloadable {
        model: String,
        version: String,
        file: String,
        message: String,
    },
    #[error("{0}")]
    Other(String),
}

/// Makes `to` (a version or a unique prefix of one), or by default the version that was
/// current before the present one, the current version of `model` in the database, after
/// checking that its kept copy still loads and passes the probe. A running host picks it up
/// within its sync interval; a restart keeps it until a new file for the model arrives in
/// the plugins folder. Returns the version now current.
pub async fn rollback(
    store: &Store,
    runtime: &Runtime,
    versions_dir: &Path,
    model: &str,
    to: Option<&str>,
) -> Result<String, RollbackError> {
    let other = |e: flowhost_store::StoreError| RollbackError::Other(e.to_string());
    let states = store.plugin_states().await.map_err(other)?;
    let Some(state) = states.into_iter().find(|s| s.model == model) else {
        return Err(RollbackError::UnknownModel(model.to_string()));
    };
    // Most recently current first.
    let versions = store.plugin_versions(Some(model)).await.map_err(other)?;
    let kept = || {
        versions
            .iter()
            .map(|v| short(&v.version))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let target = match to {
        Some(prefix) => {
            let matches: Vec<_> = versions
                .iter()
                .filter(|v| v.version.starts_with(prefix))
                .collect();
            match matches.as_slice() {
                [one] => (*one).clone(),
                [] => {
                    return Err(RollbackError::NoSuchVersion {
                        model: model.into(),
                        to: prefix.into(),
                        kept: kept(),
                    });
                }
                many => {
                    return Err(RollbackError::Ambiguous {
                        model: model.into(),
                        to: prefix.into(),
                        matches: many
                            .iter()
                            .map(|v| short(&v.version))
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
            }
        }
        None => versions
            .iter()
            .find(|v| v.version != state.version)
            .cloned()
            .ok_or(RollbackError::NoEarlier {
                model: model.into(),
                kept: versions.len(),
            })?,
    };
    let file = archive::path(versions_dir, model, &target.version);
    let file = if file.exists() {
        file
    } else {
        Path::new(&target.archive).to_path_buf()
    };
    let unloadable = |message: String| RollbackError::Unloadable {
        model: model.into(),
        version: short(&target.version).into(),
        file: file.display().to_string(),
        message,
    };
    let runtime = runtime.clone();
    let path = file.clone();
    let plugin = tokio::task::spawn_blocking(move || {
        let plugin = runtime.load(&path).map_err(|e| e.error.to_string())?;
        plugin.probe().map_err(|e| format!("probe failed: {e}"))?;
        Ok::<_, String>(plugin)
    })
    .await
    .map_err(|e| unloadable(e.to_string()))?
    .map_err(unloadable)?;
    if plugin.version() != target.version || plugin.description().model != model {
        return Err(unloadable(format!(
            "the kept copy is '{}' version {}",
            plugin.description().model,
            short(plugin.version())
        )));
    }
    // The folder's version stays the reference for "a new file arrived".
    let folder_version = match state.source {
        VersionSource::Folder => Some(state.version.clone()),
        VersionSource::Rollback => state.folder_version.clone(),
    };
    store
        .set_current(&CurrentChange {
            model: model.into(),
            kind: plugin.description().kind.as_str().into(),
            version: target.version.clone(),
            source: VersionSource::Rollback,
            folder_version,
        })
        .await
        .map_err(other)?;
    Ok(target.version)
}

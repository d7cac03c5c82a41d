//! The projection stage: one batch of dirty references of one model.

use crate::associate::BatchDone;
use crate::isolate::isolate;
use crate::{Engine, EngineError};
use flowhost_core::{Group, Kind, Projection};
use flowhost_runtime::Plugin;
use flowhost_store::{CommitError, ProjectFailure, Stage, ViewRow};

impl Engine {
    /// Projects the next batch of dirty references of a model (up to `size`).
    pub async fn project_batch(&self, model: &str, size: usize) -> Result<BatchDone, EngineError> {
        let Some(plugin) = self.inner.plugins.get(model) else {
            return Ok(BatchDone::default());
        };
        if plugin.description().kind == Kind::ValueObject
            || !self.breaker_allows(Stage::Project, &plugin)
        {
            return Ok(BatchDone::default());
        }
        let Some(lease) = self.lease(Stage::Project, model).await? else {
            return Ok(BatchDone::default());
        };
        let size = size.min(plugin.limits().max_batch);
        let batch = self.inner.store.dirty_groups(model, size).await?;
        if batch.groups.is_empty() {
            return Ok(BatchDone::default());
        }
        let size = batch.groups.len();
        let work = async {
            let call = plugin.clone();
            let groups = batch.groups;
            let called = std::time::Instant::now();
            let (groups, results, calls) = tokio::task::spawn_blocking(move || {
                let mut calls = 0;
                let results = isolate(&groups, &|g: &[Group]| call.project(g), &mut calls);
                (groups, results, calls)
            })
            .await
            .map_err(|e| EngineError::Worker {
                model: model.to_string(),
                message: e.to_string(),
            })?;
            let plugin_time = called.elapsed();

            let mut views = Vec::with_capacity(groups.len());
            let mut errors = std::collections::HashMap::new();
            for (group, result) in groups.iter().zip(results) {
                match result {
                    Ok(p) => views.push(view_row(model, &plugin, group, p)),
                    Err(error) => {
                        errors.insert(group.reference.clone(), error);
                    }
                }
            }
            // A failed reference keeps its mark with the error: skipped until new records,
            // a new plugin version or a re-queue give it another try.
            let (failed, seen): (Vec<Mark>, Vec<Mark>) = batch
                .seen
                .into_iter()
                .partition(|(r, _)| errors.contains_key(r));
            let failed: Vec<ProjectFailure> = failed
                .into_iter()
                .map(|(reference, stamp)| ProjectFailure {
                    error: format!(
                        "plugin {} ({}): {}",
                        plugin.file(),
                        &plugin.version()[..12],
                        errors[&reference]
                    ),
                    reference,
                    stamp,
                })
                .collect();
            if let Some(first) = failed.first() {
                tracing::warn!(
                    model,
                    failed = failed.len(),
                    of = groups.len(),
                    "projection failed for some references; they keep their mark with the error: {}",
                    first.error
                );
            }
            let first_error = failed.first().map(|f| f.error.clone());
            self.after_batch(
                Stage::Project,
                &plugin,
                groups.len(),
                failed.len(),
                first_error.as_deref(),
            )
            .await;
            match self
                .inner
                .store
                .commit_projection(&lease, &views, &seen, &failed)
                .await
            {
                Ok(()) => Ok(BatchDone {
                    records: views.len(),
                    healed: 0,
                    calls,
                    retry: false,
                    plugin_time,
                }),
                Err(CommitError::VersionChanged { model, current }) => {
                    Ok(self.version_changed(&model, &current).await)
                }
                Err(CommitError::LeaseLost { .. }) => Ok(BatchDone::default()),
                Err(e) => Err(e.into()),
            }
        };
        crate::in_batch_span(Stage::Project, model, size, &plugin, work).await
    }
}

/// A dirty mark as read: (reference, stamp).
type Mark = (String, i64);

fn view_row(model: &str, plugin: &Plugin, group: &Group, p: Projection) -> ViewRow {
    let mut parents = serde_json::Map::new();
    for link in p.parents {
        parents.insert(link.model, serde_json::Value::String(link.reference));
    }
    ViewRow {
        reference: p.reference,
        model: model.to_string(),
        first_seq: group.records.first().map(|r| r.record.seq).unwrap_or(0),
        canonical: p.canonical,
        root: p.root,
        lineage: p.lineage,
        parents: serde_json::Value::Object(parents).to_string(),
        plugin_version: plugin.version().to_string(),
    }
}

//! The projection stage: one batch of dirty references of one model.

use crate::associate::BatchDone;
use crate::{Engine, EngineError};
use flowhost_core::{Group, Kind, Projection};
use flowhost_runtime::Plugin;
use flowhost_store::{CommitError, Stage, ViewRow};
use tracing::Instrument;

impl Engine {
    /// Projects the next batch of dirty references of a model (up to `size`).
    pub async fn project_batch(&self, model: &str, size: usize) -> Result<BatchDone, EngineError> {
        let Some(plugin) = self.inner.plugins.get(model) else {
            return Ok(BatchDone::default());
        };
        if plugin.description().kind == Kind::ValueObject {
            return Ok(BatchDone::default());
        }
        let Some(lease) = self.lease(Stage::Project, model).await? else {
            return Ok(BatchDone::default());
        };
        let batch = self.inner.store.dirty_groups(model, size).await?;
        if batch.groups.is_empty() {
            return Ok(BatchDone::default());
        }
        let span = tracing::debug_span!(
            "batch",
            stage = "project",
            model,
            size = batch.groups.len(),
            plugin = &plugin.version()[..12]
        );
        async {
            let call = plugin.clone();
            let groups = batch.groups;
            let (groups, results, calls) = tokio::task::spawn_blocking(move || {
                let mut calls = 0;
                let results = project_isolating(&call, &groups, &mut calls);
                (groups, results, calls)
            })
            .await
            .map_err(|e| EngineError::Worker {
                model: model.to_string(),
                message: e.to_string(),
            })?;

            let mut views = Vec::with_capacity(groups.len());
            let mut failed = std::collections::HashSet::new();
            for (group, result) in groups.iter().zip(results) {
                match result {
                    Ok(p) => views.push(view_row(model, &plugin, group, p)),
                    Err(error) => {
                        // The reference stays dirty: a fixed plugin projects it later.
                        tracing::error!(model, reference = %group.reference, "project failed: {error}");
                        failed.insert(group.reference.clone());
                    }
                }
            }
            let seen: Vec<(String, i64)> = batch
                .seen
                .into_iter()
                .filter(|(r, _)| !failed.contains(r))
                .collect();
            match self.inner.store.commit_projection(&lease, &views, &seen).await {
                Ok(()) => Ok(BatchDone {
                    records: views.len(),
                    healed: 0,
                    calls,
                }),
                Err(CommitError::LeaseLost { .. }) => Ok(BatchDone::default()),
                Err(e) => Err(e.into()),
            }
        }
        .instrument(span)
        .await
    }
}

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

/// Calls `project` on the whole batch, splitting on failure like association does.
fn project_isolating(
    plugin: &Plugin,
    groups: &[Group],
    calls: &mut usize,
) -> Vec<Result<Projection, String>> {
    *calls += 1;
    match plugin.project(groups) {
        Ok(out) => out.into_iter().map(Ok).collect(),
        Err(e) if groups.len() == 1 => vec![Err(e.to_string())],
        Err(e) => {
            tracing::warn!(model = %plugin.description().model, size = groups.len(), "project failed ({e}); narrowing the batch down");
            let (left, right) = groups.split_at(groups.len() / 2);
            let mut out = project_isolating(plugin, left, calls);
            out.extend(project_isolating(plugin, right, calls));
            out
        }
    }
}

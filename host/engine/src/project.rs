//! The projection stage: one batch of dirty references of one model.

use crate::isolate::Slot;
use crate::{BatchDone, Engine, EngineError};
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
            let (groups, isolated, plugin_time) = self
                .call_isolated(model, batch.groups, move |g: &[Group]| call.project(g))
                .await?;
            let (calls, waiting, narrow_to) =
                (isolated.calls, isolated.waiting(), isolated.narrow_to);
            let (failed, first_error) = isolated.failures();
            let first_error = first_error.map(|e| {
                format!(
                    "plugin {} ({}): {e}",
                    plugin.file(),
                    &plugin.version()[..12]
                )
            });
            self.after_isolation(
                Stage::Project,
                &plugin,
                &isolated,
                failed,
                first_error.as_deref(),
            )
            .await;

            let mut views = Vec::with_capacity(groups.len());
            let mut errors = std::collections::HashMap::new();
            let mut undecided = std::collections::HashSet::new();
            for (group, slot) in groups.iter().zip(isolated.slots) {
                match slot {
                    Slot::Done(p) => views.push(view_row(model, &plugin, group, p)),
                    Slot::Failed(error) => {
                        errors.insert(group.reference.clone(), error);
                    }
                    // Left dirty as it is: a later batch projects it.
                    Slot::Wait => {
                        undecided.insert(group.reference.clone());
                    }
                }
            }
            let marks: Vec<Mark> = batch
                .seen
                .into_iter()
                .filter(|(r, _)| !undecided.contains(r))
                .collect();
            // A failed reference keeps its mark with the error: skipped until new records,
            // a new plugin version or a re-queue give it another try.
            let (failed, seen): (Vec<Mark>, Vec<Mark>) =
                marks.into_iter().partition(|(r, _)| errors.contains_key(r));
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
            if let Some(first) = &first_error {
                tracing::warn!(
                    model,
                    failed = failed.len(),
                    of = groups.len(),
                    "projection failed for some references; they keep their mark with the error: {}",
                    first
                );
            }
            let done = BatchDone {
                records: views.len(),
                calls,
                plugin_time,
                waiting,
                narrow_to,
                ..Default::default()
            };
            if views.is_empty() && failed.is_empty() {
                return Ok(done);
            }
            match self
                .inner
                .store
                .commit_projection(&lease, &views, &seen, &failed)
                .await
            {
                Ok(()) => Ok(done),
                Err(CommitError::VersionChanged { model, current }) => {
                    Ok(self.version_changed(&model, &current).await)
                }
                Err(CommitError::LeaseLost { .. }) => Ok(BatchDone::default()),
                Err(e) => Err(e.into()),
            }
        };
        crate::in_batch_span(
            Stage::Project,
            model,
            size,
            &plugin,
            self.heartbeat(&lease, work),
        )
        .await
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

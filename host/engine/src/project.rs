//! The projection stage: one batch of dirty references of one model.

use crate::isolate::Slot;
use crate::{BatchDone, Engine, EngineError};
use flowhost_core::{Group, Kind, Projection};
use flowhost_runtime::Plugin;
use flowhost_store::{CommitError, Lease, ProjectFailure, Stage, ViewRow};

impl Engine {
    /// Projects the next batch of dirty references of a model (up to `size`), claimed for
    /// `holder` (one of this engine's projection workers): workers of this and other hosts
    /// project the same model at once, each its own references.
    pub async fn project_batch(
        &self,
        model: &str,
        size: usize,
        holder: &str,
    ) -> Result<BatchDone, EngineError> {
        let Some(plugin) = self.inner.plugins.get(model) else {
            return Ok(BatchDone::default());
        };
        if plugin.description().kind == Kind::ValueObject
            || !self.breaker_allows(Stage::Project, &plugin)
        {
            return Ok(BatchDone::default());
        }
        let lease = Lease {
            stage: Stage::Project,
            model: model.to_string(),
            holder: holder.to_string(),
        };
        let size = size.min(plugin.limits().max_batch);
        let ttl = self.inner.config.lease_ttl.as_micros() as i64;
        let batch = self.inner.store.claim_dirty(&lease, size, ttl).await?;
        if batch.seen.is_empty() {
            return self.claimed_elsewhere(&lease).await;
        }
        if batch.groups.is_empty() {
            // Marks with no keyed records behind them: nothing to project; cleared (and
            // the stage goes on to the next batch).
            let seen = batch.seen;
            return match self
                .inner
                .store
                .commit_projection(&lease, &[], &seen, &[])
                .await
            {
                Ok(_) | Err(CommitError::VersionChanged { .. }) => Ok(BatchDone {
                    retry: true,
                    ..BatchDone::default()
                }),
                Err(e) => Err(e.into()),
            };
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
            let first_error = first_error.map(|e: String| {
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

            // One unit per decided reference, in batch order: its new view, or the error
            // that keeps its mark. Undecided references stay dirty as they are: a later
            // batch projects them.
            let mut slots: std::collections::HashMap<String, Slot<Projection>> = groups
                .iter()
                .map(|g| g.reference.clone())
                .zip(isolated.slots)
                .collect();
            let label = format!("plugin {} ({})", plugin.file(), &plugin.version()[..12]);
            let groups_by_ref: std::collections::HashMap<&str, &Group> =
                groups.iter().map(|g| (g.reference.as_str(), g)).collect();
            let mut units = Vec::with_capacity(batch.seen.len());
            for (reference, stamp) in batch.seen {
                let unit = match slots.remove(&reference) {
                    Some(Slot::Done(p)) => Unit::View(
                        view_row(model, &plugin, groups_by_ref[reference.as_str()], p),
                        stamp,
                    ),
                    // A failed reference keeps its mark with the error: skipped until new
                    // records, a new plugin version or a re-queue give it another try.
                    Some(Slot::Failed(error)) => Unit::Failed(ProjectFailure {
                        error: format!("{label}: {error}"),
                        reference,
                        stamp,
                    }),
                    // Left dirty as it is: a later batch projects it.
                    Some(Slot::Wait) => continue,
                    // A mark with no keyed records behind it has nothing to project: cleared.
                    None => Unit::Clear(reference, stamp),
                };
                units.push(unit);
            }
            let failed = units
                .iter()
                .filter(|u| matches!(u, Unit::Failed(_)))
                .count();
            if let Some(first) = &first_error {
                tracing::warn!(
                    model,
                    failed,
                    of = groups.len(),
                    "projection failed for some references; they keep their mark with the error: {}",
                    first
                );
            }
            let mut done = BatchDone {
                calls,
                plugin_time,
                waiting,
                narrow_to,
                ..Default::default()
            };
            // A commit the database refuses because of the data in it is split until the
            // refused views are alone; each keeps its mark with the database's reason and
            // the rest commit (the rare path: 2·log2(n) commits per refused view).
            let mut spans = std::collections::VecDeque::from([(0, units.len())]);
            while let Some((lo, hi)) = spans.pop_front() {
                let span = &units[lo..hi];
                let (views, seen, failed) = Unit::split(span);
                if seen.is_empty() && failed.is_empty() {
                    continue;
                }
                match self
                    .inner
                    .store
                    .commit_projection(&lease, &views, &seen, &failed)
                    .await
                {
                    Ok(written) => done.records += written,
                    Err(CommitError::VersionChanged { model, current }) => {
                        return Ok(self.version_changed(&model, &current).await);
                    }
                    Err(CommitError::LeaseLost { .. }) => return Ok(BatchDone::default()),
                    Err(e) => match e.refused() {
                        Some(message) if hi - lo == 1 => {
                            let Unit::View(view, stamp) = &units[lo] else {
                                return Err(e.into());
                            };
                            tracing::warn!(model, reference = %view.reference, "the database refused a view; the reference keeps its mark: {message}");
                            let refused = ProjectFailure {
                                reference: view.reference.clone(),
                                stamp: *stamp,
                                error: format!(
                                    "STORE_REFUSED: the database refused this view: {message}"
                                ),
                            };
                            self.inner
                                .store
                                .commit_projection(&lease, &[], &[], &[refused])
                                .await
                                .or_else(|e| match e {
                                    CommitError::LeaseLost { .. }
                                    | CommitError::VersionChanged { .. } => Ok(0),
                                    e => Err(e),
                                })?;
                        }
                        Some(_) => {
                            let mid = lo + (hi - lo) / 2;
                            spans.push_front((mid, hi));
                            spans.push_front((lo, mid));
                        }
                        None => return Err(e.into()),
                    },
                }
            }
            Ok(done)
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

    /// A claim found nothing free. When other live workers hold the model's marks the batch
    /// says so (a `process --until-idle` waits for them); the claims of a process on this
    /// machine that is gone are let go at once, and claimed again.
    async fn claimed_elsewhere(&self, claim: &Lease) -> Result<BatchDone, EngineError> {
        let store = &self.inner.store;
        let now = flowhost_store::now_micros();
        let others: Vec<String> = store
            .leases()
            .await?
            .into_iter()
            .filter(|l| {
                l.stage == Stage::Project.as_str()
                    && l.model == claim.model
                    && l.expires_micros >= now
                    && !self.is_mine(&l.holder)
            })
            .map(|l| l.holder)
            .collect();
        if others.is_empty() {
            return Ok(BatchDone::default());
        }
        let dead: Vec<String> = others
            .iter()
            .filter(|h| crate::holder::is_dead_local(h))
            .cloned()
            .collect();
        if !dead.is_empty() {
            let released = store.release_claims(&dead).await?;
            tracing::info!(model = %claim.model, from = ?dead, released, "let go the projection claims of a process that is gone");
            return Ok(BatchDone {
                retry: true,
                ..BatchDone::default()
            });
        }
        Ok(BatchDone::held_elsewhere())
    }
}

/// A dirty mark as read: (reference, stamp).
type Mark = (String, i64);

/// What a projection batch commits for one reference.
enum Unit {
    /// Its new view and the mark it clears.
    View(ViewRow, i64),
    /// The error its mark keeps.
    Failed(ProjectFailure),
    /// A mark to clear without a view (no keyed records behind it).
    Clear(String, i64),
}

impl Unit {
    /// A span of units as the store's commit takes them: views, marks seen, failures.
    fn split(units: &[Unit]) -> (Vec<ViewRow>, Vec<Mark>, Vec<ProjectFailure>) {
        let (mut views, mut seen, mut failed) = (Vec::new(), Vec::new(), Vec::new());
        for unit in units {
            match unit {
                Unit::View(view, stamp) => {
                    seen.push((view.reference.clone(), *stamp));
                    views.push(view.clone());
                }
                Unit::Failed(f) => failed.push(f.clone()),
                Unit::Clear(reference, stamp) => seen.push((reference.clone(), *stamp)),
            }
        }
        (views, seen, failed)
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

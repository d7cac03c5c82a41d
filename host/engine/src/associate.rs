//! The association stage: one batch of one model.

use crate::isolate::isolate;
use crate::{Engine, EngineError};
use flowhost_core::association::{self, Outcome};
use flowhost_core::{Association, Kind, ParkReason, Record};
use flowhost_runtime::Plugin;
use flowhost_store::{
    AssociationOutcome, CommitError, KeyedRow, Lease, ParkRow, Pending, Stage, now_micros,
};
use std::collections::BTreeSet;

/// A commit that lost a key race is decided again; this bounds the retries.
const MAX_DECISIONS: usize = 5;

/// What one batch did.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchDone {
    pub records: usize,
    pub healed: u64,
    /// Plugin calls made (more than one only when a failure was narrowed down).
    pub calls: usize,
    /// Nothing was committed but work is waiting: the batch ran on a plugin version that
    /// another process replaced; it runs again on the current one.
    pub retry: bool,
    /// Time spent in plugin calls.
    pub plugin_time: std::time::Duration,
}

impl Engine {
    /// Leases a stage of a model, taking it over from a dead process on this machine.
    pub(crate) async fn lease(
        &self,
        stage: Stage,
        model: &str,
    ) -> Result<Option<Lease>, EngineError> {
        let store = &self.inner.store;
        let ttl = self.inner.config.lease_ttl.as_micros() as i64;
        let lease = Lease {
            stage,
            model: model.to_string(),
            holder: self.inner.holder.clone(),
        };
        if store.acquire_lease(&lease, ttl).await? {
            return Ok(Some(lease));
        }
        if let Some(current) = store.lease_holder(stage, model).await?
            && crate::holder::is_dead_local(&current)
            && store.take_over_lease(&lease, &current, ttl).await?
        {
            tracing::info!(model, stage = stage.as_str(), from = %current, "took over the lease of a process that is gone");
            return Ok(Some(lease));
        }
        Ok(None)
    }

    /// Associates the next batch of a model (up to `size` records).
    pub async fn associate_batch(
        &self,
        model: &str,
        size: usize,
    ) -> Result<BatchDone, EngineError> {
        let Some(plugin) = self.inner.plugins.get(model) else {
            return Ok(BatchDone::default());
        };
        if !self.breaker_allows(Stage::Associate, &plugin) {
            return Ok(BatchDone::default());
        }
        let Some(lease) = self.lease(Stage::Associate, model).await? else {
            return Ok(BatchDone::default());
        };
        let size = size.min(plugin.limits().max_batch);
        let pending = self.inner.store.pending(model, size).await?;
        if pending.is_empty() {
            return Ok(BatchDone::default());
        }
        let size = pending.len();
        crate::in_batch_span(
            Stage::Associate,
            model,
            size,
            &plugin,
            self.associate_pending(&plugin, &lease, pending),
        )
        .await
    }

    async fn associate_pending(
        &self,
        plugin: &Plugin,
        lease: &Lease,
        pending: Vec<Pending>,
    ) -> Result<BatchDone, EngineError> {
        let records: Vec<Record> = pending.iter().map(|p| p.record.clone()).collect();
        let call = plugin.clone();
        let called = std::time::Instant::now();
        let (records, results, calls) = tokio::task::spawn_blocking(move || {
            let mut calls = 0;
            let results = isolate(&records, &|r: &[Record]| call.associate(r), &mut calls);
            (records, results, calls)
        })
        .await
        .map_err(|e| EngineError::Worker {
            model: lease.model.clone(),
            message: e.to_string(),
        })?;
        let plugin_time = called.elapsed();

        let failed = results.iter().filter(|r| r.is_err()).count();
        let error = results.iter().find_map(|r| r.as_ref().err());
        self.after_batch(
            Stage::Associate,
            plugin,
            records.len(),
            failed,
            error.map(String::as_str),
        )
        .await;

        let input = Input::new(&records, &results);
        for attempt in 1..=MAX_DECISIONS {
            let outcome = self.decide(plugin, &pending, &input).await?;
            match self.inner.store.commit_association(lease, &outcome).await {
                Ok(summary) => {
                    return Ok(BatchDone {
                        records: records.len(),
                        healed: summary.healed,
                        calls,
                        retry: false,
                        plugin_time,
                    });
                }
                Err(CommitError::VersionChanged { model, current }) => {
                    return Ok(self.version_changed(&model, &current).await);
                }
                Err(CommitError::KeyConflict(keys)) if attempt < MAX_DECISIONS => {
                    tracing::debug!(model = %lease.model, ?keys, "keys claimed elsewhere first; deciding the batch again");
                }
                Err(CommitError::LeaseLost { .. }) => {
                    tracing::warn!(model = %lease.model, "lost the association lease; the batch is left to its new holder");
                    return Ok(BatchDone::default());
                }
                Err(e) => return Err(e.into()),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Looks up the batch's keys and parents (one statement each) and
    /// decides every record.
    async fn decide(
        &self,
        plugin: &Plugin,
        pending: &[Pending],
        input: &Input<'_>,
    ) -> Result<AssociationOutcome, EngineError> {
        let description = plugin.description();
        let model = description.model.as_str();
        let now = now_micros();
        let (records, results) = (input.records, input.results);
        let (ok, ok_records, ok_assocs) = (&input.ok, &input.ok_records[..], &input.ok_assocs[..]);

        // One statement for the batch's own keys, one for all its parents.
        let (own, parent_keys) = association::lookups(description.kind, ok_records, ok_assocs);
        let owners = self.inner.store.lookup_keys(model, &own).await?;
        let parents = self.inner.store.lookup_parents(&parent_keys).await?;

        let mut mint = || uuid::Uuid::now_v7().to_string();
        let decision = association::decide(
            model,
            description.kind,
            ok_records,
            ok_assocs,
            &owners,
            &parents,
            &mut mint,
        );

        let mut outcome = AssociationOutcome {
            model: model.to_string(),
            plugin_version: plugin.version().to_string(),
            now_micros: now,
            done: pending.iter().map(|p| p.pos).collect(),
            claims: decision
                .claims
                .into_iter()
                .map(|c| (c.key, c.reference))
                .collect(),
            // Queue positions never repeat, so the batch's last one marks its dirty
            // references uniquely (see the store's commit_projection).
            stamp: pending.iter().map(|p| p.pos).max().unwrap_or(0),
            ..Default::default()
        };
        let park = |i: usize, reason: ParkReason, details: String, awaiting| ParkRow {
            seq: pending[i].record.seq,
            reason,
            details,
            awaiting,
            attempts: pending[i].attempts + 1,
            first_micros: pending[i].first_parked_micros.unwrap_or(now),
        };
        let mut dirty = BTreeSet::new();
        for (&i, out) in ok.iter().zip(decision.outcomes) {
            match out {
                Outcome::Keyed {
                    reference, parents, ..
                } => {
                    dirty.insert(reference.clone());
                    outcome.keyed.push(KeyedRow {
                        seq: records[i].seq,
                        reference: Some(reference),
                        parents,
                    });
                }
                Outcome::Attached { parents } => {
                    outcome.keyed.push(KeyedRow {
                        seq: records[i].seq,
                        reference: None,
                        parents,
                    });
                }
                Outcome::Parked {
                    reason,
                    details,
                    awaiting,
                } => {
                    outcome.parked.push(park(i, reason, details, awaiting));
                }
            }
        }
        for (i, result) in results.iter().enumerate() {
            if let Err(error) = result {
                outcome.parked.push(park(
                    i,
                    ParkReason::PluginFailed,
                    format!(
                        "plugin {} ({}): {error}",
                        plugin.file(),
                        &plugin.version()[..12]
                    ),
                    None,
                ));
            }
        }
        if description.kind == Kind::Entity {
            outcome.dirty = dirty.into_iter().collect();
        }
        Ok(outcome)
    }
}

/// A batch's records with the plugin's results, and the part the plugin succeeded on
/// (which takes part in the decision; records it failed on claim nothing). Built once per
/// batch, not per decision attempt; borrowed when nothing failed.
struct Input<'a> {
    records: &'a [Record],
    results: &'a [Result<Association, String>],
    ok: Vec<usize>,
    ok_records: std::borrow::Cow<'a, [Record]>,
    ok_assocs: Vec<Association>,
}

impl<'a> Input<'a> {
    fn new(records: &'a [Record], results: &'a [Result<Association, String>]) -> Self {
        let ok: Vec<usize> = (0..records.len()).filter(|&i| results[i].is_ok()).collect();
        let ok_records = if ok.len() == records.len() {
            std::borrow::Cow::Borrowed(records)
        } else {
            std::borrow::Cow::Owned(ok.iter().map(|&i| records[i].clone()).collect())
        };
        let ok_assocs = results
            .iter()
            .filter_map(|r| r.as_ref().ok().cloned())
            .collect();
        Self {
            records,
            results,
            ok,
            ok_records,
            ok_assocs,
        }
    }
}

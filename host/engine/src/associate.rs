//! The association stage: one batch of one model.

use crate::isolate::Slot;
use crate::{BatchDone, Engine, EngineError};
use flowhost_core::association::{self, Outcome};
use flowhost_core::{Association, Kind, ParkReason, Record};
use flowhost_runtime::{CallError, Plugin};
use flowhost_store::{
    AssociationOutcome, CommitError, KeyedRow, Lease, ParkRow, Pending, Stage, now_micros,
};
use std::collections::BTreeSet;

/// A commit that lost a key race is decided again; this bounds the retries.
const MAX_DECISIONS: usize = 5;

impl Engine {
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
        // A re-association of the model is under way in this process: it holds this until
        // its commit; the batch waits for the next turn.
        let lock = self.association_lock(model);
        let Ok(_batch) = lock.try_lock() else {
            return Ok(BatchDone::default());
        };
        let Some(lease) = self.lease(Stage::Associate, model).await? else {
            return Ok(BatchDone::held_elsewhere());
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
            self.heartbeat(&lease, self.associate_pending(&plugin, &lease, pending)),
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
        let (records, isolated, plugin_time) = self
            .call_isolated(&lease.model, records, move |r: &[Record]| call.associate(r))
            .await?;
        let (calls, waiting, narrow_to) = (isolated.calls, isolated.waiting(), isolated.narrow_to);
        let (failed, error) = isolated.failures();
        self.after_isolation(
            Stage::Associate,
            plugin,
            &isolated,
            failed,
            error.as_deref(),
        )
        .await;

        // Records the budget left undecided are the batch's end: they stay in the queue, in
        // order, and the next batch starts with them.
        let decided = records.len() - waiting;
        let (records, pending) = (&records[..decided], &pending[..decided]);
        let results: Vec<Result<Association, CallError>> = isolated
            .slots
            .into_iter()
            .take(decided)
            .map(|s| match s {
                Slot::Done(a) => Ok(a),
                Slot::Failed(e) => Err(e),
                Slot::Wait => unreachable!("waiting records are the batch's end"),
            })
            .collect();
        let mut done = BatchDone {
            calls,
            plugin_time,
            waiting,
            narrow_to,
            ..Default::default()
        };
        if decided == 0 {
            return Ok(done);
        }

        // Spans of the batch to commit, in order. A commit the database refuses because of
        // the data in it is split in two until the refused records are alone; those park
        // STORE_REFUSED and the rest commit. Committing the halves in order decides exactly
        // as one commit would (sequential equivalence). Only this rare path costs more than
        // one commit per batch: 2·log2(n) for each refused record.
        let mut spans = std::collections::VecDeque::from([(0, decided)]);
        while let Some((lo, hi)) = spans.pop_front() {
            let span = (&pending[lo..hi], &records[lo..hi], &results[lo..hi]);
            match self.commit_span(plugin, lease, span).await? {
                Committed::Done(healed) => {
                    done.records += hi - lo;
                    done.healed += healed;
                }
                Committed::Refused(message) if hi - lo == 1 => {
                    self.park_refused(plugin, lease, &pending[lo], &message)
                        .await?;
                    done.records += 1;
                }
                Committed::Refused(_) => {
                    let mid = lo + (hi - lo) / 2;
                    spans.push_front((mid, hi));
                    spans.push_front((lo, mid));
                }
                Committed::Stop(stop) => return Ok(stop),
            }
        }
        // The whole batch is committed: a candidate version, if any, is called on it off
        // this path (the offer never waits).
        if let Some(shadows) = &self.inner.shadows {
            shadows.offer(plugin, records, &results);
        }
        Ok(done)
    }

    /// Decides and commits one span of a batch, deciding again when another host claimed
    /// some of its keys first.
    async fn commit_span(
        &self,
        plugin: &Plugin,
        lease: &Lease,
        (pending, records, results): (&[Pending], &[Record], &[Result<Association, CallError>]),
    ) -> Result<Committed, EngineError> {
        let input = Input::new(records, results);
        for attempt in 1..=MAX_DECISIONS {
            let outcome = self.decide(plugin, pending, &input).await?;
            match self.inner.store.commit_association(lease, &outcome).await {
                Ok(summary) => {
                    // In intake order: a new version is judged on its first records.
                    let mut decided: Vec<(i64, bool)> = outcome
                        .keyed
                        .iter()
                        .map(|k| (k.seq, false))
                        .chain(outcome.parked.iter().map(|p| {
                            let failed =
                                matches!(p.reason, ParkReason::PluginFailed | ParkReason::Rejected);
                            (p.seq, failed)
                        }))
                        .collect();
                    decided.sort_unstable();
                    self.inner.watcher.record(
                        &lease.model,
                        plugin.version(),
                        decided.into_iter().map(|(_, failed)| failed),
                    );
                    return Ok(Committed::Done(summary.healed));
                }
                Err(CommitError::VersionChanged { model, current }) => {
                    return Ok(Committed::Stop(
                        self.version_changed(&model, &current).await,
                    ));
                }
                Err(CommitError::KeyConflict(keys)) if attempt < MAX_DECISIONS => {
                    tracing::debug!(model = %lease.model, ?keys, "keys claimed elsewhere first; deciding the batch again");
                }
                Err(CommitError::LeaseLost { .. }) => {
                    tracing::warn!(model = %lease.model, "lost the association lease; the batch is left to its new holder");
                    return Ok(Committed::Stop(BatchDone::default()));
                }
                Err(e) => match e.refused() {
                    Some(message) => {
                        tracing::debug!(model = %lease.model, records = records.len(), "the database refused a commit; splitting it: {message}");
                        return Ok(Committed::Refused(message));
                    }
                    None => return Err(e.into()),
                },
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Parks one record whose outcome the database refused, with the database's reason.
    async fn park_refused(
        &self,
        plugin: &Plugin,
        lease: &Lease,
        pending: &Pending,
        message: &str,
    ) -> Result<(), EngineError> {
        let now = now_micros();
        tracing::warn!(model = %lease.model, seq = pending.record.seq, id = %pending.record.external_id, "the database refused a record; it parks STORE_REFUSED: {message}");
        let outcome = AssociationOutcome {
            model: lease.model.clone(),
            plugin_version: plugin.version().to_string(),
            now_micros: now,
            done: vec![pending.pos],
            stamp: pending.pos,
            parked: vec![ParkRow {
                seq: pending.record.seq,
                reason: ParkReason::StoreRefused,
                details: format!("the database refused this record's outcome: {message}"),
                awaiting: None,
                attempts: pending.attempts + 1,
                first_micros: pending.first_parked_micros.unwrap_or(now),
            }],
            ..Default::default()
        };
        match self.inner.store.commit_association(lease, &outcome).await {
            Ok(_) | Err(CommitError::LeaseLost { .. } | CommitError::VersionChanged { .. }) => {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
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
            match result {
                Err(error) if error.is_plugin_fault() => outcome.parked.push(park(
                    i,
                    ParkReason::PluginFailed,
                    format!(
                        "plugin {} ({}): {error}",
                        plugin.file(),
                        &plugin.version()[..12]
                    ),
                    None,
                )),
                Err(error) => {
                    outcome
                        .parked
                        .push(park(i, ParkReason::StoreRefused, error.to_string(), None))
                }
                Ok(_) => {}
            }
        }
        if description.kind == Kind::Entity {
            outcome.dirty = dirty.into_iter().collect();
        }
        Ok(outcome)
    }
}

/// How committing a span of a batch went.
enum Committed {
    /// Written; the number of parked records it healed.
    Done(u64),
    /// The database refused it because of the data in it (its message).
    Refused(String),
    /// Nothing more of the batch may be written (lease lost, version changed): the batch's
    /// answer.
    Stop(BatchDone),
}

/// A batch's records with the plugin's results, and the part the plugin succeeded on
/// (which takes part in the decision; records it failed on claim nothing). Built once per
/// batch, not per decision attempt; borrowed when nothing failed.
struct Input<'a> {
    records: &'a [Record],
    results: &'a [Result<Association, CallError>],
    ok: Vec<usize>,
    ok_records: std::borrow::Cow<'a, [Record]>,
    ok_assocs: Vec<Association>,
}

impl<'a> Input<'a> {
    fn new(records: &'a [Record], results: &'a [Result<Association, CallError>]) -> Self {
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

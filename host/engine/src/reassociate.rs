//! Re-association: after a key-rule change, a model's records decided again from scratch
//! under its current version, as a fresh run of the same input would decide them.
//!
//! 1. Under the model's association lease (live association of the model waits), every
//!    decided record of the model (keyed or parked; not those still in the queue) is read
//!    in intake order, and the current plugin is called on them in batches.
//! 2. They are decided as **one** batch against an empty key index of the model (other
//!    models' keys as they are), which is what deciding them one at a time in intake
//!    order gives (sequential equivalence).
//! 3. References stay where the grouping allows: each new group, in order of its first
//!    record, takes the old reference of its earliest record whose reference no other
//!    group took. A group that did not change keeps its reference; a merge keeps the
//!    oldest reference; the rest of a split gets a new one. Old references left without a
//!    group are retired (their views go).
//! 4. One transaction resets the model's keys, keyed and parked rows, writes the new
//!    decisions (healing as a batch does), marks every reference for re-projection, and
//!    sends the keyed records of other models that name this model back to the queue, so
//!    their parent links follow. A crash before its commit changes nothing.
//!
//! Cost: the model's records are read and held in memory once, the plugin is called once
//! per `max_batch` of them, and the commit is one transaction proportional to the model
//! (plus its children). Projection then redoes every view of the model.

use crate::isolate::Slot;
use crate::{Engine, EngineError};
use flowhost_core::association::{self, Outcome};
use flowhost_core::{Association, Kind, ParentKey, ParkReason, Record};
use flowhost_runtime::{CallError, Plugin};
use flowhost_store::{
    AssociationOutcome, CommitError, KeyedRow, Lease, ParkRow, REPROJECT_STAMP, Reassociate, Stage,
    now_micros,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What re-association changes (or would change, in a dry run).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Reassociated {
    pub model: String,
    /// The version the records were decided by.
    pub version: String,
    /// Records decided again, and how they came out.
    pub records: usize,
    pub keyed: usize,
    pub parked: usize,
    pub references_before: usize,
    pub references_after: usize,
    /// References whose records are exactly the ones they had.
    pub unchanged: usize,
    /// Records whose reference changed (including to or from parked).
    pub moved: usize,
    /// New groups that hold records of several old references.
    pub merges: Vec<Merge>,
    /// Old references whose records went several ways.
    pub splits: Vec<Split>,
    /// Old references that no longer exist.
    pub retired: usize,
    /// Keyed records of other models sent back to the queue to find their parents again.
    pub children: usize,
    /// Whether it was committed (false: a dry run).
    pub applied: bool,
}

/// References merged into one.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Merge {
    /// The reference the group keeps.
    pub into: String,
    /// The other old references whose records it takes (retired unless another group
    /// keeps them).
    pub from: Vec<String>,
    pub records: usize,
}

/// A reference whose records go several ways.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Split {
    pub from: String,
    /// Where its records go: references, and `parked` for those that park.
    pub into: Vec<String>,
    pub records: usize,
}

impl Engine {
    /// Decides a model's records again under its current version; commits when `apply`,
    /// else only reports what would change. Needs the model's association lease: a
    /// serving process that holds it runs it between two of its batches (its association
    /// of the model waits meanwhile); elsewhere it fails with [`EngineError::Busy`] naming
    /// the holder.
    pub async fn reassociate(&self, model: &str, apply: bool) -> Result<Reassociated, EngineError> {
        let lock = self.association_lock(model);
        let _alone = lock.lock().await;
        let Some(plugin) = self.inner.plugins.get(model) else {
            return Err(EngineError::Worker {
                model: model.to_string(),
                message: "no plugin serves it".into(),
            });
        };
        let Some(lease) = self.lease(Stage::Associate, model).await? else {
            let holder = self
                .inner
                .store
                .lease_holder(Stage::Associate, model)
                .await?
                .unwrap_or_else(|| "another process".into());
            return Err(EngineError::Busy(format!(
                "the association of '{model}' is held by {holder}: run it there (`POST /v1/models/{model}/reassociate` on that host), or stop it and run this again"
            )));
        };
        let out = self
            .heartbeat(&lease, self.reassociate_under(&plugin, &lease, apply))
            .await;
        if let Err(e) = self.inner.store.release_lease(&lease).await {
            tracing::warn!(model, "cannot release the association lease: {e}");
        }
        out
    }

    async fn reassociate_under(
        &self,
        plugin: &Plugin,
        lease: &Lease,
        apply: bool,
    ) -> Result<Reassociated, EngineError> {
        let store = &self.inner.store;
        let description = plugin.description();
        let (model, kind) = (description.model.as_str(), description.kind);
        let decided = store.decided_records(model).await?;
        let (records, old): (Vec<Record>, Vec<Option<String>>) = decided.into_iter().unzip();

        // The plugin, once per batch; a record it fails on parks as in a batch.
        let mut results: Vec<Result<Association, CallError>> = Vec::with_capacity(records.len());
        for chunk in records.chunks(plugin.limits().max_batch.max(1)) {
            let call = plugin.clone();
            let (_, isolated, _) = self
                .call_isolated(model, chunk.to_vec(), move |r: &[Record]| call.associate(r))
                .await?;
            for slot in isolated.slots {
                results.push(match slot {
                    Slot::Done(a) => Ok(a),
                    Slot::Failed(e) => Err(e),
                    Slot::Wait => {
                        return Err(EngineError::Worker {
                            model: model.to_string(),
                            message: "the plugin failed on records that could not be narrowed down within the isolation budget; nothing was changed".into(),
                        });
                    }
                });
            }
        }

        // One decision over all of them, from an empty key index of this model.
        let ok: Vec<usize> = (0..records.len()).filter(|&i| results[i].is_ok()).collect();
        let ok_records: Vec<Record> = ok.iter().map(|&i| records[i].clone()).collect();
        let ok_assocs: Vec<Association> = ok
            .iter()
            .filter_map(|&i| results[i].as_ref().ok().cloned())
            .collect();
        let (_, parent_keys) = association::lookups(kind, &ok_records, &ok_assocs);
        // This model's own keys are decided afresh: only other models' are looked up.
        let others: Vec<ParentKey> = parent_keys
            .into_iter()
            .filter(|p| p.model != model)
            .collect();
        let parent_owners = store.lookup_parents(&others).await?;
        let mut minted = 0usize;
        let mut mint = || {
            minted += 1;
            format!("\u{0}{minted}")
        };
        let decision = association::decide(
            model,
            kind,
            &ok_records,
            &ok_assocs,
            &HashMap::new(),
            &parent_owners,
            &mut mint,
        );

        // Each record's new place: Some(temporary reference) or None (attached / parked).
        // A record parked for a key of this model that a later record claims is healed by
        // the commit (back to the queue, then keyed to that key's reference), as in a fresh
        // run: it counts as going there.
        let claimed: HashMap<&str, &str> = decision
            .claims
            .iter()
            .map(|c| (c.key.as_str(), c.reference.as_str()))
            .collect();
        let mut place: Vec<Option<String>> = vec![None; records.len()];
        for (&i, outcome) in ok.iter().zip(&decision.outcomes) {
            place[i] = match outcome {
                Outcome::Keyed { reference, .. } => Some(reference.clone()),
                Outcome::Parked {
                    awaiting: Some(key),
                    ..
                } if key.model == model => claimed.get(key.key.as_str()).map(|r| r.to_string()),
                _ => None,
            };
        }
        let names = name_groups(&place, &old);
        let final_ref = |temp: &str| names[temp].clone();

        let now = now_micros();
        let stamp = REPROJECT_STAMP + now;
        let mut outcome = AssociationOutcome {
            model: model.to_string(),
            plugin_version: plugin.version().to_string(),
            now_micros: now,
            claims: decision
                .claims
                .iter()
                .map(|c| (c.key.clone(), final_ref(&c.reference)))
                .collect(),
            stamp,
            ..Default::default()
        };
        let park = |seq: i64, reason: ParkReason, details: String, awaiting| ParkRow {
            seq,
            reason,
            details,
            awaiting,
            attempts: 1,
            first_micros: now,
        };
        for (&i, out) in ok.iter().zip(decision.outcomes) {
            let seq = records[i].seq;
            match out {
                Outcome::Keyed {
                    reference, parents, ..
                } => outcome.keyed.push(KeyedRow {
                    seq,
                    reference: Some(final_ref(&reference)),
                    parents,
                }),
                Outcome::Attached { parents } => outcome.keyed.push(KeyedRow {
                    seq,
                    reference: None,
                    parents,
                }),
                Outcome::Parked {
                    reason,
                    details,
                    awaiting,
                } => outcome.parked.push(park(seq, reason, details, awaiting)),
            }
        }
        for (i, result) in results.iter().enumerate() {
            if let Err(error) = result {
                let reason = if error.is_plugin_fault() {
                    ParkReason::PluginFailed
                } else {
                    ParkReason::StoreRefused
                };
                let details = format!(
                    "plugin {} ({}): {error}",
                    plugin.file(),
                    &plugin.version()[..12]
                );
                outcome
                    .parked
                    .push(park(records[i].seq, reason, details, None));
            }
        }
        outcome.parked.sort_by_key(|p| p.seq);
        let finals: BTreeSet<String> = names.values().cloned().collect();
        if kind == Kind::Entity {
            outcome.dirty = finals.iter().cloned().collect();
        }

        // What changes.
        let now_at: Vec<Option<String>> =
            place.iter().map(|p| p.as_deref().map(&final_ref)).collect();
        let mut report = report(model, plugin.version(), &old, &now_at, &finals);
        report.keyed = outcome.keyed.len();
        report.parked = outcome.parked.len();
        let before: BTreeSet<&String> = old.iter().flatten().collect();
        let retired: Vec<String> = before
            .into_iter()
            .filter(|r| !finals.contains(*r))
            .cloned()
            .collect();
        report.retired = retired.len();

        // Every keyed record of another model that names this model finds its parents
        // again (a fresh run would have resolved them against the new keys).
        let mut children = Vec::new();
        for other in store.models().await? {
            if other.name == model {
                continue;
            }
            for (seq, links) in store.parent_links(&other.name).await? {
                if links.iter().any(|l| l.model == model) {
                    children.push(seq);
                }
            }
        }
        report.children = children.len();
        if !apply {
            return Ok(report);
        }
        let change = Reassociate {
            outcome,
            redecided: records.iter().map(|r| r.seq).collect(),
            children,
            retired,
        };
        match store.commit_reassociation(lease, &change).await {
            Ok(_) => {}
            Err(CommitError::VersionChanged { current, .. }) => {
                return Err(EngineError::Worker {
                    model: model.to_string(),
                    message: format!(
                        "the plugin version changed to {} meanwhile; nothing was changed: run it again",
                        &current[..current.len().min(12)]
                    ),
                });
            }
            Err(e) => return Err(e.into()),
        }
        report.applied = true;
        tracing::info!(
            model,
            records = report.records,
            merges = report.merges.len(),
            splits = report.splits.len(),
            retired = report.retired,
            children = report.children,
            "re-associated under the current version"
        );
        self.wake(Stage::Associate);
        self.wake(Stage::Project);
        Ok(report)
    }
}

/// Final names for the temporary references: each group, in order of its first record,
/// takes the old reference of its earliest record that no group took yet; else a new one.
fn name_groups(place: &[Option<String>], old: &[Option<String>]) -> HashMap<String, String> {
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, p) in place.iter().enumerate() {
        if let Some(temp) = p {
            let g = *index.entry(temp.as_str()).or_insert_with(|| {
                groups.push((temp.clone(), Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push(i);
        }
    }
    let mut taken: BTreeSet<&str> = BTreeSet::new();
    let mut names = HashMap::with_capacity(groups.len());
    for (temp, members) in &groups {
        let heir = members
            .iter()
            .filter_map(|&i| old[i].as_deref())
            .find(|r| !taken.contains(r));
        let name = match heir {
            Some(r) => {
                taken.insert(r);
                r.to_string()
            }
            None => uuid::Uuid::now_v7().to_string(),
        };
        names.insert(temp.clone(), name);
    }
    names
}

/// Compares where each record was with where it goes.
fn report(
    model: &str,
    version: &str,
    old: &[Option<String>],
    new: &[Option<String>],
    finals: &BTreeSet<String>,
) -> Reassociated {
    let mut before: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    let mut after: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    for (i, (o, n)) in old.iter().zip(new).enumerate() {
        if let Some(o) = o {
            before.entry(o).or_default().insert(i);
        }
        if let Some(n) = n {
            after.entry(n).or_default().insert(i);
        }
    }
    let unchanged = before
        .iter()
        .filter(|(r, members)| after.get(*r) == Some(*members))
        .count();
    let merges = after
        .iter()
        .filter_map(|(into, members)| {
            let from: BTreeSet<&str> = members.iter().filter_map(|&i| old[i].as_deref()).collect();
            (from.len() > 1).then(|| Merge {
                into: into.to_string(),
                from: from
                    .into_iter()
                    .filter(|r| r != into)
                    .map(str::to_string)
                    .collect(),
                records: members.len(),
            })
        })
        .collect();
    let splits = before
        .iter()
        .filter_map(|(from, members)| {
            let into: BTreeSet<String> = members
                .iter()
                .map(|&i| new[i].clone().unwrap_or_else(|| "parked".into()))
                .collect();
            (into.len() > 1).then(|| Split {
                from: from.to_string(),
                into: into.into_iter().collect(),
                records: members.len(),
            })
        })
        .collect();
    Reassociated {
        model: model.to_string(),
        version: version.to_string(),
        records: old.len(),
        references_before: before.len(),
        references_after: finals.len(),
        unchanged,
        moved: old.iter().zip(new).filter(|(o, n)| o != n).count(),
        merges,
        splits,
        ..Default::default()
    }
}

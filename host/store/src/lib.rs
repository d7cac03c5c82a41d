//! flowhost's storage: batch-only operations over an embedded SQLite file (the default) or a
//! shared PostgreSQL database.
//!
//! Every method takes or returns a batch and makes a bounded number of statements whatever
//! the batch size (chunked under each backend's bound-parameter limit). Each stage commits
//! a batch's whole outcome in one transaction that also checks the stage's lease, so a crash
//! leaves either all of a batch's outcome or none of it.
//!
//! The store counts the statements it executes ([`Store::statements`]) so that benchmarks
//! and metrics can report statements per record.

mod changes;
mod claims;
mod error;
mod leases;
mod parked;
mod plugins;
mod positions;
mod postgres;
mod reads;
mod reassociate;
mod rows;
mod shadow;
mod sql;
mod sqlite;
mod types;

pub use error::{CommitError, StoreError};
pub use positions::Advance;
pub use rows::{REPROJECT_STAMP, now_micros};
pub use shadow::SHADOW_DIFFS_KEPT;
pub use sqlite::without_memory_statistics;
pub use types::*;

use flowhost_core::ParentKey;
use flowhost_core::intake::IntakeRecord;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A database URL fit for logs and messages: a password in it is replaced by `***`.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((credentials, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// Counts executed statements; shared by a store and its clones.
#[derive(Debug, Default)]
pub struct Stats {
    statements: AtomicU64,
}

#[cfg(test)]
mod redaction {
    #[test]
    fn passwords_do_not_reach_messages() {
        use super::redacted;
        assert_eq!(
            redacted("postgres://u:p%40ss@h:5432/d"),
            "postgres://u:***@h:5432/d"
        );
        assert_eq!(redacted("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(redacted("sqlite://flowhost.db"), "sqlite://flowhost.db");
    }
}

impl Stats {
    pub(crate) fn add(&self, n: u64) {
        self.statements.fetch_add(n, Ordering::Relaxed);
        let _ = TASK_STATEMENTS.try_with(|c| c.set(c.get() + n));
    }
}

tokio::task_local! {
    static TASK_STATEMENTS: std::cell::Cell<u64>;
}

/// Runs `work`, counting the statements it executes (in this task, whatever other tasks
/// do meanwhile): how the engine attributes statements to a stage and model.
pub async fn counting_statements<T>(work: impl std::future::Future<Output = T>) -> (T, u64) {
    TASK_STATEMENTS
        .scope(std::cell::Cell::new(0), async {
            let out = work.await;
            (out, TASK_STATEMENTS.with(|c| c.get()))
        })
        .await
}

/// An open transaction on the SQLite writer, or on one connection of the PostgreSQL pool
/// (see [`Store::hold_writer`]); dropping it rolls back and frees the connection.
#[doc(hidden)]
#[allow(dead_code)]
pub enum WriterHold {
    Sqlite(sql::Tx<sqlx::Sqlite>),
    Postgres(sql::Tx<sqlx::Postgres>),
}

/// A store on one of the backends. Cheap to clone (a pool inside).
#[derive(Clone)]
pub enum Store {
    Sqlite(sql::Sql<sqlx::Sqlite>),
    Postgres(sql::Sql<sqlx::Postgres>),
}

/// Forwards a call to the backend.
macro_rules! backend {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Sqlite(s) => s.$method($($arg),*).await,
            Store::Postgres(s) => s.$method($($arg),*).await,
        }
    };
}

impl Store {
    /// Opens (and migrates) the database at `url`: `sqlite://PATH` (created if missing) or
    /// `postgres://…`.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, &StoreOptions::default()).await
    }

    /// Opens with explicit options.
    pub async fn open_with(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Store::Sqlite(
                sql::Sql::<sqlx::Sqlite>::open(url, options).await?,
            ))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Store::Postgres(
                sql::Sql::<sqlx::Postgres>::open(url, options).await?,
            ))
        } else {
            Err(StoreError::Url(format!(
                "unsupported database URL '{url}': use sqlite://PATH or postgres://…"
            )))
        }
    }

    /// Which backend this is (`sqlite` or `postgres`).
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    fn stats(&self) -> &Arc<Stats> {
        match self {
            Store::Sqlite(s) => &s.stats,
            Store::Postgres(s) => &s.stats,
        }
    }

    /// Statements executed so far by this store and its clones.
    pub fn statements(&self) -> u64 {
        self.stats().statements.load(Ordering::Relaxed)
    }

    /// Holds a write connection in an open transaction until the hold is dropped, so that
    /// tests can show what a write does while the database is busy: this process's one
    /// writer on SQLite; one connection of the pool on PostgreSQL (all of it with a pool of
    /// one).
    #[doc(hidden)]
    pub async fn hold_writer(&self) -> Result<WriterHold, StoreError> {
        match self {
            Store::Sqlite(s) => Ok(WriterHold::Sqlite(s.begin("hold the writer", "*").await?)),
            Store::Postgres(s) => Ok(WriterHold::Postgres(
                s.begin("hold a connection", "*").await?,
            )),
        }
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        match self {
            Store::Sqlite(s) => {
                s.pool.close().await;
                s.writer.close().await;
            }
            Store::Postgres(s) => s.pool.close().await,
        }
    }

    /// Records the models plugins describe, so intake knows them even while a plugin is
    /// absent.
    pub async fn register_models(&self, models: &[ModelInfo]) -> Result<(), StoreError> {
        backend!(self.register_models(models))
    }

    /// Every model the store has known.
    pub async fn models(&self) -> Result<Vec<ModelInfo>, StoreError> {
        backend!(self.models())
    }

    /// Appends records to intake, durably, and queues the new ones for association.
    /// Returns one answer per record, same order: accepted (with its sequence), duplicate,
    /// or refused by the database. One transaction per call; when the database refuses it
    /// because of the data in it, it is split in two until the refused records are alone
    /// (the rare path: 2·log2(n) transactions per refused record), and the others are
    /// appended in order.
    pub async fn append(&self, records: &[IntakeRecord]) -> Result<Vec<Appended>, StoreError> {
        self.append_at(records, None).await
    }

    /// [`Store::append`], moving a position (see [`Advance`]) in the same transaction: the
    /// records are durable exactly when the position says they are. When the position is no
    /// longer at `advance.from`, nothing is appended and the error is
    /// [`StoreError::PositionMoved`]. On the rare refused path the records are appended in
    /// halves first and the position moved alone after them (appending them again is
    /// harmless: they are duplicates).
    pub async fn append_at(
        &self,
        records: &[IntakeRecord],
        advance: Option<&Advance>,
    ) -> Result<Vec<Appended>, StoreError> {
        match backend!(self.append(records, advance)) {
            Err(e) if e.refused().is_some() => {}
            done => return done,
        }
        let mut out = Vec::with_capacity(records.len());
        let mut spans = std::collections::VecDeque::from([(0, records.len())]);
        while let Some((lo, hi)) = spans.pop_front() {
            let span = &records[lo..hi];
            match backend!(self.append(span, None)) {
                Ok(answers) => out.extend(answers),
                Err(e) => match e.refused() {
                    Some(message) if span.len() == 1 => {
                        tracing::warn!(model = %span[0].model, id = %span[0].external_id, "the database refused a record at intake: {message}");
                        out.push(Appended::Refused(message));
                    }
                    Some(_) => {
                        let mid = lo + span.len() / 2;
                        spans.push_front((mid, hi));
                        spans.push_front((lo, mid));
                    }
                    None => return Err(e),
                },
            }
        }
        if advance.is_some() {
            backend!(self.append(&[], advance))?;
        }
        Ok(out)
    }

    /// Where the position `name` is (0 when never moved).
    pub async fn position(&self, name: &str) -> Result<i64, StoreError> {
        backend!(self.position(name))
    }

    /// Moves a position on its own; false when it was not at `advance.from`.
    pub async fn advance(&self, advance: &Advance) -> Result<bool, StoreError> {
        backend!(self.advance(advance))
    }

    /// Takes (or renews) a duty for its holder; false while another holder's is live.
    pub async fn acquire_duty(&self, duty: &Duty, ttl_micros: i64) -> Result<bool, StoreError> {
        backend!(self.acquire_duty(duty, ttl_micros))
    }

    /// Gives a duty up.
    pub async fn release_duty(&self, duty: &Duty) -> Result<(), StoreError> {
        backend!(self.release_duty(duty))
    }

    /// Takes (or renews) the lease of a stage of a model for `holder`. Returns false when
    /// another holder's lease has not expired.
    pub async fn acquire_lease(&self, lease: &Lease, ttl_micros: i64) -> Result<bool, StoreError> {
        backend!(self.acquire_lease(lease, ttl_micros))
    }

    /// The current holder of a stage of a model, if any (for taking over from a dead one).
    pub async fn lease_holder(
        &self,
        stage: Stage,
        model: &str,
    ) -> Result<Option<String>, StoreError> {
        backend!(self.lease_holder(stage, model))
    }

    /// Takes a lease from `from`, only if `from` still holds it.
    pub async fn take_over_lease(
        &self,
        lease: &Lease,
        from: &str,
        ttl_micros: i64,
    ) -> Result<bool, StoreError> {
        backend!(self.take_over_lease(lease, from, ttl_micros))
    }

    /// Every lease, live or expired, and the projection claims of each holder on each model
    /// (as `project` leases: since the oldest claim, until the last one lapses).
    pub async fn leases(&self) -> Result<Vec<LeaseRow>, StoreError> {
        backend!(self.leases())
    }

    /// How many items wait for a stage of a model (queued records, or references marked
    /// dirty and not failed).
    pub async fn work_waiting(&self, stage: Stage, model: &str) -> Result<u64, StoreError> {
        backend!(self.work_waiting(stage, model))
    }

    /// Announces (or renews) a running host.
    pub async fn announce_host(&self, host: &HostRow) -> Result<(), StoreError> {
        backend!(self.announce_host(host))
    }

    /// Forgets a host that stops, and hosts not seen since `stale_before_micros`.
    pub async fn forget_host(&self, id: &str, stale_before_micros: i64) -> Result<(), StoreError> {
        backend!(self.forget_host(id, stale_before_micros))
    }

    /// The hosts that announced themselves.
    pub async fn hosts(&self) -> Result<Vec<HostRow>, StoreError> {
        backend!(self.hosts())
    }

    /// Gives a lease up (on shutdown).
    pub async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        backend!(self.release_lease(lease))
    }

    /// The next records of a model waiting for association, in queue order.
    pub async fn pending(&self, model: &str, limit: usize) -> Result<Vec<Pending>, StoreError> {
        backend!(self.pending(model, limit))
    }

    /// Owners of many keys of one model: key → reference, for the keys that are owned.
    pub async fn lookup_keys(
        &self,
        model: &str,
        keys: &[String],
    ) -> Result<HashMap<String, String>, StoreError> {
        backend!(self.lookup_keys(model, keys))
    }

    /// Owners of many parent keys, of any models, in one statement per chunk.
    pub async fn lookup_parents(
        &self,
        keys: &[ParentKey],
    ) -> Result<HashMap<ParentKey, String>, StoreError> {
        backend!(self.lookup_parents(keys))
    }

    /// Commits an association batch in one transaction: checks the lease, claims the keys
    /// (all or nothing: any key already owned fails the commit with
    /// [`CommitError::KeyConflict`]), writes keyed and parked records, removes the batch
    /// from the queue, re-queues the parked records waiting for the new keys (healing), and
    /// marks references dirty.
    pub async fn commit_association(
        &self,
        lease: &Lease,
        outcome: &AssociationOutcome,
    ) -> Result<CommitSummary, CommitError> {
        backend!(self.commit_association(lease, outcome))
    }

    /// Claims the next dirty references of a model for `claim.holder` (up to `limit`, for
    /// `ttl_micros` unless renewed), with all their keyed records (intake order). Marks
    /// another worker holds are passed over.
    pub async fn claim_dirty(
        &self,
        claim: &Lease,
        limit: usize,
        ttl_micros: i64,
    ) -> Result<DirtyBatch, StoreError> {
        backend!(self.claim_dirty(claim, limit, ttl_micros))
    }

    /// Extends a holder's claims on a model (a slow batch's heartbeat); how many it holds.
    pub async fn renew_claims(&self, claim: &Lease, ttl_micros: i64) -> Result<u64, StoreError> {
        backend!(self.renew_claims(claim, ttl_micros))
    }

    /// Lets go of every projection claim of these holders.
    pub async fn release_claims(&self, holders: &[String]) -> Result<u64, StoreError> {
        backend!(self.release_claims(holders))
    }

    /// Commits a projection batch in one transaction: checks the plugin version and which
    /// references the holder still claims, and for those only upserts the views, clears the
    /// dirty marks it has seen (a reference marked again meanwhile stays dirty), keeps the
    /// error on the marks of references whose projection failed (they are skipped until new
    /// records, a new plugin version, or a re-queue), and lets the claims go. Returns the
    /// views written.
    pub async fn commit_projection(
        &self,
        claim: &Lease,
        views: &[ViewRow],
        seen: &[(String, i64)],
        failed: &[ProjectFailure],
    ) -> Result<usize, CommitError> {
        backend!(self.commit_projection(claim, views, seen, failed))
    }

    /// The change feed after `after` (oldest first, at most `limit`), of one model or all.
    pub async fn changes(
        &self,
        after: i64,
        model: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ChangeRow>, StoreError> {
        backend!(self.changes(after, model, limit))
    }

    /// The last change's number (0 when there is none).
    pub async fn last_change(&self) -> Result<i64, StoreError> {
        backend!(self.last_change())
    }

    /// Deletes the changes recorded before `before_micros` (and, when `relayed` is given,
    /// only those up to that change: one not yet relayed is kept); how many.
    pub async fn prune_changes(
        &self,
        before_micros: i64,
        relayed: Option<i64>,
    ) -> Result<u64, StoreError> {
        backend!(self.prune_changes(before_micros, relayed))
    }

    /// Records a plugin version that passed validation (kept for rollback).
    pub async fn record_version(&self, row: &PluginVersionRow) -> Result<(), StoreError> {
        backend!(self.record_version(row))
    }

    /// The versions of one model (or of all), most recently current first.
    pub async fn plugin_versions(
        &self,
        model: Option<&str>,
    ) -> Result<Vec<PluginVersionRow>, StoreError> {
        backend!(self.plugin_versions(model))
    }

    /// Makes a version current for its model, in one transaction. When the version changes,
    /// the model's views made by other versions are marked for re-projection, and the
    /// failures of the old version (records parked `PLUGIN_FAILED`, references whose
    /// projection failed) are given another try. Returns what changed.
    pub async fn set_current(&self, change: &CurrentChange) -> Result<Switched, StoreError> {
        backend!(self.set_current(change))
    }

    /// Marks for re-projection the views of a model made by another version than `version`
    /// (one statement); returns how many.
    pub async fn mark_stale_views(&self, model: &str, version: &str) -> Result<u64, StoreError> {
        backend!(self.mark_stale_views(model, version))
    }

    /// Every model's current plugin, as the hosts last recorded it.
    pub async fn plugin_states(&self) -> Result<Vec<PluginState>, StoreError> {
        backend!(self.plugin_states())
    }

    /// Records a model's state as a running host sees it (serving, paused, cool-down).
    pub async fn set_plugin_state(&self, model: &str, state: &str) -> Result<(), StoreError> {
        backend!(self.set_plugin_state(model, state))
    }

    /// Records the last outcome of a file of the plugins folder.
    pub async fn record_file(&self, row: &PluginFileRow) -> Result<(), StoreError> {
        backend!(self.record_file(row))
    }

    /// Forgets a file that left the plugins folder.
    pub async fn forget_file(&self, file: &str) -> Result<(), StoreError> {
        backend!(self.forget_file(file))
    }

    /// Every decided record of a model (keyed or parked), in intake order, with the
    /// reference it is keyed to.
    pub async fn decided_records(
        &self,
        model: &str,
    ) -> Result<Vec<(flowhost_core::Record, Option<String>)>, StoreError> {
        backend!(self.decided_records(model))
    }

    /// The parent links of every keyed record of `child` that has parents.
    pub async fn parent_links(
        &self,
        child: &str,
    ) -> Result<Vec<(i64, Vec<flowhost_core::ParentLink>)>, StoreError> {
        backend!(self.parent_links(child))
    }

    /// Commits a model's association decided again (see [`Reassociate`]) in one
    /// transaction that checks the lease and the plugin version.
    pub async fn commit_reassociation(
        &self,
        lease: &Lease,
        r: &Reassociate,
    ) -> Result<CommitSummary, CommitError> {
        backend!(self.commit_reassociation(lease, r))
    }

    /// Starts (or starts over) the shadow run of a model with a candidate version: counts
    /// at zero, the earlier run's differences gone.
    pub async fn start_shadow(&self, run: &ShadowRun) -> Result<(), StoreError> {
        backend!(self.start_shadow(run))
    }

    /// Ends a model's running shadow run of `version`, saying why; false when none was.
    pub async fn end_shadow(
        &self,
        model: &str,
        version: &str,
        why: &str,
    ) -> Result<bool, StoreError> {
        backend!(self.end_shadow(model, version, why))
    }

    /// Adds a compared batch to a running shadow run (counts, and differences up to
    /// [`SHADOW_DIFFS_KEPT`]); false when that run is no longer going.
    pub async fn add_shadow(
        &self,
        model: &str,
        version: &str,
        counts: &ShadowCounts,
        diffs: &[ShadowDiff],
    ) -> Result<bool, StoreError> {
        backend!(self.add_shadow(model, version, counts, diffs))
    }

    /// A model's latest shadow run and its first `limit` differences.
    pub async fn shadow(
        &self,
        model: &str,
        limit: usize,
    ) -> Result<Option<(ShadowRun, Vec<ShadowDiff>)>, StoreError> {
        backend!(self.shadow(model, limit))
    }

    /// The groups of some references of a model (every keyed record, intake order), read
    /// without claiming them.
    pub async fn groups(
        &self,
        model: &str,
        references: &[String],
    ) -> Result<Vec<flowhost_core::Group>, StoreError> {
        backend!(self.groups(model, references))
    }

    /// The last `n` records taken in for a model, oldest first.
    pub async fn latest_records(
        &self,
        model: &str,
        n: usize,
    ) -> Result<Vec<flowhost_core::Record>, StoreError> {
        backend!(self.latest_records(model, n))
    }

    /// The last outcome of every file of the plugins folder.
    pub async fn plugin_files(&self) -> Result<Vec<PluginFileRow>, StoreError> {
        backend!(self.plugin_files())
    }

    /// How far re-projection of a model has come: views made by `version`, views in all,
    /// and references whose projection failed.
    pub async fn reprojection(&self, model: &str, version: &str) -> Result<Progress, StoreError> {
        backend!(self.reprojection(model, version))
    }

    /// Up to `limit` references of a model whose projection failed, with the reason each
    /// mark keeps, ordered by reference.
    pub async fn failed_projections(
        &self,
        model: &str,
        limit: usize,
    ) -> Result<Vec<FailedProjection>, StoreError> {
        backend!(self.failed_projections(model, limit))
    }

    /// One page of views of a model, ordered by each reference's first intake, after
    /// `after` (the last item of the previous page).
    pub async fn views(
        &self,
        model: &str,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<ViewRow>, StoreError> {
        backend!(self.views(model, after, limit))
    }

    /// The views of one reference of a model, if it has any.
    pub async fn view(&self, model: &str, reference: &str) -> Result<Option<ViewRow>, StoreError> {
        backend!(self.view(model, reference))
    }

    /// The sources whose records are keyed to a reference, with how many each sent, in the
    /// order they first contributed.
    pub async fn sources(
        &self,
        model: &str,
        reference: &str,
    ) -> Result<Vec<SourceCount>, StoreError> {
        backend!(self.sources(model, reference))
    }

    /// Whether the database answers and has every migration this build knows applied.
    pub async fn health(&self) -> Result<Health, StoreError> {
        backend!(self.health())
    }

    /// One page of value-object records of a model, grouped under their parents (parents by
    /// first intake, records by occurred_at), from row `offset` on.
    pub async fn values(
        &self,
        model: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<ValueRow>, StoreError> {
        backend!(self.values(model, offset, limit))
    }

    /// Parked records matching a filter, in intake order.
    pub async fn parked(
        &self,
        filter: &ParkedFilter,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<ParkedRow>, StoreError> {
        backend!(self.parked(filter, after_seq, limit))
    }

    /// Re-queues the parked records matching a filter (behind the waiting ones); returns
    /// how many.
    pub async fn requeue(&self, filter: &ParkedFilter) -> Result<u64, StoreError> {
        backend!(self.requeue(filter))
    }

    /// Counts for summaries, readiness and `process --until-idle`.
    pub async fn counts(&self) -> Result<Counts, StoreError> {
        backend!(self.counts())
    }
}

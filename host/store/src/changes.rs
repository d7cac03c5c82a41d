//! The change feed: an outbox of the references whose views a projection commit changed,
//! written in that commit's transaction, read in `seq` order (`GET /v1/changes`).

use crate::claims::Held;
use crate::sql::{Backend, Column, Sql, Tx};
use crate::{ChangeRow, CommitError, Lease, ProjectFailure, StoreError, ViewRow, now_micros};
use sqlx::{ColumnIndex, Executor, FromRow, IntoArguments};
use std::collections::HashMap;

/// A projection commit under way (see [`Sql::open_projection`]).
pub(crate) struct Projecting<'a, DB: Backend> {
    pub tx: Tx<DB>,
    /// Every reference the batch covers (their claims are let go at the end).
    pub covered: Vec<String>,
    /// What of the batch this holder still claims: what the commit writes.
    pub held: Held<'a>,
    /// The references whose views change.
    pub changed: std::collections::HashSet<String>,
}

/// Rows per multi-row insert (4 parameters each, under every backend's limit).
const ROWS_PER_INSERT: usize = 1_000;

impl<DB> Sql<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    String: Column<DB>,
    Option<String>: Column<DB>,
    i64: Column<DB>,
    i32: Column<DB>,
    ChangeRow: for<'r> FromRow<'r, DB::Row>,
{
    /// A projection commit's start, the same on both backends: its transaction, the
    /// plugin-version and claims check, the part of the batch this holder still claims, the
    /// failures' marks, and which of its views change anything. The backend then writes the
    /// views and clears the marks, and [`Sql::close_projection`] ends it.
    pub(crate) async fn open_projection<'a>(
        &self,
        claim: &Lease,
        views: &'a [ViewRow],
        seen: &'a [(String, i64)],
        failed: &'a [ProjectFailure],
    ) -> Result<Projecting<'a, DB>, CommitError> {
        let model = claim.model.as_str();
        let mut tx = self.begin("commit projection", model).await?;
        let covered = crate::claims::covered(seen, failed);
        let version = views.first().map(|v| v.plugin_version.as_str());
        let held = self.check_claims(&mut tx, claim, version, &covered).await?;
        let held = Held::keep(&held, views, seen, failed);
        self.mark_projection_failed(&mut tx, model, &held.failed)
            .await?;
        let changed = self
            .changed_views(&mut tx, model, &held.views)
            .await?
            .into_iter()
            .map(|v| v.reference.clone())
            .collect();
        Ok(Projecting {
            tx,
            covered,
            held,
            changed,
        })
    }

    /// A projection commit's end: its changes recorded, its claims let go, committed.
    /// Returns the views written.
    pub(crate) async fn close_projection(
        &self,
        claim: &Lease,
        p: Projecting<'_, DB>,
    ) -> Result<usize, CommitError> {
        let Projecting {
            mut tx,
            covered,
            held,
            changed,
        } = p;
        let model = claim.model.as_str();
        let changed: Vec<&ViewRow> = held
            .views
            .iter()
            .filter(|v| changed.contains(&v.reference))
            .collect();
        self.record_changes(&mut tx, model, &changed).await?;
        self.let_go(&mut tx, claim, &covered).await?;
        self.commit(tx, "commit projection", model).await?;
        Ok(held.views.len())
    }

    /// Inside a projection commit, before its views are written: the views that differ from
    /// the stored ones (canonical, root, lineage or parents), or are new. One statement per
    /// chunk of references.
    pub(crate) async fn changed_views<'v>(
        &self,
        tx: &mut Tx<DB>,
        model: &str,
        views: &'v [ViewRow],
    ) -> Result<Vec<&'v ViewRow>, StoreError> {
        let mut stored: HashMap<String, (String, String, String, String)> = HashMap::new();
        for chunk in views.chunks(DB::IN_LIST_MAX) {
            let references: Vec<String> = chunk.iter().map(|v| v.reference.clone()).collect();
            let mut qb = Self::query(
                "SELECT reference, canonical, root, lineage, parents FROM views WHERE ",
            );
            DB::push_in_strings(&mut qb, "reference", &references);
            let rows: Vec<(String, String, String, String, String)> = self
                .fetch_as(&mut **tx, qb.build(), "compare views", model)
                .await?;
            stored.extend(rows.into_iter().map(|(r, c, ro, l, p)| (r, (c, ro, l, p))));
        }
        Ok(views
            .iter()
            .filter(|v| {
                stored.get(&v.reference).is_none_or(|(c, ro, l, p)| {
                    *c != v.canonical || *ro != v.root || *l != v.lineage || *p != v.parents
                })
            })
            .collect())
    }

    /// Inside a projection commit: one change row per changed view, numbered after every
    /// change committed before (PostgreSQL: under a transaction-scoped lock, so numbers are
    /// taken in commit order).
    pub(crate) async fn record_changes(
        &self,
        tx: &mut Tx<DB>,
        model: &str,
        changed: &[&ViewRow],
    ) -> Result<(), StoreError> {
        if changed.is_empty() {
            return Ok(());
        }
        if let Some(lock) = DB::CHANGES_LOCK {
            self.execute(&mut **tx, Self::query(lock).build(), "order changes", model)
                .await?;
        }
        let now = now_micros();
        for chunk in changed.chunks(ROWS_PER_INSERT) {
            let mut qb = Self::query(
                "INSERT INTO changes (model, reference, plugin_version, changed_micros) ",
            );
            qb.push_values(chunk, |mut b, v| {
                b.push_bind(v.model.clone())
                    .push_bind(v.reference.clone())
                    .push_bind(v.plugin_version.clone())
                    .push_bind(now);
            });
            self.execute(&mut **tx, qb.build(), "record changes", model)
                .await?;
        }
        Ok(())
    }

    /// Changes after `after`, oldest first, of one model or all, with each reference's views
    /// as they are now.
    pub async fn changes(
        &self,
        after: i64,
        model: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ChangeRow>, StoreError> {
        let mut qb = Self::query(
            "SELECT c.seq, c.model, c.reference, c.plugin_version, v.canonical, v.root \
             FROM changes c JOIN views v ON v.reference = c.reference WHERE c.seq > ",
        );
        qb.push_bind(after);
        if let Some(model) = model {
            qb.push(" AND c.model = ").push_bind(model.to_string());
        }
        qb.push(" ORDER BY c.seq LIMIT ").push_bind(limit as i64);
        self.fetch_as(&self.pool, qb.build(), "read changes", model.unwrap_or("*"))
            .await
    }

    /// The last change's number (0 when there is none).
    pub async fn last_change(&self) -> Result<i64, StoreError> {
        let mut qb = Self::query("SELECT MAX(seq) FROM changes");
        let rows: Vec<(Option<i64>,)> = self
            .fetch_as(&self.pool, qb.build(), "read the last change", "*")
            .await?;
        Ok(rows.first().and_then(|(n,)| *n).unwrap_or(0))
    }

    /// Deletes the changes recorded before `before_micros`, and when `relayed` is given only
    /// those up to it (a change not yet relayed is kept however old).
    pub async fn prune_changes(
        &self,
        before_micros: i64,
        relayed: Option<i64>,
    ) -> Result<u64, StoreError> {
        let mut qb = Self::query("DELETE FROM changes WHERE changed_micros < ");
        qb.push_bind(before_micros);
        if let Some(relayed) = relayed {
            qb.push(" AND seq <= ").push_bind(relayed);
        }
        self.execute(&self.writer, qb.build(), "prune changes", "*")
            .await
    }
}

//! Shadow runs: what a candidate plugin version would do differently from the live one, on
//! the batches the live version decides. Nothing here touches the live tables; the reads a
//! comparison needs (a reference's records, a model's latest intake) are plain reads.

use crate::rows::{self, KeyedDb, RECORD_COLUMNS, RecordDb};
use crate::sql::{Backend, Column, Sql};
use crate::{ShadowCounts, ShadowDiff, ShadowRun, StoreError, now_micros};
use flowhost_core::{Group, Record};
use sqlx::{ColumnIndex, Executor, IntoArguments};

/// `model = … AND version = … AND ended IS NULL`: the run of this candidate, while it runs.
fn push_running<DB: Backend>(qb: &mut sqlx::QueryBuilder<DB>, model: &str, version: &str)
where
    String: Column<DB>,
{
    qb.push("model = ")
        .push_bind(model.to_string())
        .push(" AND version = ")
        .push_bind(version.to_string())
        .push(" AND ended IS NULL");
}

/// The most differences kept per run; the counts go on past it.
pub const SHADOW_DIFFS_KEPT: i64 = 1_000;

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
    Option<i64>: Column<DB>,
    i32: Column<DB>,
{
    /// Starts (or starts over) the shadow run of `run.model` with `run.version`: counts at
    /// zero, the earlier run's differences gone. One transaction.
    pub async fn start_shadow(&self, run: &ShadowRun) -> Result<(), StoreError> {
        let (op, model) = ("start a shadow run", run.model.as_str());
        let mut tx = self.begin(op, model).await?;
        let mut qb = Self::query("DELETE FROM shadow_diffs WHERE model = ");
        qb.push_bind(model.to_string());
        self.execute(&mut *tx, qb.build(), op, model).await?;
        let now = now_micros();
        let mut qb = Self::query(
            "INSERT INTO shadow_runs (model, version, file, started_micros, updated_micros) \
             VALUES (",
        );
        qb.separated(", ")
            .push_bind(model.to_string())
            .push_bind(run.version.clone())
            .push_bind(run.file.clone())
            .push_bind(now)
            .push_bind(now);
        qb.push(
            ") ON CONFLICT (model) DO UPDATE SET version = excluded.version, \
             file = excluded.file, started_micros = excluded.started_micros, \
             updated_micros = excluded.updated_micros, batches = 0, records = 0, skipped = 0, \
             record_diffs = 0, views = 0, view_diffs = 0, ended = NULL",
        );
        self.execute(&mut *tx, qb.build(), op, model).await?;
        self.commit(tx, op, model).await
    }

    /// Ends the running shadow run of `model` with `version`, saying why (its counts and
    /// differences stay readable). False when no such run was going.
    pub async fn end_shadow(
        &self,
        model: &str,
        version: &str,
        why: &str,
    ) -> Result<bool, StoreError> {
        let mut qb = Self::query("UPDATE shadow_runs SET ended = ");
        qb.push_bind(why.to_string())
            .push(", updated_micros = ")
            .push_bind(now_micros())
            .push(" WHERE ");
        push_running(&mut qb, model, version);
        let n = self
            .execute(&self.writer, qb.build(), "end a shadow run", model)
            .await?;
        Ok(n == 1)
    }

    /// Adds a compared batch to the run of `model` with `version` and keeps its differences
    /// (up to [`SHADOW_DIFFS_KEPT`] per run). One transaction of three statements. False
    /// when that run is no longer going (started over or ended): nothing is written.
    pub async fn add_shadow(
        &self,
        model: &str,
        version: &str,
        counts: &ShadowCounts,
        diffs: &[ShadowDiff],
    ) -> Result<bool, StoreError> {
        let op = "record a shadow batch";
        let mut tx = self.begin(op, model).await?;
        let mut qb = Self::query("UPDATE shadow_runs SET batches = batches + ");
        qb.push_bind(counts.batches)
            .push(", records = records + ")
            .push_bind(counts.records)
            .push(", skipped = skipped + ")
            .push_bind(counts.skipped)
            .push(", record_diffs = record_diffs + ")
            .push_bind(counts.record_diffs)
            .push(", views = views + ")
            .push_bind(counts.views)
            .push(", view_diffs = view_diffs + ")
            .push_bind(counts.view_diffs)
            .push(", updated_micros = ")
            .push_bind(now_micros())
            .push(" WHERE ");
        push_running(&mut qb, model, version);
        if self.execute(&mut *tx, qb.build(), op, model).await? != 1 {
            return Ok(false);
        }
        if !diffs.is_empty() {
            let mut qb = Self::query("SELECT COUNT(*) FROM shadow_diffs WHERE model = ");
            qb.push_bind(model.to_string());
            let kept: Vec<(i64,)> = self.fetch_as(&mut *tx, qb.build(), op, model).await?;
            let room = (SHADOW_DIFFS_KEPT - kept.first().map_or(0, |(n,)| *n)).max(0) as usize;
            let keep = &diffs[..diffs.len().min(room)];
            // A batch's differences are few next to the parameter limit (chunked anyway).
            for chunk in keep.chunks(DB::IN_LIST_MAX / 12) {
                let mut qb = Self::query(
                    "INSERT INTO shadow_diffs (model, version, live_version, kind, seq, system, \
                     external_id, reference, summary, live, candidate) ",
                );
                qb.push_values(chunk, |mut b, d| {
                    b.push_bind(model.to_string())
                        .push_bind(version.to_string())
                        .push_bind(d.live_version.clone())
                        .push_bind(d.kind.clone())
                        .push_bind(d.seq)
                        .push_bind(d.system.clone())
                        .push_bind(d.external_id.clone())
                        .push_bind(d.reference.clone())
                        .push_bind(d.summary.clone())
                        .push_bind(d.live.clone())
                        .push_bind(d.candidate.clone());
                });
                self.execute(&mut *tx, qb.build(), op, model).await?;
            }
        }
        self.commit(tx, op, model).await?;
        Ok(true)
    }

    /// The shadow run of a model (the latest, running or ended) and its first `limit`
    /// differences, records before views, each in the order found.
    pub async fn shadow(
        &self,
        model: &str,
        limit: usize,
    ) -> Result<Option<(ShadowRun, Vec<ShadowDiff>)>, StoreError> {
        let op = "read a shadow run";
        let mut qb = Self::query(
            "SELECT model, version, file, started_micros, updated_micros, batches, records, \
             skipped, record_diffs, views, view_diffs, ended FROM shadow_runs WHERE model = ",
        );
        qb.push_bind(model.to_string());
        let runs: Vec<ShadowRun> = self.fetch_as(&self.pool, qb.build(), op, model).await?;
        let Some(run) = runs.into_iter().next() else {
            return Ok(None);
        };
        let mut qb = Self::query(
            "SELECT live_version, kind, seq, system, external_id, reference, summary, live, \
             candidate FROM shadow_diffs WHERE model = ",
        );
        qb.push_bind(model.to_string())
            .push(" AND version = ")
            .push_bind(run.version.clone())
            .push(" ORDER BY kind, id LIMIT ")
            .push_bind(limit as i64);
        let diffs: Vec<ShadowDiff> = self.fetch_as(&self.pool, qb.build(), op, model).await?;
        Ok(Some((run, diffs)))
    }

    /// The references' groups as projection reads them (every keyed record, intake order),
    /// without claiming anything: one statement per `IN` list.
    pub async fn groups(
        &self,
        model: &str,
        references: &[String],
    ) -> Result<Vec<Group>, StoreError> {
        let op = "read references";
        let mut groups = Vec::with_capacity(references.len());
        for chunk in references.chunks(DB::IN_LIST_MAX) {
            let mut qb = Self::query(format!(
                "SELECT k.reference, k.parents, {RECORD_COLUMNS} FROM keyed k \
                 JOIN intake i ON i.seq = k.seq WHERE "
            ));
            DB::push_in_strings(&mut qb, "k.reference", chunk);
            qb.push(" ORDER BY k.reference, k.seq");
            let rows: Vec<KeyedDb> = self.fetch_as(&self.pool, qb.build(), op, model).await?;
            let seen: Vec<(String, i64)> = chunk.iter().map(|r| (r.clone(), 0)).collect();
            groups.extend(rows::group_rows(&seen, rows, op, model)?);
        }
        Ok(groups)
    }

    /// The last `n` records taken in for a model, oldest first (one statement).
    pub async fn latest_records(&self, model: &str, n: usize) -> Result<Vec<Record>, StoreError> {
        let mut qb = Self::query(format!(
            "SELECT {RECORD_COLUMNS} FROM intake i WHERE i.model = "
        ));
        qb.push_bind(model.to_string())
            .push(" ORDER BY i.seq DESC LIMIT ")
            .push_bind(n as i64);
        let rows: Vec<RecordDb> = self
            .fetch_as(&self.pool, qb.build(), "read the latest records", model)
            .await?;
        let mut records: Vec<Record> = rows.into_iter().map(Record::from).collect();
        records.reverse();
        Ok(records)
    }
}

//! Reads for the stages, export, the API and summaries: the queue, views, values, a
//! reference's sources, counts and the schema's health.

use crate::rows::{self, KeyedDb, PendingDb, RECORD_COLUMNS};
use crate::sql::{Backend, Column, Sql};
use crate::{
    Counts, Cursor, Health, ModelInfo, Pending, SourceCount, StoreError, ValueRow, ViewRow,
};
use sqlx::{ColumnIndex, Executor, FromRow, IntoArguments};

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
{
    /// Every row of a statement that takes no parameters, read on the pool, as `T`.
    pub(crate) async fn select_all<T>(
        &self,
        sql: impl Into<String>,
        operation: &'static str,
    ) -> Result<Vec<T>, StoreError>
    where
        T: for<'r> FromRow<'r, DB::Row>,
    {
        let mut qb = Self::query(sql);
        self.fetch_as(&self.pool, qb.build(), operation, "*").await
    }

    pub async fn models(&self) -> Result<Vec<ModelInfo>, StoreError> {
        self.select_all(
            "SELECT name, kind, plugin_version FROM models ORDER BY name",
            "list models",
        )
        .await
    }

    pub async fn pending(&self, model: &str, limit: usize) -> Result<Vec<Pending>, StoreError> {
        let mut qb = Self::query(format!(
            "SELECT q.pos, q.attempts, q.first_parked_micros, {RECORD_COLUMNS} \
             FROM queue q JOIN intake i ON i.seq = q.seq WHERE q.model = "
        ));
        qb.push_bind(model.to_string())
            .push(" ORDER BY q.pos LIMIT ")
            .push_bind(limit as i64);
        let rows: Vec<PendingDb> = self
            .fetch_as(&self.pool, qb.build(), "read pending", model)
            .await?;
        Ok(rows.into_iter().map(Pending::from).collect())
    }

    pub async fn views(
        &self,
        model: &str,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<ViewRow>, StoreError> {
        let (seq, reference) = after
            .map(|c| (c.first_seq, c.reference.clone()))
            .unwrap_or((i64::MIN, String::new()));
        let mut qb = Self::query(VIEW_SELECT);
        qb.push_bind(model.to_string())
            .push(" AND (first_seq, reference) > (")
            .push_bind(seq)
            .push(", ")
            .push_bind(reference)
            .push(") ORDER BY first_seq, reference LIMIT ")
            .push_bind(limit as i64);
        self.fetch_as(&self.pool, qb.build(), "read views", model)
            .await
    }

    pub async fn view(&self, model: &str, reference: &str) -> Result<Option<ViewRow>, StoreError> {
        let mut qb = Self::query(VIEW_SELECT);
        qb.push_bind(model.to_string())
            .push(" AND reference = ")
            .push_bind(reference.to_string());
        let rows: Vec<ViewRow> = self
            .fetch_as(&self.pool, qb.build(), "read a view", model)
            .await?;
        Ok(rows.into_iter().next())
    }

    pub async fn sources(
        &self,
        model: &str,
        reference: &str,
    ) -> Result<Vec<SourceCount>, StoreError> {
        let mut qb = Self::query(
            "SELECT i.system, i.adapter, COUNT(*) AS records, MIN(i.seq) AS first_seq, \
             MAX(i.occurred_at) AS last_occurred_at \
             FROM keyed k JOIN intake i ON i.seq = k.seq WHERE k.model = ",
        );
        qb.push_bind(model.to_string())
            .push(" AND k.reference = ")
            .push_bind(reference.to_string())
            .push(" GROUP BY i.system, i.adapter ORDER BY first_seq");
        self.fetch_as(&self.pool, qb.build(), "read a reference's sources", model)
            .await
    }

    pub async fn health(&self) -> Result<Health, StoreError> {
        let applied: Vec<(i64,)> = self
            .select_all(
                "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
                "check the database",
            )
            .await?;
        let missing = DB::MIGRATOR
            .iter()
            .filter(|m| !applied.contains(&(m.version,)))
            .map(|m| format!("{} {}", m.version, m.description))
            .collect();
        Ok(Health {
            missing_migrations: missing,
        })
    }

    pub async fn values(
        &self,
        model: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<ValueRow>, StoreError> {
        let op = "read values";
        // Parents not projected yet sort last on both backends.
        let mut qb = Self::query(format!(
            "SELECT k.parents, {RECORD_COLUMNS} FROM keyed k JOIN intake i ON i.seq = k.seq \
             LEFT JOIN views v ON v.reference = k.parent_ref WHERE k.model = "
        ));
        qb.push_bind(model.to_string())
            .push(
                " ORDER BY COALESCE(v.first_seq, 9223372036854775807), k.parent_ref, \
                 i.occurred_micros, i.seq LIMIT ",
            )
            .push_bind(limit as i64)
            .push(" OFFSET ")
            .push_bind(offset as i64);
        let rows: Vec<KeyedDb> = self.fetch_as(&self.pool, qb.build(), op, model).await?;
        rows::value_rows(rows, op, model)
    }

    /// Seven small statements, on the pool (a consistent snapshot is not needed: the
    /// numbers are for summaries and readiness).
    pub async fn counts(&self) -> Result<Counts, StoreError> {
        let total = async |table: &str| -> Result<i64, StoreError> {
            let rows: Vec<(i64,)> = self
                .select_all(format!("SELECT COUNT(*) FROM {table}"), "count")
                .await?;
            Ok(rows.first().map_or(0, |(n,)| *n))
        };
        let pairs = async |table: &str| -> Result<Vec<(String, i64)>, StoreError> {
            let sql = format!("SELECT model, COUNT(*) FROM {table} GROUP BY model ORDER BY model");
            self.select_all(sql, "count").await
        };
        Ok(Counts {
            intake: total("intake").await?,
            queued: pairs("queue").await?,
            dirty: pairs("dirty").await?,
            references: pairs("views").await?,
            keyed: pairs("keyed").await?,
            keys: total("keys").await?,
            parked: self
                .select_all(
                    "SELECT model, reason, COUNT(*) FROM parked GROUP BY model, reason \
                     ORDER BY model, reason",
                    "count",
                )
                .await?,
        })
    }
}

/// The views of a model; the caller binds the model and adds its conditions.
const VIEW_SELECT: &str = "SELECT reference, model, first_seq, canonical, root, lineage, \
     parents, plugin_version FROM views WHERE model = ";

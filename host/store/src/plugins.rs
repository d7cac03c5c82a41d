//! Plugin versions, the folder's files, each model's current version and state, what a
//! version change marks for re-projection, and the references a version failed to project.

use crate::rows::REPROJECT_STAMP;
use crate::sql::{Backend, Column, Sql, Tx};
use crate::{
    CurrentChange, FailedProjection, PluginFileRow, PluginState, PluginVersionRow, Progress,
    ProjectFailure, StoreError, Switched, now_micros,
};
use flowhost_core::ParkReason;
use sqlx::{ColumnIndex, Executor, IntoArguments, QueryBuilder};

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
    pub async fn record_version(&self, row: &PluginVersionRow) -> Result<(), StoreError> {
        let mut qb = Self::query(
            "INSERT INTO plugin_versions (model, version, file, archive, description, \
             first_loaded_micros, last_current_micros) VALUES (",
        );
        qb.separated(", ")
            .push_bind(row.model.clone())
            .push_bind(row.version.clone())
            .push_bind(row.file.clone())
            .push_bind(row.archive.clone())
            .push_bind(row.description.clone())
            .push_bind(row.first_loaded_micros)
            .push_bind(row.last_current_micros);
        qb.push(
            ") ON CONFLICT (model, version) DO UPDATE SET file = excluded.file, \
             archive = excluded.archive",
        );
        self.execute(
            &self.writer,
            qb.build(),
            "record a plugin version",
            &row.model,
        )
        .await?;
        Ok(())
    }

    pub async fn plugin_versions(
        &self,
        model: Option<&str>,
    ) -> Result<Vec<PluginVersionRow>, StoreError> {
        let mut qb = Self::query(
            "SELECT model, version, file, archive, description, first_loaded_micros, \
             last_current_micros FROM plugin_versions",
        );
        if let Some(model) = model {
            qb.push(" WHERE model = ").push_bind(model.to_string());
        }
        qb.push(" ORDER BY model, last_current_micros DESC, version");
        self.fetch_as(
            &self.pool,
            qb.build(),
            "read plugin versions",
            model.unwrap_or("*"),
        )
        .await
    }

    pub async fn set_current(&self, change: &CurrentChange) -> Result<Switched, StoreError> {
        let op = "make a plugin version current";
        let model = change.model.as_str();
        let mut tx = self.begin(op, model).await?;
        // Locks the model's row: a batch of the old version still committing finishes
        // first, and the time taken below is after it (see `check_lease`).
        let mut qb = Self::query("SELECT plugin_version FROM models WHERE name = ");
        qb.push_bind(model.to_string()).push(DB::LOCK_EXCLUSIVE);
        let before: Vec<(String,)> = self.fetch_as(&mut *tx, qb.build(), op, model).await?;
        let changed = before.first().map(|(v,)| v.as_str()) != Some(change.version.as_str());
        let now = now_micros();
        let mut qb = Self::query(
            "INSERT INTO models (name, kind, plugin_version, known_since, source, \
             folder_version, since_micros, state) VALUES (",
        );
        qb.separated(", ")
            .push_bind(model.to_string())
            .push_bind(change.kind.clone())
            .push_bind(change.version.clone())
            .push_bind(now)
            .push_bind(change.source.as_str().to_string())
            .push_bind(change.folder_version.clone())
            .push_bind(now)
            .push_bind("serving".to_string());
        qb.push(
            ") ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, \
             plugin_version = excluded.plugin_version, source = excluded.source, \
             folder_version = excluded.folder_version, state = excluded.state, \
             since_micros = CASE WHEN models.plugin_version = excluded.plugin_version \
             THEN models.since_micros ELSE excluded.since_micros END",
        );
        self.execute(&mut *tx, qb.build(), op, model).await?;
        let mut switched = Switched {
            changed,
            ..Switched::default()
        };
        if changed {
            let mut qb = Self::query("UPDATE plugin_versions SET last_current_micros = ");
            qb.push_bind(now)
                .push(" WHERE model = ")
                .push_bind(model.to_string())
                .push(" AND version = ")
                .push_bind(change.version.clone());
            self.execute(&mut *tx, qb.build(), op, model).await?;
            let mut qb = stale_views(model, &change.version);
            switched.marked = self.execute(&mut *tx, qb.build(), op, model).await?;
            let mut qb = Self::query("UPDATE dirty SET error = NULL WHERE model = ");
            qb.push_bind(model.to_string())
                .push(" AND error IS NOT NULL");
            self.execute(&mut *tx, qb.build(), op, model).await?;
            switched.requeued = self
                .move_parked(&mut tx, op, model, |qb| {
                    // What the old version's output caused: its failures, and
                    // keys too long for the index (a new version may key otherwise).
                    qb.push("p.model = ")
                        .push_bind(model.to_string())
                        .push(" AND p.reason IN (")
                        .push_bind(ParkReason::PluginFailed.as_str().to_string())
                        .push(", ")
                        .push_bind(ParkReason::StoreRefused.as_str().to_string())
                        .push(")");
                })
                .await?;
        }
        self.commit(tx, op, model).await?;
        Ok(switched)
    }

    /// Inside a projection commit: the references whose projection failed keep their mark,
    /// with the error. One statement per failed reference (each has its own message);
    /// failures are rare and a batch with many is narrowed down first anyway.
    pub(crate) async fn mark_projection_failed(
        &self,
        tx: &mut Tx<DB>,
        model: &str,
        failed: &[ProjectFailure],
    ) -> Result<(), StoreError> {
        for f in failed {
            let mut qb = Self::query("UPDATE dirty SET error = ");
            qb.push_bind(f.error.clone())
                .push(" WHERE reference = ")
                .push_bind(f.reference.clone())
                .push(" AND stamp = ")
                .push_bind(f.stamp);
            self.execute(&mut **tx, qb.build(), "record a failed projection", model)
                .await?;
        }
        Ok(())
    }

    pub async fn mark_stale_views(&self, model: &str, version: &str) -> Result<u64, StoreError> {
        let mut qb = stale_views(model, version);
        self.execute(&self.writer, qb.build(), "mark stale views", model)
            .await
    }

    pub async fn plugin_states(&self) -> Result<Vec<PluginState>, StoreError> {
        self.select_all(
            "SELECT name, kind, plugin_version, source, folder_version, since_micros, state \
             FROM models ORDER BY name",
            "read plugin states",
        )
        .await
    }

    pub async fn set_plugin_state(&self, model: &str, state: &str) -> Result<(), StoreError> {
        let mut qb = Self::query("UPDATE models SET state = ");
        qb.push_bind(state.to_string())
            .push(" WHERE name = ")
            .push_bind(model.to_string());
        self.execute(&self.writer, qb.build(), "record a plugin state", model)
            .await?;
        Ok(())
    }

    pub async fn record_file(&self, row: &PluginFileRow) -> Result<(), StoreError> {
        let mut qb = Self::query(
            "INSERT INTO plugin_files (file, model, version, error, checked_micros) VALUES (",
        );
        qb.separated(", ")
            .push_bind(row.file.clone())
            .push_bind(row.model.clone())
            .push_bind(row.version.clone())
            .push_bind(row.error.clone())
            .push_bind(row.checked_micros);
        qb.push(
            ") ON CONFLICT (file) DO UPDATE SET \
             model = COALESCE(excluded.model, plugin_files.model), \
             version = COALESCE(excluded.version, plugin_files.version), \
             error = excluded.error, checked_micros = excluded.checked_micros",
        );
        let model = row.model.as_deref().unwrap_or("*");
        self.execute(&self.writer, qb.build(), "record a plugin file", model)
            .await?;
        Ok(())
    }

    pub async fn forget_file(&self, file: &str) -> Result<(), StoreError> {
        let mut qb = Self::query("DELETE FROM plugin_files WHERE file = ");
        qb.push_bind(file.to_string());
        self.execute(&self.writer, qb.build(), "forget a plugin file", "*")
            .await?;
        Ok(())
    }

    pub async fn plugin_files(&self) -> Result<Vec<PluginFileRow>, StoreError> {
        self.select_all(
            "SELECT file, model, version, error, checked_micros FROM plugin_files ORDER BY file",
            "read plugin files",
        )
        .await
    }

    pub async fn reprojection(&self, model: &str, version: &str) -> Result<Progress, StoreError> {
        let mut qb = Self::query(
            "SELECT CAST(COUNT(*) AS BIGINT) AS total, \
             CAST(COALESCE(SUM(CASE WHEN plugin_version = ",
        );
        qb.push_bind(version.to_string())
            .push(
                " THEN 1 ELSE 0 END), 0) AS BIGINT) AS current, \
                 (SELECT CAST(COUNT(*) AS BIGINT) FROM dirty WHERE model = ",
            )
            .push_bind(model.to_string())
            .push(" AND error IS NOT NULL) AS failed FROM views WHERE model = ")
            .push_bind(model.to_string());
        let rows: Vec<(i64, i64, i64)> = self
            .fetch_as(&self.pool, qb.build(), "read re-projection progress", model)
            .await?;
        let (total, current, failed) = rows.first().copied().unwrap_or_default();
        let count = |n: i64| n.max(0) as u64;
        Ok(Progress {
            current: count(current),
            total: count(total),
            failed: count(failed),
        })
    }

    pub async fn failed_projections(
        &self,
        model: &str,
        limit: usize,
    ) -> Result<Vec<FailedProjection>, StoreError> {
        let mut qb = Self::query("SELECT reference, error FROM dirty WHERE model = ");
        qb.push_bind(model.to_string())
            .push(" AND error IS NOT NULL ORDER BY reference LIMIT ")
            .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
        self.fetch_as(&self.pool, qb.build(), "read failed projections", model)
            .await
    }
}

/// Marks the views of `model` not made by `version` dirty. A reference already
/// dirty gets a new stamp (a projection in flight with the old version will not
/// clear it); a new mark sorts after fresh work, so re-projection runs in the
/// background of intake.
fn stale_views<DB>(model: &str, version: &str) -> QueryBuilder<DB>
where
    DB: Backend,
    String: Column<DB>,
    Option<String>: Column<DB>,
    i64: Column<DB>,
    i32: Column<DB>,
{
    let mut qb =
        QueryBuilder::new("INSERT INTO dirty (reference, model, stamp) SELECT reference, model, ");
    qb.push_bind(REPROJECT_STAMP)
        .push(" FROM views WHERE model = ")
        .push_bind(model.to_string())
        .push(" AND plugin_version <> ")
        .push_bind(version.to_string())
        .push(" ON CONFLICT (reference) DO UPDATE SET stamp = dirty.stamp + 1, error = NULL");
    qb
}

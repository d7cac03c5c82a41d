//! Leases: which process runs a stage of a model. A lease is taken with one atomic upsert
//! that only succeeds for its holder or after it expired, renewed by every commit of the
//! stage, and checked inside that commit. And hosts: the `serve` processes that announced
//! themselves, under their lease-holder ids.

use crate::sql::{Backend, Column, Sql, Tx};
use crate::{CommitError, HostRow, Lease, LeaseRow, Stage, StoreError, now_micros};
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
    pub async fn acquire_lease(&self, lease: &Lease, ttl_micros: i64) -> Result<bool, StoreError> {
        self.acquire_row(
            lease.stage.as_str(),
            &lease.model,
            &lease.holder,
            ttl_micros,
        )
        .await
    }

    /// Takes (or renews) the lease row `(stage, model)` for `holder`: a stage's lease, or a
    /// duty (see `positions.rs`). One atomic upsert.
    pub(crate) async fn acquire_row(
        &self,
        stage: &str,
        model: &str,
        holder: &str,
        ttl_micros: i64,
    ) -> Result<bool, StoreError> {
        let now = now_micros();
        let mut qb = Self::query(
            "INSERT INTO leases (stage, model, holder, expires_micros, since_micros) VALUES (",
        );
        qb.separated(", ")
            .push_bind(stage.to_string())
            .push_bind(model.to_string())
            .push_bind(holder.to_string())
            .push_bind(now + ttl_micros)
            .push_bind(now);
        qb.push(
            ") ON CONFLICT (stage, model) DO UPDATE SET holder = excluded.holder, \
             expires_micros = excluded.expires_micros, \
             since_micros = CASE WHEN leases.holder = excluded.holder \
             THEN leases.since_micros ELSE excluded.since_micros END \
             WHERE leases.holder = excluded.holder OR leases.expires_micros < ",
        )
        .push_bind(now);
        let taken = self
            .execute(&self.writer, qb.build(), "acquire lease", model)
            .await?;
        Ok(taken == 1)
    }

    pub async fn lease_holder(
        &self,
        stage: Stage,
        model: &str,
    ) -> Result<Option<String>, StoreError> {
        let mut qb = Self::query("SELECT holder FROM leases WHERE stage = ");
        qb.push_bind(stage.as_str().to_string())
            .push(" AND model = ")
            .push_bind(model.to_string());
        let holders: Vec<(String,)> = self
            .fetch_as(&self.pool, qb.build(), "read lease", model)
            .await?;
        Ok(holders.into_iter().next().map(|(holder,)| holder))
    }

    pub async fn take_over_lease(
        &self,
        lease: &Lease,
        from: &str,
        ttl_micros: i64,
    ) -> Result<bool, StoreError> {
        let now = now_micros();
        let mut qb = Self::query("UPDATE leases SET holder = ");
        qb.push_bind(lease.holder.clone())
            .push(", expires_micros = ")
            .push_bind(now + ttl_micros)
            .push(", since_micros = ")
            .push_bind(now);
        push_lease(&mut qb, lease.stage.as_str(), &lease.model, from);
        let taken = self
            .execute(&self.writer, qb.build(), "take over lease", &lease.model)
            .await?;
        Ok(taken == 1)
    }

    /// Every lease, live or expired (an expired one is free for the next taker), and each
    /// holder's projection claims on each model as one `project` lease.
    pub async fn leases(&self) -> Result<Vec<LeaseRow>, StoreError> {
        self.select_all(
            "SELECT stage, model, holder, since_micros, expires_micros FROM leases \
             UNION ALL SELECT 'project', model, claimed_by, MIN(claimed_micros), \
             MAX(claimed_until) FROM dirty WHERE claimed_by IS NOT NULL \
             GROUP BY model, claimed_by ORDER BY 2, 1, 3",
            "read leases",
        )
        .await
    }

    /// How many items wait for a stage of a model: queued records (association) or
    /// references marked dirty without a failure (projection).
    pub async fn work_waiting(&self, stage: Stage, model: &str) -> Result<u64, StoreError> {
        let mut qb = Self::query(match stage {
            Stage::Associate => "SELECT COUNT(*) FROM queue WHERE model = ",
            Stage::Project => "SELECT COUNT(*) FROM dirty WHERE error IS NULL AND model = ",
        });
        qb.push_bind(model.to_string());
        let rows: Vec<(i64,)> = self
            .fetch_as(&self.pool, qb.build(), "count waiting work", model)
            .await?;
        Ok(rows.first().map_or(0, |(n,)| (*n).max(0) as u64))
    }

    /// Announces (or renews) a host: one upsert.
    pub async fn announce_host(&self, host: &HostRow) -> Result<(), StoreError> {
        let mut qb = Self::query(
            "INSERT INTO hosts (id, listen, version, started_micros, seen_micros) VALUES (",
        );
        qb.separated(", ")
            .push_bind(host.id.clone())
            .push_bind(host.listen.clone())
            .push_bind(host.version.clone())
            .push_bind(host.started_micros)
            .push_bind(host.seen_micros);
        qb.push(
            ") ON CONFLICT (id) DO UPDATE SET listen = excluded.listen, \
             version = excluded.version, seen_micros = excluded.seen_micros",
        );
        self.execute(&self.writer, qb.build(), "announce a host", "*")
            .await?;
        Ok(())
    }

    /// Forgets a host (it stops), and hosts not seen since `stale_before_micros` (they died
    /// long ago): one statement.
    pub async fn forget_host(&self, id: &str, stale_before_micros: i64) -> Result<(), StoreError> {
        let mut qb = Self::query("DELETE FROM hosts WHERE id = ");
        qb.push_bind(id.to_string())
            .push(" OR seen_micros < ")
            .push_bind(stale_before_micros);
        self.execute(&self.writer, qb.build(), "forget a host", "*")
            .await?;
        Ok(())
    }

    /// The hosts that announced themselves, first started first.
    pub async fn hosts(&self) -> Result<Vec<HostRow>, StoreError> {
        self.select_all(
            "SELECT id, listen, version, started_micros, seen_micros FROM hosts \
             ORDER BY started_micros, id",
            "read hosts",
        )
        .await
    }

    pub async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        self.release_row(lease.stage.as_str(), &lease.model, &lease.holder)
            .await
    }

    /// Deletes the lease row `(stage, model)` when `holder` holds it.
    pub(crate) async fn release_row(
        &self,
        stage: &str,
        model: &str,
        holder: &str,
    ) -> Result<(), StoreError> {
        let mut qb = Self::query("DELETE FROM leases");
        push_lease(&mut qb, stage, model, holder);
        self.execute(&self.writer, qb.build(), "release lease", model)
            .await?;
        Ok(())
    }

    /// Inside a commit: the lease must still be ours (and is kept from expiring), and
    /// the batch's plugin version, when given, must still be the model's current one.
    /// Both are checked by one statement; telling the two failures apart costs a
    /// second one only when the check fails.
    pub(crate) async fn check_lease(
        &self,
        tx: &mut Tx<DB>,
        lease: &Lease,
        version: Option<&str>,
    ) -> Result<(), CommitError> {
        let now = now_micros();
        let mut qb = Self::query("UPDATE leases SET expires_micros = CASE WHEN expires_micros < ");
        qb.push_bind(now)
            .push(" THEN ")
            .push_bind(now)
            .push(" ELSE expires_micros END");
        push_lease(&mut qb, lease.stage.as_str(), &lease.model, &lease.holder);
        if let Some(version) = version {
            // The model's row stays locked until this commit ends, so a plugin version made
            // current meanwhile waits for it, and one made current first is seen here: a
            // batch commits only while the version that decided it is the current one.
            // (A scalar subquery: PostgreSQL takes the row lock there, where it would skip
            // it in an `EXISTS`.)
            qb.push(" AND COALESCE((SELECT plugin_version FROM models WHERE name = ")
                .push_bind(lease.model.clone())
                .push(DB::LOCK_SHARED)
                .push("), ")
                .push_bind(version.to_string())
                .push(") = ")
                .push_bind(version.to_string());
        }
        let renewed = self
            .execute(&mut **tx, qb.build(), "check lease", &lease.model)
            .await?;
        if renewed == 1 {
            return Ok(());
        }
        if version.is_some() {
            let mut qb = Self::query("SELECT plugin_version FROM models WHERE name = ");
            qb.push_bind(lease.model.clone());
            let current: Vec<(String,)> = self
                .fetch_as(&mut **tx, qb.build(), "check plugin version", &lease.model)
                .await?;
            if let Some((current,)) = current.into_iter().next()
                && Some(current.as_str()) != version
            {
                return Err(CommitError::VersionChanged {
                    model: lease.model.clone(),
                    current,
                });
            }
        }
        Err(CommitError::LeaseLost {
            stage: lease.stage.as_str(),
            model: lease.model.clone(),
        })
    }
}

/// ` WHERE` the lease of `stage` and `model` is held by `holder`.
fn push_lease<DB>(qb: &mut QueryBuilder<DB>, stage: &str, model: &str, holder: &str)
where
    DB: Backend,
    String: Column<DB>,
{
    qb.push(" WHERE stage = ")
        .push_bind(stage.to_string())
        .push(" AND model = ")
        .push_bind(model.to_string())
        .push(" AND holder = ")
        .push_bind(holder.to_string());
}

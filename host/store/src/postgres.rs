//! PostgreSQL, for several hosts sharing one database: `= ANY($1)` lookups, `UNNEST` bulk
//! writes (a fixed number of parameters whatever the batch size), `ON CONFLICT` key claims,
//! and leases taken with an atomic upsert that only succeeds for the holder or after expiry.

use crate::rows::{self, KeyedDb, RECORD_COLUMNS, non_empty, now_micros};
use crate::sql::{Backend, Sql, Tx};
use crate::*;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions, PgQueryResult};
use sqlx::{Postgres, QueryBuilder};

/// Rows per bulk statement: bounds memory per statement, not parameters.
const ROWS_PER_STATEMENT: usize = 10_000;

impl Backend for Postgres {
    const MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
    const BEGIN: Option<&'static str> = None;
    /// One parameter whatever its length, so only memory bounds it.
    const IN_LIST_MAX: usize = 100_000;
    const LOCK_SHARED: &'static str = " FOR SHARE";
    const LOCK_SKIP: &'static str = " FOR UPDATE SKIP LOCKED";
    const CHANGES_LOCK: Option<&'static str> = Some("SELECT pg_advisory_xact_lock(7201321)");
    const CONNECTION_WAIT: &'static str = "every connection of the pool (database.pool_size) \
        stayed in use for longer than database.busy_timeout_ms";
    const LOCK_EXCLUSIVE: &'static str = " FOR UPDATE";
    type Upkeep = Arc<Analyze>;

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }

    /// `column = ANY($n)`.
    fn push_in_ints(qb: &mut QueryBuilder<Postgres>, column: &str, values: &[i64]) {
        qb.push(column)
            .push(" = ANY(")
            .push_bind(values.to_vec())
            .push(")");
    }

    /// `column = ANY($n)`.
    fn push_in_strings(qb: &mut QueryBuilder<Postgres>, column: &str, values: &[String]) {
        qb.push(column)
            .push(" = ANY(")
            .push_bind(values.to_vec())
            .push(")");
    }
}

/// Keeps the planner's statistics fresh as intake grows. Without them (a fresh database, or
/// a server with autovacuum off or behind), PostgreSQL plans the batch joins of `pending`
/// and `dirty_groups` as sequential scans of `intake`, which makes every batch cost the size
/// of the table. So each time the rows this process wrote (intake, keys, keyed, parked,
/// views) grew by half again (at least 20,000 rows) since the last time, it runs `ANALYZE`
/// on the pipeline's tables in the background: one statement per such step, not per batch.
#[derive(Debug, Default)]
pub struct Analyze {
    since: std::sync::atomic::AtomicU64,
    base: std::sync::atomic::AtomicU64,
    running: std::sync::atomic::AtomicBool,
}

const ANALYZE_MIN_ROWS: u64 = 20_000;

/// How long opening the store waits for its first connection to PostgreSQL.
const OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn strings<T>(items: &[T], f: impl Fn(&T) -> String) -> Vec<String> {
    items.iter().map(f).collect()
}

impl Sql<Postgres> {
    pub async fn open(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let open_err = StoreError::opening(url);
        let connect: PgConnectOptions = url.parse().map_err(open_err)?;
        // Reaching the database and migrating it use one connection of their own, bounded by
        // OPEN_WAIT whatever the busy timeout: a server that is down or a wrong address is
        // told within it, and a first connection slower than a short busy timeout (a loaded
        // server, a database just created) is not mistaken for an unreachable server.
        let mut first = Self::reach(url, &connect).await?;
        let migrated = Postgres::MIGRATOR.run(&mut first).await;
        let _ = first.close().await;
        migrated.map_err(|source| StoreError::Migrate {
            url: crate::redacted(url),
            source,
        })?;
        // A statement waits for a connection of the pool up to the busy timeout, as a
        // SQLite write waits for its writer.
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.busy_timeout)
            .connect_lazy_with(connect);
        Ok(Self::new(pool.clone(), pool))
    }

    /// One connection within OPEN_WAIT. A refused connection is tried again (the server may
    /// be starting) until then; any other failure to connect (a name that does not resolve, a
    /// password refused, a database that does not exist) is told at once, with its cause.
    async fn reach(url: &str, connect: &PgConnectOptions) -> Result<PgConnection, StoreError> {
        let attempts = async {
            loop {
                match PgConnection::connect_with(connect).await {
                    Err(sqlx::Error::Io(e))
                        if e.kind() == std::io::ErrorKind::ConnectionRefused =>
                    {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await
                    }
                    other => break other,
                }
            }
        };
        match tokio::time::timeout(OPEN_WAIT, attempts).await {
            Ok(Ok(connection)) => Ok(connection),
            Err(_) => Err(StoreError::Unreachable {
                url: crate::redacted(url),
                wait: OPEN_WAIT,
            }),
            Ok(Err(source)) => Err(StoreError::opening(url)(source)),
        }
    }

    /// Counts rows written; starts an `ANALYZE` when they grew enough (see [`Analyze`]).
    fn grew(&self, rows: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let a = &self.upkeep;
        let since = a.since.fetch_add(rows, Relaxed) + rows;
        let due = ANALYZE_MIN_ROWS.max(a.base.load(Relaxed) / 2);
        if since < due || a.running.swap(true, Relaxed) {
            return;
        }
        a.since.store(0, Relaxed);
        a.base.fetch_add(since, Relaxed);
        let store = self.clone();
        tokio::spawn(async move {
            let analyze = sqlx::query("ANALYZE intake, queue, keys, keyed, parked, dirty, views");
            if let Err(e) = store
                .execute(
                    &store.pool,
                    analyze,
                    "refresh the planner's statistics",
                    "*",
                )
                .await
            {
                tracing::warn!("{e}");
            }
            store.upkeep.running.store(false, Relaxed);
        });
    }

    pub async fn register_models(&self, models: &[ModelInfo]) -> Result<(), StoreError> {
        if models.is_empty() {
            return Ok(());
        }
        let statement = sqlx::query(
            "INSERT INTO models (name, kind, plugin_version, known_since) \
             SELECT n, k, v, $4 FROM UNNEST($1::text[], $2::text[], $3::text[]) AS m(n, k, v) \
             ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, \
             plugin_version = excluded.plugin_version",
        )
        .bind(strings(models, |m| m.name.clone()))
        .bind(strings(models, |m| m.kind.clone()))
        .bind(strings(models, |m| m.plugin_version.clone()))
        .bind(now_micros());
        self.execute(&self.writer, statement, "register models", "*")
            .await?;
        Ok(())
    }

    pub async fn append(
        &self,
        records: &[IntakeRecord],
        advance: Option<&Advance>,
    ) -> Result<Vec<Appended>, StoreError> {
        let mut answers = vec![Appended::Duplicate; records.len()];
        let fresh = rows::first_of_each(records);
        if fresh.is_empty() && advance.is_none() {
            return Ok(answers);
        }
        let model = fresh.first().map_or("*", |&i| records[i].model.as_str());
        let op = "append intake";
        let now = now_micros();
        let mut tx = self.begin(op, model).await?;
        for chunk in fresh.chunks(ROWS_PER_STATEMENT) {
            let pick = |f: fn(&IntakeRecord) -> String| -> Vec<String> {
                chunk.iter().map(|&i| f(&records[i])).collect()
            };
            // One statement: the new intake rows and their queue entries (in intake order).
            let statement = sqlx::query(
                "WITH new AS (INSERT INTO intake (model, system, adapter, external_id, \
                 occurred_at, occurred_micros, payload, payload_hash, received_micros) \
                 SELECT m, s, a, e, o, om, p, h, $9 FROM UNNEST($1::text[], $2::text[], \
                 $3::text[], $4::text[], $5::text[], $6::int8[], $7::text[], $8::text[]) \
                 AS r(m, s, a, e, o, om, p, h) \
                 ON CONFLICT (model, system, external_id, payload_hash) DO NOTHING \
                 RETURNING seq, model, system, external_id, payload_hash), \
                 queued AS (INSERT INTO queue (model, seq) SELECT model, seq FROM new ORDER BY seq) \
                 SELECT seq, model, system, external_id, payload_hash FROM new",
            )
            .bind(pick(|r| r.model.clone()))
            .bind(pick(|r| r.source.system.clone()))
            .bind(pick(|r| r.source.adapter.clone()))
            .bind(pick(|r| r.external_id.clone()))
            .bind(pick(|r| r.occurred_at.clone()))
            .bind(chunk.iter().map(|&i| records[i].occurred_micros).collect::<Vec<i64>>())
            .bind(pick(|r| r.payload.clone()))
            .bind(pick(|r| r.payload_hash.clone()))
            .bind(now);
            let rows: Vec<(i64, String, String, String, String)> =
                self.fetch_as(&mut *tx, statement, op, model).await?;
            let index = rows::identity_index(records, chunk);
            for (seq, model, system, external_id, payload_hash) in rows {
                if let Some(&i) = index.get(&(model, system, external_id, payload_hash)) {
                    answers[i] = Appended::Accepted(seq);
                }
            }
        }
        if let Some(advance) = advance {
            self.advance_in(&mut tx, advance).await?;
        }
        self.commit(tx, op, model).await?;
        let accepted = answers
            .iter()
            .filter(|a| matches!(a, Appended::Accepted(_)))
            .count();
        self.grew(accepted as u64);
        Ok(answers)
    }

    pub async fn lookup_keys(
        &self,
        model: &str,
        keys: &[String],
    ) -> Result<HashMap<String, String>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let statement =
            sqlx::query("SELECT key, reference FROM keys WHERE model = $1 AND key = ANY($2)")
                .bind(model)
                .bind(keys);
        let rows: Vec<(String, String)> = self
            .fetch_as(&self.pool, statement, "look up keys", model)
            .await?;
        Ok(rows.into_iter().collect())
    }

    pub async fn lookup_parents(
        &self,
        keys: &[ParentKey],
    ) -> Result<HashMap<ParentKey, String>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let statement = sqlx::query(
            "SELECT k.model, k.key, k.reference FROM keys k \
             JOIN UNNEST($1::text[], $2::text[]) AS p(model, key) \
             ON k.model = p.model AND k.key = p.key",
        )
        .bind(strings(keys, |k| k.model.clone()))
        .bind(strings(keys, |k| k.key.clone()));
        let rows: Vec<(String, String, String)> = self
            .fetch_as(&self.pool, statement, "look up parents", "*")
            .await?;
        Ok(rows
            .into_iter()
            .map(|(model, key, reference)| (ParentKey { model, key }, reference))
            .collect())
    }

    pub async fn commit_association(
        &self,
        lease: &Lease,
        o: &AssociationOutcome,
    ) -> Result<CommitSummary, CommitError> {
        let op = "commit association";
        let model = o.model.as_str();
        let mut tx = self.begin(op, model).await?;
        self.check_lease(&mut tx, lease, non_empty(&o.plugin_version))
            .await?;
        // Association commits are serialised (they are short: a few bulk statements), so
        // that a record parked for a parent key and the batch claiming that key always see
        // each other: one of them commits first, and the other's healing finds it.
        let statement = sqlx::query("SELECT pg_advisory_xact_lock(7201320)");
        self.execute(&mut *tx, statement, op, model).await?;

        let healed = self.write_association(&mut tx, o).await?;
        self.commit(tx, op, model).await?;
        self.grew((o.keyed.len() + o.parked.len() + o.claims.len()) as u64);
        Ok(CommitSummary { healed })
    }

    /// The writes of an association outcome inside an open transaction whose lease (and
    /// version) is checked and which holds the association lock: claims (all or nothing),
    /// keyed and parked rows, the queue positions consumed, healing, dirty marks. Returns
    /// how many parked records it healed.
    pub(crate) async fn write_association(
        &self,
        tx: &mut Tx<Postgres>,
        o: &AssociationOutcome,
    ) -> Result<u64, CommitError> {
        let op = "commit association";
        let model = o.model.as_str();
        if !o.claims.is_empty() {
            let statement = sqlx::query(
                "INSERT INTO keys (model, key, reference) \
                 SELECT $1, k, r FROM UNNEST($2::text[], $3::text[]) AS c(k, r) \
                 ON CONFLICT (model, key) DO NOTHING RETURNING key",
            )
            .bind(model)
            .bind(strings(&o.claims, |c| c.0.clone()))
            .bind(strings(&o.claims, |c| c.1.clone()));
            let claimed: Vec<(String,)> = self.fetch_as(&mut **tx, statement, op, model).await?;
            if claimed.len() != o.claims.len() {
                let claimed: std::collections::HashSet<String> =
                    claimed.into_iter().map(|(key,)| key).collect();
                let lost = o
                    .claims
                    .iter()
                    .filter(|(k, _)| !claimed.contains(k))
                    .map(|(k, _)| k.clone())
                    .collect();
                return Err(CommitError::KeyConflict(lost));
            }
        }

        if !o.keyed.is_empty() {
            let statement = sqlx::query(
                "INSERT INTO keyed (seq, model, reference, parent_ref, parents, plugin_version, \
                 keyed_micros) \
                 SELECT s, $1, r, pr, p, $2, $3 \
                 FROM UNNEST($4::int8[], $5::text[], $6::text[], $7::text[]) AS k(s, r, pr, p) \
                 ON CONFLICT (seq) DO NOTHING",
            )
            .bind(model)
            .bind(&o.plugin_version)
            .bind(o.now_micros)
            .bind(o.keyed.iter().map(|k| k.seq).collect::<Vec<i64>>())
            .bind(
                o.keyed
                    .iter()
                    .map(|k| k.reference.clone())
                    .collect::<Vec<Option<String>>>(),
            )
            .bind(
                o.keyed
                    .iter()
                    .map(|k| k.parents.first().map(|p| p.reference.clone()))
                    .collect::<Vec<Option<String>>>(),
            )
            .bind(strings(&o.keyed, |k| rows::parents_json(&k.parents)));
            self.execute(&mut **tx, statement, op, model).await?;
        }

        if !o.parked.is_empty() {
            let statement = sqlx::query(
                "INSERT INTO parked (seq, model, reason, details, awaited_model, awaited_key, \
                 attempts, first_micros, last_micros) \
                 SELECT s, $1, r, d, am, ak, a, f, $2 FROM UNNEST($3::int8[], $4::text[], \
                 $5::text[], $6::text[], $7::text[], $8::int4[], $9::int8[]) \
                 AS p(s, r, d, am, ak, a, f) \
                 ON CONFLICT (seq) DO UPDATE SET reason = excluded.reason, \
                 details = excluded.details, awaited_model = excluded.awaited_model, \
                 awaited_key = excluded.awaited_key, attempts = excluded.attempts, \
                 last_micros = excluded.last_micros",
            )
            .bind(model)
            .bind(o.now_micros)
            .bind(o.parked.iter().map(|p| p.seq).collect::<Vec<i64>>())
            .bind(strings(&o.parked, |p| p.reason.as_str().to_string()))
            .bind(strings(&o.parked, |p| p.details.clone()))
            .bind(
                o.parked
                    .iter()
                    .map(|p| p.awaiting.as_ref().map(|a| a.model.clone()))
                    .collect::<Vec<Option<String>>>(),
            )
            .bind(
                o.parked
                    .iter()
                    .map(|p| p.awaiting.as_ref().map(|a| a.key.clone()))
                    .collect::<Vec<Option<String>>>(),
            )
            .bind(o.parked.iter().map(|p| p.attempts).collect::<Vec<i32>>())
            .bind(
                o.parked
                    .iter()
                    .map(|p| p.first_micros)
                    .collect::<Vec<i64>>(),
            );
            self.execute(&mut **tx, statement, op, model).await?;
        }

        if !o.done.is_empty() {
            let statement = sqlx::query("DELETE FROM queue WHERE pos = ANY($1)").bind(&o.done);
            self.execute(&mut **tx, statement, op, model).await?;
        }

        let healed = self.heal(tx, model, &o.claims, &o.parked).await?;

        if !o.dirty.is_empty() {
            let statement = sqlx::query(
                "INSERT INTO dirty (reference, model, stamp) \
                 SELECT r, $1, $2 FROM UNNEST($3::text[]) AS d(r) \
                 ON CONFLICT (reference) DO UPDATE SET stamp = excluded.stamp, error = NULL",
            )
            .bind(model)
            .bind(o.stamp)
            .bind(&o.dirty);
            self.execute(&mut **tx, statement, op, model).await?;
        }

        Ok(healed)
    }

    /// Commits a re-association in one transaction: checks the lease and version, resets the
    /// model's association state, and writes the new decisions as an association batch does.
    pub async fn commit_reassociation(
        &self,
        lease: &Lease,
        r: &Reassociate,
    ) -> Result<CommitSummary, CommitError> {
        let op = "reassociate";
        let model = r.outcome.model.as_str();
        let mut tx = self.begin(op, model).await?;
        self.check_lease(&mut tx, lease, non_empty(&r.outcome.plugin_version))
            .await?;
        let statement = sqlx::query("SELECT pg_advisory_xact_lock(7201320)");
        self.execute(&mut *tx, statement, op, model).await?;
        self.reset_for_reassociation(&mut tx, r).await?;
        let healed = self.write_association(&mut tx, &r.outcome).await?;
        self.commit(tx, op, model).await?;
        Ok(CommitSummary { healed })
    }

    pub async fn claim_dirty(
        &self,
        claim: &Lease,
        limit: usize,
        ttl_micros: i64,
    ) -> Result<DirtyBatch, StoreError> {
        let op = "read dirty references";
        let model = claim.model.as_str();
        let seen = self.claim_marks(claim, limit, ttl_micros).await?;
        if seen.is_empty() {
            return Ok(DirtyBatch::default());
        }
        let sql = format!(
            "SELECT k.reference, k.parents, {RECORD_COLUMNS} FROM keyed k \
             JOIN intake i ON i.seq = k.seq WHERE k.reference = ANY($1) \
             ORDER BY k.reference, k.seq"
        );
        let statement = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(strings(&seen, |s| s.0.clone()));
        let rows: Vec<KeyedDb> = self.fetch_as(&self.pool, statement, op, model).await?;
        let groups = rows::group_rows(&seen, rows, op, model)?;
        Ok(DirtyBatch { groups, seen })
    }

    pub async fn commit_projection(
        &self,
        lease: &Lease,
        views: &[ViewRow],
        seen: &[(String, i64)],
        failed: &[ProjectFailure],
    ) -> Result<usize, CommitError> {
        let op = "commit projection";
        let model = lease.model.as_str();
        let mut p = self.open_projection(lease, views, seen, failed).await?;
        let (views, seen) = (&p.held.views[..], &p.held.seen[..]);
        let tx = &mut p.tx;
        if !views.is_empty() {
            let statement = sqlx::query(
                "INSERT INTO views (reference, model, first_seq, canonical, root, lineage, \
                 parents, plugin_version, updated_micros) \
                 SELECT r, m, f, c, ro, l, p, v, $9 FROM UNNEST($1::text[], $2::text[], \
                 $3::int8[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[]) \
                 AS x(r, m, f, c, ro, l, p, v) \
                 ON CONFLICT (reference) DO UPDATE SET first_seq = excluded.first_seq, \
                 canonical = excluded.canonical, root = excluded.root, \
                 lineage = excluded.lineage, parents = excluded.parents, \
                 plugin_version = excluded.plugin_version, updated_micros = excluded.updated_micros",
            )
            .bind(strings(views, |v| v.reference.clone()))
            .bind(strings(views, |v| v.model.clone()))
            .bind(views.iter().map(|v| v.first_seq).collect::<Vec<i64>>())
            .bind(strings(views, |v| v.canonical.clone()))
            .bind(strings(views, |v| v.root.clone()))
            .bind(strings(views, |v| v.lineage.clone()))
            .bind(strings(views, |v| v.parents.clone()))
            .bind(strings(views, |v| v.plugin_version.clone()))
            .bind(now_micros());
            self.execute(&mut **tx, statement, op, model).await?;
        }
        if !seen.is_empty() {
            let statement = sqlx::query(
                "DELETE FROM dirty d USING UNNEST($1::text[], $2::int8[]) AS s(reference, stamp) \
                 WHERE d.reference = s.reference AND d.stamp = s.stamp",
            )
            .bind(strings(seen, |s| s.0.clone()))
            .bind(seen.iter().map(|s| s.1).collect::<Vec<i64>>());
            self.execute(&mut **tx, statement, op, model).await?;
        }
        let written = self.close_projection(lease, p).await?;
        self.grew(written as u64);
        Ok(written)
    }
}

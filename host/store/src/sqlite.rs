//! The embedded default: one SQLite file, WAL, multi-row statements chunked under the
//! bound-parameter limit. Write transactions start with `BEGIN IMMEDIATE` so that two
//! processes on one file queue on the write lock (busy timeout) instead of failing on
//! lock upgrade.

use crate::rows::{self, KeyedDb, RECORD_COLUMNS, non_empty, now_micros};
use crate::sql::{Backend, Sql, Tx};
use crate::*;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Sqlite, SqliteConnection};
use std::str::FromStr;

/// SQLite's bound-parameter limit is 32,766; every statement stays under this.
const MAX_PARAMS: usize = 32_000;

impl Backend for Sqlite {
    const MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
    const BEGIN: Option<&'static str> = Some("BEGIN IMMEDIATE");
    const IN_LIST_MAX: usize = MAX_PARAMS;
    const LOCK_SHARED: &'static str = "";
    const LOCK_SKIP: &'static str = "";
    const CHANGES_LOCK: Option<&'static str> = None;
    const CONNECTION_WAIT: &'static str = "this process's one writer connection stayed held by \
        other writes for longer than database.busy_timeout_ms";
    const LOCK_EXCLUSIVE: &'static str = "";
    type Upkeep = ();

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    /// `column IN (?, ?, …)`.
    fn push_in_ints(qb: &mut QueryBuilder<Sqlite>, column: &str, values: &[i64]) {
        push_in(qb, column, values.iter().copied());
    }

    /// `column IN (?, ?, …)`.
    fn push_in_strings(qb: &mut QueryBuilder<Sqlite>, column: &str, values: &[String]) {
        push_in(qb, column, values.iter().cloned());
    }
}

/// `column IN (?, ?, …)`.
fn push_in<T>(qb: &mut QueryBuilder<Sqlite>, column: &str, values: impl Iterator<Item = T>)
where
    T: for<'q> sqlx::Encode<'q, Sqlite> + sqlx::Type<Sqlite>,
{
    qb.push(column).push(" IN (");
    let mut list = qb.separated(", ");
    for v in values {
        list.push_bind(v);
    }
    qb.push(")");
}

/// An exclusive `flock` on the database file (created empty if missing: SQLite treats an
/// empty file as a new database), held while the file is set up and migrated. SQLite's own
/// locks are `fcntl` locks, which are independent of `flock` on Linux, so this only orders
/// flowhost processes among themselves. In-memory databases and other platforms take no lock.
struct SetupLock(Option<std::fs::File>);

impl SetupLock {
    fn take(path: &std::path::Path) -> Self {
        let in_memory = path.as_os_str().is_empty() || path.as_os_str() == ":memory:";
        #[cfg(unix)]
        if !in_memory
            && let Ok(file) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
        {
            use std::os::fd::AsRawFd;
            // SAFETY: flock(2) on a descriptor we own; it is released when the file closes.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Self(Some(file));
            }
        }
        let _ = (path, in_memory);
        Self(None)
    }
}

impl Drop for SetupLock {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(file) = &self.0 {
            use std::os::fd::AsRawFd;
            // SAFETY: as above.
            unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
        }
    }
}

/// Whether a SQLite URL names a database without a file, read as sqlx reads it (its
/// parameters percent-decoded): `:memory:`, `mode=memory`, the `memdb` VFS, or a SQLite URI
/// file name for memory (`file::memory:`). What this misses, SQLite's own answer after
/// connecting catches (`Sql::open`); this one keeps a lock file from being made for it.
fn in_memory(url: &str) -> bool {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:"
        || (database.starts_with("file:")
            && (database.contains(":memory:") || database.contains("mode=memory")))
        || form_urlencoded::parse(params.as_bytes())
            .any(|(k, v)| (k == "mode" && v == "memory") || (k == "vfs" && v == "memdb"))
}

/// The refusal of an in-memory (or temporary) SQLite database, with what to give instead.
fn no_file(url: &str) -> StoreError {
    StoreError::Url(format!(
        "'{}' is an in-memory SQLite database (or a temporary one: no file is named), which \
         flowhost does not take: what it holds would be gone when the process exits, and \
         SQLite serves one to several connections with table locks that fail instead of \
         waiting; give a file, such as sqlite://flowhost.db (in a temporary folder for a run \
         you throw away)",
        crate::redacted(url)
    ))
}

/// Each connection's share of `sqlite_cache_mb`, in KiB (a negative `cache_size`), at
/// least 256 KiB.
fn cache_kib_per_connection(options: &StoreOptions) -> u64 {
    (u64::from(options.sqlite_cache_mb) * 1024 / u64::from(options.max_connections.max(1))).max(256)
}

/// SQLite keeps memory statistics unless told otherwise, taking one process-wide mutex
/// around every allocation of every connection; flowhost never reads them. Turned off once,
/// before the first connection: once SQLite is initialised the option is refused
/// (`SQLITE_MISUSE`) and nothing changes. `FLOWHOST_SQLITE_MEMSTATUS` (any value) leaves
/// them on, for the comparison in BENCHMARKS.md. Called by every store that opens a SQLite
/// file; a process that opens SQLite connections of its own first calls it too.
pub fn without_memory_statistics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("FLOWHOST_SQLITE_MEMSTATUS").is_some() {
            return;
        }
        // SAFETY: the option takes one int; called before any connection of this process.
        let rc = unsafe {
            libsqlite3_sys::sqlite3_config(
                libsqlite3_sys::SQLITE_CONFIG_MEMSTATUS,
                0 as std::ffi::c_int,
            )
        };
        tracing::debug!(rc, "SQLite memory statistics off");
    });
}

impl Sql<Sqlite> {
    pub async fn open(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        if in_memory(url) {
            return Err(no_file(url));
        }
        without_memory_statistics();
        let open_err = StoreError::opening(url);
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(open_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if options.durable_commits {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .busy_timeout(options.busy_timeout)
            // The pool's page cache shared out between its connections: bounded memory
            // whatever the data size (BENCHMARKS.md: memory). Temporary tables in memory.
            .pragma(
                "cache_size",
                format!("-{}", cache_kib_per_connection(options)),
            )
            .pragma("temp_store", "memory")
            .statement_cache_capacity(options.sqlite_statement_cache.max(1));
        // Two processes opening a new file at once would race to switch it to WAL (which
        // fails with "database is locked" instead of waiting) and to migrate it (sqlx takes no
        // lock on SQLite): one sets the file up while the other waits on an advisory lock.
        let file = connect.get_filename().to_path_buf();
        let setting_up = SetupLock::take(&file);
        // The file is set up (WAL, migrations) on a connection of its own, outside the
        // writer's pool: on a new file, switching to WAL and migrating write and sync, which
        // on a loaded machine may take longer than the busy timeout that bounds a wait for
        // the writer. Connections opened after this only read the file's settings.
        let mut setup = SqliteConnection::connect_with(&connect)
            .await
            .map_err(open_err)?;
        // SQLite's own answer: the main database of a connection to memory or to a
        // temporary database has no file, however the URL asked for it.
        let main_file: String =
            sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                .fetch_one(&mut setup)
                .await
                .map_err(open_err)?;
        if main_file.is_empty() {
            setup.close().await.map_err(open_err)?;
            return Err(no_file(url));
        }
        Sqlite::MIGRATOR
            .run(&mut setup)
            .await
            .map_err(|source| StoreError::Migrate {
                url: crate::redacted(url),
                source,
            })?;
        setup.close().await.map_err(open_err)?;
        drop(setting_up);
        // One of the connections is the writer's (see `Sql::writer`), the rest read. The
        // writer's is opened by the first write, within that write's wait for it.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.busy_timeout)
            .connect_lazy_with(connect.clone());
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.saturating_sub(1).max(1))
            .connect_with(connect)
            .await
            .map_err(open_err)?;
        Ok(Self::new(pool, writer))
    }

    pub async fn register_models(&self, models: &[ModelInfo]) -> Result<(), StoreError> {
        if models.is_empty() {
            return Ok(());
        }
        let mut qb = QueryBuilder::<Sqlite>::new(
            "INSERT INTO models (name, kind, plugin_version, known_since) ",
        );
        let now = now_micros();
        qb.push_values(models, |mut b, m| {
            b.push_bind(m.name.clone())
                .push_bind(m.kind.clone())
                .push_bind(m.plugin_version.clone())
                .push_bind(now);
        });
        qb.push(
            " ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, \
             plugin_version = excluded.plugin_version",
        );
        self.execute(&self.writer, qb.build(), "register models", "*")
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
        for chunk in fresh.chunks(MAX_PARAMS / 9) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO intake (model, system, adapter, external_id, occurred_at, \
                 occurred_micros, payload, payload_hash, received_micros) ",
            );
            qb.push_values(chunk, |mut b, &i| {
                let r = &records[i];
                b.push_bind(r.model.clone())
                    .push_bind(r.source.system.clone())
                    .push_bind(r.source.adapter.clone())
                    .push_bind(r.external_id.clone())
                    .push_bind(r.occurred_at.clone())
                    .push_bind(r.occurred_micros)
                    .push_bind(r.payload.clone())
                    .push_bind(r.payload_hash.clone())
                    .push_bind(now);
            });
            qb.push(
                " ON CONFLICT (model, system, external_id, payload_hash) DO NOTHING \
                 RETURNING seq, model, system, external_id, payload_hash",
            );
            let rows: Vec<(i64, String, String, String, String)> =
                self.fetch_as(&mut *tx, qb.build(), op, model).await?;
            let mut queued: Vec<(i64, String)> = Vec::with_capacity(rows.len());
            let index = rows::identity_index(records, chunk);
            for (seq, model, system, external_id, payload_hash) in rows {
                let key = (model, system, external_id, payload_hash);
                if let Some(&i) = index.get(&key) {
                    answers[i] = Appended::Accepted(seq);
                    queued.push((seq, records[i].model.clone()));
                }
            }
            queued.sort();
            for part in queued.chunks(MAX_PARAMS / 2) {
                let mut qb = QueryBuilder::<Sqlite>::new("INSERT INTO queue (model, seq) ");
                qb.push_values(part, |mut b, (seq, model)| {
                    b.push_bind(model.clone()).push_bind(*seq);
                });
                self.execute(&mut *tx, qb.build(), op, model).await?;
            }
        }
        if let Some(advance) = advance {
            self.advance_in(&mut tx, advance).await?;
        }
        self.commit(tx, op, model).await?;
        Ok(answers)
    }

    pub async fn lookup_keys(
        &self,
        model: &str,
        keys: &[String],
    ) -> Result<HashMap<String, String>, StoreError> {
        let mut owners = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(MAX_PARAMS - 1) {
            let mut qb =
                QueryBuilder::<Sqlite>::new("SELECT key, reference FROM keys WHERE model = ");
            qb.push_bind(model.to_string()).push(" AND key IN (");
            let mut list = qb.separated(", ");
            for key in chunk {
                list.push_bind(key.clone());
            }
            qb.push(")");
            let rows: Vec<(String, String)> = self
                .fetch_as(&self.pool, qb.build(), "look up keys", model)
                .await?;
            owners.extend(rows);
        }
        Ok(owners)
    }

    pub async fn lookup_parents(
        &self,
        keys: &[ParentKey],
    ) -> Result<HashMap<ParentKey, String>, StoreError> {
        let mut owners = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(MAX_PARAMS / 2) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "SELECT model, key, reference FROM keys WHERE (model, key) IN (",
            );
            qb.push_values(chunk, |mut b, k| {
                b.push_bind(k.model.clone()).push_bind(k.key.clone());
            });
            qb.push(")");
            let rows: Vec<(String, String, String)> = self
                .fetch_as(&self.pool, qb.build(), "look up parents", "*")
                .await?;
            owners.extend(
                rows.into_iter()
                    .map(|(model, key, reference)| (ParentKey { model, key }, reference)),
            );
        }
        Ok(owners)
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

        let healed = self.write_association(&mut tx, o).await?;
        self.commit(tx, op, model).await?;
        Ok(CommitSummary { healed })
    }

    /// The writes of an association outcome inside an open transaction whose lease (and
    /// version) is checked: claims (all or nothing), keyed and parked rows, the queue
    /// positions consumed, healing, dirty marks. Returns how many parked records it healed.
    pub(crate) async fn write_association(
        &self,
        tx: &mut Tx<Sqlite>,
        o: &AssociationOutcome,
    ) -> Result<u64, CommitError> {
        let op = "commit association";
        let model = o.model.as_str();
        // Claims: all or nothing. A key another worker claimed first fails the batch.
        for chunk in o.claims.chunks(MAX_PARAMS / 3) {
            let mut qb = QueryBuilder::<Sqlite>::new("INSERT INTO keys (model, key, reference) ");
            qb.push_values(chunk, |mut b, (key, reference)| {
                b.push_bind(model.to_string())
                    .push_bind(key.clone())
                    .push_bind(reference.clone());
            });
            qb.push(" ON CONFLICT (model, key) DO NOTHING RETURNING key");
            let claimed: Vec<(String,)> = self.fetch_as(&mut **tx, qb.build(), op, model).await?;
            if claimed.len() != chunk.len() {
                let claimed: std::collections::HashSet<String> =
                    claimed.into_iter().map(|(key,)| key).collect();
                let lost = chunk
                    .iter()
                    .filter(|(k, _)| !claimed.contains(k))
                    .map(|(k, _)| k.clone())
                    .collect();
                return Err(CommitError::KeyConflict(lost));
            }
        }

        for chunk in o.keyed.chunks(MAX_PARAMS / 7) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO keyed (seq, model, reference, parent_ref, parents, plugin_version, \
                 keyed_micros) ",
            );
            qb.push_values(chunk, |mut b, k| {
                b.push_bind(k.seq)
                    .push_bind(model.to_string())
                    .push_bind(k.reference.clone())
                    .push_bind(k.parents.first().map(|p| p.reference.clone()))
                    .push_bind(rows::parents_json(&k.parents))
                    .push_bind(o.plugin_version.clone())
                    .push_bind(o.now_micros);
            });
            qb.push(" ON CONFLICT (seq) DO NOTHING");
            self.execute(&mut **tx, qb.build(), op, model).await?;
        }

        for chunk in o.parked.chunks(MAX_PARAMS / 9) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO parked (seq, model, reason, details, awaited_model, awaited_key, \
                 attempts, first_micros, last_micros) ",
            );
            qb.push_values(chunk, |mut b, p| {
                b.push_bind(p.seq)
                    .push_bind(model.to_string())
                    .push_bind(p.reason.as_str().to_string())
                    .push_bind(p.details.clone())
                    .push_bind(p.awaiting.as_ref().map(|a| a.model.clone()))
                    .push_bind(p.awaiting.as_ref().map(|a| a.key.clone()))
                    .push_bind(p.attempts)
                    .push_bind(p.first_micros)
                    .push_bind(o.now_micros);
            });
            qb.push(
                " ON CONFLICT (seq) DO UPDATE SET reason = excluded.reason, \
                 details = excluded.details, awaited_model = excluded.awaited_model, \
                 awaited_key = excluded.awaited_key, attempts = excluded.attempts, \
                 last_micros = excluded.last_micros",
            );
            self.execute(&mut **tx, qb.build(), op, model).await?;
        }

        for chunk in o.done.chunks(MAX_PARAMS) {
            let mut qb = QueryBuilder::<Sqlite>::new("DELETE FROM queue WHERE pos IN (");
            let mut list = qb.separated(", ");
            for pos in chunk {
                list.push_bind(*pos);
            }
            qb.push(")");
            self.execute(&mut **tx, qb.build(), op, model).await?;
        }

        let healed = self.heal(tx, model, &o.claims, &o.parked).await?;

        for chunk in o.dirty.chunks(MAX_PARAMS / 3) {
            let mut qb =
                QueryBuilder::<Sqlite>::new("INSERT INTO dirty (reference, model, stamp) ");
            qb.push_values(chunk, |mut b, reference| {
                b.push_bind(reference.clone())
                    .push_bind(model.to_string())
                    .push_bind(o.stamp);
            });
            qb.push(" ON CONFLICT (reference) DO UPDATE SET stamp = excluded.stamp, error = NULL");
            self.execute(&mut **tx, qb.build(), op, model).await?;
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
        let seen = self
            .claim_marks(claim, limit.min(MAX_PARAMS), ttl_micros)
            .await?;
        if seen.is_empty() {
            return Ok(DirtyBatch::default());
        }
        let mut qb = QueryBuilder::<Sqlite>::new(format!(
            "SELECT k.reference, k.parents, {RECORD_COLUMNS} FROM keyed k \
             JOIN intake i ON i.seq = k.seq WHERE k.reference IN ("
        ));
        let mut list = qb.separated(", ");
        for (reference, _) in &seen {
            list.push_bind(reference.clone());
        }
        qb.push(") ORDER BY k.reference, k.seq");
        let rows: Vec<KeyedDb> = self.fetch_as(&self.pool, qb.build(), op, model).await?;
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
        let now = now_micros();
        for chunk in views.chunks(MAX_PARAMS / 9) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO views (reference, model, first_seq, canonical, root, lineage, \
                 parents, plugin_version, updated_micros) ",
            );
            qb.push_values(chunk, |mut b, v| {
                b.push_bind(v.reference.clone())
                    .push_bind(v.model.clone())
                    .push_bind(v.first_seq)
                    .push_bind(v.canonical.clone())
                    .push_bind(v.root.clone())
                    .push_bind(v.lineage.clone())
                    .push_bind(v.parents.clone())
                    .push_bind(v.plugin_version.clone())
                    .push_bind(now);
            });
            qb.push(
                " ON CONFLICT (reference) DO UPDATE SET first_seq = excluded.first_seq, \
                 canonical = excluded.canonical, root = excluded.root, \
                 lineage = excluded.lineage, parents = excluded.parents, \
                 plugin_version = excluded.plugin_version, updated_micros = excluded.updated_micros",
            );
            self.execute(&mut **tx, qb.build(), op, model).await?;
        }
        for chunk in seen.chunks(MAX_PARAMS / 2) {
            let mut qb =
                QueryBuilder::<Sqlite>::new("DELETE FROM dirty WHERE (reference, stamp) IN (");
            qb.push_values(chunk, |mut b, (reference, stamp)| {
                b.push_bind(reference.clone()).push_bind(*stamp);
            });
            qb.push(")");
            self.execute(&mut **tx, qb.build(), op, model).await?;
        }
        self.close_projection(lease, p).await
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    #[test]
    fn the_pool_cache_is_shared_out_between_connections() {
        let options = |max_connections, sqlite_cache_mb| StoreOptions {
            max_connections,
            sqlite_cache_mb,
            ..StoreOptions::default()
        };
        assert_eq!(cache_kib_per_connection(&options(8, 32)), 4096);
        assert_eq!(cache_kib_per_connection(&options(1, 32)), 32 * 1024);
        assert_eq!(cache_kib_per_connection(&options(64, 1)), 256);
        assert_eq!(cache_kib_per_connection(&options(0, 8)), 8 * 1024);
    }
}

#[cfg(test)]
mod writer_tests {
    use super::*;
    use crate::Store;
    use flowhost_core::intake::{IntakeLimits, parse_line_within};
    use std::time::{Duration, Instant};

    fn record(id: &str) -> crate::IntakeRecord {
        let line = format!(
            r#"{{"model":"device","source":{{"system":"crm"}},"id":"{id}","occurred_at":"2026-03-01T10:00:00Z","payload":{{"serial":"{id}"}}}}"#
        );
        parse_line_within(
            line.as_bytes(),
            chrono::Utc::now(),
            &IntakeLimits::default(),
        )
        .unwrap()
    }

    /// An in-memory database is refused when the store opens, with what to give instead,
    /// whichever way the URL names it; a file whose name merely mentions memory is not.
    #[tokio::test]
    async fn an_in_memory_database_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        for url in [
            "sqlite::memory:",
            "sqlite://:memory:",
            "sqlite://?mode=memory",
            "sqlite://x.db?mode=memory&cache=shared",
            // Escapes are decoded before the parameters are read.
            "sqlite://x.db?m%6Fde=memor%79",
            "sqlite://x.db?vfs=memdb",
            // A SQLite URI file name, and no file name at all (a temporary database).
            "sqlite://file::memory:",
            "sqlite://file:x?mode=memory",
            "sqlite://",
        ] {
            let e = Store::open(url).await.err().expect(url).to_string();
            assert!(e.contains("in-memory SQLite database"), "{url}: {e}");
            assert!(e.contains("sqlite://flowhost.db"), "{url}: {e}");
        }
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("memory.db").display()
        );
        Store::open(&url).await.expect("a file named memory");
    }

    /// A write that cannot get this process's writer connection within the busy timeout
    /// fails in bounded time with a reason naming the connection and the setting, having
    /// written nothing; once the writer is free again, the same write goes through once.
    #[tokio::test]
    async fn a_write_held_up_past_the_busy_timeout_fails_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("busy.db").display());
        let options = StoreOptions {
            busy_timeout: Duration::from_millis(200),
            ..StoreOptions::default()
        };
        let store = Store::open_with(&url, &options).await.unwrap();
        let holding = store.hold_writer().await.unwrap();

        let started = Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(20), store.append(&[record("a")]))
            .await
            .expect("the write ends in bounded time");
        let waited = started.elapsed();
        let e = outcome.expect_err("the writer is held");
        assert!(
            matches!(e, StoreError::ConnectionWait { .. }),
            "a connection wait, not {e:?}"
        );
        let message = e.to_string();
        for part in [
            "append",
            "busy",
            "writer connection",
            "database.busy_timeout_ms",
        ] {
            assert!(message.contains(part), "'{part}' in: {message}");
        }
        assert!(message.contains("nothing was written"), "{message}");
        assert!(
            e.refused().is_none(),
            "a busy database is retried, not parked"
        );
        assert!(waited >= Duration::from_millis(150), "waited {waited:?}");

        drop(holding);
        let appended = store.append(&[record("a")]).await.unwrap();
        assert_eq!(appended.len(), 1);
        let pending = store.pending("device", 10).await.unwrap();
        assert_eq!(pending.len(), 1, "the failed write left nothing behind");
    }
}

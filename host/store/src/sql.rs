//! One type for both backends: [`Sql<DB>`] holds a pool and the statement counter, and every
//! statement either backend runs goes through its counting executor ([`Sql::fetch`],
//! [`Sql::fetch_as`], [`Sql::execute`], [`Sql::begin`], [`Sql::commit`]), so none is counted
//! by hand.
//!
//! The methods whose SQL is the same on both backends are ordinary generic methods of
//! `Sql<DB>`, one file per table family (`leases.rs`, `parked.rs`, `plugins.rs`, `reads.rs`);
//! `QueryBuilder` writes each backend's placeholders (`?` or `$n`). What differs (bulk
//! writes, `IN` lists, how a write transaction starts) lives in `sqlite.rs` and
//! `postgres.rs`, as `impl Sql<Sqlite>` and `impl Sql<Postgres>` and their [`Backend`]
//! implementations.
//!
//! Rust does not carry a trait's where-clauses to its users, so each generic `impl` block
//! states what it needs of the backend: [`Backend`], an executor over its connections, and
//! [`Column`] for the column types it binds and reads.

use crate::Stats;
use crate::StoreError;
use crate::error::{query_error, query_error_waiting};
use sqlx::{Database, Decode, Encode, Executor, FromRow, Pool, QueryBuilder, Transaction, Type};
use std::sync::Arc;

/// What differs between the backends beyond their SQL dialect.
pub trait Backend: Database {
    /// The migrations this build applies at open.
    const MIGRATOR: sqlx::migrate::Migrator;
    /// How a write transaction starts (`None`: the driver's default).
    const BEGIN: Option<&'static str>;
    /// Values per `IN` list, within the backend's bound-parameter limit.
    const IN_LIST_MAX: usize;
    /// Appended to a `SELECT` that must hold a row still until the transaction ends, so a
    /// concurrent writer of that row waits (`FOR SHARE` / `FOR UPDATE` on PostgreSQL; empty
    /// on SQLite, whose write transactions already run one at a time).
    const LOCK_SHARED: &'static str;
    const LOCK_EXCLUSIVE: &'static str;
    /// Appended to a `SELECT` that locks rows for update and passes over the rows other
    /// transactions hold.
    const LOCK_SKIP: &'static str;
    /// Taken before a commit numbers its changes, so that numbers follow commit order.
    const CHANGES_LOCK: Option<&'static str>;
    /// What a statement waits for before it runs, in an operator's words with the setting
    /// that bounds the wait (the reason of [`StoreError::ConnectionWait`]).
    const CONNECTION_WAIT: &'static str;
    /// Backend-specific upkeep state shared by a store's clones.
    type Upkeep: Default + Clone + Send + Sync;

    /// How many rows a statement wrote.
    fn rows_affected(result: &Self::QueryResult) -> u64;
    /// `column IN (…)` over integers, in the backend's best form.
    fn push_in_ints(qb: &mut QueryBuilder<Self>, column: &str, values: &[i64]);
    /// `column IN (…)` over strings.
    fn push_in_strings(qb: &mut QueryBuilder<Self>, column: &str, values: &[String]);
}

/// A column type both bound into statements and read from rows.
pub trait Column<DB: Database>:
    for<'q> Encode<'q, DB> + Type<DB> + for<'r> Decode<'r, DB> + Send
{
}

impl<DB: Database, T> Column<DB> for T where
    T: for<'q> Encode<'q, DB> + Type<DB> + for<'r> Decode<'r, DB> + Send
{
}

/// A store on one backend. Cheap to clone (pools inside).
pub struct Sql<DB: Backend> {
    /// Reads (and, on PostgreSQL, everything).
    pub(crate) pool: Pool<DB>,
    /// Writes: every transaction and every statement that writes. On SQLite a pool of its
    /// own with one connection, so that this process's writers wait for each other in the
    /// pool's queue (woken as soon as the writer is free) instead of in SQLite's busy
    /// handler, which sleeps in growing steps; other processes still meet the busy timeout.
    /// On PostgreSQL the same pool as reads.
    pub(crate) writer: Pool<DB>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) upkeep: DB::Upkeep,
}

impl<DB: Backend> Clone for Sql<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            writer: self.writer.clone(),
            stats: self.stats.clone(),
            upkeep: self.upkeep.clone(),
        }
    }
}

/// An open write transaction.
pub type Tx<DB> = Transaction<'static, DB>;

impl<DB: Backend> Sql<DB> {
    pub(crate) fn new(pool: Pool<DB>, writer: Pool<DB>) -> Self {
        Self {
            pool,
            writer,
            stats: Arc::default(),
            upkeep: DB::Upkeep::default(),
        }
    }

    /// Wraps an sqlx error with the operation and model (a connection that did not become
    /// free in time: [`StoreError::ConnectionWait`]).
    pub(crate) fn error(
        &self,
        operation: &'static str,
        model: &str,
    ) -> impl FnOnce(sqlx::Error) -> StoreError + use<DB> {
        query_error_waiting(operation, model, DB::CONNECTION_WAIT)
    }

    /// A statement to build, in the backend's placeholder style.
    pub(crate) fn query(sql: impl Into<String>) -> QueryBuilder<DB> {
        QueryBuilder::new(sql)
    }

    /// Runs one statement on `on` (the pool, or `&mut *tx`), counting it; returns its rows.
    pub(crate) async fn fetch<'c, 'q, Q>(
        &self,
        on: impl Executor<'c, Database = DB>,
        query: Q,
        operation: &'static str,
        model: &str,
    ) -> Result<Vec<DB::Row>, StoreError>
    where
        Q: 'q + sqlx::Execute<'q, DB>,
    {
        self.stats.add(1);
        on.fetch_all(query)
            .await
            .map_err(self.error(operation, model))
    }

    /// [`Sql::fetch`], each row decoded as `T` (a tuple, or a `FromRow` type).
    pub(crate) async fn fetch_as<'c, 'q, T, Q>(
        &self,
        on: impl Executor<'c, Database = DB>,
        query: Q,
        operation: &'static str,
        model: &str,
    ) -> Result<Vec<T>, StoreError>
    where
        Q: 'q + sqlx::Execute<'q, DB>,
        T: for<'r> FromRow<'r, DB::Row>,
    {
        let rows = self.fetch(on, query, operation, model).await?;
        decode(&rows, operation, model)
    }

    /// Runs one statement on `on`, counting it; returns the rows it affected.
    pub(crate) async fn execute<'c, 'q, Q>(
        &self,
        on: impl Executor<'c, Database = DB>,
        query: Q,
        operation: &'static str,
        model: &str,
    ) -> Result<u64, StoreError>
    where
        Q: 'q + sqlx::Execute<'q, DB>,
    {
        self.stats.add(1);
        let done = on
            .execute(query)
            .await
            .map_err(self.error(operation, model))?;
        Ok(DB::rows_affected(&done))
    }

    /// Starts a write transaction, counting it.
    pub(crate) async fn begin(
        &self,
        operation: &'static str,
        model: &str,
    ) -> Result<Tx<DB>, StoreError> {
        self.stats.add(1);
        match DB::BEGIN {
            Some(statement) => self.writer.begin_with(statement).await,
            None => self.writer.begin().await,
        }
        .map_err(self.error(operation, model))
    }

    /// Commits, counting it.
    pub(crate) async fn commit(
        &self,
        tx: Tx<DB>,
        operation: &'static str,
        model: &str,
    ) -> Result<(), StoreError> {
        self.stats.add(1);
        tx.commit().await.map_err(self.error(operation, model))
    }
}

/// Decodes rows as `T`.
pub(crate) fn decode<'r, T, R>(
    rows: &'r [R],
    operation: &'static str,
    model: &str,
) -> Result<Vec<T>, StoreError>
where
    R: sqlx::Row,
    T: FromRow<'r, R>,
{
    rows.iter()
        .map(T::from_row)
        .collect::<Result<_, _>>()
        .map_err(query_error(operation, model))
}

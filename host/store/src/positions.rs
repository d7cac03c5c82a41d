//! Positions: how far a reader or writer outside the database got in a log of its own (a
//! NATS stream read into intake, the change feed relayed to a stream), moved in the same
//! transaction as the work they stand for, and only from where their writer read them. And
//! duties: work one process at a time does for the whole database (the NATS intake of a
//! stream, the relay to a stream), held as leases beside the stages' own.

use crate::sql::{Backend, Column, Sql, Tx};
use crate::{Duty, StoreError, now_micros};
use sqlx::{ColumnIndex, Executor, IntoArguments};

/// A position to move in the same transaction as an append (see `Store::append_at`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advance {
    pub name: String,
    /// Where the writer read it: the move fails when it is anywhere else.
    pub from: i64,
    pub to: i64,
}

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
    /// The position `name` (0 when it was never moved).
    pub async fn position(&self, name: &str) -> Result<i64, StoreError> {
        let mut qb = Self::query("SELECT position FROM positions WHERE name = ");
        qb.push_bind(name.to_string());
        let rows: Vec<(i64,)> = self
            .fetch_as(&self.pool, qb.build(), "read position", name)
            .await?;
        Ok(rows.first().map_or(0, |(p,)| *p))
    }

    /// Moves a position from `from` to `to` on its own (one statement). False when it was
    /// not at `from`.
    pub async fn advance(&self, advance: &Advance) -> Result<bool, StoreError> {
        let mut conn = self
            .writer
            .acquire()
            .await
            .map_err(self.error("move position", &advance.name))?;
        self.move_position(&mut *conn, advance).await
    }

    /// Inside a transaction: moves the position, or fails with
    /// [`StoreError::PositionMoved`] (the caller rolls back).
    pub(crate) async fn advance_in(
        &self,
        tx: &mut Tx<DB>,
        advance: &Advance,
    ) -> Result<(), StoreError> {
        if self.move_position(&mut **tx, advance).await? {
            Ok(())
        } else {
            Err(StoreError::PositionMoved {
                name: advance.name.clone(),
                expected: advance.from,
            })
        }
    }

    /// One statement: from 0 (never moved) an insert, else an update from `from`.
    async fn move_position(
        &self,
        on: &mut DB::Connection,
        advance: &Advance,
    ) -> Result<bool, StoreError> {
        let now = now_micros();
        let mut qb;
        if advance.from == 0 {
            qb = Self::query("INSERT INTO positions (name, position, updated_micros) VALUES (");
            qb.separated(", ")
                .push_bind(advance.name.clone())
                .push_bind(advance.to)
                .push_bind(now);
            qb.push(
                ") ON CONFLICT (name) DO UPDATE SET position = excluded.position, \
                 updated_micros = excluded.updated_micros WHERE positions.position = 0",
            );
        } else {
            qb = Self::query("UPDATE positions SET position = ");
            qb.push_bind(advance.to)
                .push(", updated_micros = ")
                .push_bind(now)
                .push(" WHERE name = ")
                .push_bind(advance.name.clone())
                .push(" AND position = ")
                .push_bind(advance.from);
        }
        let moved = self
            .execute(&mut *on, qb.build(), "move position", &advance.name)
            .await?;
        Ok(moved == 1)
    }

    /// Takes (or renews) a duty for its holder; false while another holder's has not
    /// expired. The same atomic upsert as a stage's lease.
    pub async fn acquire_duty(&self, duty: &Duty, ttl_micros: i64) -> Result<bool, StoreError> {
        self.acquire_row(duty.kind, &duty.key, &duty.holder, ttl_micros)
            .await
    }

    /// Gives a duty up (when its holder stops).
    pub async fn release_duty(&self, duty: &Duty) -> Result<(), StoreError> {
        self.release_row(duty.kind, &duty.key, &duty.holder).await
    }
}

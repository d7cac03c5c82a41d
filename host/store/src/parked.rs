//! Parked records: listing them, giving them back to the queue (on request, when a key they
//! wait for is claimed, when a new plugin version may decide otherwise).

use crate::rows::{ParkedDb, RECORD_COLUMNS};
use crate::sql::{Backend, Column, Sql, Tx};
use crate::{ParkRow, ParkedFilter, ParkedRow, StoreError};
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
    pub async fn parked(
        &self,
        filter: &ParkedFilter,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<ParkedRow>, StoreError> {
        let op = "read parked";
        let model = filter.model.as_deref().unwrap_or("*");
        let mut qb = Self::query(format!(
            "SELECT p.reason, p.details, p.awaited_model, p.awaited_key, p.attempts, \
             p.first_micros, p.last_micros, {RECORD_COLUMNS} \
             FROM parked p JOIN intake i ON i.seq = p.seq WHERE p.seq > "
        ));
        qb.push_bind(after_seq);
        push_filter(&mut qb, filter);
        qb.push(" ORDER BY p.seq LIMIT ").push_bind(limit as i64);
        let rows: Vec<ParkedDb> = self.fetch_as(&self.pool, qb.build(), op, model).await?;
        Ok(rows.into_iter().map(ParkedRow::from).collect())
    }

    pub async fn requeue(&self, filter: &ParkedFilter) -> Result<u64, StoreError> {
        let op = "requeue parked";
        let model = filter.model.as_deref().unwrap_or("*");
        let mut tx = self.begin(op, model).await?;
        let moved = self
            .move_parked(&mut tx, op, model, |qb| {
                qb.push("1 = 1");
                push_filter(qb, filter);
            })
            .await?;
        self.commit(tx, op, model).await?;
        Ok(moved)
    }

    /// Moves the parked records matching `condition` (a predicate over `parked p`) to
    /// the back of the queue, in intake order, keeping their attempts; returns how many.
    pub(crate) async fn move_parked(
        &self,
        tx: &mut Tx<DB>,
        operation: &'static str,
        model: &str,
        condition: impl Fn(&mut QueryBuilder<DB>),
    ) -> Result<u64, StoreError> {
        let mut qb = Self::query(
            "INSERT INTO queue (model, seq, attempts, first_parked_micros) \
             SELECT p.model, p.seq, p.attempts, p.first_micros FROM parked p WHERE ",
        );
        condition(&mut qb);
        qb.push(" ORDER BY p.seq ON CONFLICT (seq) DO NOTHING");
        let moved = self
            .execute(&mut **tx, qb.build(), operation, model)
            .await?;
        if moved > 0 {
            let mut qb =
                Self::query("DELETE FROM parked WHERE seq IN (SELECT p.seq FROM parked p WHERE ");
            condition(&mut qb);
            qb.push(")");
            self.execute(&mut **tx, qb.build(), operation, model)
                .await?;
        }
        Ok(moved)
    }

    /// Healing, inside an association commit, after the batch left the queue:
    /// - records this batch parked for a key that exists by now (another model's
    ///   batch claimed it after this batch's lookup, and that batch's healing ran
    ///   before these records were parked) go back to the queue;
    /// - records parked anywhere waiting for a key this batch claimed go back to
    ///   the queue, found through the index on the awaited key.
    ///
    /// Association commits are serialised (SQLite's single writer, PostgreSQL's
    /// advisory lock), so the two halves never miss each other.
    pub(crate) async fn heal(
        &self,
        tx: &mut Tx<DB>,
        model: &str,
        claims: &[(String, String)],
        parked: &[ParkRow],
    ) -> Result<u64, StoreError> {
        let op = "heal parked records";
        let mut healed = 0;
        let waiting: Vec<i64> = parked
            .iter()
            .filter(|p| p.awaiting.is_some())
            .map(|p| p.seq)
            .collect();
        for chunk in waiting.chunks(DB::IN_LIST_MAX) {
            healed += self
                .move_parked(tx, op, model, |qb| {
                    qb.push(
                        "EXISTS (SELECT 1 FROM keys k WHERE k.model = p.awaited_model \
                         AND k.key = p.awaited_key) AND ",
                    );
                    DB::push_in_ints(qb, "p.seq", chunk);
                })
                .await?;
        }
        let keys: Vec<String> = claims.iter().map(|(key, _)| key.clone()).collect();
        for chunk in keys.chunks(DB::IN_LIST_MAX - 1) {
            healed += self
                .move_parked(tx, op, model, |qb| {
                    qb.push("p.awaited_model = ")
                        .push_bind(model.to_string())
                        .push(" AND ");
                    DB::push_in_strings(qb, "p.awaited_key", chunk);
                })
                .await?;
        }
        Ok(healed)
    }
}

/// ` AND` the parked record `p` matches the filter.
fn push_filter<DB>(qb: &mut QueryBuilder<DB>, filter: &ParkedFilter)
where
    DB: Backend,
    String: Column<DB>,
{
    if let Some(model) = &filter.model {
        qb.push(" AND p.model = ").push_bind(model.clone());
    }
    if let Some(reason) = filter.reason {
        qb.push(" AND p.reason = ")
            .push_bind(reason.as_str().to_string());
    }
}

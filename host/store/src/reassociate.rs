//! Re-association: a model's records decided again from scratch under its current version.
//! The reads it needs, and the reset its commit starts with (the backends' commit then
//! writes the new decisions with the same code as an association batch).

use crate::rows::{self, RECORD_COLUMNS, RecordDb};
use crate::sql::{Backend, Column, Sql, Tx};
use crate::{Reassociate, StoreError};
use flowhost_core::Record;
use sqlx::{ColumnIndex, Executor, FromRow, IntoArguments};

/// A decided record with the reference it is keyed to (none when parked or a value object).
#[derive(FromRow)]
struct DecidedDb {
    #[sqlx(flatten)]
    record: RecordDb,
    reference: Option<String>,
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
    /// Every record of a model that is decided (keyed or parked, not waiting in the queue),
    /// in intake order, with the reference it is keyed to. One statement.
    pub async fn decided_records(
        &self,
        model: &str,
    ) -> Result<Vec<(Record, Option<String>)>, StoreError> {
        let mut qb = Self::query(format!(
            "SELECT {RECORD_COLUMNS}, k.reference FROM intake i \
             LEFT JOIN keyed k ON k.seq = i.seq WHERE i.model = "
        ));
        qb.push_bind(model.to_string())
            .push(" AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.seq = i.seq) ORDER BY i.seq");
        let rows: Vec<DecidedDb> = self
            .fetch_as(&self.pool, qb.build(), "read decided records", model)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| (Record::from(r.record), r.reference))
            .collect())
    }

    /// The keyed records of `child` (sequence, parent links), to find those that name a
    /// reference of another model. One statement.
    pub async fn parent_links(
        &self,
        child: &str,
    ) -> Result<Vec<(i64, Vec<flowhost_core::ParentLink>)>, StoreError> {
        let op = "read parent links";
        let mut qb = Self::query("SELECT seq, parents FROM keyed WHERE model = ");
        qb.push_bind(child.to_string())
            .push(" AND parents <> '[]' ORDER BY seq");
        let rows: Vec<(i64, String)> = self.fetch_as(&self.pool, qb.build(), op, child).await?;
        rows.into_iter()
            .map(|(seq, text)| {
                rows::parse_parents(&text)
                    .map(|links| (seq, links))
                    .map_err(|detail| StoreError::Corrupt {
                        operation: op,
                        model: child.to_string(),
                        detail: format!("record {seq}: {detail}"),
                    })
            })
            .collect()
    }

    /// Inside the re-association's transaction, before its decisions are written: the
    /// model's keys and keyed rows go, the parked rows of the records decided again go, the
    /// children named go back to the queue (in intake order), and the retired references'
    /// views and marks go.
    pub(crate) async fn reset_for_reassociation(
        &self,
        tx: &mut Tx<DB>,
        r: &Reassociate,
    ) -> Result<(), StoreError> {
        let op = "reassociate";
        let model = r.outcome.model.as_str();
        for table in ["keys", "keyed"] {
            let mut qb = Self::query(format!("DELETE FROM {table} WHERE model = "));
            qb.push_bind(model.to_string());
            self.execute(&mut **tx, qb.build(), op, model).await?;
        }
        for chunk in r.redecided.chunks(DB::IN_LIST_MAX) {
            let mut qb = Self::query("DELETE FROM parked WHERE ");
            DB::push_in_ints(&mut qb, "seq", chunk);
            self.execute(&mut **tx, qb.build(), op, model).await?;
        }
        for chunk in r.children.chunks(DB::IN_LIST_MAX) {
            let mut qb =
                Self::query("INSERT INTO queue (model, seq) SELECT model, seq FROM keyed WHERE ");
            DB::push_in_ints(&mut qb, "seq", chunk);
            qb.push(" ORDER BY seq ON CONFLICT (seq) DO NOTHING");
            self.execute(&mut **tx, qb.build(), op, model).await?;
            let mut qb = Self::query("DELETE FROM keyed WHERE ");
            DB::push_in_ints(&mut qb, "seq", chunk);
            self.execute(&mut **tx, qb.build(), op, model).await?;
        }
        for chunk in r.retired.chunks(DB::IN_LIST_MAX) {
            for table in ["views", "dirty"] {
                let mut qb = Self::query(format!("DELETE FROM {table} WHERE "));
                DB::push_in_strings(&mut qb, "reference", chunk);
                self.execute(&mut **tx, qb.build(), op, model).await?;
            }
        }
        Ok(())
    }
}

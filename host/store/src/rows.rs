//! Row decoding (the `FromRow` shapes of the queries that join intake) and JSON columns
//! shared by both backends. Flat rows decode straight into their `types.rs` structs.

use crate::{ParkedRow, Pending, StoreError, ValueRow};
use flowhost_core::{Group, KeyedRecord, ParentKey, ParentLink, Record, Source};
use sqlx::FromRow;
use std::collections::HashMap;

/// The intake columns every record query selects, with the `i.` alias.
pub const RECORD_COLUMNS: &str = "i.seq, i.model, i.system, i.adapter, i.external_id, \
     i.occurred_at, i.occurred_micros, i.payload";

/// The [`RECORD_COLUMNS`] of a row.
#[derive(FromRow)]
pub struct RecordDb {
    seq: i64,
    model: String,
    system: String,
    adapter: String,
    external_id: String,
    occurred_at: String,
    occurred_micros: i64,
    payload: String,
}

impl From<RecordDb> for Record {
    fn from(r: RecordDb) -> Self {
        Record {
            seq: r.seq,
            model: r.model,
            source: Source {
                system: r.system,
                adapter: r.adapter,
            },
            external_id: r.external_id,
            occurred_at: r.occurred_at,
            occurred_micros: r.occurred_micros,
            payload: r.payload,
        }
    }
}

/// A queued record with its queue columns.
#[derive(FromRow)]
pub struct PendingDb {
    pos: i64,
    attempts: i32,
    first_parked_micros: Option<i64>,
    #[sqlx(flatten)]
    record: RecordDb,
}

impl From<PendingDb> for Pending {
    fn from(p: PendingDb) -> Self {
        Pending {
            pos: p.pos,
            attempts: p.attempts,
            first_parked_micros: p.first_parked_micros,
            record: p.record.into(),
        }
    }
}

/// A parked record with its parked columns.
#[derive(FromRow)]
pub struct ParkedDb {
    reason: String,
    details: String,
    awaited_model: Option<String>,
    awaited_key: Option<String>,
    attempts: i32,
    first_micros: i64,
    last_micros: i64,
    #[sqlx(flatten)]
    record: RecordDb,
}

impl From<ParkedDb> for ParkedRow {
    fn from(p: ParkedDb) -> Self {
        ParkedRow {
            record: p.record.into(),
            reason: p.reason,
            details: p.details,
            awaiting: p
                .awaited_model
                .zip(p.awaited_key)
                .map(|(model, key)| ParentKey { model, key }),
            attempts: p.attempts,
            first_micros: p.first_micros,
            last_micros: p.last_micros,
        }
    }
}

/// A keyed record: the [`RECORD_COLUMNS`], its `parents` column and (for projection) its
/// reference.
#[derive(FromRow)]
pub struct KeyedDb {
    #[sqlx(default)]
    reference: Option<String>,
    parents: String,
    #[sqlx(flatten)]
    record: RecordDb,
}

impl KeyedDb {
    fn keyed(self, op: &'static str, model: &str) -> Result<KeyedRecord, StoreError> {
        let parents = parse_parents(&self.parents).map_err(|detail| StoreError::Corrupt {
            operation: op,
            model: model.to_string(),
            detail,
        })?;
        Ok(KeyedRecord {
            record: self.record.into(),
            parents,
        })
    }
}

/// Parent links as stored: `[{"model":…,"reference":…}]`.
pub fn parents_json(parents: &[ParentLink]) -> String {
    serde_json::Value::Array(
        parents
            .iter()
            .map(|p| serde_json::json!({"model": p.model, "reference": p.reference}))
            .collect(),
    )
    .to_string()
}

/// Parses [`parents_json`]'s text.
pub fn parse_parents(text: &str) -> Result<Vec<ParentLink>, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let items = value.as_array().ok_or("parents is not a list")?;
    items
        .iter()
        .map(|item| {
            Ok(ParentLink {
                model: item["model"]
                    .as_str()
                    .ok_or("parent without model")?
                    .to_string(),
                reference: item["reference"]
                    .as_str()
                    .ok_or("parent without reference")?
                    .to_string(),
            })
        })
        .collect()
}

/// Now, in microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Value-object records with their first parent.
pub fn value_rows(
    rows: Vec<KeyedDb>,
    op: &'static str,
    model: &str,
) -> Result<Vec<ValueRow>, StoreError> {
    rows.into_iter()
        .map(|r| {
            let KeyedRecord { record, parents } = r.keyed(op, model)?;
            let parent = parents
                .into_iter()
                .next()
                .ok_or_else(|| StoreError::Corrupt {
                    operation: op,
                    model: model.to_string(),
                    detail: format!("record {} has no parent", record.seq),
                })?;
            Ok(ValueRow {
                record,
                parent_model: parent.model,
                parent_ref: parent.reference,
            })
        })
        .collect()
}

/// Builds groups, in the order of `seen`, from rows ordered by reference then sequence.
pub fn group_rows(
    seen: &[(String, i64)],
    rows: Vec<KeyedDb>,
    op: &'static str,
    model: &str,
) -> Result<Vec<Group>, StoreError> {
    let mut by_ref: HashMap<String, Vec<KeyedRecord>> = HashMap::with_capacity(seen.len());
    for row in rows {
        let reference = row.reference.clone().unwrap_or_default();
        by_ref
            .entry(reference)
            .or_default()
            .push(row.keyed(op, model)?);
    }
    Ok(seen
        .iter()
        .filter_map(|(reference, _)| {
            by_ref.remove(reference).map(|records| Group {
                reference: reference.clone(),
                records,
            })
        })
        .collect())
}

/// The indices of the first record of each identity (model, system, id, payload hash):
/// later copies in the same batch are duplicates of it.
pub fn first_of_each(records: &[flowhost_core::intake::IntakeRecord]) -> Vec<usize> {
    let mut seen = std::collections::HashSet::with_capacity(records.len());
    (0..records.len())
        .filter(|&i| {
            let r = &records[i];
            seen.insert((
                r.model.as_str(),
                r.source.system.as_str(),
                r.external_id.as_str(),
                r.payload_hash.as_str(),
            ))
        })
        .collect()
}

/// Identity → index, for matching `RETURNING` rows back to a chunk's records.
pub fn identity_index(
    records: &[flowhost_core::intake::IntakeRecord],
    chunk: &[usize],
) -> HashMap<(String, String, String, String), usize> {
    chunk
        .iter()
        .map(|&i| {
            let r = &records[i];
            (
                (
                    r.model.clone(),
                    r.source.system.clone(),
                    r.external_id.clone(),
                    r.payload_hash.clone(),
                ),
                i,
            )
        })
        .collect()
}

/// The stamp of a re-projection mark: after every stamp fresh work gets (queue positions),
/// so re-projection yields to new records.
pub const REPROJECT_STAMP: i64 = 1 << 62;

/// `Some(text)` unless it is empty.
pub fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

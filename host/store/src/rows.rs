//! Row decoding and JSON columns shared by both backends.

use crate::error::query_error;
use crate::{ParkedRow, StoreError, ValueRow, ViewRow};
use flowhost_core::{Group, KeyedRecord, ParentKey, ParentLink, Record, Source};
use sqlx::{ColumnIndex, Decode, Row, Type};
use std::collections::HashMap;

/// The intake columns every record query selects, with the `i.` alias.
pub const RECORD_COLUMNS: &str = "i.seq, i.model, i.system, i.adapter, i.external_id, \
     i.occurred_at, i.occurred_micros, i.payload";

/// Decodes the [`RECORD_COLUMNS`] of a row.
pub fn record<'r, R>(row: &'r R) -> Result<Record, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(Record {
        seq: row.try_get("seq")?,
        model: row.try_get("model")?,
        source: Source {
            system: row.try_get("system")?,
            adapter: row.try_get("adapter")?,
        },
        external_id: row.try_get("external_id")?,
        occurred_at: row.try_get("occurred_at")?,
        occurred_micros: row.try_get("occurred_micros")?,
        payload: row.try_get("payload")?,
    })
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

pub fn view_row<'r, R>(r: &'r R) -> Result<ViewRow, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    i32: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(ViewRow {
        reference: r.try_get("reference")?,
        model: r.try_get("model")?,
        first_seq: r.try_get("first_seq")?,
        canonical: r.try_get("canonical")?,
        root: r.try_get("root")?,
        lineage: r.try_get("lineage")?,
        parents: r.try_get("parents")?,
        plugin_version: r.try_get("plugin_version")?,
    })
}

pub fn parked_row<'r, R>(r: &'r R) -> Result<ParkedRow, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    i32: Decode<'r, R::Database> + Type<R::Database>,
{
    let awaited_model: Option<String> = r.try_get("awaited_model")?;
    let awaited_key: Option<String> = r.try_get("awaited_key")?;
    Ok(ParkedRow {
        record: record(r)?,
        reason: r.try_get("reason")?,
        details: r.try_get("details")?,
        awaiting: awaited_model
            .zip(awaited_key)
            .map(|(model, key)| ParentKey { model, key }),
        attempts: r.try_get("attempts")?,
        first_micros: r.try_get("first_micros")?,
        last_micros: r.try_get("last_micros")?,
    })
}

pub fn value_rows<'r, R>(
    rows: &'r [R],
    op: &'static str,
    model: &str,
) -> Result<Vec<ValueRow>, StoreError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    i32: Decode<'r, R::Database> + Type<R::Database>,
{
    rows.iter()
        .map(|r| {
            let KeyedRecord { record, parents } = keyed_record(r, op, model)?;
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

/// Decodes a keyed record: the [`RECORD_COLUMNS`] and the `parents` column.
fn keyed_record<'r, R>(row: &'r R, op: &'static str, model: &str) -> Result<KeyedRecord, StoreError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    i32: Decode<'r, R::Database> + Type<R::Database>,
{
    let parents: String = row.try_get("parents").map_err(query_error(op, model))?;
    let parents = parse_parents(&parents).map_err(|detail| StoreError::Corrupt {
        operation: op,
        model: model.to_string(),
        detail,
    })?;
    let record = record(row).map_err(query_error(op, model))?;
    Ok(KeyedRecord { record, parents })
}

/// Builds groups, in the order of `seen`, from rows ordered by reference then sequence.
pub fn group_rows<'r, R>(
    seen: &[(String, i64)],
    rows: &'r [R],
    op: &'static str,
    model: &str,
) -> Result<Vec<Group>, StoreError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    i32: Decode<'r, R::Database> + Type<R::Database>,
{
    let mut by_ref: HashMap<String, Vec<KeyedRecord>> = HashMap::with_capacity(seen.len());
    for row in rows {
        let reference: String = row.try_get("reference").map_err(query_error(op, model))?;
        by_ref
            .entry(reference)
            .or_default()
            .push(keyed_record(row, op, model)?);
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

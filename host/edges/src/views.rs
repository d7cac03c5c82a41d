//! What goes out, as NDJSON lines: the views, value-object records and parked records,
//! exactly as `flowhost export` and the HTTP API give them (one format, written here), and
//! the exports that page through the store so memory does not grow with the data.

use flowhost_store::{Cursor, ParkedFilter, ParkedRow, Store, StoreError, ValueRow, ViewRow};
use serde_json::{Value, json};
use std::io::Write;

/// Which view of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewKind {
    Canonical,
    Root,
    Lineage,
}

impl ViewKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "canonical" => Some(Self::Canonical),
            "root" => Some(Self::Root),
            "lineage" => Some(Self::Lineage),
            _ => None,
        }
    }
}

fn q(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// One line of a view export (without the newline). The stored JSON texts are embedded as
/// they are.
pub fn view_line(kind: ViewKind, v: &ViewRow) -> String {
    let (id, m) = (q(&v.reference), q(&v.model));
    match kind {
        ViewKind::Canonical => format!(r#"{{"id":{id},"model":{m},"canonical":{}}}"#, v.canonical),
        ViewKind::Root => format!(
            r#"{{"id":{id},"model":{m},"root":{},"parents":{}}}"#,
            v.root, v.parents
        ),
        ViewKind::Lineage => format!(r#"{{"id":{id},"model":{m},"lineage":{}}}"#, v.lineage),
    }
}

/// One line of the change feed (without the newline): the change's number, the reference
/// and its canonical and root views as they are now, and the plugin version that changed it.
pub fn change_line(c: &flowhost_store::ChangeRow) -> String {
    format!(
        r#"{{"seq":{},"model":{},"id":{},"canonical":{},"root":{},"version":{}}}"#,
        c.seq,
        q(&c.model),
        q(&c.reference),
        c.canonical,
        c.root,
        q(&c.plugin_version)
    )
}

/// One parked record as exported.
pub fn parked_json(p: &ParkedRow) -> Value {
    let r = &p.record;
    json!({
        "model": r.model,
        "source": {"system": r.source.system, "adapter": r.source.adapter},
        "id": r.external_id,
        "reason": p.reason,
        "details": p.details,
        "attempts": p.attempts,
    })
}

/// One value-object record with its parent, as exported (the stored payload text is
/// embedded as sent).
pub fn values_line(v: &ValueRow) -> String {
    let r = &v.record;
    format!(
        r#"{{"model":{},"source":{{"system":{},"adapter":{}}},"id":{},"occurred_at":{},"payload":{},"parent":{{"model":{},"id":{}}}}}"#,
        q(&r.model),
        q(&r.source.system),
        q(&r.source.adapter),
        q(&r.external_id),
        q(&r.occurred_at),
        r.payload,
        q(&v.parent_model),
        q(&v.parent_ref)
    )
}

/// Why an export stopped.
#[derive(Debug)]
pub enum ExportError {
    Store(StoreError),
    Write(std::io::Error),
}

impl std::fmt::Display for ExportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExportError::Store(e) => write!(f, "{e}"),
            ExportError::Write(e) => write!(f, "cannot write the export: {e}"),
        }
    }
}

impl std::error::Error for ExportError {}

impl From<StoreError> for ExportError {
    fn from(e: StoreError) -> Self {
        ExportError::Store(e)
    }
}

impl From<std::io::Error> for ExportError {
    fn from(e: std::io::Error) -> Self {
        ExportError::Write(e)
    }
}

/// Rows per page read from the store.
const PAGE: usize = 2_000;

/// Writes every view of `model` of one kind, ordered by each reference's first intake;
/// returns how many.
pub async fn export_views(
    store: &Store,
    kind: ViewKind,
    model: &str,
    out: &mut impl Write,
) -> Result<u64, ExportError> {
    let mut n = 0;
    let mut cursor: Option<Cursor> = None;
    loop {
        let rows = store.views(model, cursor.as_ref(), PAGE).await?;
        for v in &rows {
            writeln!(out, "{}", view_line(kind, v))?;
        }
        n += rows.len() as u64;
        match rows.last() {
            Some(last) if rows.len() == PAGE => {
                cursor = Some(Cursor {
                    first_seq: last.first_seq,
                    reference: last.reference.clone(),
                })
            }
            _ => return Ok(n),
        }
    }
}

/// Writes every value-object record of `model` with its parent; returns how many.
pub async fn export_values(
    store: &Store,
    model: &str,
    out: &mut impl Write,
) -> Result<u64, ExportError> {
    let mut n = 0;
    let mut offset = 0;
    loop {
        let rows = store.values(model, offset, PAGE).await?;
        for v in &rows {
            writeln!(out, "{}", values_line(v))?;
        }
        n += rows.len() as u64;
        offset += rows.len();
        if rows.len() < PAGE {
            return Ok(n);
        }
    }
}

/// Writes the parked records matching `filter`: NDJSON, or a table for a person; returns
/// how many.
pub async fn export_parked(
    store: &Store,
    filter: &ParkedFilter,
    as_json: bool,
    out: &mut impl Write,
) -> Result<u64, ExportError> {
    let mut after = 0;
    let mut n = 0;
    if !as_json {
        writeln!(
            out,
            "{:<10} {:<24} {:<17} {:>8}  details",
            "model", "source/id", "reason", "attempts"
        )?;
    }
    loop {
        let rows = store.parked(filter, after, PAGE).await?;
        for p in &rows {
            if as_json {
                writeln!(out, "{}", parked_json(p))?;
            } else {
                let r = &p.record;
                writeln!(
                    out,
                    "{:<10} {:<24} {:<17} {:>8}  {}",
                    r.model,
                    format!("{}/{}", r.source.system, r.external_id),
                    p.reason,
                    p.attempts,
                    p.details
                )?;
            }
        }
        n += rows.len() as u64;
        match rows.last() {
            Some(last) if rows.len() == PAGE => after = last.record.seq,
            _ => break,
        }
    }
    if !as_json {
        writeln!(out, "{n} parked")?;
    }
    Ok(n)
}

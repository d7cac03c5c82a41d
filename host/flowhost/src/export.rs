//! `flowhost export …` and `flowhost parked …`: NDJSON exactly as the export contract says,
//! read in pages so memory does not grow with the data.

use anyhow::Result;
use flowhost_store::{Cursor, ParkedFilter, Store};
use serde_json::Value;
use std::io::Write;

/// Which view to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ViewKind {
    Canonical,
    Root,
    Lineage,
    Values,
}

const PAGE: usize = 2_000;

fn q(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// Writes every item of a view of `model`, ordered by each reference's first intake.
pub async fn export(
    store: &Store,
    kind: ViewKind,
    model: &str,
    out: &mut impl Write,
) -> Result<u64> {
    let err = |e: flowhost_store::StoreError| anyhow::anyhow!("{e}");
    let mut n = 0;
    if kind == ViewKind::Values {
        let mut offset = 0;
        loop {
            let rows = store.values(model, offset, PAGE).await.map_err(err)?;
            for v in &rows {
                let r = &v.record;
                // The stored payload is the JSON text as sent; it is embedded as is.
                writeln!(
                    out,
                    r#"{{"model":{},"source":{{"system":{},"adapter":{}}},"id":{},"occurred_at":{},"payload":{},"parent":{{"model":{},"id":{}}}}}"#,
                    q(&r.model),
                    q(&r.source.system),
                    q(&r.source.adapter),
                    q(&r.external_id),
                    q(&r.occurred_at),
                    r.payload,
                    q(&v.parent_model),
                    q(&v.parent_ref)
                )?;
            }
            n += rows.len() as u64;
            offset += rows.len();
            if rows.len() < PAGE {
                break;
            }
        }
        return Ok(n);
    }
    let mut cursor: Option<Cursor> = None;
    loop {
        let rows = store
            .views(model, cursor.as_ref(), PAGE)
            .await
            .map_err(err)?;
        let kind = match kind {
            ViewKind::Canonical => flowhost_server::ViewKind::Canonical,
            ViewKind::Root => flowhost_server::ViewKind::Root,
            ViewKind::Lineage => flowhost_server::ViewKind::Lineage,
            ViewKind::Values => unreachable!("handled above"),
        };
        for v in &rows {
            writeln!(out, "{}", flowhost_server::view_line(kind, v))?;
        }
        n += rows.len() as u64;
        match rows.last() {
            Some(last) if rows.len() == PAGE => {
                cursor = Some(Cursor {
                    first_seq: last.first_seq,
                    reference: last.reference.clone(),
                })
            }
            _ => break,
        }
    }
    Ok(n)
}

/// Lists parked records: NDJSON, or a readable table.
pub async fn parked(
    store: &Store,
    filter: &ParkedFilter,
    as_json: bool,
    out: &mut impl Write,
) -> Result<u64> {
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
        let rows = store
            .parked(filter, after, PAGE)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for p in &rows {
            if as_json {
                writeln!(out, "{}", flowhost_server::parked_json(p))?;
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

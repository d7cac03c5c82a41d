//! `flowhost export …` and `flowhost parked …`: the edges' NDJSON exports, to standard
//! output.

use anyhow::Result;
use flowhost_edges::views;
use flowhost_store::{ParkedFilter, Store};
use std::io::Write;

/// Which view to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ViewKind {
    Canonical,
    Root,
    Lineage,
    Values,
}

/// Writes every item of a view of `model`, ordered by each reference's first intake.
pub async fn export(
    store: &Store,
    kind: ViewKind,
    model: &str,
    out: &mut impl Write,
) -> Result<u64> {
    let view = match kind {
        ViewKind::Canonical => views::ViewKind::Canonical,
        ViewKind::Root => views::ViewKind::Root,
        ViewKind::Lineage => views::ViewKind::Lineage,
        ViewKind::Values => {
            return Ok(views::export_values(store, model, out).await?);
        }
    };
    Ok(views::export_views(store, view, model, out).await?)
}

/// Lists parked records: NDJSON, or a readable table.
pub async fn parked(
    store: &Store,
    filter: &ParkedFilter,
    as_json: bool,
    out: &mut impl Write,
) -> Result<u64> {
    Ok(views::export_parked(store, filter, as_json, out).await?)
}

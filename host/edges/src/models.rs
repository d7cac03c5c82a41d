//! The model and plugin listings every edge gives: which models the store knows (and
//! the message for one it does not), and every model's plugin as the database records it.

use flowhost_store::{Store, StoreError};
use serde_json::{Value, json};

/// Why `model` is not one the store knows (naming the known ones), or `None` when it is.
/// The HTTP API and the CLI refuse an unknown model with this message.
pub async fn unknown_model(store: &Store, model: &str) -> Result<Option<String>, StoreError> {
    let models = store.models().await?;
    if models.iter().any(|m| m.name == model) {
        return Ok(None);
    }
    let names: Vec<String> = models.into_iter().map(|m| m.name).collect();
    Ok(Some(format!(
        "unknown model '{model}'; known: {}",
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    )))
}

/// A time in microseconds as RFC 3339.
pub(crate) fn when(micros: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| "?".into())
}

/// How many of a model's failed projections `plugins_json` lists with their reasons.
pub const FAILED_EXAMPLES: usize = 3;

/// Every model's plugin as the database records it (one JSON object per model: version,
/// source, state, re-projection progress, last refusal, earlier versions), and the refused
/// files that name no model. `flowhost plugins list --json` prints the same objects.
pub async fn plugins_json(store: &Store) -> Result<(Vec<Value>, Vec<Value>), StoreError> {
    let states = store.plugin_states().await?;
    let versions = store.plugin_versions(None).await?;
    let files = store.plugin_files().await?;
    let mut models = Vec::with_capacity(states.len());
    // One progress query per model: a handful of models, read by an operator, not a hot path.
    for s in &states {
        let progress = store.reprojection(&s.model, &s.version).await?;
        // A few of the references whose projection failed, with the reason each keeps: the
        // log line of a failed batch gives only its first reason.
        let failed_examples: Vec<Value> = if progress.failed > 0 {
            store
                .failed_projections(&s.model, FAILED_EXAMPLES)
                .await?
                .into_iter()
                .map(|f| json!({"reference": f.reference, "error": f.error}))
                .collect()
        } else {
            Vec::new()
        };
        // The model's shadow run while it runs (its findings: `plugins diff`).
        let shadow = store
            .shadow(&s.model, 0)
            .await?
            .map(|(r, _)| r)
            .filter(|r| r.ended.is_none())
            .map(|r| {
                json!({"candidate": r.version, "file": r.file, "records": r.records,
                    "skipped": r.skipped, "record_diffs": r.record_diffs, "view_diffs": r.view_diffs})
            });
        let file = versions
            .iter()
            .find(|v| v.model == s.model && v.version == s.version)
            .map(|v| v.file.clone());
        let previous: Vec<Value> = versions
            .iter()
            .filter(|v| v.model == s.model && v.version != s.version)
            .map(|v| json!({"version": v.version, "file": v.file, "last_current": when(v.last_current_micros)}))
            .collect();
        let last_error = files
            .iter()
            .find(|f| f.model.as_deref() == Some(&s.model) && f.error.is_some())
            .map(|f| json!({"file": f.file, "error": f.error, "at": when(f.checked_micros)}));
        models.push(json!({
            "model": s.model,
            "kind": s.kind,
            "version": s.version,
            "source": s.source.as_str(),
            "since": when(s.since_micros),
            "file": file,
            "state": s.state,
            "views": {"current": progress.current, "total": progress.total, "failed": progress.failed,
                "failed_examples": failed_examples},
            "last_error": last_error,
            "previous": previous,
            "shadow": shadow,
        }));
    }
    let refused = files
        .iter()
        .filter(|f| f.model.is_none() && f.error.is_some())
        .map(|f| json!({"file": f.file, "error": f.error, "at": when(f.checked_micros)}))
        .collect();
    Ok((models, refused))
}

/// A model's shadow run as every edge shows it (`GET /v1/plugins/{model}/shadow`,
/// `flowhost plugins diff --json`): the candidate, whether it still runs, the counts, and
/// the first `limit` differences (records first), or `None` when the model never had one.
pub async fn shadow_json(
    store: &Store,
    model: &str,
    limit: usize,
) -> Result<Option<Value>, StoreError> {
    let Some((run, diffs)) = store.shadow(model, limit).await? else {
        return Ok(None);
    };
    let current = store
        .plugin_states()
        .await?
        .into_iter()
        .find(|s| s.model == model)
        .map(|s| s.version);
    let diffs: Vec<Value> = diffs.iter().map(diff_json).collect();
    Ok(Some(json!({
        "model": run.model,
        "candidate": run.version,
        "file": run.file,
        "live": current,
        "running": run.ended.is_none(),
        "ended": run.ended,
        "started": when(run.started_micros),
        "updated": when(run.updated_micros),
        "batches": run.batches,
        "records": run.records,
        "skipped": run.skipped,
        "record_diffs": run.record_diffs,
        "views": run.views,
        "view_diffs": run.view_diffs,
        "kept": flowhost_store::SHADOW_DIFFS_KEPT,
        "diffs": diffs,
    })))
}

/// One difference of a shadow run as JSON: kind, summary, both sides, and the record
/// (`seq`, `system`, `id`) or the reference it is about.
pub fn diff_json(d: &flowhost_store::ShadowDiff) -> Value {
    let parse = |text: &str| {
        serde_json::from_str::<Value>(text).unwrap_or_else(|_| Value::String(text.into()))
    };
    let mut item = json!({
        "kind": d.kind,
        "summary": d.summary,
        "live_version": d.live_version,
        "live": parse(&d.live),
        "candidate": parse(&d.candidate),
    });
    if let Some(seq) = d.seq {
        item["seq"] = json!(seq);
        item["system"] = json!(d.system);
        item["id"] = json!(d.external_id);
    }
    if let Some(reference) = &d.reference {
        item["reference"] = json!(reference);
    }
    item
}

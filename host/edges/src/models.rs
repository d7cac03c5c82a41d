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
            "views": {"current": progress.current, "total": progress.total, "failed": progress.failed},
            "last_error": last_error,
            "previous": previous,
        }));
    }
    let refused = files
        .iter()
        .filter(|f| f.model.is_none() && f.error.is_some())
        .map(|f| json!({"file": f.file, "error": f.error, "at": when(f.checked_micros)}))
        .collect();
    Ok((models, refused))
}

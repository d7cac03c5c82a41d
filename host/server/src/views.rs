//! The view routes: pages of the edges' NDJSON view lines, one reference, parked records.

use crate::error::{ApiError, ApiResult};
use crate::openapi::ApiErrorBody;
use crate::{AppState, known_model, ndjson};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use flowhost_edges::views::{ViewKind, view_line};
use flowhost_store::Cursor;
use serde_json::{Value, json};
use std::collections::HashMap;

/// The most lines one page may ask for.
pub const MAX_PAGE: usize = 10_000;
const DEFAULT_PAGE: usize = 1_000;

/// Reads `?limit=` (1..=MAX_PAGE, default 1,000).
pub(crate) fn page_limit(query: &HashMap<String, String>) -> ApiResult<usize> {
    match query.get("limit") {
        None => Ok(DEFAULT_PAGE),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "limit must be a whole number from 1 to {MAX_PAGE}, got '{text}'"
            ))),
        },
    }
}

/// Rejects query parameters a route does not know (a misspelt filter must not silently
/// return everything).
pub(crate) fn only_params(query: &HashMap<String, String>, known: &[&str]) -> ApiResult<()> {
    match query.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ApiError::bad_request(format!(
            "unknown query parameter '{k}'; this route takes: {}",
            known.join(", ")
        ))),
        None => Ok(()),
    }
}

/// The query parameters; each may be given once.
pub(crate) fn query(
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<HashMap<String, String>> {
    let Query(pairs) =
        q.map_err(|e| ApiError::bad_request(format!("bad query string: {}", e.body_text())))?;
    let mut out = HashMap::with_capacity(pairs.len());
    for (k, v) in pairs {
        if k.contains('\0') || v.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "query parameter '{}' contains a NUL character",
                k.replace('\0', "\\0")
            )));
        }
        if out.contains_key(&k) {
            return Err(ApiError::bad_request(format!(
                "query parameter '{k}' is given twice; give it once"
            )));
        }
        out.insert(k, v);
    }
    Ok(out)
}

/// The path's parameters; none may hold a NUL character (no name or id does).
pub(crate) fn path<T: PathParts>(p: Result<Path<T>, PathRejection>) -> ApiResult<T> {
    let Path(p) = p.map_err(|e| ApiError::bad_request(format!("bad path: {}", e.body_text())))?;
    if p.parts().iter().any(|s| s.contains('\0')) {
        return Err(ApiError::bad_request("the path contains a NUL character"));
    }
    Ok(p)
}

/// Path parameters as strings, to check them.
pub(crate) trait PathParts {
    fn parts(&self) -> Vec<&str>;
}

impl PathParts for String {
    fn parts(&self) -> Vec<&str> {
        vec![self]
    }
}

impl PathParts for (String, String) {
    fn parts(&self) -> Vec<&str> {
        vec![&self.0, &self.1]
    }
}

/// `GET /v1/models/{model}/{view}?limit=&after=`: one page of a view, ordered by each
/// reference's first intake; `after` is the last `id` of the previous page, and the
/// `x-next-after` header gives it while more pages follow.
#[utoipa::path(
    get,
    path = "/v1/models/{model}/{view}",
    tag = "read",
    params(
        ("model" = String, Path, description = "The model"),
        ("view" = String, Path, description = "`canonical`, `root` or `lineage`"),
        ("limit" = Option<usize>, Query, description = "Lines per page, 1–10,000 (default 1,000)"),
        ("after" = Option<String>, Query, description = "The last id of the previous page (`x-next-after`)"),
    ),
    responses(
        (status = 200, description = "One NDJSON line per reference, as `flowhost export`, by first intake", content_type = "application/x-ndjson", body = String),
        (status = 400, description = "A bad parameter, named in the error", content_type = "application/json", body = ApiErrorBody),
        (status = 404, description = "Unknown model or view", content_type = "application/json", body = ApiErrorBody),
    )
)]
pub(crate) async fn view_page(
    State(state): State<AppState>,
    p: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Response> {
    let (model, view) = path(p)?;
    let params = query(q)?;
    only_params(&params, &["limit", "after"])?;
    let Some(kind) = ViewKind::parse(&view) else {
        return Err(ApiError::not_found(format!(
            "no view '{view}'; the views are canonical, root and lineage, and \
             references/{{id}} for one reference"
        )));
    };
    let store = state.store();
    known_model(store, &model).await?;
    let limit = page_limit(&params)?;
    let cursor = match params.get("after") {
        None => None,
        Some(after) => match store.view(&model, after).await? {
            Some(v) => Some(Cursor {
                first_seq: v.first_seq,
                reference: v.reference,
            }),
            None => {
                return Err(ApiError::bad_request(format!(
                    "after: model '{model}' has no reference '{after}' (give the last id of \
                     the previous page)"
                )));
            }
        },
    };
    let mut rows = store.views(&model, cursor.as_ref(), limit + 1).await?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let mut body = String::with_capacity(rows.len() * 256);
    for v in &rows {
        body.push_str(&view_line(kind, v));
        body.push('\n');
    }
    let next = more
        .then(|| rows.last().map(|v| v.reference.clone()))
        .flatten();
    Ok(ndjson(body, next))
}

/// `GET /v1/models/{model}/references/{id}`: one reference's canonical, root, lineage and
/// parents, the plugin version that made them, and the sources that contributed.
#[utoipa::path(
    get,
    path = "/v1/models/{model}/references/{id}",
    tag = "read",
    params(
        ("model" = String, Path, description = "The model"),
        ("id" = String, Path, description = "The reference"),
    ),
    responses(
        (status = 200, description = "Canonical, root, lineage, parents, plugin version and contributing sources", content_type = "application/json", body = Object),
        (status = 404, description = "Unknown model or reference", content_type = "application/json", body = ApiErrorBody),
    )
)]
pub(crate) async fn reference(
    State(state): State<AppState>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<axum::Json<Value>> {
    let (model, id) = path(p)?;
    let store = state.store();
    known_model(store, &model).await?;
    let Some(v) = store.view(&model, &id).await? else {
        return Err(ApiError::not_found(format!(
            "model '{model}' has no reference '{id}' (or it is not projected yet)"
        )));
    };
    let sources = store.sources(&model, &id).await?;
    let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
    Ok(axum::Json(json!({
        "id": v.reference,
        "model": v.model,
        "canonical": parse(&v.canonical),
        "root": parse(&v.root),
        "lineage": parse(&v.lineage),
        "parents": parse(&v.parents),
        "plugin_version": v.plugin_version,
        "sources": sources.iter().map(|s| json!({
            "system": s.system,
            "adapter": s.adapter,
            "records": s.records,
            "last_occurred_at": s.last_occurred_at,
        })).collect::<Vec<_>>(),
    })))
}

//! Models, parked records and plugins: the read routes and the admin actions.

use crate::error::{ApiError, ApiResult};
use crate::openapi::ApiErrorBody;
use crate::views::{only_params, page_limit, path, query};
use crate::{AppState, known_model, ndjson};
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use flowhost_core::ParkReason;
use flowhost_edges::views::parked_json;
use flowhost_registry::RollbackError;
use flowhost_store::{ParkedFilter, Store};
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// A time as RFC 3339.
fn when_time(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `GET /v1/models`: every model with its kind, plugin version and state, whether this
/// host serves it, and its counts.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "read",
    responses((status = 200, description = "Every model: kind, current plugin version, source and state, what this host serves and retries, counts; and the intake total", content_type = "application/json", body = Object))
)]
pub(crate) async fn models(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let store = state.store();
    let models = store.models().await?;
    let states = store.plugin_states().await?;
    let counts = store.counts().await?;
    let retrying = state.engine().retrying();
    let of = |list: &[(String, i64)], model: &str| {
        list.iter()
            .find(|(m, _)| m == model)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    };
    let out: Vec<Value> = models
        .iter()
        .map(|m| {
            let state_row = states.iter().find(|s| s.model == m.name);
            let mut parked = Map::new();
            for (model, reason, n) in &counts.parked {
                if *model == m.name {
                    parked.insert(reason.clone(), json!(n));
                }
            }
            let serving = state.engine().plugins().get(&m.name).map(|p| p.version().to_string());
            let retrying: Vec<Value> = retrying
                .iter()
                .filter(|r| r.model == m.name)
                .map(|r| json!({"stage": r.stage.as_str(), "since": when_time(r.since), "attempts": r.attempts, "last_error": r.last_error}))
                .collect();
            json!({
                "model": m.name,
                "kind": m.kind,
                "plugin_version": state_row.map(|s| s.version.clone()).unwrap_or_else(|| m.plugin_version.clone()),
                "source": state_row.map(|s| s.source.as_str()),
                "state": state_row.map(|s| s.state.clone()),
                "serving_here": serving,
                "retrying_here": retrying,
                "counts": {
                    "references": of(&counts.references, &m.name),
                    "keyed": of(&counts.keyed, &m.name),
                    "pending": of(&counts.queued, &m.name),
                    "dirty": of(&counts.dirty, &m.name),
                    "parked": parked,
                },
            })
        })
        .collect();
    Ok(Json(json!({"models": out, "intake": counts.intake})))
}

/// Reads `?model=&reason=`, checking both.
async fn parked_filter(store: &Store, params: &HashMap<String, String>) -> ApiResult<ParkedFilter> {
    let model = match params.get("model") {
        Some(m) => {
            known_model(store, m).await?;
            Some(m.clone())
        }
        None => None,
    };
    let reason = match params.get("reason") {
        Some(r) => Some(ParkReason::parse(r).ok_or_else(|| {
            let all: Vec<&str> = ParkReason::ALL.iter().map(|r| r.as_str()).collect();
            ApiError::bad_request(format!("unknown reason '{r}'; one of {}", all.join(", ")))
        })?),
        None => None,
    };
    Ok(ParkedFilter { model, reason })
}

/// `GET /v1/parked?model=&reason=&limit=&after=`: parked records as NDJSON (as
/// `flowhost parked --json`), in intake order; `x-next-after` pages on.
#[utoipa::path(
    get,
    path = "/v1/parked",
    tag = "read",
    params(
        ("model" = Option<String>, Query, description = "Only this model"),
        ("reason" = Option<String>, Query, description = "Only this reason (e.g. `PARENT_NOT_FOUND`)"),
        ("limit" = Option<usize>, Query, description = "Lines per page, 1–10,000 (default 1,000)"),
        ("after" = Option<String>, Query, description = "The `x-next-after` of the previous page"),
    ),
    responses(
        (status = 200, description = "Parked records, one NDJSON line each", content_type = "application/x-ndjson", body = String),
        (status = 400, description = "A bad parameter, named in the error", content_type = "application/json", body = ApiErrorBody)
    )
)]
pub(crate) async fn parked(
    State(state): State<AppState>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Response> {
    let params = query(q)?;
    only_params(&params, &["model", "reason", "limit", "after"])?;
    let store = state.store();
    let filter = parked_filter(store, &params).await?;
    let limit = page_limit(&params)?;
    let after = match params.get("after") {
        None => 0,
        Some(a) => a.parse::<i64>().map_err(|_| {
            ApiError::bad_request(format!(
                "after must be the number from the previous page's x-next-after header, got '{a}'"
            ))
        })?,
    };
    let mut rows = store.parked(&filter, after, limit + 1).await?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let mut body = String::new();
    for p in &rows {
        body.push_str(&parked_json(p).to_string());
        body.push('\n');
    }
    let next = more
        .then(|| rows.last().map(|p| p.record.seq.to_string()))
        .flatten();
    Ok(ndjson(body, next))
}

/// `POST /v1/parked/requeue?model=&reason=` (admin): puts the matching parked records back
/// in the queue.
#[utoipa::path(
    post,
    path = "/v1/parked/requeue",
    tag = "admin",
    params(
        ("model" = Option<String>, Query, description = "Only this model"),
        ("reason" = Option<String>, Query, description = "Only this reason"),
    ),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "`{\"requeued\": N}`", content_type = "application/json", body = Object),
        (status = 401, description = "`server.admin_token` is set and the request does not carry it", content_type = "application/json", body = ApiErrorBody),
        (status = 403, description = "The request comes from a web page of another site (`Origin`)", content_type = "application/json", body = ApiErrorBody),
    )
)]
pub(crate) async fn requeue(
    State(state): State<AppState>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let params = query(q)?;
    only_params(&params, &["model", "reason"])?;
    let store = state.store();
    let filter = parked_filter(store, &params).await?;
    let n = store.requeue(&filter).await?;
    tracing::info!(model = ?filter.model, reason = ?filter.reason.map(|r| r.as_str()), requeued = n, "parked records re-queued over HTTP");
    Ok(Json(json!({"requeued": n})))
}

/// `GET /v1/hosts`: the processes at work on the database (this one marked `this`), what
/// each holds and since when.
#[utoipa::path(
    get,
    path = "/v1/hosts",
    tag = "read",
    responses((status = 200, description = "The processes at work on the database, with what each holds", content_type = "application/json", body = Object))
)]
pub(crate) async fn hosts(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let engine = state.engine();
    let live_within = engine.config().lease_ttl.as_micros() as i64;
    let hosts =
        flowhost_edges::hosts::hosts_json(state.store(), Some(engine.holder()), live_within)
            .await?;
    Ok(Json(json!({"this_host": engine.holder(), "hosts": hosts})))
}

/// `GET /v1/plugins`.
#[utoipa::path(
    get,
    path = "/v1/plugins",
    tag = "read",
    responses((status = 200, description = "The plugins, refused files, stages cooling down, swap and refusal counters", content_type = "application/json", body = Object))
)]
pub(crate) async fn plugins(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let (models, refused) = flowhost_edges::models::plugins_json(state.store()).await?;
    let breakers: Vec<Value> = state
        .engine()
        .breakers()
        .into_iter()
        .map(|b| {
            json!({
                "model": b.model,
                "stage": b.stage.as_str(),
                "version": b.version,
                "failed_batches": b.failed_batches,
                "cooling": b.cooling_until.is_some(),
                "last_error": b.last_error,
            })
        })
        .collect();
    Ok(Json(json!({
        "plugins": models,
        "refused_files": refused,
        "failing_here": breakers,
        "swaps": state.registry().swaps(),
        "refused_validations": state.registry().refused(),
    })))
}

/// `GET /v1/plugins/{model}/shadow?limit=N`: the model's shadow run (a candidate version
/// called beside the live one): counts, and the first differences, each record named by its
/// system and id.
#[utoipa::path(
    get,
    path = "/v1/plugins/{model}/shadow",
    tag = "read",
    params(
        ("model" = String, Path, description = "The model"),
        ("limit" = Option<usize>, Query, description = "Differences to return, 1–10,000 (default 1,000; at most 1,000 are kept per run)"),
    ),
    responses(
        (status = 200, description = "The shadow run: candidate, live version, counts and differences", content_type = "application/json", body = Object),
        (status = 400, description = "A bad parameter, named in the error", content_type = "application/json", body = ApiErrorBody),
        (status = 404, description = "Unknown model, or no shadow run of it", content_type = "application/json", body = ApiErrorBody),
    )
)]
pub(crate) async fn shadow(
    State(state): State<AppState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let model = path(p)?;
    let params = query(q)?;
    only_params(&params, &["limit"])?;
    let limit = page_limit(&params)?;
    let store = state.store();
    known_model(store, &model).await?;
    match flowhost_edges::models::shadow_json(store, &model, limit).await? {
        Some(run) => Ok(Json(run)),
        None => Err(ApiError::not_found(format!(
            "no shadow run of '{model}': place a candidate as <plugins>/{}/{model}.wasm (or run `flowhost plugins shadow FILE`)",
            flowhost_registry::SHADOW_DIR
        ))),
    }
}

/// `POST /v1/plugins/{model}/rollback?to=PREFIX` (admin): makes the previous (or the given)
/// version of a model current, here at once and for every host on the database.
#[utoipa::path(
    post,
    path = "/v1/plugins/{model}/rollback",
    tag = "admin",
    params(
        ("model" = String, Path, description = "The model"),
        ("to" = Option<String>, Query, description = "The version (or a unique prefix) to return to; default: the one before"),
    ),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The version now current", content_type = "application/json", body = Object),
        (status = 401, description = "`server.admin_token` is set and the request does not carry it", content_type = "application/json", body = ApiErrorBody),
        (status = 404, description = "Unknown model", content_type = "application/json", body = ApiErrorBody),
        (status = 409, description = "Nothing to roll back to", content_type = "application/json", body = ApiErrorBody),
    )
)]
pub(crate) async fn rollback(
    State(state): State<AppState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let model = path(p)?;
    let params = query(q)?;
    only_params(&params, &["to"])?;
    let before = state
        .store()
        .plugin_states()
        .await?
        .into_iter()
        .find(|s| s.model == model)
        .map(|s| s.version);
    let to = params.get("to").map(String::as_str);
    match state.registry().rollback(&model, to).await {
        Ok(version) => {
            tracing::info!(
                model,
                version = flowhost_registry::short(&version),
                "rolled back over HTTP"
            );
            Ok(Json(
                json!({"model": model, "version": version, "was": before}),
            ))
        }
        Err(e) => {
            let status = match &e {
                RollbackError::UnknownModel(_) => StatusCode::NOT_FOUND,
                RollbackError::NoEarlier { .. }
                | RollbackError::NoSuchVersion { .. }
                | RollbackError::Ambiguous { .. } => StatusCode::CONFLICT,
                RollbackError::Unloadable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                RollbackError::Other(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            Err(ApiError::new(status, e.to_string()))
        }
    }
}

/// `POST /v1/models/{model}/reassociate?dry_run=true` (admin): decides the model's records
/// again under its current version, here, between two of this host's association batches
/// (the host that holds the model's association; another answers 409 naming it).
#[utoipa::path(
    post,
    path = "/v1/models/{model}/reassociate",
    tag = "admin",
    params(
        ("model" = String, Path, description = "The model"),
        ("dry_run" = Option<bool>, Query, description = "`true`: only report what would change"),
    ),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "What changed (or would): records, references before and after, merges, splits, retired references, children re-queued", content_type = "application/json", body = Object),
        (status = 400, description = "A bad parameter, named in the error", content_type = "application/json", body = ApiErrorBody),
        (status = 401, description = "`server.admin_token` is set and the request does not carry it", content_type = "application/json", body = ApiErrorBody),
        (status = 404, description = "Unknown model", content_type = "application/json", body = ApiErrorBody),
        (status = 409, description = "Another host holds the model's association (named)", content_type = "application/json", body = ApiErrorBody),
    )
)]
pub(crate) async fn reassociate(
    State(state): State<AppState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let model = path(p)?;
    let params = query(q)?;
    only_params(&params, &["dry_run"])?;
    let dry_run = match params.get("dry_run").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "dry_run must be true or false, got '{other}'"
            )));
        }
    };
    known_model(state.store(), &model).await?;
    match state.engine().reassociate(&model, !dry_run).await {
        Ok(report) => Ok(Json(serde_json::to_value(report).unwrap_or_default())),
        Err(flowhost_engine::EngineError::Busy(message)) => {
            Err(ApiError::new(StatusCode::CONFLICT, message))
        }
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            e.to_string(),
        )),
    }
}

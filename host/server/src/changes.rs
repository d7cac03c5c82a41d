//! `GET /v1/changes`: the change feed over HTTP, with long polling for followers without a
//! broker.

use crate::error::{ApiError, ApiResult};
use crate::openapi::ApiErrorBody;
use crate::views::{only_params, page_limit, query};
use crate::{AppState, known_model, ndjson};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use std::time::Duration;

/// The longest a request may wait for a change (`wait=`).
pub const MAX_WAIT_S: u64 = 60;

/// How often a waiting request looks for changes other hosts committed (this host's own
/// projections wake it at once).
pub(crate) const LOOK_AGAIN: Duration = Duration::from_millis(250);

/// `GET /v1/changes?after=SEQ&model=&limit=&wait=SECONDS`: the changes after `after` (0:
/// from the start), oldest first, one NDJSON line each (`seq`, `model`, `id`, `canonical`,
/// `root`, `version`). With `wait`, a request that finds none waits up to that many seconds
/// for the first one, then answers (an empty body when none came). `x-next-after` gives the
/// last `seq` answered, for the next request.
#[utoipa::path(
    get,
    path = "/v1/changes",
    tag = "read",
    params(
        ("after" = Option<u64>, Query, description = "The last `seq` you have (default 0: from the oldest kept)"),
        ("model" = Option<String>, Query, description = "Only this model"),
        ("limit" = Option<usize>, Query, description = "Lines per answer, 1–10,000 (default 1,000)"),
        ("wait" = Option<u64>, Query, description = "Seconds (0–60) to wait for a change when there is none"),
    ),
    responses(
        (status = 200, description = "One NDJSON line per change, oldest first; `x-next-after` holds the last `seq`", content_type = "application/x-ndjson", body = String),
        (status = 400, description = "A bad parameter, named in the error", content_type = "application/json", body = ApiErrorBody),
        (status = 404, description = "Unknown model", content_type = "application/json", body = ApiErrorBody),
    )
)]
pub(crate) async fn changes(
    State(state): State<AppState>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Response> {
    let params = query(q)?;
    only_params(&params, &["after", "model", "limit", "wait"])?;
    let number = |name: &str, max: u64| -> ApiResult<u64> {
        match params.get(name) {
            None => Ok(0),
            Some(text) => match text.parse::<u64>() {
                Ok(n) if n <= max => Ok(n),
                _ => Err(ApiError::bad_request(format!(
                    "{name} must be a whole number from 0 to {max}, got '{text}'"
                ))),
            },
        }
    };
    let after = number("after", i64::MAX as u64)? as i64;
    let wait = Duration::from_secs(number("wait", MAX_WAIT_S)?);
    let limit = page_limit(&params)?;
    let model = params.get("model").map(String::as_str);
    let store = state.store();
    if let Some(model) = model {
        known_model(store, model).await?;
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut last = (!wait.is_zero()).then(|| state.last_change());
    let rows = loop {
        // Marked seen before the read, so a change committed during it is not missed.
        if let Some(last) = &mut last {
            last.borrow_and_update();
        }
        let rows = store.changes(after, model, limit).await?;
        if !rows.is_empty() || tokio::time::Instant::now() >= deadline || state.shutting_down() {
            break rows;
        }
        let Some(last) = &mut last else { break rows };
        // Woken when the feed's end moves (or at the deadline), not by polling the database.
        tokio::select! {
            changed = last.changed() => if changed.is_err() { break rows },
            _ = tokio::time::sleep_until(deadline) => {}
        }
    };
    let mut body = String::with_capacity(rows.len() * 256);
    for c in &rows {
        body.push_str(&flowhost_edges::views::change_line(c));
        body.push('\n');
    }
    let next = rows.last().map(|c| c.seq.to_string());
    Ok(ndjson(body, next))
}

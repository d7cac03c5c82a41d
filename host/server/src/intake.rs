//! `POST /v1/records`: an NDJSON body through the edges' line intake, read as it streams
//! in, bounded by the body limit, an idle timeout and the request deadline.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::openapi::{ApiErrorBody, IntakeAnswer};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flowhost_edges::intake::{BATCH, IntakeSummary, LineIntake, LineOutcome, Lines};
use flowhost_store::StoreError;
use futures::StreamExt;
use serde_json::json;
use std::collections::BTreeSet;

/// Adds lines the database refused to an answer's list of errors (up to its limit).
fn list_refused(errors: &mut Vec<serde_json::Value>, refused: Vec<(u64, String)>) {
    for (line, error) in refused {
        if errors.len() < MAX_LISTED_ERRORS {
            errors.push(json!({"line": line, "error": error}));
        }
    }
}

/// At most this many refused lines are listed in an answer (all are counted).
const MAX_LISTED_ERRORS: usize = 100;

/// `POST /v1/records`: an NDJSON body, read as it streams in; answers when every good line
/// is durable.
#[utoipa::path(
    post,
    path = "/v1/records",
    tag = "intake",
    request_body(content = String, content_type = "application/x-ndjson", description = "One record a line (`application/json` is taken too)"),
    responses(
        (status = 200, description = "Every good line is durable; the counts, and the refused lines with their errors", content_type = "application/json", body = IntakeAnswer),
        (status = 400, description = "Every line was refused, or none was sent", content_type = "application/json", body = IntakeAnswer),
        (status = 408, description = "The body stopped coming, or the request ran past its time; the lines before are durable", content_type = "application/json", body = ApiErrorBody),
        (status = 413, description = "Over `server.body_limit_bytes`", content_type = "application/json", body = ApiErrorBody),
        (status = 415, description = "Not `application/x-ndjson` or `application/json`", content_type = "application/json", body = ApiErrorBody),
        (status = 503, description = "Storing failed; the counted lines are durable and re-sending is safe", content_type = "application/json", body = ApiErrorBody),
    )
)]
pub(crate) async fn post_records(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match receive(state, headers, body).await {
        Ok(response) => response,
        Err(e) => {
            let unread = e.status == StatusCode::PAYLOAD_TOO_LARGE;
            let mut response = e.into_response();
            if unread {
                // The rest of the body is not read: the connection cannot carry another
                // request, and a client must not reuse it.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    }
}

async fn receive(state: AppState, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    let limit = state.config().body_limit;
    if let Err(refusal) = check_content_type(&headers) {
        // Read the body (discarding, at most up to the limit), so that a client still
        // sending gets the answer rather than a reset connection.
        let mut stream = body.into_data_stream();
        let mut received = 0usize;
        while received <= limit
            && let Some(Ok(chunk)) = stream.next().await
        {
            received += chunk.len();
        }
        return Err(refusal);
    }
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > limit as u64
    {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is {length} bytes, over the limit of {limit} bytes \
                 (server.body_limit_bytes); nothing was stored: send it in smaller requests"
            ),
        ));
    }
    let started = std::time::Instant::now();
    let store = state.store();
    let known: BTreeSet<String> = store.models().await?.into_iter().map(|m| m.name).collect();
    let max_line = state.config().max_line_bytes;
    let mut intake =
        LineIntake::new(store, known, max_line, BATCH).with_limits(state.config().intake);
    if let Some(group) = state.group() {
        intake = intake.grouped(group.clone());
    }
    let mut errors = Vec::new();
    let mut line_no = 0u64;
    let mut lines = Lines::new(max_line);
    let mut received = 0usize;
    let mut stream = body.into_data_stream();
    let mut stop: Option<ApiError> = None;

    let take = |intake: &mut LineIntake,
                errors: &mut Vec<serde_json::Value>,
                line: &[u8],
                len: usize,
                line_no: u64| {
        if let LineOutcome::Refused(e) = intake.line(line, len)
            && errors.len() < MAX_LISTED_ERRORS
        {
            errors.push(json!({"line": line_no, "error": e.to_string()}));
        }
    };

    let idle = state.config().body_idle_timeout;
    let deadline = started + state.config().request_timeout;
    'read: loop {
        // A client that stops sending mid-body would hold the request (and a place among
        // the concurrent ones) forever: past the idle timeout the request ends.
        // A client that trickles a byte now and then is bounded by the request deadline.
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            stop = Some(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request ran longer than {} s (server.request_timeout_s); the good \
                     records of the first {line_no} lines are durable; send the rest in \
                     another request (re-sending is safe: duplicates are recognised)",
                    state.config().request_timeout.as_secs_f64()
                ),
            ));
            break;
        }
        let chunk = match tokio::time::timeout(idle.min(left), stream.next()).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            // The deadline, not the idle timeout: said at the top of the loop.
            Err(_) if std::time::Instant::now() >= deadline => continue,
            Err(_) => {
                stop = Some(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the body sent nothing for {} s (server.body_idle_timeout_s) after line \
                         {line_no}; the good records of the lines before are durable; send the \
                         rest again (re-sending is safe: duplicates are recognised)",
                        idle.as_secs_f64()
                    ),
                ));
                break;
            }
        };
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                stop = Some(ApiError::bad_request(format!(
                    "the request body broke off after line {line_no}: {e}"
                )));
                break;
            }
        };
        received += chunk.len();
        if received > limit {
            // Read on (discarding) up to the limit again, so that a client still sending
            // gets the answer rather than a reset connection.
            while received <= limit.saturating_mul(2)
                && let Some(Ok(more)) = stream.next().await
            {
                received += more.len();
            }
            stop = Some(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the body is over the limit of {limit} bytes (server.body_limit_bytes); \
                     the first {line_no} lines were processed and their good records are \
                     durable; send the rest in another request (re-sending is safe: \
                     duplicates are recognised)"
                ),
            ));
            break;
        }
        let mut rest = &chunk[..];
        while let Some((line, len)) = lines.next_line(&mut rest) {
            line_no += 1;
            take(&mut intake, &mut errors, line, len, line_no);
            if intake.full() {
                match intake.flush().await {
                    Ok(refused) => list_refused(&mut errors, refused),
                    Err(e) => {
                        stop = Some(store_failed(e, line_no, &intake.summary));
                        break 'read;
                    }
                }
            }
        }
    }
    if stop.is_none()
        && let Some((line, len)) = lines.finish()
    {
        line_no += 1;
        take(&mut intake, &mut errors, line, len, line_no);
    }
    match intake.flush().await {
        Ok(refused) => list_refused(&mut errors, refused),
        // What was batched is not stored: report what is.
        Err(e) => return Err(store_failed(e, line_no, &intake.summary)),
    }
    let s = intake.summary;
    record_metrics(&s);
    if s.accepted > 0 {
        state.engine().wake(flowhost_store::Stage::Associate);
    }
    let counts = json!({
        "accepted": s.accepted,
        "duplicates": s.duplicates,
        "refused": s.refused,
        "errors": errors,
    });
    if let Some(mut e) = stop {
        e.extra = Some(counts);
        return Err(e);
    }
    tracing::info!(
        accepted = s.accepted,
        duplicates = s.duplicates,
        refused = s.refused,
        lines = line_no,
        took_ms = started.elapsed().as_secs_f64() * 1e3,
        "records received"
    );
    let mut counts = counts;
    if s.refused as usize > MAX_LISTED_ERRORS {
        counts["errors_not_listed"] = json!(s.refused as usize - MAX_LISTED_ERRORS);
    }
    let status = if s.accepted + s.duplicates > 0 {
        StatusCode::OK
    } else if s.refused > 0 {
        StatusCode::BAD_REQUEST
    } else {
        return Err(ApiError::bad_request(
            "the body has no records: send NDJSON, one record per line",
        ));
    };
    Ok((status, axum::Json(counts)).into_response())
}

/// A store failure part way through a body: the client learns which batch, what is
/// durable, and an error id for the log (not the database's own words).
fn store_failed(e: StoreError, line: u64, s: &IntakeSummary) -> ApiError {
    ApiError::store_while(
        e,
        &format!("storing the batch that ends at line {line}"),
        "the records counted here are durable and re-sending the whole body is safe",
        json!({"accepted": s.accepted, "duplicates": s.duplicates, "refused": s.refused}),
    )
}

fn record_metrics(s: &IntakeSummary) {
    for (outcome, n) in [
        ("accepted", s.accepted),
        ("duplicate", s.duplicates),
        ("refused", s.refused),
    ] {
        metrics::counter!("flowhost_intake_records_total", "outcome" => outcome).increment(n);
    }
}

/// Intake takes NDJSON (or JSON) by its content type only. A web page can make a browser
/// send `text/plain`, a form or no type at all to another site without asking it first;
/// refusing those means no page can post records through a user's loopback host.
fn check_content_type(headers: &HeaderMap) -> ApiResult<()> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "no content-type: send one JSON record per line with content-type: application/x-ndjson",
        ));
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/x-ndjson"
        | "application/jsonl"
        | "application/json-lines"
        | "application/json" => Ok(()),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "content-type '{other}' is not NDJSON: send one JSON record per line with \
                 content-type: application/x-ndjson (text/plain and forms are refused: a web \
                 page could send them from another site)"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_batch_names_its_line_and_an_error_id_not_the_database_words() {
        let summary = IntakeSummary {
            accepted: 3,
            ..IntakeSummary::default()
        };
        let e = StoreError::Query {
            operation: "append intake",
            model: "device".into(),
            source: sqlx::Error::Protocol("INSERT INTO intake at /var/lib/flowhost/x.db".into()),
        };
        let error = store_failed(e, 42, &summary);
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!error.message.contains("INSERT"), "{}", error.message);
        assert!(!error.message.contains("/var/lib"), "{}", error.message);
        assert!(error.message.contains("line 42"), "{}", error.message);
        let extra = error.extra.unwrap();
        let id = extra["error_id"].as_str().unwrap();
        assert!(error.message.contains(id), "{}", error.message);
        assert_eq!(extra["accepted"], 3);
        let busy = StoreError::ConnectionWait {
            operation: "append intake",
            model: "*".into(),
            wait: "this process's one writer connection stayed held",
        };
        let error = store_failed(busy, 7, &summary);
        assert!(
            error.message.contains("writer connection"),
            "{}",
            error.message
        );
        assert!(error.message.contains("durable"), "{}", error.message);
    }
}

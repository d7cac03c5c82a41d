//! `GET /health/live` and `GET /health/ready`, as Kubernetes-style probes.

use crate::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

/// The process is up and answering.
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "health",
    responses((status = 200, description = "The process runs", content_type = "application/json", body = Object))
)]
pub(crate) async fn live() -> Json<Value> {
    Json(json!({"status": "live"}))
}

/// Ready to do the job: the database answers with every migration applied, every model the
/// database knows has a plugin loaded here, and no stage's batches are failing and being
/// retried. 503 with the reasons otherwise. A broker (NATS) that is down or failing does not
/// make the host unready — HTTP intake and processing go on — and is listed as `degraded`.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "health",
    responses(
        (status = 200, description = "Ready: the database answers, every model has a plugin, no stage retries; `degraded` lists what is wrong with NATS, if anything", content_type = "application/json", body = Object),
        (status = 503, description = "Not ready, with the reasons", content_type = "application/json", body = Object),
    )
)]
pub(crate) async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let mut reasons: Vec<String> = Vec::new();
    if state.shutting_down() {
        reasons.push("shutting down".into());
    }
    let store = state.store();
    match store.health().await {
        Ok(h) if !h.missing_migrations.is_empty() => reasons.push(format!(
            "the database lacks migrations: {}",
            h.missing_migrations.join(", ")
        )),
        Ok(_) => match store.models().await {
            Ok(_) if state.engine().plugins().models().is_empty() => reasons.push(format!(
                "no plugins in {}: drop *.wasm components there (a running host loads them at once)",
                state.registry().config().dir.display()
            )),
            Ok(models) => {
                let (status, _) = state.registry().status();
                for m in models {
                    if state.engine().plugins().get(&m.name).is_none() {
                        let why = status
                            .iter()
                            .find(|s| s.model == m.name)
                            .and_then(|s| {
                                s.paused
                                    .clone()
                                    .or(s.last_error.as_ref().map(|e| e.to_string()))
                            })
                            .unwrap_or_else(|| "no file for it in the plugins folder".into());
                        reasons.push(format!("model '{}' has no plugin loaded: {why}", m.name));
                    }
                }
            }
            Err(e) => reasons.push(format!("the database does not answer: {e}")),
        },
        Err(e) => reasons.push(format!("the database does not answer: {e}")),
    }
    for r in state.engine().retrying() {
        reasons.push(format!("model '{}': {}", r.model, r.describe()));
    }
    let degraded = state.broker().map(|b| b.degraded()).unwrap_or_default();
    let mut body = if reasons.is_empty() {
        json!({"status": "ready"})
    } else {
        json!({"status": "not ready", "reasons": reasons})
    };
    if !degraded.is_empty() {
        body["degraded"] = json!(degraded);
    }
    let code = match reasons.is_empty() {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    (code, Json(body))
}

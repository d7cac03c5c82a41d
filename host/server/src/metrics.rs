//! `GET /metrics`: Prometheus text. The engine and intake record counters and histograms
//! as they work (the `metrics` facade, recorded by the Prometheus exporter installed here);
//! what the database and the registry know (queue depths, parked records, plugin versions)
//! is read when scraped, so every host reports the shared database's state.

use crate::AppState;
use crate::error::ApiResult;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use flowhost_core::ParkReason;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::fmt::Write;

/// The process's metrics recorder.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl Metrics {
    /// Installs the process-wide recorder (once per process).
    pub fn install() -> Result<Self, String> {
        let seconds = [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ];
        let sizes = [
            1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_000.0, 5_000.0, 10_000.0,
        ];
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full("flowhost_batch_size".into()), &sizes)
            })
            .and_then(|b| b.install_recorder())
            .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
        describe();
        Ok(Self { handle })
    }

    /// Drains the histograms' pending samples (bounded memory between scrapes).
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    fn render(&self) -> String {
        self.handle.render()
    }
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(
        "flowhost_intake_records_total",
        "Records received over HTTP by outcome (accepted, duplicate, refused)."
    );
    describe_counter!(
        "flowhost_plugin_auto_rollbacks_total",
        "Versions this host rolled back on its own (plugins.auto_rollback), per model."
    );
    describe_counter!(
        "flowhost_nats_records_total",
        "Records taken from the NATS intake stream by outcome (accepted, duplicate, refused)."
    );
    describe_counter!(
        "flowhost_nats_messages_total",
        "NATS intake messages handled by this host."
    );
    describe_counter!(
        "flowhost_nats_refusals_published_total",
        "Refused NATS intake lines published to the refused subject."
    );
    describe_counter!(
        "flowhost_nats_changes_relayed_total",
        "Changes this host relayed to the NATS changes stream."
    );
    describe_counter!(
        "flowhost_batches_total",
        "Batches committed, per stage and model."
    );
    describe_counter!(
        "flowhost_batch_items_total",
        "Records (associate) or references (project) handled, per stage and model."
    );
    describe_histogram!(
        "flowhost_batch_size",
        "Items per committed batch, per stage and model."
    );
    describe_histogram!(
        "flowhost_batch_duration_seconds",
        Unit::Seconds,
        "Batch latency from lease to commit, per stage and model."
    );
    describe_histogram!(
        "flowhost_plugin_call_seconds",
        Unit::Seconds,
        "Time in plugin calls per batch, per stage and model."
    );
    describe_histogram!(
        "flowhost_plugin_slot_wait_seconds",
        Unit::Seconds,
        "How long plugin calls waited for an instance slot (plugins.call_slots), per model; only calls that found every slot taken."
    );
    describe_counter!(
        "flowhost_db_statements_total",
        "Database statements executed by the stage workers, per stage and model."
    );
    describe_counter!(
        "flowhost_http_requests_total",
        "HTTP requests by route and status."
    );
}

/// A Prometheus label value, escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A gauge family per model: name, help, and the counts it reads.
type PerModel<'a> = (&'static str, &'static str, &'a [(String, i64)]);

/// The state read at scrape time: database counts, plugin versions, registry counters.
async fn state_section(state: &AppState) -> Result<String, flowhost_store::StoreError> {
    let store = state.store();
    let counts = store.counts().await?;
    let models = store.models().await?;
    let plugins = store.plugin_states().await?;
    let mut out = String::with_capacity(4096);

    family(
        &mut out,
        "flowhost_intake_records",
        "gauge",
        "Records stored in intake (every process).",
    );
    let _ = writeln!(out, "flowhost_intake_records {}", counts.intake);
    family(
        &mut out,
        "flowhost_changes_last_seq",
        "gauge",
        "The number of the last change in the change feed (GET /v1/changes): a follower whose \
         own last seq lags it is behind.",
    );
    let _ = writeln!(
        out,
        "flowhost_changes_last_seq {}",
        store.last_change().await?
    );
    let per_model: [PerModel; 4] = [
        (
            "flowhost_pending_records",
            "Records waiting for association (queue depth), per model.",
            &counts.queued,
        ),
        (
            "flowhost_dirty_references",
            "References waiting for projection (queue depth), per model.",
            &counts.dirty,
        ),
        (
            "flowhost_keyed_records",
            "Records keyed to a reference, per model.",
            &counts.keyed,
        ),
        (
            "flowhost_references",
            "References with views, per model.",
            &counts.references,
        ),
    ];
    for (name, help, list) in per_model {
        family(&mut out, name, "gauge", help);
        for m in &models {
            let n = list
                .iter()
                .find(|(x, _)| *x == m.name)
                .map(|(_, n)| *n)
                .unwrap_or(0);
            let _ = writeln!(out, "{name}{{model=\"{}\"}} {n}", label(&m.name));
        }
    }
    family(
        &mut out,
        "flowhost_parked_records",
        "gauge",
        "Parked records, per model and reason.",
    );
    for m in &models {
        for reason in ParkReason::ALL {
            let n = counts
                .parked
                .iter()
                .find(|(x, r, _)| *x == m.name && r == reason.as_str())
                .map(|(_, _, n)| *n)
                .unwrap_or(0);
            let _ = writeln!(
                out,
                "flowhost_parked_records{{model=\"{}\",reason=\"{}\"}} {n}",
                label(&m.name),
                reason.as_str()
            );
        }
    }
    family(
        &mut out,
        "flowhost_plugin_info",
        "gauge",
        "The current plugin version of each model (1), with its source and state.",
    );
    for p in &plugins {
        let serving = state
            .engine()
            .plugins()
            .get(&p.model)
            .map(|x| x.version().to_string());
        let _ = writeln!(
            out,
            "flowhost_plugin_info{{model=\"{}\",version=\"{}\",source=\"{}\",state=\"{}\",serving_here=\"{}\"}} 1",
            label(&p.model),
            label(&p.version),
            p.source.as_str(),
            label(p.state.split(':').next().unwrap_or("")),
            label(serving.as_deref().unwrap_or("")),
        );
    }
    family(
        &mut out,
        "flowhost_plugin_cooling_down",
        "gauge",
        "1 while a stage of a model rests after its plugin failed on every record.",
    );
    for b in state.engine().breakers() {
        let _ = writeln!(
            out,
            "flowhost_plugin_cooling_down{{model=\"{}\",stage=\"{}\"}} {}",
            label(&b.model),
            b.stage.as_str(),
            u8::from(b.cooling_until.is_some())
        );
    }
    retrying_section(state, &mut out);
    broker_section(state, &mut out);
    family(
        &mut out,
        "flowhost_host_info",
        "gauge",
        "This host: its id (the lease-holder id GET /v1/hosts lists) and version.",
    );
    let _ = writeln!(
        out,
        "flowhost_host_info{{host=\"{}\",version=\"{}\"}} 1",
        label(state.engine().holder()),
        env!("CARGO_PKG_VERSION")
    );
    let registry = state.registry();
    family(
        &mut out,
        "flowhost_plugin_swaps_total",
        "counter",
        "Plugin versions this host swapped in for one it was serving (first loads are not swaps).",
    );
    let _ = writeln!(out, "flowhost_plugin_swaps_total {}", registry.swaps());
    family(
        &mut out,
        "flowhost_plugin_validation_failures_total",
        "counter",
        "Plugin files this host refused.",
    );
    let _ = writeln!(
        out,
        "flowhost_plugin_validation_failures_total {}",
        registry.refused()
    );
    family(
        &mut out,
        "flowhost_db_statements_all_total",
        "counter",
        "Database statements executed by this process.",
    );
    let _ = writeln!(
        out,
        "flowhost_db_statements_all_total {}",
        store.statements()
    );
    Ok(out)
}

/// Stages whose batches fail for a reason not about the data, as this host sees them
/// (held in memory: shown even while the database does not answer).
fn retrying_section(state: &AppState, out: &mut String) {
    family(
        out,
        "flowhost_batch_retrying_since_seconds",
        "gauge",
        "Unix time since which the batches of a stage of a model fail and are retried (present only while they do).",
    );
    let retrying = state.engine().retrying();
    for r in &retrying {
        let since = r
            .since
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "flowhost_batch_retrying_since_seconds{{model=\"{}\",stage=\"{}\"}} {}",
            label(&r.model),
            r.stage.as_str(),
            since.as_secs()
        );
    }
    family(
        out,
        "flowhost_batch_retry_attempts",
        "gauge",
        "Failed attempts in a row of a stage of a model that is retrying.",
    );
    for r in &retrying {
        let _ = writeln!(
            out,
            "flowhost_batch_retry_attempts{{model=\"{}\",stage=\"{}\"}} {}",
            label(&r.model),
            r.stage.as_str(),
            r.attempts
        );
    }
}

/// The NATS edge, when this host runs one (held in memory, read by its tasks).
fn broker_section(state: &AppState, out: &mut String) {
    let Some(broker) = state.broker() else { return };
    let b = broker.snapshot();
    let gauges = [
        (
            "flowhost_nats_connected",
            "1 while the connection to NATS is up.",
            Some(i64::from(b.connected)),
        ),
        (
            "flowhost_nats_intake_lag_messages",
            "Messages in the intake stream not yet appended (the shared consumer's pending count).",
            b.intake_lag.map(|l| l as i64),
        ),
        (
            "flowhost_nats_intake_position",
            "The last intake stream sequence whose records are durable.",
            Some(b.intake_position),
        ),
        (
            "flowhost_changes_outbox_lag",
            "Changes recorded but not yet relayed to the NATS changes stream.",
            b.outbox_lag,
        ),
        (
            "flowhost_nats_relay_position",
            "The last change relayed to the NATS changes stream.",
            Some(b.relay_position),
        ),
    ];
    for (name, help, value) in gauges {
        family(out, name, "gauge", help);
        if let Some(v) = value {
            let _ = writeln!(out, "{name} {v}");
        }
    }
}

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((status = 200, description = "Prometheus text", content_type = "text/plain", body = String))
)]
pub(crate) async fn scrape(State(state): State<AppState>) -> ApiResult<Response> {
    let mut body = match state.metrics() {
        Some(m) => {
            m.upkeep();
            m.render()
        }
        None => String::new(),
    };
    if !body.is_empty() && !body.ends_with('\n') {
        body.push('\n');
    }
    // What the database holds; when it does not answer, what this host knows still comes
    // out (retrying stages first of all), with `flowhost_database_up 0`.
    family(
        &mut body,
        "flowhost_database_up",
        "gauge",
        "1 when the database answered this scrape.",
    );
    match state_section(&state).await {
        Ok(section) => {
            body.push_str("flowhost_database_up 1\n");
            body.push_str(&section);
        }
        Err(e) => {
            tracing::warn!("metrics: the database does not answer: {e}");
            body.push_str("flowhost_database_up 0\n");
            retrying_section(&state, &mut body);
            broker_section(&state, &mut body);
        }
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

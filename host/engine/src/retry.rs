//! Stages whose batches fail for reasons that are not about the data (a lost connection, a
//! database that refuses writes, a serialisation failure): the batch is not committed and is
//! tried again after a pause that doubles with each failure, up to [`MAX_BACKOFF`]. While it
//! lasts, the stage is **retrying**: logged at each attempt, and shown with its start, its
//! attempts and its last error in `/metrics`, `/health/ready`, `GET /v1/models` and
//! `flowhost plugins list` (through the model's recorded state).

use crate::{Engine, EngineError};
use flowhost_store::Stage;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The longest pause between two attempts of a failing stage.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A stage of a model whose batches fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryStatus {
    pub stage: Stage,
    pub model: String,
    /// When its first failing batch of this run of failures failed.
    pub since: SystemTime,
    /// Failed attempts so far.
    pub attempts: u32,
    pub last_error: String,
    /// The pause before the next attempt.
    pub next_in: Duration,
}

impl RetryStatus {
    /// One line for a person: `retrying since 2026-…Z (3 attempts, next in 4 s): …`.
    pub fn describe(&self) -> String {
        let since: chrono::DateTime<chrono::Utc> = self.since.into();
        format!(
            "retrying since {} ({} {}, next in {} s): {} batches fail: {}",
            since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            self.attempts,
            if self.attempts == 1 {
                "attempt"
            } else {
                "attempts"
            },
            self.next_in.as_secs_f64(),
            self.stage.as_str(),
            self.last_error
        )
    }
}

/// The failing stages of an engine.
#[derive(Default)]
pub(crate) struct Retries {
    failing: Mutex<HashMap<(Stage, String), RetryStatus>>,
}

/// The pause after `attempts` failures: `first`, doubled each time, at most [`MAX_BACKOFF`].
pub(crate) fn backoff(first: Duration, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    first
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
        .max(first.min(MAX_BACKOFF))
}

impl Engine {
    /// Stages whose batches fail right now, oldest first.
    pub fn retrying(&self) -> Vec<RetryStatus> {
        let mut out: Vec<RetryStatus> = self
            .inner
            .retries
            .failing
            .lock()
            .expect("retries lock")
            .values()
            .cloned()
            .collect();
        out.sort_by_key(|r| (r.since, r.model.clone()));
        out
    }

    /// Records that a batch of a stage failed (nothing of it was committed); returns how
    /// long to wait before the next attempt. The model's recorded state says so (best
    /// effort: the database may be what fails).
    pub(crate) async fn batch_failed(
        &self,
        stage: Stage,
        model: &str,
        error: &EngineError,
    ) -> Duration {
        let first = self.inner.config.idle_poll.saturating_mul(10);
        let status = {
            let mut failing = self.inner.retries.failing.lock().expect("retries lock");
            let entry = failing
                .entry((stage, model.to_string()))
                .or_insert_with(|| RetryStatus {
                    stage,
                    model: model.to_string(),
                    since: SystemTime::now(),
                    attempts: 0,
                    last_error: String::new(),
                    next_in: Duration::ZERO,
                });
            entry.attempts += 1;
            entry.last_error = error.to_string();
            entry.next_in = backoff(first, entry.attempts);
            entry.clone()
        };
        let labels = [
            ("stage", stage.as_str().to_string()),
            ("model", model.to_string()),
        ];
        metrics::counter!("flowhost_batch_failures_total", &labels).increment(1);
        tracing::error!(
            stage = stage.as_str(),
            model,
            attempts = status.attempts,
            next_in_s = status.next_in.as_secs_f64(),
            "batch failed (nothing of it was committed; it is tried again): {error}"
        );
        if let Err(e) = self
            .inner
            .store
            .set_plugin_state(model, &status.describe())
            .await
        {
            tracing::debug!(model, "cannot record the retrying state: {e}");
        }
        status.next_in
    }

    /// Records that a batch of a stage went through: a stage that was retrying is serving
    /// again.
    pub(crate) async fn batch_ok(&self, stage: Stage, model: &str) {
        let recovered = {
            let mut failing = self.inner.retries.failing.lock().expect("retries lock");
            if failing.is_empty() {
                return;
            }
            failing.remove(&(stage, model.to_string()))
        };
        if let Some(status) = recovered {
            tracing::info!(
                stage = stage.as_str(),
                model,
                attempts = status.attempts,
                "batches go through again"
            );
            if let Err(e) = self.inner.store.set_plugin_state(model, "serving").await {
                tracing::warn!(model, "cannot record the plugin state: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_doubles_up_to_its_cap() {
        let first = Duration::from_secs(1);
        let pauses: Vec<u64> = (1..=8).map(|n| backoff(first, n).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff(first, u32::MAX), MAX_BACKOFF);
        assert_eq!(backoff(Duration::from_secs(60), 1), MAX_BACKOFF);
    }
}

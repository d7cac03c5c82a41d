//! What both stages share around one batch: the stage's lease (taken at the start, renewed
//! while the batch runs), the plugin call of the batch with fault isolation on a blocking
//! thread (one hop per batch), and what the batch did.

use crate::isolate::{CallResult, Isolated, isolate};
use crate::{Engine, EngineError};
use flowhost_store::{Lease, Stage};
use std::time::{Duration, Instant};

/// What one batch did.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchDone {
    /// Items committed (records or references).
    pub records: usize,
    pub healed: u64,
    /// Plugin calls made (more than one only when a failure was narrowed down).
    pub calls: usize,
    /// Nothing was committed but work is waiting: the batch ran on a plugin version that
    /// another process replaced; it runs again on the current one.
    pub retry: bool,
    /// Time spent in plugin calls.
    pub plugin_time: Duration,
    /// Items left in the queue because the isolation budget ran out (the batch's end).
    pub waiting: usize,
    /// When items wait: the size of the next batch, which starts with them.
    pub narrow_to: Option<usize>,
    /// Another live process holds the stage's lease of the model: nothing was tried.
    pub held_elsewhere: bool,
}

impl BatchDone {
    /// The answer when another live process holds the lease.
    pub(crate) fn held_elsewhere() -> Self {
        Self {
            held_elsewhere: true,
            ..Self::default()
        }
    }
}

impl Engine {
    /// Leases a stage of a model, taking it over from a dead process on this machine.
    pub(crate) async fn lease(
        &self,
        stage: Stage,
        model: &str,
    ) -> Result<Option<Lease>, EngineError> {
        let store = &self.inner.store;
        let ttl = self.inner.config.lease_ttl.as_micros() as i64;
        let lease = Lease {
            stage,
            model: model.to_string(),
            holder: self.inner.holder.clone(),
        };
        if store.acquire_lease(&lease, ttl).await? {
            return Ok(Some(lease));
        }
        if let Some(current) = store.lease_holder(stage, model).await?
            && crate::holder::is_dead_local(&current)
            && store.take_over_lease(&lease, &current, ttl).await?
        {
            tracing::info!(model, stage = stage.as_str(), from = %current, "took over the lease of a process that is gone");
            return Ok(Some(lease));
        }
        Ok(None)
    }

    /// Runs a batch's work while renewing its lease (or its claims) every third of the lease
    /// length, so a slow but live batch keeps it. The renewal runs beside the work (never in its way: on
    /// SQLite it may wait for the batch's own commit). A renewal that finds the lease taken
    /// is logged; the batch's commit then finds it lost and writes nothing.
    pub(crate) async fn heartbeat<F: std::future::Future>(
        &self,
        lease: &Lease,
        work: F,
    ) -> F::Output {
        let ttl = self.inner.config.lease_ttl;
        let every = (ttl / 3).max(Duration::from_millis(10));
        let renew = async {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let ttl = ttl.as_micros() as i64;
                let store = &self.inner.store;
                // Association holds the model's lease; projection holds claims on its
                // batch's references.
                let renewed = match lease.stage {
                    Stage::Associate => store.acquire_lease(lease, ttl).await,
                    Stage::Project => store.renew_claims(lease, ttl).await.map(|n| n > 0),
                };
                match renewed {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!(
                        model = %lease.model,
                        stage = lease.stage.as_str(),
                        "another worker took this batch's lease or claims while it ran; it commits nothing of what it lost"
                    ),
                    Err(e) => tracing::warn!(
                        model = %lease.model,
                        stage = lease.stage.as_str(),
                        "cannot renew the lease: {e}"
                    ),
                }
            }
        };
        tokio::select! {
            out = work => out,
            never = renew => never,
        }
    }

    /// Calls the plugin on a batch's items on a blocking thread, narrowing failures down
    /// within the isolation budget. Returns the items, their slots and the time it took.
    pub(crate) async fn call_isolated<T, R>(
        &self,
        model: &str,
        items: Vec<T>,
        call: impl Fn(&[T]) -> CallResult<R> + Send + 'static,
    ) -> Result<(Vec<T>, Isolated<R>, Duration), EngineError>
    where
        T: Send + 'static,
        R: Send + 'static,
    {
        let started = Instant::now();
        let deadline = started + self.inner.config.isolation_budget;
        let (items, isolated) = tokio::task::spawn_blocking(move || {
            let isolated = isolate(&items, &call, deadline);
            (items, isolated)
        })
        .await
        .map_err(|e| EngineError::Worker {
            model: model.to_string(),
            message: e.to_string(),
        })?;
        Ok((items, isolated, started.elapsed()))
    }

    /// Tells the breaker how a batch went. A batch whose isolation ran out of budget counts
    /// as one that failed everywhere (its plugin is too slow to narrow down).
    pub(crate) async fn after_isolation<R>(
        &self,
        stage: Stage,
        plugin: &flowhost_runtime::Plugin,
        isolated: &Isolated<R>,
        failed: usize,
        first_error: Option<&str>,
    ) {
        let items = isolated.slots.len();
        let waiting = isolated.waiting();
        if waiting > 0 {
            let budget = self.inner.config.isolation_budget;
            let why = format!(
                "narrowing down the failing records took the whole isolation budget of {} s; {waiting} of {items} wait in the queue for the next batch{}",
                budget.as_secs_f64(),
                first_error
                    .map(|e| format!(" (first error: {e})"))
                    .unwrap_or_default()
            );
            tracing::warn!(model = %plugin.description().model, stage = stage.as_str(), "{why}");
            self.after_batch(stage, plugin, items, items, Some(&why))
                .await;
        } else {
            self.after_batch(stage, plugin, items, failed, first_error)
                .await;
        }
    }
}

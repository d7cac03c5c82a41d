//! flowhost's stage workers.
//!
//! Each stage of each model is a loop that leases the stage, takes a batch, makes **one**
//! plugin call for it (on a blocking thread: one hop per batch), and commits the batch's
//! whole outcome in one transaction. Association of one model is sequential (one lease per
//! model) so that its decisions follow intake order; models, and the two stages of a model,
//! run in parallel.

mod associate;
mod batch;
mod breaker;
mod holder;
mod isolate;
mod project;
mod reassociate;
mod retry;
mod run;
mod shadow;
mod watch;

pub use batch::BatchDone;
pub use breaker::{BreakerConfig, BreakerStatus};
pub use reassociate::{Merge, Reassociated, Split};
pub use retry::{MAX_BACKOFF, RetryStatus};
pub use run::{OthersAtWork, RunReport, StageReport};
pub use shadow::{Comparison, SHADOW_QUEUE, compare};
pub use watch::Verdict;

use flowhost_core::batch::BatchConfig;
use flowhost_runtime::{Plugin, PluginSet};
use flowhost_store::{CommitError, Stage, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// How the engine batches and leases.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub associate: BatchConfig,
    pub project: BatchConfig,
    /// Projection workers per model in this process. Each claims its own batch of dirty
    /// references, so plugin calls run on several cores and, with several hosts on one
    /// PostgreSQL, every host takes part.
    pub project_workers: usize,
    /// How long a lease lasts without renewal. Each batch takes it, and renews it every
    /// third of this while the batch runs, so a slow but live batch keeps it; a host that
    /// stops renewing loses it within this time.
    pub lease_ttl: Duration,
    /// How long narrowing down the failing records of one batch may take in all (plugin
    /// calls after the first). Past it the batch's remaining records wait in the queue.
    pub isolation_budget: Duration,
    /// How often an idle worker looks for new work (records ingested by other processes).
    pub idle_poll: Duration,
    /// When a failing plugin is rested.
    pub breaker: BreakerConfig,
    /// Records appended by this process wake association at once, which then waits this
    /// long for more appends before it looks (`None`: it finds them at its next idle poll).
    pub intake_wake: Option<Duration>,
    /// A model's new plugin version is judged on its first this many records against the
    /// version before (see [`Verdict`]); 0: not watched.
    pub watch_records: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            associate: BatchConfig {
                min: 50,
                max: 5_000,
                initial: 1_000,
                target: Duration::from_millis(250),
            },
            project: BatchConfig {
                min: 20,
                max: 2_000,
                initial: 500,
                target: Duration::from_millis(250),
            },
            project_workers: 2,
            lease_ttl: Duration::from_secs(30),
            isolation_budget: Duration::from_secs(30),
            idle_poll: Duration::from_millis(100),
            breaker: BreakerConfig::default(),
            intake_wake: Some(Duration::from_millis(20)),
            watch_records: 500,
        }
    }
}

/// Why the engine stopped.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error("a stage worker of {model} failed: {message}")]
    Worker { model: String, message: String },
    /// `run_until_idle` told not to wait found another process at work.
    #[error("another process is at work on this database: {0}")]
    Busy(String),
}

/// Runs one batch's work in its span (stage, model, size, plugin version) and logs its
/// outcome once, at info: the one log line per batch; nothing is logged per record.
pub(crate) async fn in_batch_span(
    stage: Stage,
    model: &str,
    size: usize,
    plugin: &Plugin,
    work: impl std::future::Future<Output = Result<BatchDone, EngineError>>,
) -> Result<BatchDone, EngineError> {
    use tracing::Instrument;
    let version = plugin.version();
    let span = tracing::info_span!(
        "batch",
        stage = stage.as_str(),
        model,
        size,
        plugin = &version[..version.len().min(12)]
    );
    async move {
        let started = std::time::Instant::now();
        let out = work.await;
        let ms = |d: std::time::Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
        let took_ms = ms(started.elapsed());
        match &out {
            Ok(done) if done.records > 0 || done.waiting > 0 => tracing::info!(
                items = done.records,
                calls = done.calls,
                plugin_ms = ms(done.plugin_time),
                waiting = done.waiting,
                took_ms,
                "batch done"
            ),
            Ok(done) if done.retry => {
                tracing::info!(took_ms, "batch to run again on the current plugin version")
            }
            Ok(_) => tracing::info!(took_ms, "batch committed nothing (its lease was lost)"),
            // Returned to the stage loop, which logs it.
            Err(_) => {}
        }
        out
    }
    .instrument(span)
    .await
}

/// The stage workers over one store and one set of plugins. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    plugins: PluginSet,
    config: EngineConfig,
    holder: String,
    breakers: breaker::Breakers,
    retries: retry::Retries,
    /// Models whose current version another process changed, for whoever brings the
    /// plugin set up to date (the registry, through `take_version_changes`).
    version_changes: tokio::sync::mpsc::UnboundedSender<String>,
    version_changes_rx: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<String>>>,
    /// Wakes this process's idle workers of a stage when work arrives for it here (records
    /// appended, references marked dirty), instead of at their next idle poll.
    wake_associate: tokio::sync::Notify,
    wake_project: tokio::sync::Notify,
    /// Fired after each projection batch that committed views (the change feed's readers).
    projected: tokio::sync::Notify,
    /// New plugin versions' first records, judged against the version before.
    watcher: watch::Watcher,
    /// Candidate versions called beside the live ones (`serve` only).
    shadows: Option<shadow::Shadows>,
    /// Per model: held by each association batch, and by a re-association for its whole
    /// length, so that the two never interleave in this process.
    associating: dashmap::DashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

impl Engine {
    pub fn new(store: Store, plugins: PluginSet, config: EngineConfig) -> Self {
        let (version_changes, version_changes_rx) = tokio::sync::mpsc::unbounded_channel();
        let watcher = watch::Watcher::new(config.watch_records);
        Self {
            inner: Arc::new(Inner {
                store,
                plugins,
                breakers: breaker::Breakers::new(config.breaker),
                retries: retry::Retries::default(),
                config,
                holder: holder::new_holder_id(),
                version_changes,
                version_changes_rx: std::sync::Mutex::new(Some(version_changes_rx)),
                wake_associate: tokio::sync::Notify::new(),
                wake_project: tokio::sync::Notify::new(),
                projected: tokio::sync::Notify::new(),
                watcher,
                shadows: None,
                associating: dashmap::DashMap::new(),
            }),
        }
    }

    /// Calls the candidate versions in `shadows` beside the live ones, on every live
    /// association batch this engine commits (see the `shadow` module). Before the engine
    /// is cloned.
    pub fn with_shadows(mut self, shadows: PluginSet) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("shadows are set before the engine is shared")
            .shadows = Some(shadow::Shadows::new(shadows));
        self
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn plugins(&self) -> &PluginSet {
        &self.inner.plugins
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Plugin versions judged clearly worse than the version before on their first records
    /// (once; later calls get `None`). Whoever owns the plugins rolls them back.
    pub fn take_verdicts(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Verdict>> {
        self.inner.watcher.take_verdicts()
    }

    /// The models whose current plugin version a commit found changed by another process
    /// (once; later calls get `None`). Whoever owns the plugin set listens and brings it up
    /// to date; without a listener, batches wait for the set to change on its own.
    pub fn take_version_changes(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<String>> {
        self.inner
            .version_changes_rx
            .lock()
            .expect("version changes lock")
            .take()
    }

    /// A commit found the batch's plugin version replaced elsewhere: nothing was written;
    /// have the plugins brought up to date and the batch run again.
    pub(crate) async fn version_changed(&self, model: &str, current: &str) -> BatchDone {
        tracing::info!(
            model,
            current = &current[..current.len().min(12)],
            "plugin version changed by another process; running the batch again on it"
        );
        // Ask for the plugin set to be brought up to date, and wait (briefly) until it is,
        // so the batch does not run again on the replaced version.
        let _ = self.inner.version_changes.send(model.to_string());
        if !self
            .inner
            .plugins
            .wait_for(model, current, std::time::Duration::from_secs(5))
            .await
        {
            tracing::debug!(
                model,
                "the plugin set is not up to date yet; the batch runs again"
            );
        }
        BatchDone {
            retry: true,
            ..Default::default()
        }
    }

    /// Stages whose plugin is failing: counting wholly failed batches or cooling down.
    pub fn breakers(&self) -> Vec<BreakerStatus> {
        self.inner.breakers.status()
    }

    /// Whether a stage of a model may run a batch with `plugin` now (not cooling down).
    pub(crate) fn breaker_allows(&self, stage: Stage, plugin: &Plugin) -> bool {
        self.inner
            .breakers
            .allows(stage, &plugin.description().model, plugin.version())
    }

    /// Feeds a batch's outcome to the breaker; a trip or a recovery is logged and recorded
    /// as the model's state (rare: not on the hot path).
    pub(crate) async fn after_batch(
        &self,
        stage: Stage,
        plugin: &Plugin,
        items: usize,
        failed: usize,
        error: Option<&str>,
    ) {
        let model = &plugin.description().model;
        let change =
            self.inner
                .breakers
                .record(stage, model, plugin.version(), items, failed, error);
        let state = match change {
            breaker::Change::None => return,
            breaker::Change::Opened(rest) => {
                tracing::warn!(model = %model, stage = stage.as_str(), version = &plugin.version()[..12], rest_s = rest.as_secs(), "plugin fails on every record; cooling down (records wait in the queue)");
                format!(
                    "cool-down: {} failed on every record of {} batches in a row; resting {} s; last error: {}",
                    stage.as_str(),
                    self.inner.config.breaker.failed_batches,
                    rest.as_secs(),
                    error.unwrap_or("?")
                )
            }
            breaker::Change::Closed => {
                tracing::info!(model = %model, stage = stage.as_str(), "plugin works again; cool-down over");
                "serving".to_string()
            }
        };
        if let Err(e) = self.inner.store.set_plugin_state(model, &state).await {
            tracing::warn!(model = %model, "cannot record the plugin state: {e}");
        }
    }

    /// Work for a stage has arrived in this process (records appended by its intake,
    /// references marked by its association): its idle workers look at once instead of at
    /// their next idle poll. Work from other processes is still found by polling.
    pub fn wake(&self, stage: Stage) {
        if stage == Stage::Associate && self.inner.config.intake_wake.is_none() {
            return;
        }
        self.waker(stage).notify_waiters();
    }

    fn waker(&self, stage: Stage) -> &tokio::sync::Notify {
        match stage {
            Stage::Associate => &self.inner.wake_associate,
            Stage::Project => &self.inner.wake_project,
        }
    }

    /// Completes at the next [`Engine::wake`] of `stage` after this call (even before it is
    /// first polled).
    pub(crate) fn woken(&self, stage: Stage) -> tokio::sync::futures::Notified<'_> {
        self.waker(stage).notified()
    }

    /// Completes after the next projection batch of this process that committed views
    /// (even before it is first polled). Other processes' commits are not seen here.
    pub fn projected(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.projected.notified()
    }

    /// The model's association lock of this process (see `Inner::associating`).
    pub(crate) fn association_lock(&self, model: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.inner
            .associating
            .entry(model.to_string())
            .or_default()
            .clone()
    }

    /// This worker's lease holder id (`host/pid/random`).
    pub fn holder(&self) -> &str {
        &self.inner.holder
    }
}

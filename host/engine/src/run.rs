//! Running the stages: until no work is left (`process --until-idle`), or until cancelled
//! (`serve`).

use crate::{Engine, EngineError};
use flowhost_core::batch::{BatchConfig, BatchSizer};
use flowhost_store::{Lease, Stage};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What one stage did over a run.
#[derive(Debug, Clone, Default)]
pub struct StageReport {
    pub batches: u64,
    /// Records (association) or references (projection) handled.
    pub items: u64,
    /// Time spent in batches (summed over models running in parallel).
    pub busy: Duration,
    /// Each batch's latency, for percentiles.
    pub latencies: Vec<Duration>,
    pub plugin_calls: u64,
}

impl StageReport {
    fn add(&mut self, other: StageReport) {
        self.batches += other.batches;
        self.items += other.items;
        self.busy += other.busy;
        self.latencies.extend(other.latencies);
        self.plugin_calls += other.plugin_calls;
    }

    /// The latency at quantile `q` (0..=1) of the batches so far.
    pub fn percentile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let idx = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted[idx]
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub associate: StageReport,
    pub project: StageReport,
    pub healed: u64,
    pub elapsed: Duration,
}

/// One (stage, model) loop's state between rounds.
struct Worker {
    stage: Stage,
    model: String,
    sizer: BatchSizer,
    /// The size of the next batch when the last one left records waiting (isolation ran
    /// out of budget): the next batch starts with them and goes on narrowing.
    narrow: Option<usize>,
    /// The last batch found the lease held by another live process.
    held: bool,
    /// Who this worker is to the store: the engine's holder id for association (a lease
    /// per model), one id per projection worker for the claims.
    holder: String,
}

/// What [`Engine::run_until_idle`] does when another live process (a `serve`, another
/// `process`) holds the lease of a stage whose work is not done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OthersAtWork {
    /// Wait until that work is done (or the lease comes free), saying so in the log.
    Wait,
    /// Stop with [`EngineError::Busy`], naming the holder.
    Stop,
}

/// How often a waiting `run_until_idle` repeats what it waits for.
const WAITING_NOTICE_EVERY: Duration = Duration::from_secs(10);

/// The shortest pause between two looks at another process's progress.
const WAITING_POLL_AT_LEAST: Duration = Duration::from_millis(100);

/// Whom a waiting run waits for: a stage, a model and the process holding it.
type Whom = (Stage, String, String);

/// Work another live process holds: its stage, model and holder, and one line for people.
struct Busy {
    stage: Stage,
    model: String,
    holder: String,
    line: String,
}

impl Engine {
    fn batch_config(&self, stage: Stage) -> BatchConfig {
        match stage {
            Stage::Associate => self.inner.config.associate,
            Stage::Project => self.inner.config.project,
        }
    }

    /// Runs one batch of a worker and adapts its size; returns the items handled.
    async fn step(
        &self,
        worker: &mut Worker,
        report: &mut StageReport,
        healed: &mut u64,
    ) -> Result<usize, EngineError> {
        let size = match worker.narrow.take() {
            Some(n) => n.clamp(1, worker.sizer.size().max(1)),
            None => worker.sizer.size(),
        };
        let started = Instant::now();
        let (done, statements) = flowhost_store::counting_statements(async {
            match worker.stage {
                Stage::Associate => self.associate_batch(&worker.model, size).await,
                Stage::Project => {
                    self.project_batch(&worker.model, size, &worker.holder)
                        .await
                }
            }
        })
        .await;
        let labels = [
            ("stage", worker.stage.as_str().to_string()),
            ("model", worker.model.clone()),
        ];
        metrics::counter!("flowhost_db_statements_total", &labels).increment(statements);
        let done = done?;
        worker.narrow = done.narrow_to;
        worker.held = done.held_elsewhere;
        if done.records == 0 {
            // A batch to run again, or records left waiting, count as work, so that
            // `run_until_idle` goes on (a breaker that trips stops it in bounded time).
            return Ok(usize::from(done.retry || done.waiting > 0));
        }
        let took = started.elapsed();
        worker.sizer.observe(done.records, took);
        metrics::counter!("flowhost_batches_total", &labels).increment(1);
        metrics::counter!("flowhost_batch_items_total", &labels).increment(done.records as u64);
        metrics::histogram!("flowhost_batch_size", &labels).record(done.records as f64);
        metrics::histogram!("flowhost_batch_duration_seconds", &labels).record(took.as_secs_f64());
        metrics::histogram!("flowhost_plugin_call_seconds", &labels)
            .record(done.plugin_time.as_secs_f64());
        report.batches += 1;
        report.items += done.records as u64;
        report.busy += took;
        report.latencies.push(took);
        report.plugin_calls += done.calls as u64;
        *healed += done.healed;
        if worker.stage == Stage::Project {
            self.inner.projected.notify_waiters();
        }
        if worker.stage == Stage::Associate {
            // What this batch keyed marked references dirty; what it healed is queued.
            self.wake(Stage::Project);
            if done.healed > 0 {
                self.wake(Stage::Associate);
            }
        }
        Ok(done.records)
    }

    /// The ids of this engine's projection workers: `<holder>/p<n>`.
    fn projection_holders(&self) -> impl Iterator<Item = String> + '_ {
        (0..self.inner.config.project_workers.max(1)).map(|n| format!("{}/p{n}", self.inner.holder))
    }

    /// Whether a lease or claim holder is this engine or one of its workers.
    pub(crate) fn is_mine(&self, holder: &str) -> bool {
        holder
            .strip_prefix(self.inner.holder.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    fn workers(&self, models: &[String]) -> Vec<Worker> {
        let mut out = Vec::new();
        for model in models {
            let workers = [(Stage::Associate, self.inner.holder.clone())]
                .into_iter()
                .chain(self.projection_holders().map(|h| (Stage::Project, h)));
            for (stage, holder) in workers {
                out.push(Worker {
                    stage,
                    model: model.clone(),
                    sizer: BatchSizer::new(self.batch_config(stage)),
                    narrow: None,
                    held: false,
                    holder,
                });
            }
        }
        out
    }

    /// Models ordered parents first (device before sensor before reading), so that in a
    /// bulk run children mostly find their parents keyed instead of parking and healing.
    fn parents_first(&self) -> Vec<String> {
        let models = self.inner.plugins.models();
        let parents = |m: &str| -> Vec<String> {
            self.inner
                .plugins
                .get(m)
                .map(|p| p.description().parents.clone())
                .unwrap_or_default()
        };
        let mut ordered: Vec<String> = Vec::new();
        let mut left = models.clone();
        while !left.is_empty() {
            let ready: Vec<String> = left
                .iter()
                .filter(|m| {
                    parents(m)
                        .iter()
                        .all(|p| ordered.contains(p) || !left.contains(p) || p == *m)
                })
                .cloned()
                .collect();
            // A cycle: take the rest as they are.
            let take = if ready.is_empty() {
                left.clone()
            } else {
                ready
            };
            left.retain(|m| !take.contains(m));
            ordered.extend(take);
        }
        ordered
    }

    /// Runs every stage of every model with a plugin until a full round finds no work, then
    /// releases its leases. Within a round, association drains the models parents first
    /// (one chain), while projection of every model runs beside it.
    ///
    /// The database is idle only when no other process is at work either: when another live
    /// process holds the lease of a stage that still has work waiting, this waits for it
    /// (and says so every [`WAITING_NOTICE_EVERY`]) or stops with [`EngineError::Busy`],
    /// as `when_busy` says. A holder that dies leaves its lease to expire, and this run takes
    /// the work over.
    pub async fn run_until_idle(&self, when_busy: OthersAtWork) -> Result<RunReport, EngineError> {
        let started = Instant::now();
        let mut report = RunReport::default();
        let models = self.parents_first();
        let mut workers = self.workers(&models);
        let mut noticed: Option<(Vec<Whom>, Instant)> = None;
        loop {
            let mut set = JoinSet::new();
            let (mut chain, others): (Vec<Worker>, Vec<Worker>) =
                workers.drain(..).partition(|w| w.stage == Stage::Associate);
            chain.sort_by_key(|w| models.iter().position(|m| *m == w.model));
            let engine = self.clone();
            set.spawn(async move {
                let mut out = Vec::new();
                for mut worker in chain {
                    let result = engine.drain(&mut worker).await;
                    out.push((worker, result));
                }
                out
            });
            for mut worker in others {
                let engine = self.clone();
                set.spawn(async move {
                    let result = engine.drain(&mut worker).await;
                    vec![(worker, result)]
                });
            }
            let mut round_work = 0;
            let mut first_error = None;
            while let Some(joined) = set.join_next().await {
                let done = joined.map_err(|e| EngineError::Worker {
                    model: "?".into(),
                    message: e.to_string(),
                })?;
                for (worker, result) in done {
                    match result {
                        Ok((stage, healed, work)) => {
                            round_work += work;
                            report.healed += healed;
                            match worker.stage {
                                Stage::Associate => report.associate.add(stage),
                                Stage::Project => report.project.add(stage),
                            }
                        }
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                    workers.push(worker);
                }
            }
            if let Some(e) = first_error {
                self.release_all(&models).await;
                return Err(e);
            }
            if round_work == 0 {
                let busy = match self.busy_elsewhere(&workers).await {
                    Ok(busy) => busy,
                    Err(e) => {
                        self.release_all(&models).await;
                        return Err(e);
                    }
                };
                if busy.is_empty() {
                    break;
                }
                let lines: Vec<&str> = busy.iter().map(|b| b.line.as_str()).collect();
                if when_busy == OthersAtWork::Stop {
                    self.release_all(&models).await;
                    return Err(EngineError::Busy(lines.join("; ")));
                }
                // Said again when whom it waits for changes, else every so often (the
                // counts in the lines change all the time).
                let whom: Vec<Whom> = busy
                    .iter()
                    .map(|b| (b.stage, b.model.clone(), b.holder.clone()))
                    .collect();
                let due = noticed
                    .as_ref()
                    .is_none_or(|(said, at)| *said != whom || at.elapsed() >= WAITING_NOTICE_EVERY);
                if due {
                    for line in &lines {
                        tracing::warn!("waiting: {line}");
                    }
                    noticed = Some((whom, Instant::now()));
                }
                tokio::time::sleep(self.inner.config.idle_poll.max(WAITING_POLL_AT_LEAST)).await;
            }
        }
        self.release_all(&models).await;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// For each worker whose lease another live process held in the last round: the work
    /// still waiting for that stage, with who holds it and since when. Empty when that work
    /// is done (or the lease came free).
    async fn busy_elsewhere(&self, workers: &[Worker]) -> Result<Vec<Busy>, EngineError> {
        if !workers.iter().any(|w| w.held) {
            return Ok(Vec::new());
        }
        let store = &self.inner.store;
        let leases = store.leases().await?;
        let now = flowhost_store::now_micros();
        let mut busy: Vec<Busy> = Vec::new();
        for worker in workers.iter().filter(|w| w.held) {
            let Some(lease) = leases.iter().find(|l| {
                l.stage == worker.stage.as_str()
                    && l.model == worker.model
                    && !self.is_mine(&l.holder)
                    && l.expires_micros >= now
            }) else {
                continue;
            };
            let waiting = store.work_waiting(worker.stage, &worker.model).await?;
            if waiting == 0 {
                continue;
            }
            let since = chrono::DateTime::from_timestamp_micros(lease.since_micros)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_else(|| "an unknown time".into());
            let items = match worker.stage {
                Stage::Associate => "records wait for association",
                Stage::Project => "references wait for projection",
            };
            let holder = lease.process().to_string();
            // Several workers of this process wait on the same claims: said once.
            if busy
                .iter()
                .any(|b| b.stage == worker.stage && b.model == worker.model && b.holder == holder)
            {
                continue;
            }
            busy.push(Busy {
                stage: worker.stage,
                model: worker.model.clone(),
                holder,
                line: format!(
                    "process {} holds the {} {} of model '{}' (since {since}); {waiting} {items}",
                    lease.process(),
                    worker.stage.as_str(),
                    match worker.stage {
                        Stage::Associate => "lease",
                        Stage::Project => "claims",
                    },
                    worker.model,
                ),
            });
        }
        Ok(busy)
    }

    /// Runs a worker's batches until one finds no work.
    async fn drain(&self, worker: &mut Worker) -> Result<(StageReport, u64, usize), EngineError> {
        let mut stage = StageReport::default();
        let mut healed = 0;
        let mut work = 0;
        loop {
            match self.step(worker, &mut stage, &mut healed).await? {
                0 => return Ok((stage, healed, work)),
                n => work += n,
            }
        }
    }

    async fn release_all(&self, models: &[String]) {
        let claims: Vec<String> = self.projection_holders().collect();
        if let Err(e) = self.inner.store.release_claims(&claims).await {
            tracing::warn!("cannot release projection claims: {e}");
        }
        for model in models {
            let lease = Lease {
                stage: Stage::Associate,
                model: model.clone(),
                holder: self.inner.holder.clone(),
            };
            if let Err(e) = self.inner.store.release_lease(&lease).await {
                tracing::warn!(model, "cannot release lease: {e}");
            }
        }
    }

    /// Runs the stages continuously, picking up records any process ingests and models whose
    /// plugin appears later, until `cancel` fires; in-flight batches finish first.
    pub async fn serve(&self, cancel: CancellationToken) -> Result<RunReport, EngineError> {
        let started = Instant::now();
        let mut set: JoinSet<(Stage, StageReport, u64)> = JoinSet::new();
        let mut running: HashSet<String> = HashSet::new();
        let mut report = RunReport::default();
        let poll = self.inner.config.idle_poll;
        let engine = self.clone();
        let shadow_cancel = cancel.clone();
        let shadow_task = tokio::spawn(async move {
            if let Some(shadows) = &engine.inner.shadows {
                shadows.run(engine.inner.store.clone(), shadow_cancel).await;
            }
        });
        loop {
            for model in self.inner.plugins.models() {
                if !running.insert(model.clone()) {
                    continue;
                }
                for mut worker in self.workers(std::slice::from_ref(&model)) {
                    let engine = self.clone();
                    let cancel = cancel.clone();
                    set.spawn(async move {
                        let mut stage = StageReport::default();
                        let mut healed = 0;
                        while !cancel.is_cancelled() {
                            // Taken before the batch looks for work, so a wake-up that comes
                            // while it looks is not missed.
                            let woken = engine.woken(worker.stage);
                            let step = engine.step(&mut worker, &mut stage, &mut healed).await;
                            // A service keeps no per-batch history (the metrics have the
                            // distribution), so its memory does not grow with uptime.
                            stage.latencies.clear();
                            let (pause, idle) = match step {
                                Ok(n) => {
                                    engine.batch_ok(worker.stage, &worker.model).await;
                                    if n > 0 {
                                        continue;
                                    }
                                    (poll, true)
                                }
                                // A failure that is not about the data (those park their
                                // records) must not stop the service: nothing of the batch
                                // was committed; it is tried again after a growing pause,
                                // and the stage shows as retrying meanwhile.
                                Err(e) => (
                                    engine.batch_failed(worker.stage, &worker.model, &e).await,
                                    false,
                                ),
                            };
                            // An idle worker wakes for new work at once; a failing one waits
                            // out its pause.
                            tokio::select! {
                                _ = cancel.cancelled() => break,
                                _ = tokio::time::sleep(pause) => {}
                                _ = woken, if idle => {
                                    // Records arrive in many small appends: a moment's wait
                                    // lets a batch take several of them.
                                    if worker.stage == Stage::Associate
                                        && let Some(gather) = engine.inner.config.intake_wake
                                    {
                                        tokio::time::sleep(gather).await;
                                    }
                                }
                            }
                        }
                        (worker.stage, stage, healed)
                    });
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(poll * 5) => {}
            }
        }
        while let Some(joined) = set.join_next().await {
            if let Ok((stage, r, healed)) = joined {
                report.healed += healed;
                match stage {
                    Stage::Associate => report.associate.add(r),
                    Stage::Project => report.project.add(r),
                }
            }
        }
        let _ = shadow_task.await;
        let models: Vec<String> = running.into_iter().collect();
        self.release_all(&models).await;
        report.elapsed = started.elapsed();
        Ok(report)
    }
}

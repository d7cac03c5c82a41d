//! Group commit for intake: appends from many callers at once (concurrent HTTP requests,
//! later broker messages) share transactions. Each caller hands its batch to one committer
//! task and gets its own answers back once they are durable.
//!
//! The committer takes what is waiting when it is free: while one transaction commits, the
//! batches that arrive meanwhile queue, and the next transaction takes them all. A lone
//! caller therefore waits for nothing but its own commit; `linger` (0 by default) can hold
//! a transaction open a little longer for more callers. A transaction holds at most
//! `max_records` records, past which callers wait for the next one.

use flowhost_core::intake::IntakeRecord;
use flowhost_store::{Appended, Store, StoreError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// One caller's batch and where its answers go.
struct Job {
    records: Vec<IntakeRecord>,
    reply: oneshot::Sender<Result<Vec<Appended>, StoreError>>,
}

/// The handle callers append through; cheap to clone. The committer task ends when the
/// last handle is dropped.
#[derive(Clone)]
pub struct GroupAppender {
    jobs: mpsc::Sender<Job>,
}

/// How the committer groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupConfig {
    /// How long a transaction waits for more callers once it has one (0: not at all).
    pub linger: Duration,
    /// The most records in one transaction.
    pub max_records: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            linger: Duration::ZERO,
            max_records: 20_000,
        }
    }
}

impl GroupAppender {
    /// Starts the committer on the current tokio runtime.
    pub fn spawn(store: Store, config: GroupConfig) -> Self {
        // Bounded: callers past it wait for room (each request holds one place at most).
        let (jobs, rx) = mpsc::channel(1_024);
        tokio::spawn(commit_loop(store, config, rx));
        Self { jobs }
    }

    /// Appends `records` in the next shared transaction; returns one answer per record, in
    /// order, once they are durable (as [`Store::append`] does).
    pub async fn append(&self, records: Vec<IntakeRecord>) -> Result<Vec<Appended>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError::Url("the intake committer has stopped".into());
        self.jobs
            .send(Job { records, reply })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn commit_loop(store: Store, config: GroupConfig, mut rx: mpsc::Receiver<Job>) {
    let mut next: Option<Job> = None;
    loop {
        let first = match next.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut size = first.records.len();
        let mut jobs = vec![first];
        let deadline = tokio::time::Instant::now() + config.linger;
        while size < config.max_records {
            let more = match rx.try_recv() {
                Ok(job) => Some(job),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) if config.linger.is_zero() => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    tokio::time::timeout_at(deadline, rx.recv())
                        .await
                        .ok()
                        .flatten()
                }
            };
            let Some(job) = more else { break };
            if size + job.records.len() > config.max_records {
                next = Some(job);
                break;
            }
            size += job.records.len();
            jobs.push(job);
        }
        commit(&store, jobs, size).await;
    }
}

/// Appends the jobs' records in one transaction and answers each. When it fails for a
/// reason other than the data (the store already splits what the database refuses), each
/// job is appended again on its own, so that each caller gets its own outcome. (Only when a
/// refusal had split the shared append and a later part failed can some of a caller's
/// records be durable already; appended again, they are answered as duplicates: stored
/// once either way.)
async fn commit(store: &Store, jobs: Vec<Job>, size: usize) {
    metrics::counter!("flowhost_intake_group_commits_total").increment(1);
    metrics::histogram!("flowhost_intake_group_requests").record(jobs.len() as f64);
    if jobs.len() == 1 {
        let job = jobs.into_iter().next().expect("one job");
        let _ = job.reply.send(store.append(&job.records).await);
        return;
    }
    let mut all = Vec::with_capacity(size);
    for job in &jobs {
        all.extend(job.records.iter().cloned());
    }
    match store.append(&all).await {
        Ok(answers) => {
            let mut answers = answers.into_iter();
            for job in jobs {
                let mine: Vec<Appended> = answers.by_ref().take(job.records.len()).collect();
                let _ = job.reply.send(Ok(mine));
            }
        }
        Err(e) => {
            tracing::warn!(
                callers = jobs.len(),
                "a shared intake transaction failed ({e}); appending each caller's batch alone"
            );
            for job in jobs {
                let _ = job.reply.send(store.append(&job.records).await);
            }
        }
    }
}

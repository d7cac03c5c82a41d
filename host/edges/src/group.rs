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

/// Appends the jobs' records in one transaction and answers each. When no connection became
/// free in time, every caller gets that answer (nothing was written). When it fails for
/// another reason than the data (the store already splits what the database refuses), each
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
        // Nothing was written and each caller alone would wait as long again: all are told.
        Err(StoreError::ConnectionWait {
            operation,
            model,
            wait,
        }) => {
            tracing::warn!(
                callers = jobs.len(),
                "a shared intake transaction got no database connection: {wait}"
            );
            for job in jobs {
                let _ = job.reply.send(Err(StoreError::ConnectionWait {
                    operation,
                    model: model.clone(),
                    wait,
                }));
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

#[cfg(test)]
mod tests {
    use super::*;
    use flowhost_core::intake::{IntakeLimits, parse_line_within};
    use flowhost_store::StoreOptions;
    use std::time::Instant;

    fn record(id: usize) -> IntakeRecord {
        let line = format!(
            r#"{{"model":"device","source":{{"system":"crm"}},"id":"r{id}","occurred_at":"2026-03-01T10:00:00Z","payload":{{"serial":"{id}"}}}}"#
        );
        parse_line_within(
            line.as_bytes(),
            chrono::Utc::now(),
            &IntakeLimits::default(),
        )
        .unwrap()
    }

    /// While this process's writer is held past the busy timeout, every caller of a shared
    /// transaction is told the database is busy at about the same time — not one after the
    /// other, each waiting out the timeout again — and nothing of theirs is written; once
    /// the writer is free, their batches go through.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_of_a_transaction_without_a_connection_are_all_told_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("group.db").display());
        let busy = Duration::from_millis(300);
        let options = StoreOptions {
            busy_timeout: busy,
            ..StoreOptions::default()
        };
        let store = Store::open_with(&url, &options).await.unwrap();
        let appender = GroupAppender::spawn(
            store.clone(),
            GroupConfig {
                linger: Duration::from_millis(200),
                ..GroupConfig::default()
            },
        );
        let hold = store.hold_writer().await.unwrap();
        let started = Instant::now();
        let callers: Vec<_> = (0..8)
            .map(|i| {
                let appender = appender.clone();
                tokio::spawn(async move { appender.append(vec![record(i)]).await })
            })
            .collect();
        let mut told = 0;
        for caller in callers {
            match caller.await.unwrap() {
                Err(StoreError::ConnectionWait { .. }) => told += 1,
                other => panic!("a busy database, not {other:?}"),
            }
        }
        let waited = started.elapsed();
        assert_eq!(told, 8);
        // A wait or two shared (with the linger), not one per caller after a shared one
        // (which would be at least 9 × 300 ms).
        assert!(waited < busy * 6, "the callers waited {waited:?}");
        drop(hold);

        let answers = appender.append((0..8).map(record).collect()).await.unwrap();
        assert_eq!(answers.len(), 8);
        let pending = store.pending("device", 100).await.unwrap();
        assert_eq!(
            pending.len(),
            8,
            "each record once, none from the failed attempt"
        );
    }
}

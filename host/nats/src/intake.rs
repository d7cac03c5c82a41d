//! Intake from a JetStream stream, in stream order, exactly as `flowhost ingest` of the same
//! lines in the same order would decide.
//!
//! One host at a time holds the `nats-intake` duty of the stream. A holder's session:
//! 1. reads the stream position its records are durable up to (`nats-intake:<stream>`);
//! 2. recreates the durable pull consumer to deliver from the message after it (so
//!    messages a dead holder took but never appended come first, in order);
//! 3. takes messages in batches: the lines of each message are checked one by one, the
//!    refused ones published to `<refused_subject>.<model>` (with `Nats-Msg-Id`, so a
//!    retried batch does not publish them twice), and the good records of the whole batch
//!    appended in one transaction that also moves the position from where it was read to
//!    the batch's last message;
//! 4. only then acknowledges the batch (the consumer acknowledges "all up to" a message).
//!
//! A crash before the commit leaves the position where it was: the next session reads the
//! same messages again. A crash after it and before the acknowledgement: the messages come
//! again and are passed over (at or below the position). A holder whose duty lapsed cannot
//! commit over its successor: the position moves only from where its writer read it.

use crate::{DutyWork, End, IntakeConfig, hold, token};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::ConsumerErrorKind;
use async_nats::jetstream::{self, ErrorCode, Message};
use flowhost_edges::broker::BrokerStatus;
use flowhost_edges::intake::{BATCH, LineIntake, LineOutcome, Lines};
use flowhost_engine::Engine;
use flowhost_store::{Advance, Duty, Stage, StoreError};
use futures::StreamExt;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Refused lines of one message published one by one; past this many, one more refusal
/// says how many more there were (a message of 100,000 bad lines costs 101 publishes).
const MAX_REFUSALS_PER_MESSAGE: u64 = 100;

/// How much of a refused line its refusal message repeats.
const REFUSED_TEXT_BYTES: usize = 4_096;

/// How long the consumer waits for an acknowledgement before it delivers again (only
/// after a holder died between its commit and its acknowledgement, or before its commit).
const ACK_WAIT: Duration = Duration::from_secs(60);

/// How often the consumer's lag is read while the stream is idle.
const LAG_EVERY: Duration = Duration::from_secs(2);

pub(crate) struct Intake {
    pub config: IntakeConfig,
    pub js: jetstream::Context,
    pub engine: Engine,
    pub status: BrokerStatus,
    pub lease_ttl: Duration,
}

/// One line the intake refused (or, without a line number, how many more of a message were).
struct Refusal {
    stream_seq: u64,
    subject: String,
    /// The line's number in its message, from 1; `None` for the count of the refusals of a
    /// message past [`MAX_REFUSALS_PER_MESSAGE`].
    line: Option<u64>,
    error: String,
    text: String,
}

impl DutyWork for Intake {
    const KIND: &'static str = "nats-intake";
    const PART: &'static str = "intake";
    const WHAT: &'static str = "NATS intake";

    fn engine(&self) -> &Engine {
        &self.engine
    }

    fn status(&self) -> &BrokerStatus {
        &self.status
    }

    fn stream(&self) -> &str {
        &self.config.stream
    }

    fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    async fn observe_lag(&self) {
        self.read_lag().await;
    }

    async fn session(&self, duty: &Duty, stop: &CancellationToken) -> End {
        self.consume(duty, stop).await
    }
}

impl Intake {
    /// Reads the consumer's pending count into the status (any host can).
    async fn read_lag(&self) {
        let consumer: Result<PullConsumer, _> = self
            .js
            .get_consumer_from_stream(&self.config.consumer, &self.config.stream)
            .await;
        if let Ok(mut consumer) = consumer
            && let Ok(info) = consumer.info().await
        {
            let lag = info.num_pending + info.num_ack_pending as u64;
            self.status.update(|s| s.intake_lag = Some(lag));
        }
        if let Ok(position) = self
            .engine
            .store()
            .position(&crate::intake_position_name(&self.config.stream))
            .await
        {
            self.status.update(|s| s.intake_position = position);
        }
    }

    async fn consume(&self, duty: &Duty, stop: &CancellationToken) -> End {
        let c = &self.config;
        let store = self.engine.store();
        let name = crate::intake_position_name(&c.stream);
        let stream = match self
            .js
            .get_or_create_stream(jetstream::stream::Config {
                name: c.stream.clone(),
                subjects: c.subjects.clone(),
                ..Default::default()
            })
            .await
        {
            Ok(s) => s,
            Err(e) => return End::Failed(format!("cannot open or create the stream: {e}")),
        };
        if !c.refused_stream.is_empty()
            && let Err(e) = self
                .js
                .get_or_create_stream(jetstream::stream::Config {
                    name: c.refused_stream.clone(),
                    subjects: vec![format!("{}.>", c.refused_subject)],
                    ..Default::default()
                })
                .await
        {
            return End::Failed(format!(
                "cannot open or create the refused-lines stream {}: {e}",
                c.refused_stream
            ));
        }
        let mut position = match store.position(&name).await {
            Ok(p) => p,
            Err(e) => return End::Failed(format!("cannot read the intake position: {e}")),
        };
        // The consumer starts again right after what is durable: what a dead holder took
        // and never appended comes first, in order.
        match self
            .js
            .delete_consumer_from_stream(&c.consumer, &c.stream)
            .await
        {
            Ok(_) => {}
            Err(e)
                if matches!(e.kind(), ConsumerErrorKind::JetStream(js)
                    if js.error_code() == ErrorCode::CONSUMER_NOT_FOUND) => {}
            Err(e) => return End::Failed(format!("cannot reset the consumer {}: {e}", c.consumer)),
        }
        let consumer: PullConsumer = match stream
            .create_consumer(pull::Config {
                durable_name: Some(c.consumer.clone()),
                description: Some("flowhost intake (reset by the host that consumes)".into()),
                deliver_policy: match position {
                    0 => DeliverPolicy::All,
                    p => DeliverPolicy::ByStartSequence {
                        start_sequence: p as u64 + 1,
                    },
                },
                ack_policy: AckPolicy::All,
                ack_wait: ACK_WAIT,
                ..Default::default()
            })
            .await
        {
            Ok(consumer) => consumer,
            Err(e) => {
                return End::Failed(format!("cannot create the consumer {}: {e}", c.consumer));
            }
        };
        let mut messages = match consumer
            .stream()
            .max_messages_per_batch(c.batch_messages.max(1))
            .heartbeat(Duration::from_secs(5))
            .messages()
            .await
        {
            Ok(m) => m,
            Err(e) => return End::Failed(format!("cannot read the consumer {}: {e}", c.consumer)),
        };
        tracing::info!(stream = %c.stream, position, "consuming NATS intake");
        self.status.update(|s| s.intake_position = position);
        self.status.set_problem("intake", None);
        let renew_every = (self.lease_ttl / 3).max(Duration::from_millis(10));
        let mut renewed = Instant::now();
        let mut lag_read = Instant::now() - LAG_EVERY;
        loop {
            if renewed.elapsed() >= renew_every {
                match hold(&self.engine, duty, self.lease_ttl).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::info!(stream = %c.stream, "the NATS intake duty went to another host");
                        return End::Yielded;
                    }
                    Err(why) => return End::Failed(why),
                }
                renewed = Instant::now();
            }
            // The first message: waited for up to a third of the lease (then renewed).
            let first = tokio::select! {
                _ = stop.cancelled() => return End::Stopped,
                m = tokio::time::timeout(renew_every, messages.next()) => m,
            };
            let first = match first {
                Err(_) => {
                    if lag_read.elapsed() >= LAG_EVERY {
                        lag_read = Instant::now();
                        self.read_lag().await;
                    }
                    continue;
                }
                Ok(None) => return End::Failed("the consumer's message stream ended".into()),
                Ok(Some(Err(e))) => return End::Failed(format!("reading messages: {e}")),
                Ok(Some(Ok(m))) => m,
            };
            let mut batch = vec![first];
            let linger = tokio::time::sleep(c.linger);
            tokio::pin!(linger);
            while batch.len() < c.batch_messages {
                tokio::select! {
                    _ = &mut linger => break,
                    m = messages.next() => match m {
                        Some(Ok(m)) => batch.push(m),
                        Some(Err(e)) => return End::Failed(format!("reading messages: {e}")),
                        None => return End::Failed("the consumer's message stream ended".into()),
                    },
                }
            }
            match self.append(&batch, &mut position).await {
                Ok(()) => {}
                Err(Failure::Store(StoreError::PositionMoved { .. })) => {
                    tracing::info!(stream = %c.stream, "another host appended from the stream meanwhile; starting again from the position");
                    return End::Yielded;
                }
                Err(e) => return End::Failed(format!("cannot append the records: {e}")),
            }
            // "All up to here": the whole batch, durable now.
            if let Some(last) = batch.last()
                && let Err(e) = last.ack().await
            {
                // Harmless: they come again, at or below the position, and are passed over.
                tracing::debug!("cannot acknowledge NATS messages: {e}");
            }
            self.status.update(|s| s.intake_position = position);
            if lag_read.elapsed() >= LAG_EVERY {
                lag_read = Instant::now();
                self.read_lag().await;
            }
        }
    }

    /// Appends a batch of messages: refused lines published, good records appended with the
    /// position moved to the last message (in parts of at most [`BATCH`] records, each its
    /// own transaction ending on a message boundary).
    async fn append(&self, batch: &[Message], position: &mut i64) -> Result<(), Failure> {
        let c = &self.config;
        let store = self.engine.store();
        let known: BTreeSet<String> = store.models().await?.into_iter().map(|m| m.name).collect();
        let mut intake =
            LineIntake::new(store, known, c.max_line, usize::MAX).with_limits(c.limits);
        let mut refusals: Vec<Refusal> = Vec::new();
        // For each line taken by `intake` (numbered from 1): its message and line in it.
        let mut origin: Vec<(u64, usize, u64)> = Vec::new();
        let mut appended = 0u64;
        let seqs: Vec<Option<u64>> = batch
            .iter()
            .map(|m| match m.info() {
                Ok(info) => Some(info.stream_sequence),
                Err(e) => {
                    tracing::warn!("a NATS message without its stream sequence, passed over: {e}");
                    None
                }
            })
            .collect();
        let take = to_take(&seqs, *position);
        let mut highest = *position;
        for (i, message) in batch.iter().enumerate() {
            let Some(seq) = take[i] else { continue };
            highest = seq as i64;
            let payload: &[u8] = &message.payload;
            let mut rest = payload
                .strip_prefix("\u{feff}".as_bytes())
                .unwrap_or(payload);
            let mut lines = Lines::new(c.max_line);
            let mut taken = Taken {
                seq,
                message: i,
                subject: &message.subject,
                line: 0,
                refused: 0,
            };
            while let Some((line, len)) = lines.next_line(&mut rest) {
                taken.take(line, len, &mut intake, &mut origin, &mut refusals);
            }
            if let Some((line, len)) = lines.finish() {
                taken.take(line, len, &mut intake, &mut origin, &mut refusals);
            }
            taken.finish(&mut refusals);
            // A part ends on a message boundary, so the position it moves to is exact.
            if intake.batched() >= BATCH {
                appended += self
                    .append_part(
                        &mut intake,
                        &mut refusals,
                        &origin,
                        batch,
                        position,
                        highest,
                    )
                    .await?;
            }
        }
        // The rest, whatever the last message was (one delivered again is passed over, and
        // what came before it must still be appended before the batch is acknowledged).
        if highest > *position {
            appended += self
                .append_part(
                    &mut intake,
                    &mut refusals,
                    &origin,
                    batch,
                    position,
                    highest,
                )
                .await?;
        }
        let s = intake.summary;
        metrics::counter!("flowhost_nats_records_total", "outcome" => "accepted")
            .increment(s.accepted);
        metrics::counter!("flowhost_nats_records_total", "outcome" => "duplicate")
            .increment(s.duplicates);
        metrics::counter!("flowhost_nats_records_total", "outcome" => "refused")
            .increment(s.refused);
        metrics::counter!("flowhost_nats_messages_total").increment(batch.len() as u64);
        if appended > 0 {
            self.engine.wake(Stage::Associate);
        }
        Ok(())
    }

    /// Appends what `intake` holds with the position moved from `position` to `to` (its
    /// refusals published first); how many records it held.
    async fn append_part(
        &self,
        intake: &mut LineIntake<'_>,
        refusals: &mut Vec<Refusal>,
        origin: &[(u64, usize, u64)],
        batch: &[Message],
        position: &mut i64,
        to: i64,
    ) -> Result<u64, Failure> {
        self.publish_refusals(refusals).await?;
        let held = intake.batched() as u64;
        let name = crate::intake_position_name(&self.config.stream);
        let advance = Advance {
            name,
            from: *position,
            to,
        };
        let refused = intake.flush_at(Some(&advance)).await?;
        *position = to;
        self.refused_by_store(refused, origin, batch).await;
        Ok(held)
    }

    /// Publishes refusals (and empties the list), each awaited: a batch is appended only
    /// after its refusals are kept.
    async fn publish_refusals(&self, refusals: &mut Vec<Refusal>) -> Result<(), Failure> {
        let c = &self.config;
        let Some(first) = refusals.first() else {
            return Ok(());
        };
        let messages: BTreeSet<u64> = refusals.iter().map(|r| r.stream_seq).collect();
        tracing::warn!(
            stream = %c.stream,
            "NATS intake refused lines in {} messages; the first: message {} line {}: {}",
            messages.len(),
            first.stream_seq,
            first.line.map_or("-".into(), |l| l.to_string()),
            first.error
        );
        // Sent one after the other without waiting, then each acknowledgement awaited.
        let mut acks = Vec::new();
        for r in refusals.drain(..) {
            let model = model_of(&r.text, &r.subject);
            let subject = format!("{}.{}", c.refused_subject, token(&model));
            let body = json!({
                "stream": c.stream,
                "stream_seq": r.stream_seq,
                "subject": r.subject,
                "line": r.line,
                "error": r.error,
                "text": r.text,
            })
            .to_string();
            metrics::counter!("flowhost_nats_refusals_published_total").increment(1);
            let failed = |e: String| {
                Failure::Nats(format!("cannot publish a refused line to {subject}: {e}"))
            };
            if c.refused_stream.is_empty() {
                self.js
                    .client()
                    .publish(subject.clone(), body.into())
                    .await
                    .map_err(|e| failed(e.to_string()))?;
            } else {
                let id = match r.line {
                    Some(line) => format!("{}:{}:{line}", c.stream, r.stream_seq),
                    None => format!("{}:{}:more", c.stream, r.stream_seq),
                };
                let message = PublishMessage::build().payload(body.into()).message_id(id);
                let ack = self
                    .js
                    .send_publish(subject.clone(), message)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                acks.push((subject, ack));
            }
        }
        for (subject, ack) in acks {
            ack.await.map_err(|e| {
                Failure::Nats(format!("cannot publish a refused line to {subject}: {e}"))
            })?;
        }
        Ok(())
    }

    /// Lines the database refused after they parsed: their refusals are published after the
    /// commit (the records were not stored either way; a crash right after the commit
    /// loses these notices, never a record).
    async fn refused_by_store(
        &self,
        refused: Vec<(u64, String)>,
        origin: &[(u64, usize, u64)],
        batch: &[Message],
    ) {
        if refused.is_empty() {
            return;
        }
        let mut list: Vec<Refusal> = refused
            .into_iter()
            .filter_map(|(n, error)| {
                let &(seq, i, line) = origin.get((n as usize).checked_sub(1)?)?;
                let message = &batch[i];
                Some(Refusal {
                    stream_seq: seq,
                    subject: message.subject.to_string(),
                    line: Some(line),
                    error,
                    text: line_text(&message.payload, line),
                })
            })
            .collect();
        if let Err(e) = self.publish_refusals(&mut list).await {
            tracing::warn!("{e}");
        }
    }
}

/// The lines of one message as they are taken.
struct Taken<'m> {
    seq: u64,
    message: usize,
    subject: &'m str,
    line: u64,
    /// Lines of this message refused so far.
    refused: u64,
}

impl Taken<'_> {
    fn take(
        &mut self,
        line: &[u8],
        len: usize,
        intake: &mut LineIntake<'_>,
        origin: &mut Vec<(u64, usize, u64)>,
        refusals: &mut Vec<Refusal>,
    ) {
        self.line += 1;
        origin.push((self.seq, self.message, self.line));
        if let LineOutcome::Refused(e) = intake.line(line, len) {
            self.refused += 1;
            if self.refused <= MAX_REFUSALS_PER_MESSAGE {
                refusals.push(Refusal {
                    stream_seq: self.seq,
                    subject: self.subject.to_string(),
                    line: Some(self.line),
                    error: e.to_string(),
                    text: cut(line),
                });
            }
        }
    }

    /// After the message's last line: the count of the refusals not published one by one.
    fn finish(&self, refusals: &mut Vec<Refusal>) {
        let more = self.refused.saturating_sub(MAX_REFUSALS_PER_MESSAGE);
        if more > 0 {
            refusals.push(Refusal {
                stream_seq: self.seq,
                subject: self.subject.to_string(),
                line: None,
                error: format!(
                    "{more} more lines of this message were refused (only the first {MAX_REFUSALS_PER_MESSAGE} are published one by one)"
                ),
                text: String::new(),
            });
        }
    }
}

/// Which messages of a batch to take (their stream sequences), given the position: a
/// message at or below the highest sequence taken so far was taken before (the consumer
/// delivers in stream order; only a lost acknowledgement brings one again), and one without
/// a sequence is not a stream message.
fn to_take(seqs: &[Option<u64>], position: i64) -> Vec<Option<u64>> {
    let mut highest = position;
    seqs.iter()
        .map(|seq| match *seq {
            Some(s) if s as i64 > highest => {
                highest = s as i64;
                Some(s)
            }
            _ => None,
        })
        .collect()
}

/// Why a batch was not appended.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Nats(String),
}

/// The first [`REFUSED_TEXT_BYTES`] of a line, as text.
fn cut(line: &[u8]) -> String {
    String::from_utf8_lossy(&line[..line.len().min(REFUSED_TEXT_BYTES)]).into_owned()
}

/// The `line`-th line of a message (from 1), cut to [`REFUSED_TEXT_BYTES`].
fn line_text(payload: &[u8], line: u64) -> String {
    cut(payload
        .split(|&b| b == b'\n')
        .nth((line as usize).saturating_sub(1))
        .unwrap_or_default())
}

/// The model a refused line names, when it is a JSON object with a string `model`; else
/// the last token of the subject it came on (`flowhost.intake.<model>`).
fn model_of(text: &str, subject: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.get("model").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_else(|| subject.rsplit('.').next().unwrap_or_default().to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn messages_delivered_again_are_passed_over_wherever_they_come_in_a_batch() {
        let take = |seqs: &[Option<u64>], p| super::to_take(seqs, p);
        assert_eq!(
            take(&[Some(5), Some(6), Some(7)], 4),
            [Some(5), Some(6), Some(7)]
        );
        assert_eq!(
            take(&[Some(3), Some(5)], 4),
            [None, Some(5)],
            "at or below the position"
        );
        // A message delivered again at the end: what came before is still taken.
        assert_eq!(
            take(&[Some(5), Some(6), Some(2)], 4),
            [Some(5), Some(6), None]
        );
        assert_eq!(
            take(&[Some(5), Some(5), None, Some(7)], 4),
            [Some(5), None, None, Some(7)]
        );
    }

    #[test]
    fn refused_lines_are_found_and_named_by_their_model() {
        assert_eq!(super::line_text(b"a\nbb\nccc", 2), "bb");
        assert_eq!(super::line_text(b"a\nbb", 3), "");
        assert_eq!(
            super::model_of(r#"{"model":"sensor","x":1"#, "flowhost.intake.device"),
            "device"
        );
        assert_eq!(
            super::model_of(r#"{"model":"sensor"}"#, "flowhost.intake.device"),
            "sensor"
        );
        assert_eq!(super::model_of("garbage", "a.b"), "b");
    }
}

//! The change feed relayed to a JetStream stream: at least once, in change order.
//!
//! One host at a time holds the `nats-relay` duty of the stream. It reads the changes after
//! the relayed position (`nats-relay:<stream>`, in the database), publishes them in order
//! to `<subject>.<model>`, each with `Nats-Msg-Id` = its change number (so JetStream drops
//! a change published twice within its duplicate window), waits for the stream to take
//! them, and moves the position to the last one taken without a gap. A crash between the
//! publish and the move publishes those changes again; the stream drops them.

use crate::{DutyWork, End, RelayConfig, hold, token};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, context::PublishAckFuture};
use flowhost_edges::broker::BrokerStatus;
use flowhost_engine::Engine;
use flowhost_store::{Advance, Duty};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Changes read and published at a time.
const PAGE: usize = 1_000;

/// How often the relay looks for changes other hosts committed (this host's projections
/// wake it at once).
const LOOK_AGAIN: Duration = Duration::from_millis(250);

pub(crate) struct Relay {
    pub config: RelayConfig,
    pub js: jetstream::Context,
    pub engine: Engine,
    pub status: BrokerStatus,
    pub lease_ttl: Duration,
}

impl DutyWork for Relay {
    const KIND: &'static str = "nats-relay";
    const PART: &'static str = "relay";
    const WHAT: &'static str = "the change relay to NATS";

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
        match self.relay(duty, stop).await {
            Ok(true) => End::Stopped,
            Ok(false) => End::Yielded,
            Err(why) => End::Failed(why),
        }
    }
}

impl Relay {
    /// Reads the relayed position and the feed's end into the status (any host can).
    async fn read_lag(&self) {
        let store = self.engine.store();
        let name = crate::relay_position_name(&self.config.stream);
        if let (Ok(position), Ok(last)) = (store.position(&name).await, store.last_change().await) {
            self.status.update(|s| {
                s.relay_position = position;
                s.outbox_lag = Some((last - position).max(0));
            });
        }
    }

    /// Relays until stopped (`Ok(true)`), until the duty or the position is lost
    /// (`Ok(false)`), or until something fails.
    async fn relay(&self, duty: &Duty, stop: &CancellationToken) -> Result<bool, String> {
        let c = &self.config;
        let store = self.engine.store();
        let name = crate::relay_position_name(&c.stream);
        self.js
            .get_or_create_stream(jetstream::stream::Config {
                name: c.stream.clone(),
                subjects: vec![format!("{}.>", c.subject)],
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cannot open or create the stream: {e}"))?;
        let mut position = store
            .position(&name)
            .await
            .map_err(|e| format!("cannot read the relayed position: {e}"))?;
        tracing::info!(stream = %c.stream, position, "relaying the change feed to NATS");
        self.status.set_problem("relay", None);
        let renew_every = (self.lease_ttl / 3).max(Duration::from_millis(10));
        let mut renewed = Instant::now();
        loop {
            if renewed.elapsed() >= renew_every {
                if !hold(&self.engine, duty, self.lease_ttl).await? {
                    return Ok(false);
                }
                renewed = Instant::now();
            }
            // Registered before the read, so a projection during it is not missed.
            let projected = self.engine.projected();
            let changes = store
                .changes(position, None, PAGE)
                .await
                .map_err(|e| format!("cannot read the change feed: {e}"))?;
            if changes.is_empty() {
                self.status.update(|s| {
                    s.relay_position = position;
                    s.outbox_lag = Some(0);
                });
                tokio::select! {
                    _ = stop.cancelled() => return Ok(true),
                    _ = projected => {}
                    _ = tokio::time::sleep(LOOK_AGAIN) => {}
                }
                continue;
            }
            // Published in order without waiting, then each acknowledgement awaited in order:
            // the position moves to the last change before the first one not taken.
            let mut pending: Vec<(i64, PublishAckFuture)> = Vec::with_capacity(changes.len());
            let mut failure = None;
            for change in &changes {
                let subject = format!("{}.{}", c.subject, token(&change.model));
                let body = flowhost_edges::views::change_line(change);
                let message = PublishMessage::build()
                    .payload(body.into())
                    .message_id(change.seq.to_string());
                match self.js.send_publish(subject, message).await {
                    Ok(ack) => pending.push((change.seq, ack)),
                    Err(e) => {
                        failure = Some(format!("cannot publish change {}: {e}", change.seq));
                        break;
                    }
                }
            }
            let mut taken = position;
            for (seq, ack) in pending {
                match ack.await {
                    Ok(_) => taken = seq,
                    Err(e) => {
                        failure.get_or_insert(format!("change {seq} was not taken: {e}"));
                        break;
                    }
                }
            }
            if taken > position {
                let moved = store
                    .advance(&Advance {
                        name: name.clone(),
                        from: position,
                        to: taken,
                    })
                    .await
                    .map_err(|e| format!("cannot record the relayed position: {e}"))?;
                if !moved {
                    tracing::info!(stream = %c.stream, "another host relayed meanwhile; starting again from the position");
                    return Ok(false);
                }
                metrics::counter!("flowhost_nats_changes_relayed_total")
                    .increment((taken - position) as u64);
                position = taken;
                let last = match changes.len() {
                    PAGE => store.last_change().await.unwrap_or(position),
                    _ => changes.last().map_or(position, |c| c.seq),
                };
                self.status.update(|s| {
                    s.relay_position = position;
                    s.outbox_lag = Some((last - position).max(0));
                });
            }
            if let Some(failure) = failure {
                return Err(failure);
            }
        }
    }
}

//! flowhost's NATS JetStream edge, beside the HTTP API in `serve`:
//!
//! - [`intake`]: records in from a stream (`FLOWHOST_INTAKE`, subjects `flowhost.intake.>`)
//!   through one durable pull consumer shared by every host. One host at a time consumes it
//!   (the `nats-intake` duty); it appends each batch of messages in one transaction that
//!   also moves the stream position it has appended up to, so records go in stream order
//!   across crashes and hosts, and acknowledges the messages only once that commit is done.
//!   Refused lines are published to `flowhost.refused.<model>`; they never hold the consumer.
//! - [`relay`]: the change feed out to a stream (`FLOWHOST_CHANGES`, subjects
//!   `flowhost.changes.<model>`), in change order, each message with `Nats-Msg-Id` = its
//!   change number (JetStream drops a re-published one), the relayed position kept in the
//!   database (the `nats-relay` duty).
//!
//! A broker that is down or slow never stops the host: both tasks retry with a growing
//! pause, say why in the [`BrokerStatus`] (`/health/ready`'s `degraded`, `/metrics`) and in
//! the log, and pick up from the database's positions when it is back.

mod intake;
mod relay;

use async_nats::jetstream;
use flowhost_core::intake::IntakeLimits;
use flowhost_edges::broker::BrokerStatus;
use flowhost_engine::Engine;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Intake from a stream.
#[derive(Debug, Clone)]
pub struct IntakeConfig {
    /// The stream, created when missing.
    pub stream: String,
    /// Its subjects (when this host creates it).
    pub subjects: Vec<String>,
    /// The durable consumer's name.
    pub consumer: String,
    /// Refused lines go to `<refused_subject>.<model>`.
    pub refused_subject: String,
    /// The stream that keeps refused lines (created when missing, over
    /// `<refused_subject>.>`); empty: published without a stream.
    pub refused_stream: String,
    /// The most messages appended in one transaction.
    pub batch_messages: usize,
    /// How long a batch waits for more messages once it has one.
    pub linger: Duration,
    /// The longest line, in bytes.
    pub max_line: usize,
    pub limits: IntakeLimits,
}

/// The relay of the change feed to a stream.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The stream, created when missing, over `<subject>.>`.
    pub stream: String,
    /// Changes go to `<subject>.<model>`.
    pub subject: String,
}

/// The NATS edge's settings.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    pub url: String,
    pub intake: Option<IntakeConfig>,
    pub relay: Option<RelayConfig>,
    /// How long a duty lives without renewal (the stages' lease time).
    pub lease_ttl: Duration,
}

/// The most a failing part waits before it tries again.
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// The name of the position of a stream's intake, kept in the database.
pub fn intake_position_name(stream: &str) -> String {
    format!("nats-intake:{stream}")
}

/// The name of the position of the relay to a stream, kept in the database.
pub fn relay_position_name(stream: &str) -> String {
    format!("nats-relay:{stream}")
}

/// Connects (in the background: a broker that is down now is waited for) and starts the
/// intake and relay tasks on `tracker`, until `stop`. Returns the status they keep.
pub async fn start(
    config: NatsConfig,
    engine: Engine,
    tracker: &TaskTracker,
    stop: CancellationToken,
) -> Result<BrokerStatus, String> {
    let status = BrokerStatus::new(redacted(&config.url));
    let events = status.clone();
    let client = async_nats::ConnectOptions::new()
        .name(format!("flowhost {}", engine.holder()))
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(5)))
        .event_callback(move |event| {
            let status = events.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!("connected to NATS");
                        status.set_connected(true);
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!("disconnected from NATS; reconnecting");
                        status.set_connected(false);
                    }
                    other => tracing::debug!("NATS: {other}"),
                }
            }
        })
        .connect(config.url.as_str())
        .await
        .map_err(|e| format!("intake.nats_url '{}': {e}", redacted(&config.url)))?;
    let js = jetstream::new(client);
    if let Some(intake) = config.intake.clone() {
        let task = intake::Intake {
            config: intake,
            js: js.clone(),
            engine: engine.clone(),
            status: status.clone(),
            lease_ttl: config.lease_ttl,
        };
        tracker.spawn(run_duty(task, stop.clone()));
    }
    if let Some(relay) = config.relay.clone() {
        let task = relay::Relay {
            config: relay,
            js,
            engine,
            status: status.clone(),
            lease_ttl: config.lease_ttl,
        };
        tracker.spawn(run_duty(task, stop));
    }
    Ok(status)
}

/// A NATS URL without its credentials.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// A subject token for a model name: itself when it is one, `_` otherwise.
pub(crate) fn token(name: &str) -> &str {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        name
    } else {
        "_"
    }
}

/// Pauses after failures: doubling from one second up to [`MAX_PAUSE`], back to the start
/// after a success.
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Self {
            next: Duration::from_secs(1),
        }
    }

    pub(crate) fn reset(&mut self) {
        self.next = Duration::from_secs(1);
    }

    /// Waits the pause (or until `stop`); false when stopped.
    pub(crate) async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let pause = self.next;
        self.next = (self.next * 2).min(MAX_PAUSE);
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(pause) => true,
        }
    }

    pub(crate) fn next(&self) -> Duration {
        self.next
    }
}

/// Why a duty's session ended.
pub(crate) enum End {
    Stopped,
    /// The duty is held elsewhere now (or the position moved under us): start again.
    Yielded,
    Failed(String),
}

/// Work one host at a time does for the database under a duty (the intake of a stream, the
/// relay to a stream), in sessions: [`run_duty`] takes the duty, runs a session while it
/// holds it, and after a failure says why and waits before the next.
pub(crate) trait DutyWork: Send + Sync {
    /// The duty's kind (`nats-intake`), its part in the status (`intake`), and in the log.
    const KIND: &'static str;
    const PART: &'static str;
    const WHAT: &'static str;
    fn engine(&self) -> &Engine;
    fn status(&self) -> &BrokerStatus;
    fn stream(&self) -> &str;
    fn lease_ttl(&self) -> Duration;
    /// Reads this work's lag into the status (any host can, holding the duty or not).
    fn observe_lag(&self) -> impl std::future::Future<Output = ()> + Send;
    /// Works while the duty is held.
    fn session(
        &self,
        duty: &flowhost_store::Duty,
        stop: &CancellationToken,
    ) -> impl std::future::Future<Output = End> + Send;
}

/// Runs `work` under its duty until `stop`, then gives the duty up.
pub(crate) async fn run_duty<W: DutyWork>(work: W, stop: CancellationToken) {
    let duty = flowhost_store::Duty {
        kind: W::KIND,
        key: work.stream().to_string(),
        holder: work.engine().holder().to_string(),
    };
    let mut backoff = Backoff::new();
    while !stop.is_cancelled() {
        let end = match hold(work.engine(), &duty, work.lease_ttl()).await {
            Ok(true) => work.session(&duty, &stop).await,
            Ok(false) => {
                // Another host does it: look again within a lease time, and keep the lag
                // visible here too.
                work.status().set_problem(W::PART, None);
                work.observe_lag().await;
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(work.lease_ttl() / 2) => continue,
                }
            }
            Err(why) => End::Failed(why),
        };
        match end {
            End::Stopped => break,
            End::Yielded => backoff.reset(),
            End::Failed(why) => {
                tracing::warn!(
                    stream = %work.stream(),
                    "{} stopped: {why}; trying again in {:?}",
                    W::WHAT,
                    backoff.next()
                );
                work.status().set_problem(
                    W::PART,
                    Some(format!(
                        "{why} (stream {}; trying again in {} s)",
                        work.stream(),
                        backoff.next().as_secs()
                    )),
                );
                work.observe_lag().await;
                if !backoff.wait(&stop).await {
                    break;
                }
            }
        }
    }
    if let Err(e) = work.engine().store().release_duty(&duty).await {
        tracing::debug!("cannot give the {} duty up: {e}", W::KIND);
    }
}

/// Takes or renews a duty: whether this process holds it now, or why the database could
/// not say.
pub(crate) async fn hold(
    engine: &Engine,
    duty: &flowhost_store::Duty,
    ttl: Duration,
) -> Result<bool, String> {
    engine
        .store()
        .acquire_duty(duty, ttl.as_micros() as i64)
        .await
        .map_err(|e| format!("cannot take the {} duty in the database: {e}", duty.kind))
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_lose_their_credentials_and_models_become_tokens() {
        assert_eq!(super::redacted("nats://u:p@h:4222"), "nats://***@h:4222");
        assert_eq!(super::redacted("nats://h:4222"), "nats://h:4222");
        assert_eq!(super::token("device"), "device");
        assert_eq!(super::token("a.b"), "_");
        assert_eq!(super::token(""), "_");
        assert_eq!(super::token("x y"), "_");
    }
}

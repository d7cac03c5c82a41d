//! `flowhost serve`: the HTTP API, the stage workers and the plugins folder's watcher in one
//! process, every task owned by one tracker and stopped by one token.
//!
//! On SIGTERM or SIGINT: readiness turns 503, the server stops accepting connections and
//! answers the requests in flight (their records are durable before each answer), the
//! stages finish their batches in flight, the database is closed, and the process exits 0,
//! all within `server.shutdown_deadline_s`. Past the deadline it exits 1; nothing
//! acknowledged is lost either way, since a batch commits whole or not at all.

use anyhow::{Context, Result};
use flowhost::{app, config::Config};
use flowhost_server::{AppState, Metrics};
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub async fn run(env: &app::Env, config: &Config) -> Result<ExitCode> {
    let server = config.server()?;
    server.check().map_err(anyhow::Error::msg)?;
    let mut signals = Signals::catch()?;
    let metrics = Metrics::install().map_err(anyhow::Error::msg)?;
    let (engine, registry) = app::engine(env, env.engine.clone()).await?;
    let listener = tokio::net::TcpListener::bind(server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen)", server.listen))?;
    let address = listener.local_addr()?;

    let stop = CancellationToken::new();
    let watcher = registry.watch(stop.clone()).await?;
    let tracker = TaskTracker::new();
    let state = AppState::new(
        engine.clone(),
        registry.clone(),
        server,
        Some(metrics.clone()),
        stop.clone(),
    );
    // NATS: intake from a stream and the change relay, beside HTTP (a broker that is down
    // is waited for; it never stops the host).
    let nats = config.nats(env.engine.lease_ttl);
    let relayed_name = nats
        .as_ref()
        .and_then(|n| n.relay.as_ref())
        .map(|r| flowhost_nats::relay_position_name(&r.stream));
    if let Some(nats) = nats {
        let url = flowhost_nats::redacted(&nats.url);
        let status = flowhost_nats::start(nats, engine.clone(), &tracker, stop.clone())
            .await
            .map_err(anyhow::Error::msg)?;
        state.set_broker(status);
        tracing::info!(%url, "NATS intake and change relay configured");
    }
    let mut http = tracker.spawn(flowhost_server::serve(listener, state, stop.clone()));
    let mut stages = {
        let (engine, stop) = (engine.clone(), stop.clone());
        tracker.spawn(async move { engine.serve(stop).await })
    };
    tracker.spawn(async move {
        let _ = watcher.await;
    });
    {
        let stop = stop.clone();
        tracker.spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = every.tick() => metrics.upkeep(),
                }
            }
        });
    }
    tracker.spawn(announce(
        engine.clone(),
        address.to_string(),
        env.engine.lease_ttl,
        stop.clone(),
    ));
    if let Some(verdicts) = engine.take_verdicts() {
        tracker.spawn(roll_back_worse_versions(
            registry.clone(),
            verdicts,
            stop.clone(),
        ));
    }
    tracker.spawn(prune_changes(
        engine.store().clone(),
        Duration::from_secs(config.changes.keep_hours.saturating_mul(3600)),
        relayed_name,
        stop.clone(),
    ));
    tracker.close();
    let models = engine.plugins().models();
    if models.is_empty() {
        tracing::warn!(
            dir = %env.registry.dir.display(),
            "no plugins in {}: nothing can be processed until *.wasm components are dropped there (not ready until then)",
            env.registry.dir.display()
        );
    }
    eprintln!(
        "flowhost listening on http://{address}, serving {} with models {}",
        flowhost_store::redacted(&env.db),
        if models.is_empty() {
            format!("none (no plugins in {})", env.registry.dir.display())
        } else {
            models.join(", ")
        }
    );
    tracing::info!(%address, db = %flowhost_store::redacted(&env.db), "serving");

    // Until a signal, or until a part fails on its own (then the rest stops too).
    let mut failure: Option<String> = None;
    let mut http_done = None;
    let mut stages_done = None;
    tokio::select! {
        _ = signals.received() => {
            tracing::info!("shutting down: answering requests in flight, finishing batches in flight");
        }
        r = &mut http => {
            failure = Some(format!("the HTTP server stopped: {}", describe(&r)));
            http_done = Some(());
        }
        r = &mut stages => {
            let what = match &r {
                Ok(Ok(_)) => "ended".to_string(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            failure = Some(format!("the stage workers stopped: {what}"));
            stages_done = Some(r.ok().and_then(Result::ok));
        }
    }
    stop.cancel();

    let deadline = Duration::from_secs(config.server.shutdown_deadline_s.max(1));
    let drain = tokio::time::timeout(deadline, async {
        if http_done.is_none()
            && let Ok(Err(e)) = (&mut http).await
        {
            tracing::warn!("the HTTP server stopped with: {e}");
        }
        let report = match stages_done {
            Some(report) => report,
            None => (&mut stages).await.ok().and_then(Result::ok),
        };
        tracker.wait().await;
        report
    });
    let drained = tokio::select! {
        drained = drain => drained,
        _ = signals.received() => {
            eprintln!("error: a second signal: stopping without waiting; batches not committed stay queued and run after a restart");
            return Ok(ExitCode::FAILURE);
        }
    };
    let Ok(report) = drained else {
        eprintln!(
            "error: shutdown did not finish within {} s (server.shutdown_deadline_s); \
             batches not committed stay queued and run after a restart",
            deadline.as_secs()
        );
        return Ok(ExitCode::FAILURE);
    };
    engine.store().close().await;
    if let Some(report) = report {
        eprintln!(
            "stopped: associated {} records, projected {} references",
            report.associate.items, report.project.items
        );
    }
    match failure {
        Some(f) => {
            eprintln!("error: {f}");
            Ok(ExitCode::FAILURE)
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Hosts not seen for this long are forgotten (they died without saying so).
const FORGET_HOSTS_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Announces this host in the database (`GET /v1/hosts`, `flowhost hosts`) as often as its
/// leases are renewed, until `stop`; then forgets it. A host killed without stopping stays
/// listed, not live, until a host starting later forgets it (after a day).
async fn announce(
    engine: flowhost_engine::Engine,
    listen: String,
    lease_ttl: Duration,
    stop: CancellationToken,
) {
    let store = engine.store();
    let id = engine.holder().to_string();
    let started = flowhost_store::now_micros();
    let stale = || flowhost_store::now_micros() - FORGET_HOSTS_AFTER.as_micros() as i64;
    if let Err(e) = store.forget_host("", stale()).await {
        tracing::warn!("cannot forget hosts long gone: {e}");
    }
    let mut tick = tokio::time::interval((lease_ttl / 3).max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                let row = flowhost_store::HostRow {
                    id: id.clone(),
                    listen: listen.clone(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    started_micros: started,
                    seen_micros: flowhost_store::now_micros(),
                };
                if let Err(e) = store.announce_host(&row).await {
                    tracing::warn!("cannot announce this host in the database: {e}");
                }
            }
        }
    }
    if let Err(e) = store.forget_host(&id, stale()).await {
        tracing::warn!("cannot remove this host from the database's list: {e}");
    }
}

fn describe(r: &Result<std::io::Result<()>, tokio::task::JoinError>) -> String {
    match r {
        Ok(Ok(())) => "ended".into(),
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    }
}

/// SIGINT and SIGTERM, caught from the moment this is made (so a signal sent as soon as the
/// service says it listens is never the default, abrupt one).
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn catch() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate()).context("cannot catch SIGTERM")?,
                int: signal(SignalKind::interrupt()).context("cannot catch SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Resolves on the first of them.
    async fn received(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Rolls a model back when the engine judged its new version clearly worse than the one
/// before (see `plugins.auto_rollback`), saying why in the log and counting it.
async fn roll_back_worse_versions(
    registry: flowhost_registry::Registry,
    mut verdicts: tokio::sync::mpsc::UnboundedReceiver<flowhost_engine::Verdict>,
    stop: CancellationToken,
) {
    loop {
        let verdict = tokio::select! {
            _ = stop.cancelled() => break,
            v = verdicts.recv() => match v {
                Some(v) => v,
                None => break,
            },
        };
        let why = verdict.describe();
        let short = |v: &str| v[..v.len().min(12)].to_string();
        match registry
            .rollback(&verdict.model, Some(&verdict.previous))
            .await
        {
            Ok(version) => {
                metrics::counter!("flowhost_plugin_auto_rollbacks_total", "model" => verdict.model.clone())
                    .increment(1);
                tracing::warn!(
                    model = %verdict.model,
                    from = %short(&verdict.version),
                    to = %short(&version),
                    "rolled back on its own: version {} did clearly worse than the one before: {why}",
                    short(&verdict.version)
                );
            }
            Err(e) => tracing::warn!(
                model = %verdict.model,
                "version {} did clearly worse than the one before ({why}), but rolling back failed: {e}",
                short(&verdict.version)
            ),
        }
    }
}

/// Deletes the changes older than `keep` once a minute, until `stop`; with a relay (its
/// position's name given), only the changes it relayed.
async fn prune_changes(
    store: flowhost_store::Store,
    keep: Duration,
    relayed: Option<String>,
    stop: CancellationToken,
) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = every.tick() => {}
        }
        let before = flowhost_store::now_micros() - keep.as_micros().min(i64::MAX as u128) as i64;
        let relayed = match &relayed {
            None => None,
            Some(name) => match store.position(name).await {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!("cannot read the relayed position: {e}");
                    continue;
                }
            },
        };
        match store.prune_changes(before, relayed).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "pruned changes older than changes.keep_hours"),
            Err(e) => tracing::warn!("cannot prune the change feed: {e}"),
        }
    }
}

//! `flowhost-bench latency`: intake → canonical latency under a steady load. A running host
//! (the real `serve` loops, in this process) on a fresh database is fed at a fixed rate, in
//! small intake batches every 10 ms, the way a service's HTTP or broker intake would. Every
//! record is a new device, so the time its view was written is when it became visible; the
//! latency of a record is that time minus the time intake accepted it.

use crate::modes::{FreshDb, peak_rss_mb};
use anyhow::{Result, bail};
use flowhost::app;
use flowhost_core::intake::parse_line;
use flowhost_engine::EngineConfig;
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const TICK: Duration = Duration::from_millis(10);

pub async fn latency(
    db: &str,
    plugins: &Path,
    engine: EngineConfig,
    rate: u64,
    seconds: u64,
    as_json: bool,
) -> Result<ExitCode> {
    let dir = std::env::temp_dir().join(format!("flowhost-bench-latency-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let fresh = FreshDb::new(db, &dir, "latency").await?;
    let result = run(&fresh.url, plugins, engine, rate, seconds).await;
    fresh.drop().await;
    let _ = std::fs::remove_dir_all(&dir);
    let (mut latencies, sent, achieved, drain) = result?;
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * q).round() as usize)
            .copied()
            .unwrap_or(0) as f64
            / 1e3
    };
    let (p50, p99, max) = (at(0.5), at(0.99), at(1.0));
    if as_json {
        println!(
            "{}",
            json!({
                "rate_per_s": rate, "achieved_per_s": achieved, "seconds": seconds, "records": sent,
                "measured": latencies.len(), "p50_ms": p50, "p99_ms": p99, "max_ms": max,
                "drain_s": drain, "peak_rss_mb": peak_rss_mb(),
            })
        );
    } else {
        println!(
            "flowhost-bench latency: {sent} records fed at {rate}/s (achieved {achieved:.0}/s) for {seconds} s into a running host"
        );
        println!(
            "intake → canonical: p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms ({} records measured); caught up {drain:.2} s after the last record",
            latencies.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn run(
    url: &str,
    plugins: &Path,
    config: EngineConfig,
    rate: u64,
    seconds: u64,
) -> Result<(Vec<i64>, u64, f64, f64)> {
    let env = crate::modes::env(url, plugins);
    let (engine, _registry) = app::engine(&env, config).await?;
    if engine.plugins().get("device").is_none() {
        bail!("no device plugin in {}", plugins.display());
    }
    let store = engine.store().clone();
    let cancel = CancellationToken::new();
    let serving = {
        let (engine, cancel) = (engine.clone(), cancel.clone());
        tokio::spawn(async move { engine.serve(cancel).await })
    };

    let per_tick = (rate as f64 * TICK.as_secs_f64()).max(1.0) as u64;
    let ticks = seconds * 1000 / TICK.as_millis() as u64;
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let now = chrono::Utc::now();
    let started = Instant::now();
    let mut sent = 0u64;
    for _ in 0..ticks {
        interval.tick().await;
        let batch: Vec<_> = (0..per_tick)
            .map(|_| {
                sent += 1;
                let line = json!({
                    "model": "device",
                    "source": {"system": "lat", "adapter": "lat-v1"},
                    "id": format!("L-{sent}"),
                    "occurred_at": "2026-03-01T10:00:00Z",
                    "payload": {"serial": format!("LAT-{sent}"), "name": format!("Device {sent}")},
                })
                .to_string();
                parse_line(line.as_bytes(), now).expect("a valid record")
            })
            .collect();
        store
            .append(&batch)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        // As the service's intake does after an append.
        engine.wake(flowhost_store::Stage::Associate);
    }
    let fed = started.elapsed();
    let fed_at = Instant::now();
    loop {
        let c = store.counts().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let views: i64 = c.references.iter().map(|(_, n)| n).sum();
        if views as u64 >= sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain = fed_at.elapsed().as_secs_f64();
    cancel.cancel();
    let _ = serving.await;
    let latencies = view_latencies(url).await?;
    store.close().await;
    Ok((latencies, sent, sent as f64 / fed.as_secs_f64(), drain))
}

/// Microseconds from intake to the view, per record.
async fn view_latencies(url: &str) -> Result<Vec<i64>> {
    const SQL: &str = "SELECT v.updated_micros - i.received_micros FROM views v \
                       JOIN keyed k ON k.reference = v.reference JOIN intake i ON i.seq = k.seq";
    Ok(if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await?;
        let rows = sqlx::query_scalar(SQL).fetch_all(&pool).await?;
        pool.close().await;
        rows
    } else {
        let pool = sqlx::PgPool::connect(url).await?;
        let rows = sqlx::query_scalar(SQL).fetch_all(&pool).await?;
        pool.close().await;
        rows
    })
}

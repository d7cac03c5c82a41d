//! `flowhost-bench nats`: a `flowhost serve` child fed from NATS JetStream, on a fresh
//! database and streams of its own (deleted after).
//!
//! 1. Throughput: the generated workload is published to the intake stream first (a
//!    backlog), then the host is started; the time until every message is appended and
//!    every record keyed or parked and projected gives records/s from JetStream to canonical
//!    (and until the relay has published every change, to the changes stream).
//! 2. Change-feed lag at a steady rate: new devices are published every 10 ms, each record
//!    carrying the time it was sent; the changes stream is followed, and each reference's
//!    first change gives the time from publishing the record to receiving its canonical
//!    view from the broker.

use crate::http::{cpu_seconds_of, spawn_serve};
use crate::modes::FreshDb;
use anyhow::{Context, Result, bail};
use async_nats::jetstream;
use futures::StreamExt;
use serde_json::{Value, json};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// What to publish, and how.
pub struct NatsLoad {
    pub url: String,
    pub records: u64,
    pub per_message: usize,
    pub rate: u64,
    pub seconds: u64,
    pub json: bool,
}

/// Streams and subjects of one run.
struct Names {
    prefix: String,
    intake: String,
    changes: String,
    refused: String,
}

impl Names {
    fn new(run: &str) -> Self {
        let n = format!("{}{run}", std::process::id());
        Self {
            prefix: format!("bench{n}"),
            intake: format!("BENCH{n}_IN"),
            changes: format!("BENCH{n}_CH"),
            refused: format!("BENCH{n}_REF"),
        }
    }

    fn settings(&self, url: &str) -> Vec<String> {
        let p = &self.prefix;
        vec![
            format!("intake.nats_url={url}"),
            format!("intake.nats_stream={}", self.intake),
            format!("intake.nats_subjects={p}.intake.>"),
            format!("intake.nats_consumer={p}"),
            format!("intake.nats_refused_subject={p}.refused"),
            format!("intake.nats_refused_stream={}", self.refused),
            format!("changes.nats_stream={}", self.changes),
            format!("changes.nats_subject={p}.changes"),
        ]
    }

    async fn create(&self, js: &jetstream::Context) -> Result<()> {
        for (name, subject) in [
            (&self.intake, format!("{}.intake.>", self.prefix)),
            (&self.changes, format!("{}.changes.>", self.prefix)),
        ] {
            js.get_or_create_stream(jetstream::stream::Config {
                name: name.clone(),
                subjects: vec![subject],
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("cannot create the stream {name}: {e}"))?;
        }
        Ok(())
    }

    async fn delete(&self, js: &jetstream::Context) {
        for s in [&self.intake, &self.changes, &self.refused] {
            let _ = js.delete_stream(s).await;
        }
    }
}

pub async fn run(db: &str, plugins: &Path, load: NatsLoad) -> Result<ExitCode> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(load.url.as_str())
        .await
        .with_context(|| format!("cannot connect to NATS at {}", load.url))?;
    let js = jetstream::new(client);
    let dir = std::env::temp_dir().join(format!("flowhost-bench-nats-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    let names = Names::new("a");
    let fresh = FreshDb::new(db, &dir, "natsa").await?;
    let throughput = backlog(&js, &fresh.url, plugins, &load, &names).await;
    names.delete(&js).await;
    fresh.drop().await;

    let names = Names::new("b");
    std::fs::create_dir_all(dir.join("b"))?;
    let fresh = FreshDb::new(db, &dir.join("b"), "natsb").await;
    let lag = match fresh {
        Ok(fresh) => {
            let lag = steady(&js, &fresh.url, plugins, &load, &names).await;
            names.delete(&js).await;
            fresh.drop().await;
            lag
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&dir);
    let out = json!({
        "backend": if db.starts_with("postgres") { "postgres" } else { "sqlite" },
        "throughput": throughput?,
        "lag": lag?,
    });
    if load.json {
        println!("{out}");
    } else {
        let t = &out["throughput"];
        let l = &out["lag"];
        println!(
            "flowhost-bench nats ({}): {} records in {} messages of {} lines, published before the host starts",
            out["backend"].as_str().unwrap_or_default(),
            t["records"],
            t["messages"],
            load.per_message
        );
        println!(
            "  JetStream → canonical  {} records/s ({} s, cores busy {}); all appended after {} s, every change relayed after {} s",
            t["records_per_s"],
            t["canonical_seconds"],
            t["cores_busy"],
            t["appended_seconds"],
            t["relayed_seconds"]
        );
        println!(
            "  steady {} records/s for {} s: publish → change received p50 {} ms, p99 {} ms, max {} ms ({} of {} records)",
            load.rate,
            load.seconds,
            l["p50_ms"],
            l["p99_ms"],
            l["max_ms"],
            l["measured"],
            l["sent"]
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Seconds since the epoch, as microseconds.
fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Publishes bodies to a subject, awaiting the acknowledgements 256 at a time; the last
/// stream sequence.
async fn publish(js: &jetstream::Context, subject: &str, bodies: Vec<Vec<u8>>) -> Result<u64> {
    let mut last = 0;
    let mut acks = Vec::with_capacity(256);
    for chunk in bodies.chunks(256) {
        for body in chunk {
            acks.push(js.publish(subject.to_string(), body.clone().into()).await?);
        }
        for ack in acks.drain(..) {
            last = ack.await?.sequence;
        }
    }
    Ok(last)
}

async fn backlog(
    js: &jetstream::Context,
    url: &str,
    plugins: &Path,
    load: &NatsLoad,
    names: &Names,
) -> Result<Value> {
    let (bodies, _) = crate::http::workload_bodies(load.records, load.per_message)?;
    let messages = bodies.len();
    names.create(js).await?;
    let last = publish(js, &format!("{}.intake.demo", names.prefix), bodies).await?;

    let (mut child, _base) = spawn_serve(url, plugins, &names.settings(&load.url)).await?;
    let cpu_at_start = child.id().and_then(cpu_seconds_of).unwrap_or(0.0);
    let started = Instant::now();
    let store = flowhost_store::Store::open(url)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let position = format!("nats-intake:{}", names.intake);
    let relayed = format!("nats-relay:{}", names.changes);
    let e = |e: flowhost_store::StoreError| anyhow::anyhow!("{e}");
    let mut appended = None;
    let canonical = loop {
        let at = store.position(&position).await.map_err(e)?;
        if at == last as i64 && appended.is_none() {
            appended = Some(started.elapsed());
        }
        let c = store.counts().await.map_err(e)?;
        let waiting: i64 = c.queued.iter().chain(&c.dirty).map(|(_, n)| n).sum();
        if at == last as i64 && waiting == 0 {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the host did not catch up with the stream within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let cores = child
        .id()
        .and_then(cpu_seconds_of)
        .map(|cpu| (cpu - cpu_at_start) / canonical.as_secs_f64().max(1e-9));
    let relay = loop {
        let done = store.position(&relayed).await.map_err(e)?;
        if done >= store.last_change().await.map_err(e)? {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the relay did not catch up within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let records = store.counts().await.map_err(e)?.intake;
    store.close().await;
    stop(&mut child).await?;
    Ok(json!({
        "records": records,
        "messages": messages,
        "appended_seconds": appended.map(|a| round2(a.as_secs_f64())),
        "canonical_seconds": round2(canonical.as_secs_f64()),
        "records_per_s": (records as f64 / canonical.as_secs_f64()).round() as u64,
        "relayed_seconds": round2(relay.as_secs_f64()),
        "cores_busy": cores.map(round2),
    }))
}

async fn steady(
    js: &jetstream::Context,
    url: &str,
    plugins: &Path,
    load: &NatsLoad,
    names: &Names,
) -> Result<Value> {
    names.create(js).await?;
    let (mut child, _base) = spawn_serve(url, plugins, &names.settings(&load.url)).await?;
    // Follow the changes stream from its start.
    let changes = js
        .get_stream(&names.changes)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut messages = changes
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let tick = Duration::from_millis(10);
    let per_tick = ((load.rate as f64 * tick.as_secs_f64()).round() as u64).max(1);
    let ticks = load.seconds * 100;
    let expected = per_tick * ticks;
    let follower = tokio::spawn(async move {
        let mut lags: Vec<i64> = Vec::with_capacity(expected as usize);
        let mut seen = std::collections::HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(600);
        while (seen.len() as u64) < expected && Instant::now() < deadline {
            let Ok(Some(Ok(m))) =
                tokio::time::timeout(Duration::from_secs(30), messages.next()).await
            else {
                break;
            };
            let received = now_micros();
            let Ok(change) = serde_json::from_slice::<Value>(&m.payload) else {
                continue;
            };
            let id = change["id"].as_str().unwrap_or_default().to_string();
            let sent = match &change["canonical"]["sent_micros"] {
                Value::Array(a) => a.iter().filter_map(Value::as_i64).max(),
                v => v.as_i64(),
            };
            if let Some(sent) = sent
                && seen.insert(id)
            {
                lags.push(received - sent);
            }
        }
        lags
    });
    let subject = format!("{}.intake.device", names.prefix);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut n = 0u64;
    for _ in 0..ticks {
        interval.tick().await;
        let sent = now_micros();
        let mut body = String::new();
        for _ in 0..per_tick {
            n += 1;
            body.push_str(
                &json!({
                    "model": "device",
                    "source": {"system": "lag", "adapter": "lag-v1"},
                    "id": format!("N-{n}"),
                    "payload": {"serial": format!("NLAG-{n}"), "sent_micros": sent},
                })
                .to_string(),
            );
            body.push('\n');
        }
        // Published without waiting for the acknowledgement (awaited in the background).
        let ack = js.publish(subject.clone(), body.into()).await?;
        tokio::spawn(async move { ack.await.map(|_| ()) });
    }
    let achieved = n as f64 / started.elapsed().as_secs_f64();
    let mut lags = follower.await?;
    stop(&mut child).await?;
    lags.sort_unstable();
    let at = |q: f64| {
        lags.get(((lags.len().max(1) - 1) as f64 * q).round() as usize)
            .map(|l| (*l as f64 / 100.0).round() / 10.0)
            .unwrap_or(0.0)
    };
    Ok(json!({
        "sent": n,
        "achieved_per_s": achieved.round() as u64,
        "measured": lags.len(),
        "p50_ms": at(0.5),
        "p99_ms": at(0.99),
        "max_ms": at(1.0),
    }))
}

/// SIGTERM, then the exit.
async fn stop(child: &mut tokio::process::Child) -> Result<()> {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with SIGTERM on our own child.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    child.wait().await?;
    Ok(())
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

//! `flowhost-bench durability`: what making every SQLite commit durable costs
//! (`synchronous=FULL`, the default, against `NORMAL`), for intake appends of several batch
//! sizes. Both settings run in the same process, rounds alternating, each round on a fresh
//! database file, so the machine's noise falls on both alike.

use anyhow::Result;
use flowhost_store::{Store, StoreOptions};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// What to measure.
pub struct Durability {
    /// Records per round and batch size (fewer for small batches: at most 400 commits).
    pub records: usize,
    /// Records per append (one transaction each).
    pub batches: Vec<usize>,
    pub rounds: usize,
    pub json: bool,
}

/// One cell: a batch size under one setting, the median over rounds.
#[derive(serde::Serialize)]
struct Cell {
    batch: usize,
    synchronous: &'static str,
    records: usize,
    records_per_s: f64,
    commit_ms_median: f64,
}

pub async fn run(spec: Durability) -> Result<ExitCode> {
    let dir = crate::tempfile_dir()?;
    let mut cells = Vec::new();
    for &batch in &spec.batches {
        let batch = batch.max(1);
        let records = spec.records.min(batch * 400).max(batch);
        let lines = crate::intake_records("durability", records, 0);
        // Per setting: (rate, median commit) of each round.
        let mut full: Vec<(f64, f64)> = Vec::new();
        let mut normal: Vec<(f64, f64)> = Vec::new();
        for round in 0..spec.rounds.max(1) {
            for durable in [true, false] {
                let file = dir.join(format!("b{batch}-r{round}-{durable}.db"));
                let url = format!("sqlite://{}", file.display());
                let options = StoreOptions {
                    durable_commits: durable,
                    ..StoreOptions::default()
                };
                let store = Store::open_with(&url, &options)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let mut commits = Vec::with_capacity(records / batch + 1);
                let started = Instant::now();
                for chunk in lines.chunks(batch) {
                    let t = Instant::now();
                    store
                        .append(chunk)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    commits.push(t.elapsed());
                }
                let took = started.elapsed();
                store.close().await;
                let sample = (
                    records as f64 / took.as_secs_f64().max(1e-9),
                    median(&mut commits).as_secs_f64() * 1e3,
                );
                if durable {
                    full.push(sample);
                } else {
                    normal.push(sample);
                }
            }
        }
        for (samples, name) in [(full, "FULL"), (normal, "NORMAL")] {
            let mut rates: Vec<f64> = samples.iter().map(|s| s.0).collect();
            let mut commit: Vec<f64> = samples.iter().map(|s| s.1).collect();
            cells.push(Cell {
                batch,
                synchronous: name,
                records,
                records_per_s: median_f(&mut rates),
                commit_ms_median: median_f(&mut commit),
            });
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if spec.json {
        println!("{}", serde_json::to_string(&cells)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "SQLite intake appends, synchronous FULL (flowhost's default) vs NORMAL; median of {} alternating rounds, a fresh file each",
        spec.rounds.max(1)
    );
    println!(
        "{:>8} {:>9} {:>10} {:>14} {:>16} {:>12}",
        "batch", "records", "setting", "records/s", "commit ms (p50)", "FULL costs"
    );
    for pair in cells.chunks(2) {
        let (f, n) = (&pair[0], &pair[1]);
        for c in pair {
            let cost = if c.synchronous == "FULL" {
                format!("{:+.0}%", (n.records_per_s / f.records_per_s - 1.0) * 100.0)
            } else {
                String::new()
            };
            println!(
                "{:>8} {:>9} {:>10} {:>14.0} {:>16.2} {:>12}",
                c.batch, c.records, c.synchronous, c.records_per_s, c.commit_ms_median, cost
            );
        }
    }
    println!(
        "(\"FULL costs\": how much faster NORMAL appends; each FULL commit waits for the disk)"
    );
    Ok(ExitCode::SUCCESS)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn median_f(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or_default()
}

//! `flowhost-bench http`: the load check of the HTTP API. A `flowhost serve` child process
//! on a loopback port and a fresh database; N concurrent clients post the generated
//! workload in NDJSON requests; then the views are awaited and checked: every record
//! acknowledged is in intake once, and keyed or parked for a reason.

use crate::modes::FreshDb;
use anyhow::{Context, Result, bail};
use flowhost::workload;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

/// What the clients send, and how the service runs.
pub struct Load {
    pub clients: usize,
    pub records: u64,
    pub per_request: usize,
    pub json: bool,
    /// Settings (`section.key=value`) of the `serve` child.
    pub set: Vec<String>,
    /// A second run in the same invocation with this setting added: the variant to compare.
    pub compare: Option<String>,
    /// Also run the CLI's batched pipeline (`ingest` + `process`) on the same workload, in the
    /// same invocation, and report serve's end-to-end rate against it.
    pub batched: bool,
}

pub async fn run(db: &str, plugins: &Path, load: Load) -> Result<ExitCode> {
    let mut variants = vec![load.set.clone()];
    if let Some(extra) = &load.compare {
        variants.push(load.set.iter().cloned().chain([extra.clone()]).collect());
    }
    let mut outs = Vec::new();
    for (i, set) in variants.iter().enumerate() {
        let dir = tempfile_dir()?;
        let fresh = FreshDb::new(db, &dir, &format!("http{i}")).await?;
        let result = measure(&fresh.url, plugins, &load, set).await;
        fresh.drop().await;
        let _ = std::fs::remove_dir_all(&dir);
        let mut out = result?;
        out["settings"] = json!(set);
        if !load.json {
            print_table(&out);
        }
        outs.push(out);
    }
    if load.batched {
        let batched = crate::modes::batched_child(db, plugins, load.records)?;
        let rate = batched["records_per_s"].as_f64().unwrap_or(0.0);
        for out in &mut outs {
            let serve = out["end_to_end_records_per_s"].as_f64().unwrap_or(0.0);
            out["batched_records_per_s"] = json!(rate.round() as u64);
            out["serve_over_batched"] = json!((serve / rate.max(1e-9) * 100.0).round() / 100.0);
            if !load.json {
                println!(
                    "  vs CLI      batched pipeline {} records/s (cores {:.2}): serve end to end = {:.2} of it",
                    rate.round(),
                    batched["cores_busy"].as_f64().unwrap_or(0.0),
                    out["serve_over_batched"].as_f64().unwrap_or(0.0)
                );
            }
        }
    }
    if load.json {
        match outs.len() {
            1 => println!("{}", outs[0]),
            _ => println!("{}", Value::Array(outs)),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A `flowhost serve` child on a loopback port of its own, logging at warn (its log drained
/// in the background): the child and its base URL, once it listens.
pub(crate) async fn spawn_serve(
    url: &str,
    plugins: &Path,
    set: &[String],
) -> Result<(tokio::process::Child, String)> {
    let mut child = tokio::process::Command::new(crate::flowhost_binary()?)
        .args(["--db", url, "--plugins"])
        .arg(plugins)
        .args(set.iter().flat_map(|s| ["--set", s.as_str()]))
        .args(["--listen", "127.0.0.1:0", "--log", "warn", "serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("start flowhost serve")?;
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().context("stderr")?).lines();
    let mut said = Vec::new();
    let base = loop {
        let Some(line) = stderr.next_line().await? else {
            bail!(
                "flowhost serve exited before listening: {}",
                said.join("\n")
            );
        };
        said.push(line.clone());
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest
                .split([',', ' '])
                .next()
                .unwrap_or_default()
                .to_string();
        }
    };
    // Keep draining the child's log so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
    Ok((child, base))
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("flowhost-bench-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The generated workload of about `records` records as NDJSON bodies of `per_body` lines
/// each (the last one shorter), and how many lines in all.
pub(crate) fn workload_bodies(records: u64, per_body: usize) -> Result<(Vec<Vec<u8>>, usize)> {
    let mut workload = Vec::new();
    workload::generate(records, &mut workload)?;
    let lines: Vec<&[u8]> = workload
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let bodies = lines
        .chunks(per_body.max(1))
        .map(|chunk| {
            let mut body = chunk.join(&b'\n');
            body.push(b'\n');
            body
        })
        .collect();
    Ok((bodies, lines.len()))
}

async fn measure(url: &str, plugins: &Path, load: &Load, set: &[String]) -> Result<Value> {
    let (bodies, lines) = workload_bodies(load.records, load.per_request)?;

    let (mut child, base) = spawn_serve(url, plugins, set).await?;

    let client = reqwest::Client::new();
    let cpu_at_start = child.id().and_then(cpu_seconds_of).unwrap_or(0.0);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let per_client: Vec<Vec<Vec<u8>>> = (0..load.clients.max(1))
        .map(|c| {
            bodies
                .iter()
                .skip(c)
                .step_by(load.clients.max(1))
                .cloned()
                .collect()
        })
        .collect();
    for bodies in per_client {
        let (client, base) = (client.clone(), base.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(bodies.len());
            let (mut accepted, mut duplicates, mut refused) = (0u64, 0u64, 0u64);
            for body in bodies {
                let sent = Instant::now();
                let response = client
                    .post(format!("{base}/v1/records"))
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .await?;
                let status = response.status();
                let answer: Value = serde_json::from_str(&response.text().await?)?;
                if status != 200 {
                    bail!("request answered {status}: {answer}");
                }
                latencies.push(sent.elapsed());
                accepted += answer["accepted"].as_u64().unwrap_or(0);
                duplicates += answer["duplicates"].as_u64().unwrap_or(0);
                refused += answer["refused"].as_u64().unwrap_or(0);
            }
            anyhow::Ok((latencies, accepted, duplicates, refused))
        });
    }
    let mut latencies = Vec::new();
    let (mut accepted, mut duplicates, mut refused) = (0, 0, 0);
    while let Some(done) = tasks.join_next().await {
        let (l, a, d, r) = done??;
        latencies.extend(l);
        accepted += a;
        duplicates += d;
        refused += r;
    }
    let intake_s = started.elapsed().as_secs_f64();

    // Until the views have caught up with everything acknowledged.
    let idle = loop {
        let models: Value = serde_json::from_str(
            &client
                .get(format!("{base}/v1/models"))
                .send()
                .await?
                .text()
                .await?,
        )?;
        let list = models["models"].as_array().cloned().unwrap_or_default();
        let waiting: i64 = list
            .iter()
            .map(|m| {
                m["counts"]["pending"].as_i64().unwrap_or(0)
                    + m["counts"]["dirty"].as_i64().unwrap_or(0)
            })
            .sum();
        if waiting == 0 {
            break models;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the views did not catch up within 10 minutes: {models}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let views_s = started.elapsed().as_secs_f64();
    let list = idle["models"].as_array().cloned().unwrap_or_default();
    let keyed: i64 = list
        .iter()
        .map(|m| m["counts"]["keyed"].as_i64().unwrap_or(0))
        .sum();
    let parked: i64 = list
        .iter()
        .flat_map(|m| {
            m["counts"]["parked"]
                .as_object()
                .cloned()
                .unwrap_or_default()
        })
        .map(|(_, n)| n.as_i64().unwrap_or(0))
        .sum();
    let stored = idle["intake"].as_i64().unwrap_or(-1);
    // Shadow runs (a candidate in `<plugins>/shadow/`): how far each got by the time the
    // live views caught up (it runs behind them, off the live path).
    let plugins: Value = serde_json::from_str(
        &client
            .get(format!("{base}/v1/plugins"))
            .send()
            .await?
            .text()
            .await?,
    )?;
    let shadows: Vec<Value> = plugins["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["shadow"].is_object())
        .map(|p| {
            let s = &p["shadow"];
            json!({"model": p["model"], "records": s["records"], "skipped": s["skipped"],
                "record_diffs": s["record_diffs"], "view_diffs": s["view_diffs"]})
        })
        .collect();

    // The cores the service kept busy from the first request until the views caught up.
    let cores = child
        .id()
        .and_then(cpu_seconds_of)
        .map(|cpu| (cpu - cpu_at_start) / views_s.max(1e-9));
    // SIGTERM: the service must stop cleanly.
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with SIGTERM on our own child.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let status = child.wait().await?;

    latencies.sort();
    let pct = |q: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * q).round() as usize)
            .map(|d| (d.as_secs_f64() * 1e4).round() / 10.0)
            .unwrap_or(0.0)
    };
    let lines_sent = lines as u64;
    let out = json!({
        "backend": if url.starts_with("postgres") { "postgres" } else { "sqlite" },
        "clients": load.clients,
        "requests": bodies.len(),
        "records_per_request": load.per_request,
        "lines_sent": lines_sent,
        "accepted": accepted,
        "duplicates": duplicates,
        "refused": refused,
        "intake_seconds": (intake_s * 100.0).round() / 100.0,
        "requests_per_s": (bodies.len() as f64 / intake_s).round() as u64,
        "records_per_s": (lines_sent as f64 / intake_s).round() as u64,
        "request_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)},
        "views_caught_up_seconds": (views_s * 100.0).round() / 100.0,
        "end_to_end_records_per_s": (lines_sent as f64 / views_s).round() as u64,
        "cores_busy": cores.map(|c| (c * 100.0).round() / 100.0),
        "stored": stored,
        "keyed": keyed,
        "parked": parked,
        "every_acknowledged_record_stored_once": stored == accepted as i64,
        "every_stored_record_keyed_or_parked": keyed + parked == stored,
        "serve_exit": status.code(),
        "shadow_runs": shadows,
    });
    if stored != accepted as i64 || keyed + parked != stored || !status.success() {
        bail!("the load check failed: {out}");
    }
    Ok(out)
}

fn print_table(v: &Value) {
    let settings: Vec<&str> = v["settings"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    println!(
        "HTTP load on {}: {} clients, {} requests of {} records ({} lines); settings: {}",
        v["backend"].as_str().unwrap_or("?"),
        v["clients"],
        v["requests"],
        v["records_per_request"],
        v["lines_sent"],
        if settings.is_empty() {
            "defaults".to_string()
        } else {
            settings.join(" ")
        }
    );
    println!(
        "  intake      {} s: {} requests/s, {} records/s; request p50 {} ms, p99 {} ms, max {} ms",
        v["intake_seconds"],
        v["requests_per_s"],
        v["records_per_s"],
        v["request_ms"]["p50"],
        v["request_ms"]["p99"],
        v["request_ms"]["max"]
    );
    println!(
        "  answers     accepted {}, duplicates {}, refused {}",
        v["accepted"], v["duplicates"], v["refused"]
    );
    println!(
        "  views       caught up after {} s ({} records/s end to end); serve kept {} cores busy",
        v["views_caught_up_seconds"], v["end_to_end_records_per_s"], v["cores_busy"]
    );
    println!(
        "  check       stored {} (= accepted), keyed {} + parked {} = stored; serve exited {}",
        v["stored"], v["keyed"], v["parked"], v["serve_exit"]
    );
    for r in v["shadow_runs"].as_array().into_iter().flatten() {
        println!(
            "  shadow      {}: {} records compared, {} skipped, {} differ, by the time the views caught up",
            r["model"].as_str().unwrap_or("?"),
            r["records"],
            r["skipped"],
            r["record_diffs"]
        );
    }
}

/// CPU seconds (user and system) a process has used so far, from `/proc/<pid>/stat`.
pub(crate) fn cpu_seconds_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces) end with ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    // utime and stime: fields 14 and 15 of the line, 12 and 13 after the name and state.
    let (user, system) = (ticks(11)?, ticks(12)?);
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((user + system) / per_second.max(1.0))
}

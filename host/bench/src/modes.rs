//! `flowhost-bench`: the same workload through three modes, each in its own process on a
//! fresh database, in one invocation:
//!
//! - `batched`: the real pipeline (ingest, association, projection) with adaptive batching;
//! - `per_record`: the same code with batch size 1 everywhere: one intake transaction, one
//!   plugin call, one lookup and one commit per record (the N+1 pattern), sampled on a
//!   prefix of the workload and extrapolated;
//! - `floor`: the least work any implementation must do for the input: parse every line and
//!   write the rows the batched run wrote (intake, queue, keys, keyed, parked, dirty marks,
//!   views, changes), in large batches through the same store, with no plugin and no
//!   decisions;
//! - `plain` (SQLite only): the reference both are held to, one plain row per record
//!   (`rows.rs`).
//!
//! Each mode runs in a child process (`--only MODE`) so that its peak RSS is its own.

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use flowhost::{app, ingest, workload};
use flowhost_core::batch::BatchConfig;
use flowhost_core::intake::parse_line;
use flowhost_engine::{EngineConfig, RunReport};
use flowhost_store::{AssociationOutcome, KeyedRow, Lease, ParkRow, Stage, Store, ViewRow};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Batched,
    PerRecord,
    Floor,
    /// The reference (SQLite only): each line parsed and inserted as one row of a plain
    /// table, 5,000 rows a transaction.
    Plain,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Batched => "batched",
            Mode::PerRecord => "per_record",
            Mode::Floor => "floor",
            Mode::Plain => "plain",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Sweep {
    /// The batched pipeline at fixed batch sizes 1 … 5,000.
    BatchSize,
    /// The batched pipeline with 1, 2 and 4 projection workers per model.
    ProjectWorkers,
}

#[derive(Debug, Args)]
pub struct ModesArgs {
    /// Records in the workload.
    #[arg(long, default_value_t = 100_000)]
    pub records: u64,
    /// `per_record` (and batch sizes under 50 in a sweep) run on this many records from the
    /// start of the workload; their rates are extrapolated.
    #[arg(long, default_value_t = 5_000)]
    pub sample: u64,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Run a sweep instead of the three modes.
    #[arg(long, value_enum)]
    pub sweep: Option<Sweep>,
    /// Peak RSS of the batched mode at 100,000 vs 1,000,000 records.
    #[arg(long)]
    pub memory: bool,
    /// Run one mode in this process (how the modes' child processes are started).
    #[arg(long, value_enum, hide = true)]
    pub only: Option<Mode>,
    /// With `--only batched`: a fixed batch size instead of the adaptive one.
    #[arg(long, hide = true)]
    pub batch_size: Option<usize>,
    /// With `--only batched`: projection workers per model instead of the default.
    #[arg(long, hide = true)]
    pub project_workers: Option<usize>,
    /// With `--only floor`: the rows to write, as `keys,keyed,parked,views`.
    #[arg(long, hide = true)]
    pub rows: Option<String>,
}

/// What the modes take from the settings: the store's options (a child process opens its
/// fresh database with them) and the `--set` flags handed on to child processes, so that
/// `flowhost-bench --set database.sqlite_cache_mb=… --memory` measures that setting.
#[derive(Debug, Clone, Default)]
pub struct FromSettings {
    pub store: flowhost_store::StoreOptions,
    pub forward: Vec<(String, String)>,
}

static SETTINGS: std::sync::OnceLock<FromSettings> = std::sync::OnceLock::new();

/// Sets what the modes take from the settings (once, at start).
pub fn configure(settings: FromSettings) {
    let _ = SETTINGS.set(settings);
}

fn settings() -> FromSettings {
    SETTINGS.get().cloned().unwrap_or_default()
}

/// The store options of the settings.
pub(crate) fn store_options() -> flowhost_store::StoreOptions {
    settings().store
}

/// The in-process benchmarks' set-up: the defaults over a database and a plugins folder,
/// with the store options of the settings.
pub(crate) fn env(url: &str, plugins: &Path) -> app::Env {
    app::Env {
        store: settings().store,
        ..app::Env::new(url, plugins)
    }
}

/// Runs `flowhost-bench` (without a subcommand).
pub fn run(args: ModesArgs, db: &str, plugins: &Path) -> Result<ExitCode> {
    if let Some(mode) = args.only {
        let result = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(child(mode, &args, db, plugins))?;
        println!("{result}");
        return Ok(ExitCode::SUCCESS);
    }
    if args.memory {
        return memory(&args, db, plugins);
    }
    if let Some(kind) = args.sweep {
        return sweep(kind, &args, db, plugins);
    }
    modes(&args, db, plugins)
}

/// Starts a child for one mode and reads its JSON answer.
fn spawn(db: &str, plugins: &Path, extra: &[String]) -> Result<Value> {
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(exe)
        .arg("--db")
        .arg(db)
        .arg("--plugins")
        .arg(plugins)
        .args(
            settings()
                .forward
                .iter()
                .flat_map(|(k, v)| ["--set".to_string(), format!("{k}={v}")]),
        )
        .args(extra)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot start a benchmark process")?;
    if !out.status.success() {
        bail!("benchmark process {extra:?} failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("benchmark process said: {text}"))
}

/// The batched pipeline on `records` records, in a child process of its own.
pub(crate) fn batched_child(db: &str, plugins: &Path, records: u64) -> Result<Value> {
    spawn(db, plugins, &child_args(Mode::Batched, records, records))
}

fn child_args(mode: Mode, records: u64, sample: u64) -> Vec<String> {
    vec![
        "--only".into(),
        mode.to_possible_value().unwrap().get_name().into(),
        "--records".into(),
        records.to_string(),
        "--sample".into(),
        sample.to_string(),
    ]
}

fn modes(args: &ModesArgs, db: &str, plugins: &Path) -> Result<ExitCode> {
    let batched = spawn(
        db,
        plugins,
        &child_args(Mode::Batched, args.records, args.sample),
    )?;
    let per_record = spawn(
        db,
        plugins,
        &child_args(Mode::PerRecord, args.records, args.sample),
    )?;
    let rows = &batched["rows"];
    let mut floor_args = child_args(Mode::Floor, args.records, args.sample);
    floor_args.push("--rows".into());
    floor_args.push(format!(
        "{},{},{},{}",
        rows["keys"], rows["keyed"], rows["parked"], rows["views"]
    ));
    let floor = spawn(db, plugins, &floor_args)?;
    // The plain reference is a SQLite file whatever the backend under test.
    let plain = (backend(db) == "sqlite")
        .then(|| {
            spawn(
                db,
                plugins,
                &child_args(Mode::Plain, args.records, args.sample),
            )
        })
        .transpose()?;
    let rate = |v: &Value| v["records_per_s"].as_f64().unwrap_or(0.0);
    let mut result = json!({
        "records": args.records,
        "backend": backend(db),
        "modes": {"batched": batched, "per_record": per_record, "floor": floor},
        "ratios": {
            "batched_over_per_record": rate(&batched) / rate(&per_record).max(1e-9),
            "batched_over_floor": rate(&batched) / rate(&floor).max(1e-9),
        },
    });
    if let Some(plain) = &plain {
        result["modes"]["plain"] = plain.clone();
        result["ratios"]["batched_over_plain"] = json!(rate(&batched) / rate(plain).max(1e-9));
        result["ratios"]["floor_over_plain"] = json!(rate(&floor) / rate(plain).max(1e-9));
    }
    if args.json {
        println!("{result}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "flowhost-bench: {} records on {}, each mode on a fresh database in its own process",
        args.records,
        backend(db)
    );
    let mut rows = vec![
        ("batched", &batched),
        ("per_record", &per_record),
        ("floor", &floor),
    ];
    if let Some(plain) = &plain {
        rows.push(("plain", plain));
    }
    table(&rows);
    let ratio = |k: &str| result["ratios"][k].as_f64().unwrap_or(0.0);
    println!(
        "batched / per_record = {:.1}×; batched / floor = {:.2}",
        ratio("batched_over_per_record"),
        ratio("batched_over_floor")
    );
    if plain.is_some() {
        println!(
            "batched / plain = {:.2}; floor / plain = {:.2} (plain: one row per record, the reference)",
            ratio("batched_over_plain"),
            ratio("floor_over_plain")
        );
    }
    if let Some(n) = per_record["sampled"].as_u64() {
        println!("per_record ran on the first {n} records and is extrapolated");
    }
    Ok(ExitCode::SUCCESS)
}

fn table(rows: &[(&str, &Value)]) {
    println!(
        "{:<12} {:>10} {:>12} {:>9} {:>9} {:>9} {:>9} {:>11} {:>11} {:>6} {:>8}",
        "mode",
        "records",
        "records/s",
        "stmt/1k",
        "ingest s",
        "assoc s",
        "project s",
        "batch p50",
        "batch p99",
        "cores",
        "RSS MB"
    );
    for (name, v) in rows {
        let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
        let stage = |k: &str| v["stages_s"][k].as_f64().unwrap_or(0.0);
        let ms = |k: &str| v["batch_latency_ms"][k].as_f64().unwrap_or(0.0);
        println!(
            "{:<12} {:>10} {:>12.0} {:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>9.1}ms {:>9.1}ms {:>6.2} {:>8.0}",
            name,
            v["records"].as_u64().unwrap_or(0),
            f("records_per_s"),
            f("statements_per_1000_records"),
            stage("ingest"),
            stage("associate"),
            stage("project"),
            ms("p50"),
            ms("p99"),
            f("cores_busy"),
            f("peak_rss_mb"),
        );
    }
}

fn sweep(kind: Sweep, args: &ModesArgs, db: &str, plugins: &Path) -> Result<ExitCode> {
    // (label, JSON field, value, the child's extra arguments)
    let runs: Vec<(String, &str, usize, Vec<String>)> = match kind {
        Sweep::BatchSize => [1usize, 10, 50, 100, 500, 1_000, 5_000]
            .into_iter()
            .map(|size| {
                let sample = if size < 50 { args.sample } else { args.records };
                let mut extra = child_args(Mode::Batched, args.records, sample);
                extra.extend(["--batch-size".into(), size.to_string()]);
                (format!("size {size}"), "batch_size", size, extra)
            })
            .collect(),
        Sweep::ProjectWorkers => [1usize, 2, 4]
            .into_iter()
            .map(|n| {
                let mut extra = child_args(Mode::Batched, args.records, args.records);
                extra.extend(["--project-workers".into(), n.to_string()]);
                (format!("{n} workers"), "project_workers", n, extra)
            })
            .collect(),
    };
    let mut results = Vec::new();
    for (label, field, value, extra) in runs {
        let v = spawn(db, plugins, &extra)?;
        results.push((label, field, value, v));
    }
    if args.json {
        let all: Vec<Value> = results
            .iter()
            .map(|(_, field, value, v)| json!({*field: value, "result": v}))
            .collect();
        println!("{}", json!({"records": args.records, "sweep": all}));
        return Ok(ExitCode::SUCCESS);
    }
    let name = kind.to_possible_value().unwrap().get_name().to_string();
    println!(
        "flowhost-bench --sweep {name}: {} records on {}{}",
        args.records,
        backend(db),
        match kind {
            Sweep::BatchSize => format!(
                " (sizes under 50 on the first {}, extrapolated)",
                args.sample
            ),
            Sweep::ProjectWorkers => String::new(),
        }
    );
    let rows: Vec<(&str, &Value)> = results
        .iter()
        .map(|(label, _, _, v)| (label.as_str(), v))
        .collect();
    table(&rows);
    Ok(ExitCode::SUCCESS)
}

fn memory(args: &ModesArgs, db: &str, plugins: &Path) -> Result<ExitCode> {
    let small = spawn(
        db,
        plugins,
        &child_args(Mode::Batched, 100_000, args.sample),
    )?;
    let large = spawn(
        db,
        plugins,
        &child_args(Mode::Batched, 1_000_000, args.sample),
    )?;
    if args.json {
        println!("{}", json!({"100000": small, "1000000": large}));
        return Ok(ExitCode::SUCCESS);
    }
    println!("flowhost-bench --memory: peak RSS of the batched pipeline by input size");
    table(&[("100k", &small), ("1M", &large)]);
    Ok(ExitCode::SUCCESS)
}

fn backend(db: &str) -> &'static str {
    if db.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    }
}

/// A fresh database for one mode: a SQLite file in `dir`, or a new PostgreSQL database
/// next to the one `db` names (dropped afterwards).
pub(crate) struct FreshDb {
    pub url: String,
    drop_pg: Option<(String, String)>,
}

impl FreshDb {
    pub async fn new(db: &str, dir: &Path, label: &str) -> Result<Self> {
        if !db.starts_with("postgres") {
            return Ok(Self {
                url: format!("sqlite://{}", dir.join("bench.db").display()),
                drop_pg: None,
            });
        }
        use sqlx::Connection;
        let name = format!("flowhost_bench_{label}_{}", std::process::id());
        let mut admin = sqlx::PgConnection::connect(db).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await?;
        let base = db.rsplit_once('/').map(|(b, _)| b).unwrap_or(db);
        Ok(Self {
            url: format!("{base}/{name}"),
            drop_pg: Some((db.to_string(), name)),
        })
    }

    pub async fn drop(self) {
        if let Some((admin, name)) = self.drop_pg {
            use sqlx::Connection;
            if let Ok(mut admin) = sqlx::PgConnection::connect(&admin).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await;
            }
        }
    }
}

/// CPU time this process has used so far (user and system, all threads), in seconds.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage(2) fills the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// The cores this process kept busy on average since `cpu_started` (from
/// [`cpu_seconds`]) over `wall` time. A database server's own work (PostgreSQL) is not in it.
pub(crate) fn cores_busy(cpu_started: f64, wall: std::time::Duration) -> f64 {
    (cpu_seconds() - cpu_started) / wall.as_secs_f64().max(1e-9)
}

/// Peak resident set size of this process, in MiB.
pub fn peak_rss_mb() -> f64 {
    // SAFETY: getrusage(2) fills the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    usage.ru_maxrss as f64 / 1024.0 // kilobytes on Linux
}

/// Writes the workload to a file, streaming (the workload never sits in memory); with
/// `take` set, only its first `take` lines. Returns the file and its line count.
pub(crate) fn workload_file(dir: &Path, records: u64, take: Option<u64>) -> Result<(PathBuf, u64)> {
    let file = dir.join("workload.ndjson");
    let mut out = Lines {
        inner: std::io::BufWriter::new(std::fs::File::create(&file)?),
        lines: 0,
        limit: take.unwrap_or(u64::MAX),
    };
    workload::generate(records, &mut out)?;
    std::io::Write::flush(&mut out.inner)?;
    Ok((file, out.lines))
}

/// A writer that counts lines and drops everything after the first `limit`.
struct Lines<W> {
    inner: W,
    lines: u64,
    limit: u64,
}

impl<W: std::io::Write> std::io::Write for Lines<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut end = 0;
        for (i, b) in buf.iter().enumerate() {
            if self.lines >= self.limit {
                break;
            }
            end = i + 1;
            if *b == b'\n' {
                self.lines += 1;
            }
        }
        self.inner.write_all(&buf[..end])?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn percentile_ms(report: &RunReport, q: f64) -> f64 {
    let mut all = report.associate.clone();
    all.latencies
        .extend(report.project.latencies.iter().copied());
    all.percentile(q).as_secs_f64() * 1e3
}

async fn child(mode: Mode, args: &ModesArgs, db: &str, plugins: &Path) -> Result<Value> {
    let dir = std::env::temp_dir().join(format!(
        "flowhost-bench-{}-{}",
        mode.name(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let fresh = FreshDb::new(db, &dir, mode.name()).await?;
    let take = match (mode, args.batch_size) {
        (Mode::PerRecord, _) => Some(args.sample),
        (Mode::Batched, Some(_)) if args.sample < args.records => Some(args.sample),
        _ => None,
    };
    let (file, lines) = workload_file(&dir, args.records, take)?;
    let result = match mode {
        Mode::Floor => floor(&fresh.url, &file, lines, args.rows.as_deref()).await,
        Mode::Plain => crate::rows::plain(&fresh.url, &file, lines).await,
        Mode::Batched | Mode::PerRecord => {
            let size = match mode {
                Mode::PerRecord => Some(1),
                _ => args.batch_size,
            };
            pipeline(
                &fresh.url,
                plugins,
                &file,
                lines,
                size,
                args.project_workers,
            )
            .await
        }
    };
    fresh.drop().await;
    let _ = std::fs::remove_dir_all(&dir);
    let mut v = result?;
    if let Some(t) = take {
        v["sampled"] = json!(t.min(lines));
    }
    Ok(v)
}

async fn pipeline(
    url: &str,
    plugins: &Path,
    file: &Path,
    lines: u64,
    batch_size: Option<usize>,
    project_workers: Option<usize>,
) -> Result<Value> {
    let mut config = EngineConfig::default();
    if let Some(size) = batch_size {
        config.associate = BatchConfig::fixed(size);
        config.project = BatchConfig::fixed(size);
    }
    if let Some(n) = project_workers {
        config.project_workers = n.max(1);
    }
    let env = env(url, plugins);
    let (engine, _registry) = app::engine(&env, config).await?;
    let store = engine.store().clone();
    let known: BTreeSet<String> = engine.plugins().models().into_iter().collect();
    if known.is_empty() {
        bail!("no plugins in {}", plugins.display());
    }
    let before = store.statements();
    let started = Instant::now();
    let cpu_started = cpu_seconds();
    let intake_batch = batch_size.unwrap_or(flowhost_edges::intake::BATCH);
    ingest::ingest(
        &store,
        file,
        &known,
        4 << 20,
        &Default::default(),
        false,
        intake_batch,
    )
    .await?;
    let ingest_time = started.elapsed();
    let report = engine
        .run_until_idle(flowhost_engine::OthersAtWork::Wait)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let total = started.elapsed();
    let cores = cores_busy(cpu_started, total);
    let statements = store.statements() - before;
    let counts = store.counts().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    store.close().await;
    let sum = |v: &[(String, i64)]| v.iter().map(|(_, n)| n).sum::<i64>();
    let mut v = mode_result(
        lines,
        (total, cores),
        statements,
        [ingest_time, report.associate.busy, report.project.busy],
        json!({
            "intake": counts.intake,
            "keys": counts.keys,
            "keyed": sum(&counts.keyed),
            "parked": counts.parked.iter().map(|(_, _, n)| n).sum::<i64>(),
            "views": sum(&counts.references),
        }),
    );
    v["stages_s"]["process_wall"] = json!(report.elapsed.as_secs_f64());
    v["batches"] =
        json!({"associate": report.associate.batches, "project": report.project.batches});
    v["batch_latency_ms"] =
        json!({"p50": percentile_ms(&report, 0.5), "p99": percentile_ms(&report, 0.99)});
    Ok(v)
}

/// One mode's answer: rates, statements, per-stage times (ingest, associate, project), the
/// cores it kept busy on average, peak RSS, and the rows it wrote.
pub(crate) fn mode_result(
    lines: u64,
    (total, cores): (std::time::Duration, f64),
    statements: u64,
    [ingest, associate, project]: [std::time::Duration; 3],
    rows: Value,
) -> Value {
    json!({
        "records": lines,
        "records_per_s": lines as f64 / total.as_secs_f64(),
        "seconds": total.as_secs_f64(),
        "statements_per_1000_records": statements as f64 * 1000.0 / lines as f64,
        "stages_s": {
            "ingest": ingest.as_secs_f64(),
            "associate": associate.as_secs_f64(),
            "project": project.as_secs_f64(),
        },
        "batch_latency_ms": {"p50": 0.0, "p99": 0.0},
        "cores_busy": cores,
        "peak_rss_mb": peak_rss_mb(),
        "rows": rows,
    })
}

/// The floor's hold on a stage of a model: its association lease, or its projection claims.
fn floor_lease(stage: Stage, model: &str) -> Lease {
    Lease {
        stage,
        model: model.to_string(),
        holder: "floor".into(),
    }
}

/// The floor: parse, then write the batched run's rows in large batches, no plugin.
async fn floor(url: &str, file: &Path, lines: u64, rows: Option<&str>) -> Result<Value> {
    const CHUNK: usize = 5_000;
    let quota: Vec<i64> = rows
        .unwrap_or("0,0,0,0")
        .split(',')
        .map(|n| n.trim().parse().unwrap_or(0))
        .collect();
    let (mut keys_left, mut keyed_left, mut parked_left, views) =
        (quota[0], quota[1], quota[2], quota[3]);
    // The first `views` references keyed are marked dirty, as association marks them.
    let mut dirty_left = views;
    let store = Store::open_with(url, &settings().store)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let err = |e: flowhost_store::StoreError| anyhow::anyhow!("{e}");
    let before = store.statements();
    let started = Instant::now();
    let cpu_started = cpu_seconds();

    // Parse every line, write intake (and queue) in large batches.
    let reader = std::io::BufReader::new(std::fs::File::open(file)?);
    let now = chrono::Utc::now();
    let mut batch = Vec::with_capacity(CHUNK);
    let mut models = BTreeSet::new();
    let mut payloads: Vec<String> = Vec::new();
    for line in reader.split(b'\n') {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        if let Ok(r) = parse_line(&line, now) {
            models.insert(r.model.clone());
            if payloads.len() < views as usize {
                payloads.push(r.payload.clone());
            }
            batch.push(r);
        }
        if batch.len() >= CHUNK {
            store.append(&batch).await.map_err(err)?;
            batch.clear();
        }
    }
    store.append(&batch).await.map_err(err)?;
    let ingest_time = started.elapsed();

    // Association's writes: keys, keyed and parked rows, the queue emptied.
    let assoc_started = Instant::now();
    let mut n = 0u64;
    for model in &models {
        let lease = floor_lease(Stage::Associate, model);
        store.acquire_lease(&lease, 60_000_000).await.map_err(err)?;
        loop {
            let pending = store.pending(model, CHUNK).await.map_err(err)?;
            if pending.is_empty() {
                break;
            }
            let mut o = AssociationOutcome {
                model: model.clone(),
                now_micros: flowhost_store::now_micros(),
                done: pending.iter().map(|p| p.pos).collect(),
                stamp: pending.last().map_or(0, |p| p.pos),
                ..Default::default()
            };
            for p in &pending {
                n += 1;
                let reference = format!("floor-{n}");
                if keyed_left > 0 {
                    keyed_left -= 1;
                    for k in 0..2 {
                        if keys_left > 0 && (k == 0 || keys_left > keyed_left) {
                            keys_left -= 1;
                            o.claims.push((format!("k{n}-{k}"), reference.clone()));
                        }
                    }
                    if dirty_left > 0 {
                        dirty_left -= 1;
                        o.dirty.push(reference.clone());
                    }
                    o.keyed.push(KeyedRow {
                        seq: p.record.seq,
                        reference: Some(reference),
                        parents: Vec::new(),
                    });
                } else if parked_left > 0 {
                    parked_left -= 1;
                    o.parked.push(ParkRow {
                        seq: p.record.seq,
                        reason: flowhost_core::ParkReason::NoKeys,
                        details: String::new(),
                        awaiting: None,
                        attempts: 1,
                        first_micros: o.now_micros,
                    });
                }
            }
            store.commit_association(&lease, &o).await?;
        }
    }
    let assoc_time = assoc_started.elapsed();

    // Projection's writes: the dirty marks claimed (reading each reference's records), the
    // views with payload-sized JSON, the change rows, the marks cleared.
    let project_started = Instant::now();
    let empty = "{}".to_string();
    let mut written = 0usize;
    for model in &models {
        let claim = floor_lease(Stage::Project, model);
        loop {
            let batch = store
                .claim_dirty(&claim, 2_000, 60_000_000)
                .await
                .map_err(err)?;
            if batch.seen.is_empty() {
                break;
            }
            let rows: Vec<ViewRow> = batch
                .seen
                .iter()
                .enumerate()
                .map(|(i, (reference, _))| {
                    let payload = payloads.get(written + i).unwrap_or(&empty);
                    ViewRow {
                        reference: reference.clone(),
                        model: model.clone(),
                        first_seq: (written + i) as i64,
                        canonical: payload.clone(),
                        root: payload.clone(),
                        lineage: payload.clone(),
                        parents: "{}".into(),
                        plugin_version: "floor".into(),
                    }
                })
                .collect();
            written += rows.len();
            store
                .commit_projection(&claim, &rows, &batch.seen, &[])
                .await?;
        }
    }
    let project_time = project_started.elapsed();
    let total = started.elapsed();
    let cores = cores_busy(cpu_started, total);
    let statements = store.statements() - before;
    store.close().await;
    Ok(mode_result(
        lines,
        (total, cores),
        statements,
        [ingest_time, assoc_time, project_time],
        json!({"keys": quota[0] - keys_left, "keyed": quota[1] - keyed_left, "parked": quota[2] - parked_left, "views": written}),
    ))
}

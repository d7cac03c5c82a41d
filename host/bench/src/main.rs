//! `flowhost-bench`: the benchmarks whose printed numbers go into BENCHMARKS.md, kept out of
//! the product binary. It takes the same settings as `flowhost` (`--config`, `FLOWHOST_…`,
//! `--db`, `--plugins`, `--set …`) and drives the product's crates directly, or the
//! `flowhost` binary where the benchmark is of the service (`http`, `latency`, `swap`).

mod durability;
mod hosts;
mod http;
mod latency;
mod modes;
mod nats;
mod rows;
mod swap;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use flowhost_core::{Group, KeyedRecord, Record, Source};
use flowhost_runtime::{Runtime, RuntimeConfig};
use flowhost_sdk::bindings::flowhost::plugin::types as guest;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// The device model's associate and default projection through wasm vs the same Rust
    /// code called natively, on generated records, in one run.
    Plugin {
        /// The device component [default: device.wasm in the plugins folder].
        #[arg(long)]
        wasm: Option<PathBuf>,
        /// How many records.
        #[arg(long, default_value_t = 120_000)]
        records: usize,
        /// Records per associate call.
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
        /// Rounds of all four measurements, alternating which path goes first; the
        /// figures reported are each round's, and their medians (one round is at the mercy
        /// of whatever else the machine is doing).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
        rounds: u32,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Bulk writes and lookups of the store vs the per-row path, in one run. Uses a fresh
    /// SQLite file unless `--db postgres://…` is given (it then writes rows of its own
    /// `bench-…` models into that database).
    Store {
        /// Records to write in bulk.
        #[arg(long, default_value_t = 100_000)]
        records: usize,
        /// Records written one per transaction (the per-row path, extrapolated).
        #[arg(long, default_value_t = 2_000)]
        per_row: usize,
    },
    /// What each table the pipeline writes costs on the embedded SQLite store, on its own,
    /// beside the plain reference (one row per record), on a fresh database.
    Tables {
        /// Records in the workload.
        #[arg(long, default_value_t = 100_000)]
        records: u64,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Intake → canonical latency of a running host fed at a fixed rate.
    Latency {
        /// Records per second.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// How long to feed.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// The HTTP API under load: concurrent clients post the workload to a `flowhost serve`
    /// child on loopback; then the views are awaited and checked against every answer.
    Http {
        /// Concurrent clients.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// About how many records in all.
        #[arg(long, default_value_t = 50_000)]
        records: u64,
        /// Records per request.
        #[arg(long, default_value_t = 500)]
        per_request: usize,
        /// A setting of the `serve` child, `section.key=value`; repeatable.
        #[arg(long = "serve-set")]
        serve_set: Vec<String>,
        /// Run the load a second time with this setting added, in the same invocation
        /// (e.g. `server.group_commit=false`), to compare the two.
        #[arg(long)]
        compare: Option<String>,
        /// Also run the CLI's batched pipeline on the same workload in this invocation, and
        /// report serve's end-to-end rate as a fraction of it.
        #[arg(long)]
        batched: bool,
        /// Print one JSON object (an array of two with --compare) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// How long a misbehaving plugin call takes to end under its time limit: a guest that
    /// sleeps, polls a far deadline or spins in `associate`, and one whose `describe`
    /// sleeps while it is loaded (the test fixtures).
    Faults {
        /// The `faulty` fixture [default: fixtures/faulty.wasm in the plugins folder].
        #[arg(long)]
        wasm: Option<PathBuf>,
        /// The `sleepy-describe` fixture [default: fixtures/sleepy-describe.wasm in the
        /// plugins folder].
        #[arg(long)]
        describe: Option<PathBuf>,
        /// The time limit of each call (and of `describe`).
        #[arg(long, default_value_t = 1_000)]
        timeout_ms: u64,
        /// Calls of each kind.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// What durable commits cost on the embedded SQLite store: intake appends with
    /// `synchronous=FULL` (the default) against `NORMAL`, for several batch sizes, rounds
    /// alternating in one run.
    Durability {
        /// Records per batch size (small batches use fewer: at most 400 commits).
        #[arg(long, default_value_t = 20_000)]
        records: usize,
        /// Records per append (one transaction each), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,100,2000")]
        batches: Vec<usize>,
        /// Rounds of each setting.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Print one JSON array instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// The same workload processed by 1, 2, 3 … `flowhost process --until-idle` processes
    /// at once on one PostgreSQL server (`--db postgres://…`; a fresh database per run,
    /// dropped after): seconds, records/s, and what each process did.
    Hosts {
        /// Process counts to run, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
        hosts: Vec<usize>,
        /// About how many records.
        #[arg(long, default_value_t = 50_000)]
        records: u64,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// The host fed from NATS JetStream (a `flowhost serve` child; streams of its own,
    /// deleted after): records/s from a backlog in the stream to canonical views (and to
    /// every change relayed), then the time from publishing a record at a steady rate to
    /// receiving its change from the changes stream.
    Nats {
        /// The NATS server.
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats: String,
        /// About how many records in the backlog.
        #[arg(long, default_value_t = 50_000)]
        records: u64,
        /// Lines per message.
        #[arg(long, default_value_t = 50)]
        per_message: usize,
        /// Records per second in the steady run.
        #[arg(long, default_value_t = 2_000)]
        rate: u64,
        /// How long the steady run publishes.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Hot-swap latency: a plugin file renamed into a watched folder until the new version
    /// serves, for versions never seen (compiled) and seen before (cached artefact).
    Swap {
        /// The first version [default: device.wasm in the plugins folder].
        #[arg(long)]
        v1: Option<PathBuf>,
        /// The second version, same model [default: fixtures/device-v2.wasm in the plugins
        /// folder].
        #[arg(long)]
        v2: Option<PathBuf>,
        /// Swaps of each kind.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
}

/// flowhost-bench: measures flowhost. Without a subcommand, the workload through the
/// `batched`, `per_record` and `floor` modes side by side (`--sweep batch-size`, `--memory`
/// for the other runs); those flags are for that run only, a subcommand has its own.
#[derive(clap::Parser)]
#[command(name = "flowhost-bench", version)]
struct BenchArgs {
    #[command(flatten)]
    settings: flowhost::settings::Settings,
    #[command(subcommand)]
    command: Option<BenchCommand>,
    #[command(flatten)]
    modes: modes::ModesArgs,
}

fn main() -> ExitCode {
    flowhost::settings::bound_malloc_arenas();
    let args = <BenchArgs as clap::Parser>::parse();
    let config = match args.settings.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    modes::configure(modes::FromSettings {
        store: config.store_options(),
        forward: args.settings.set.clone(),
    });
    flowhost::settings::init_tracing(
        config.log.filter.as_deref().unwrap_or("warn"),
        config.log.format,
    );
    match run(
        args,
        &config.database.url,
        &config.plugins.dir,
        config.engine(),
    ) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The product binary, built beside this one (`cargo build --release -p flowhost`).
fn flowhost_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("flowhost");
    if !bin.exists() {
        bail!(
            "{} is missing: this benchmark runs the product binary; build it with `cargo build --release -p flowhost`",
            bin.display()
        );
    }
    Ok(bin)
}

/// A component a benchmark needs: the one given, else `name` in the plugins folder; an
/// error that says how to get it when it is not there.
fn component(given: Option<PathBuf>, plugins: &std::path::Path, name: &str) -> Result<PathBuf> {
    let path = given.unwrap_or_else(|| plugins.join(name));
    if !path.is_file() {
        bail!(
            "{} is missing: pass --plugins target/plugins after `cargo xtask build-plugins` \
             (the benchmarks find their components in the plugins folder), or the file itself",
            path.display()
        );
    }
    Ok(path)
}

/// Runs an async benchmark on a runtime of its own.
fn block_on(bench: impl std::future::Future<Output = Result<ExitCode>>) -> Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench)
}

fn run(
    args: BenchArgs,
    db: &str,
    plugins: &std::path::Path,
    engine: flowhost_engine::EngineConfig,
) -> Result<ExitCode> {
    let Some(cmd) = args.command else {
        return modes::run(args.modes, db, plugins);
    };
    match cmd {
        BenchCommand::Latency {
            rate,
            seconds,
            json,
        } => block_on(latency::latency(db, plugins, engine, rate, seconds, json)),
        BenchCommand::Store { records, per_row } => block_on(store_bench(db, records, per_row)),
        BenchCommand::Tables { records, json } => block_on(rows::tables(db, records, json)),
        BenchCommand::Plugin {
            wasm,
            records,
            batch,
            rounds,
            json,
        } => plugin(
            &component(wasm, plugins, "device.wasm")?,
            records,
            batch,
            rounds as usize,
            json,
        ),
        BenchCommand::Http {
            clients,
            records,
            per_request,
            serve_set,
            compare,
            batched,
            json,
        } => block_on(http::run(
            db,
            plugins,
            http::Load {
                clients,
                records,
                per_request,
                json,
                set: serve_set,
                compare,
                batched,
            },
        )),
        BenchCommand::Nats {
            nats,
            records,
            per_message,
            rate,
            seconds,
            json,
        } => block_on(nats::run(
            db,
            plugins,
            nats::NatsLoad {
                url: nats,
                records,
                per_message,
                rate,
                seconds,
                json,
            },
        )),
        BenchCommand::Hosts {
            hosts,
            records,
            json,
        } => block_on(hosts::run(
            db,
            plugins,
            hosts::Hosts {
                hosts,
                records,
                json,
            },
        )),
        BenchCommand::Durability {
            records,
            batches,
            rounds,
            json,
        } => block_on(durability::run(durability::Durability {
            records,
            batches,
            rounds,
            json,
        })),
        BenchCommand::Swap {
            v1,
            v2,
            rounds,
            json,
        } => {
            let v1 = component(v1, plugins, "device.wasm")?;
            let v2 = component(v2, plugins, "fixtures/device-v2.wasm")?;
            block_on(swap::swap(&v1, &v2, rounds, json))
        }
        BenchCommand::Faults {
            wasm,
            describe,
            timeout_ms,
            rounds,
            json,
        } => faults(
            &component(wasm, plugins, "fixtures/faulty.wasm")?,
            &component(describe, plugins, "fixtures/sleepy-describe.wasm")?,
            Duration::from_millis(timeout_ms),
            rounds,
            json,
        ),
    }
}

/// Times misbehaving calls from their start until the host has their error.
fn faults(
    wasm: &std::path::Path,
    describe: &std::path::Path,
    limit: Duration,
    rounds: usize,
    as_json: bool,
) -> Result<ExitCode> {
    let runtime = Runtime::new(RuntimeConfig {
        call_timeout: limit,
        describe_timeout: limit,
        cache_dir: None,
        ..RuntimeConfig::default()
    })?;
    let plugin = runtime.load(wasm).map_err(|e| anyhow::anyhow!("{e}"))?;
    if plugin.description().model != "faulty" {
        bail!(
            "{}: this benchmark needs the faulty fixture",
            wasm.display()
        );
    }
    let record = |payload: Value| Record {
        seq: 1,
        model: "faulty".into(),
        source: Source {
            system: "bench".into(),
            adapter: "bench".into(),
        },
        external_id: "F-1".into(),
        occurred_at: "2026-01-01T00:00:00Z".into(),
        occurred_micros: 1_767_225_600_000_000,
        payload: payload.to_string(),
    };
    let cases = [
        ("sleeps an hour", json!({"key": "k", "sleep_ms": 3_600_000})),
        ("polls an hour away", json!({"key": "k", "poll": true})),
        ("spins", json!({"key": "k", "spin": true})),
    ];
    let mut rows: Vec<(&str, Vec<Duration>)> = Vec::new();
    for (name, payload) in cases {
        let input = [record(payload)];
        let mut took = Vec::with_capacity(rounds);
        for _ in 0..rounds.max(1) {
            let started = Instant::now();
            match plugin.associate(&input) {
                Err(flowhost_runtime::CallError::Timeout(_)) => took.push(started.elapsed()),
                other => bail!("{name}: expected the time limit, got {other:?}"),
            }
        }
        rows.push((name, took));
    }
    let mut took = Vec::with_capacity(rounds);
    for _ in 0..rounds.max(1) {
        let started = Instant::now();
        // Compiled each time (no cache), as a file dropped into the folder would be.
        match runtime.load(describe) {
            Err(e) if e.to_string().contains("exceeded its time limit") => {
                took.push(started.elapsed())
            }
            other => bail!(
                "describe: expected the time limit, got {:?}",
                other.map(|p| p.version().to_string())
            ),
        }
    }
    rows.push(("describe sleeps (compile + describe)", took));

    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let stats = |took: &[Duration]| {
        let mut sorted: Vec<f64> = took.iter().map(ms).collect();
        sorted.sort_by(f64::total_cmp);
        (sorted[sorted.len() / 2], sorted[sorted.len() - 1])
    };
    if as_json {
        let mut out = serde_json::Map::new();
        for (name, took) in &rows {
            let (median, max) = stats(took);
            out.insert(
                name.to_string(),
                json!({"median_ms": median.round(), "max_ms": max.round()}),
            );
        }
        println!(
            "{}",
            json!({"limit_ms": limit.as_millis() as u64, "rounds": rounds, "results": out})
        );
    } else {
        println!(
            "faulty fixture, time limit {} ms, {rounds} calls each: from the call to its error",
            limit.as_millis()
        );
        println!("{:<38} {:>10} {:>10}", "the guest…", "median ms", "max ms");
        for (name, took) in &rows {
            let (median, max) = stats(took);
            println!("{name:<38} {median:>10.0} {max:>10.0}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Device records from three systems; every serial is shared by three records.
fn device_records(n: usize) -> Vec<Record> {
    const SYSTEMS: [&str; 3] = ["bms", "oem", "crm"];
    (0..n)
        .map(|k| {
            let system = SYSTEMS[k % 3];
            let thing = k / 3;
            let serial = if k % 3 == 1 {
                format!(" SN-{thing:06} ")
            } else {
                format!("sn-{thing:06}")
            };
            let site = ["Roof", "Basement", "Plant room"][thing % 3];
            Record {
                seq: k as i64 + 1,
                model: "device".into(),
                source: Source {
                    system: system.into(),
                    adapter: format!("{system}-v1"),
                },
                external_id: format!("{}-{thing}", system.to_uppercase()),
                occurred_at: "2026-03-01T10:00:00Z".into(),
                occurred_micros: 1_772_359_200_000_000 + k as i64,
                payload: json!({
                    "serial": serial,
                    "name": format!("Chiller {thing}"),
                    "site": site,
                    "firmware": format!("1.{}", k % 7),
                    "location": {"floor": thing % 12, "room": format!("R{}", thing % 40)},
                    "tags": ["hvac", system],
                })
                .to_string(),
            }
        })
        .collect()
}

fn guest_record(r: &Record) -> guest::InputRecord {
    flowhost_sdk::glue::input_record(
        r.seq as u64,
        &r.source.system,
        &r.source.adapter,
        &r.external_id,
        &r.occurred_at,
        r.occurred_micros,
        &r.payload,
    )
}

fn guest_group(g: &Group) -> guest::Group {
    guest::Group {
        reference: g.reference.clone(),
        records: g
            .records
            .iter()
            .map(|k| guest::KeyedRecord {
                record: guest_record(&k.record),
                parents: Vec::new(),
            })
            .collect(),
    }
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn plugin(
    wasm: &std::path::Path,
    n: usize,
    batch: usize,
    rounds: usize,
    as_json: bool,
) -> Result<ExitCode> {
    if !wasm.exists() {
        bail!(
            "{}: not found — build the plugins first (cargo xtask build-plugins)",
            wasm.display()
        );
    }
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let plugin = runtime.load(wasm).map_err(|e| anyhow::anyhow!("{e}"))?;
    if plugin.description().model != "device" {
        bail!("{}: this benchmark needs the device model", wasm.display());
    }
    let records = device_records(n);
    let groups: Vec<Group> = records
        .chunks(3)
        .enumerate()
        .map(|(i, chunk)| Group {
            reference: format!("ref-{i}"),
            records: chunk
                .iter()
                .map(|r| KeyedRecord {
                    record: r.clone(),
                    parents: Vec::new(),
                })
                .collect(),
        })
        .collect();
    let group_batch = (batch / 3).max(1);

    // Warm both paths once so that neither pays first-touch costs in the measurement.
    plugin
        .associate(&records[..batch.min(n)])
        .context("associate")?;
    flowhost_sdk::glue::associate::<plugin_device::Device>(
        records[..batch.min(n)].iter().map(guest_record).collect(),
    );

    let wasm_assoc = || -> Result<(Duration, usize)> {
        let started = Instant::now();
        let mut keyed = 0;
        for chunk in records.chunks(batch) {
            keyed += plugin.associate(chunk).context("associate")?.len();
        }
        Ok((started.elapsed(), keyed))
    };
    let native_assoc = || {
        let started = Instant::now();
        let mut keyed = 0;
        for chunk in records.chunks(batch) {
            let input = chunk.iter().map(guest_record).collect();
            keyed += flowhost_sdk::glue::associate::<plugin_device::Device>(input).len();
        }
        (started.elapsed(), keyed)
    };
    let wasm_project = || -> Result<Duration> {
        let started = Instant::now();
        for chunk in groups.chunks(group_batch) {
            plugin.project(chunk).context("project")?;
        }
        Ok(started.elapsed())
    };
    let native_project = || {
        let started = Instant::now();
        for chunk in groups.chunks(group_batch) {
            let input = chunk.iter().map(guest_group).collect();
            flowhost_sdk::glue::project::<plugin_device::Device>(input);
        }
        started.elapsed()
    };

    // Each round times all four; odd rounds run the native path first, so that neither path
    // always runs on a cache (or a machine) the other has just warmed or loaded.
    let mut timed: Vec<[(Duration, Duration); 3]> = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let native_first = round % 2 == 1;
        let ((wa, keyed), (na, native_keyed)) = in_order(native_first, wasm_assoc, native_assoc)?;
        assert_eq!(keyed, native_keyed);
        let (wp, np) = in_order(native_first, wasm_project, native_project)?;
        timed.push([(wa, na), (wp, np), (wa + wp, na + np)]);
    }
    let names = ["associate", "project", "both"];
    let ratio = |(w, nat): (Duration, Duration)| w.as_secs_f64() / nat.as_secs_f64().max(1e-9);
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        }
    };
    // Per stage: the medians over rounds of the wasm rate, the native rate and the ratio.
    let medians: Vec<(f64, f64, f64)> = (0..3)
        .map(|stage| {
            let pick = |f: &dyn Fn((Duration, Duration)) -> f64| {
                median(timed.iter().map(|r| f(r[stage])).collect())
            };
            (
                pick(&|(w, _)| rate(n, w)),
                pick(&|(_, nat)| rate(n, nat)),
                pick(&ratio),
            )
        })
        .collect();
    if as_json {
        let mut out = serde_json::Map::new();
        for (name, (w, nat, r)) in names.iter().zip(&medians) {
            out.insert(
                name.to_string(),
                json!({
                    "wasm_records_per_s": w.round(),
                    "native_records_per_s": nat.round(),
                    "wasm_over_native": r,
                }),
            );
        }
        let each: Vec<Value> = timed
            .iter()
            .map(|r| {
                let mut round = serde_json::Map::new();
                for (name, &stage) in names.iter().zip(r) {
                    round.insert(name.to_string(), json!(ratio(stage)));
                }
                Value::Object(round)
            })
            .collect();
        println!(
            "{}",
            json!({"records": n, "batch": batch, "rounds": each, "results": out})
        );
    } else {
        println!(
            "device plugin, {n} records, {batch} records per associate call, {group_batch} groups of 3 per project call, {rounds} rounds (medians)"
        );
        println!(
            "{:<10} {:>16} {:>16} {:>14}   each round",
            "stage", "wasm rec/s", "native rec/s", "wasm/native"
        );
        for (stage, (name, (w, nat, r))) in names.iter().zip(&medians).enumerate() {
            let each: Vec<String> = timed
                .iter()
                .map(|round| format!("{:.2}", ratio(round[stage])))
                .collect();
            println!(
                "{:<10} {:>16.0} {:>16.0} {:>13.2}x   {}",
                name,
                w,
                nat,
                r,
                each.join(" ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs both paths of one measurement, the native one first when asked.
fn in_order<W, N>(
    native_first: bool,
    wasm: impl FnOnce() -> Result<W>,
    native: impl FnOnce() -> N,
) -> Result<(W, N)> {
    if native_first {
        let native = native();
        Ok((wasm()?, native))
    } else {
        Ok((wasm()?, native()))
    }
}

/// Intake records of a model unique to this run.
pub(crate) fn intake_records(
    model: &str,
    n: usize,
    offset: usize,
) -> Vec<flowhost_core::intake::IntakeRecord> {
    let now = chrono::Utc::now();
    (offset..offset + n)
        .map(|i| {
            let line = json!({"model": model, "source": {"system": "bench", "adapter": "bench-v1"},
                "id": format!("B-{i}"), "occurred_at": "2026-03-01T10:00:00Z",
                "payload": {"serial": format!("sn-{i:07}"), "name": format!("Chiller {i}"), "site": "Roof"}})
            .to_string();
            flowhost_core::intake::parse_line(line.as_bytes(), now).expect("generated line")
        })
        .collect()
}

async fn store_bench(db: &str, records: usize, per_row: usize) -> Result<ExitCode> {
    use flowhost_store::{AssociationOutcome, Lease, Stage, Store};
    let scratch = tempfile_dir()?;
    let url = if db.starts_with("postgres") {
        db.to_string()
    } else {
        format!("sqlite://{}", scratch.join("bench.db").display())
    };
    let store = Store::open(&url)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let model = format!("bench-{}", std::process::id());
    println!(
        "store benchmark on {} ({}), {records} records in bulk, {per_row} one per transaction",
        store.backend(),
        url
    );
    println!(
        "{:<28} {:>14} {:>14} {:>10} {:>14}",
        "operation", "bulk rows/s", "per-row rows/s", "ratio", "stmts/1k rows"
    );

    // Intake: each record is two rows (intake + queue).
    let bulk = intake_records(&model, records, 0);
    let before = store.statements();
    let started = Instant::now();
    for chunk in bulk.chunks(2_000) {
        store
            .append(chunk)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let bulk_time = started.elapsed();
    let bulk_stmts = store.statements() - before;
    let single = intake_records(&model, per_row, records);
    let started = Instant::now();
    for r in &single {
        store
            .append(std::slice::from_ref(r))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let single_time = started.elapsed();
    let row = |name: &str, rows: usize, t: Duration, rows1: usize, t1: Duration, stmts: u64| {
        let (a, b) = (rate(rows, t), rate(rows1, t1));
        println!(
            "{name:<28} {a:>14.0} {b:>14.0} {:>9.1}x {:>14.1}",
            a / b,
            stmts as f64 * 1000.0 / rows as f64
        );
    };
    row(
        "append intake (+queue)",
        records * 2,
        bulk_time,
        per_row * 2,
        single_time,
        bulk_stmts,
    );

    // Key claims: one commit per 5,000 keys vs one per key.
    let lease = Lease {
        stage: Stage::Associate,
        model: model.clone(),
        holder: "bench".into(),
    };
    store
        .acquire_lease(&lease, 600_000_000)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let claims: Vec<(String, String)> = (0..records)
        .map(|i| (format!("serial:{i:07}"), format!("ref-{i}")))
        .collect();
    let before = store.statements();
    let started = Instant::now();
    for chunk in claims.chunks(5_000) {
        let outcome = AssociationOutcome {
            model: model.clone(),
            claims: chunk.to_vec(),
            ..Default::default()
        };
        store
            .commit_association(&lease, &outcome)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let bulk_time = started.elapsed();
    let bulk_stmts = store.statements() - before;
    let started = Instant::now();
    for i in 0..per_row {
        let outcome = AssociationOutcome {
            model: model.clone(),
            claims: vec![(format!("single:{i:07}"), format!("ref-s{i}"))],
            ..Default::default()
        };
        store
            .commit_association(&lease, &outcome)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    row(
        "claim keys",
        records,
        bulk_time,
        per_row,
        started.elapsed(),
        bulk_stmts,
    );

    // Lookups: 1,000 keys in one call vs one call per key.
    let keys: Vec<String> = claims.iter().take(1_000).map(|c| c.0.clone()).collect();
    let before = store.statements();
    let started = Instant::now();
    let found = store
        .lookup_keys(&model, &keys)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let bulk_time = started.elapsed();
    let bulk_stmts = store.statements() - before;
    let started = Instant::now();
    for k in &keys {
        store
            .lookup_keys(&model, std::slice::from_ref(k))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    row(
        "look up 1,000 keys",
        keys.len(),
        bulk_time,
        keys.len(),
        started.elapsed(),
        bulk_stmts,
    );
    println!(
        "looking up 1,000 keys: {} found with {} statement(s)",
        found.len(),
        bulk_stmts
    );
    store.close().await;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("flowhost-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

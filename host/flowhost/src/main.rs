//! The flowhost binary: the CLI, configuration, tracing set-up and composition root.

mod app;
mod bench;
mod bench_latency;
mod bench_modes;
mod bench_swap;
mod demo;
mod export;
mod ingest;
mod plugins_cmd;
mod workload;

use anyhow::Result;

use clap::{Args, Parser, Subcommand};
use flowhost_core::ParkReason;
use flowhost_engine::EngineConfig;
use flowhost_store::ParkedFilter;
use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// flowhost: turns streams of partial, overlapping records from many source systems into one
/// canonical, lineage-tracked view per real-world thing.
#[derive(Parser)]
#[command(name = "flowhost", version, about)]
struct Cli {
    /// Database URL: `sqlite://PATH` (created if missing) or `postgres://…`.
    #[arg(
        long,
        global = true,
        env = "FLOWHOST_DB",
        default_value = "sqlite://flowhost.db"
    )]
    db: String,
    /// The plugins folder: `<anything>.wasm` components, each naming its model.
    #[arg(
        long,
        global = true,
        env = "FLOWHOST_PLUGINS",
        default_value = "./plugins"
    )]
    plugins: PathBuf,
    /// The longest one plugin call may run, in milliseconds.
    #[arg(
        long,
        global = true,
        env = "FLOWHOST_PLUGIN_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    plugin_timeout_ms: u64,
    /// The most memory one plugin instance may use, in MiB.
    #[arg(
        long,
        global = true,
        env = "FLOWHOST_PLUGIN_MEMORY_MB",
        default_value_t = 512
    )]
    plugin_memory_mb: usize,
    /// The most records (or references) in one plugin call.
    #[arg(
        long,
        global = true,
        env = "FLOWHOST_PLUGIN_MAX_BATCH",
        default_value_t = flowhost_runtime::Limits::DEFAULT_MAX_BATCH
    )]
    plugin_max_batch: usize,
    /// Limits of one model, over the defaults above: `MODEL:timeout_ms=N,memory_mb=N,max_batch=N`
    /// (any of the three). Repeat for several models.
    #[arg(long = "model-limit", global = true, value_parser = plugins_cmd::parse_model_limit)]
    model_limit: Vec<(String, plugins_cmd::ModelLimit)>,
    /// Where every plugin version that has been current is kept, for rollback
    /// (default: `<plugins>/.versions`).
    #[arg(long, global = true, env = "FLOWHOST_VERSIONS_DIR")]
    versions_dir: Option<PathBuf>,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `flowhost=debug`.
    #[arg(long, global = true, env = "FLOWHOST_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Stream NDJSON records (a file, or `-` for standard input) into intake.
    Ingest {
        /// The NDJSON file, or `-`.
        input: PathBuf,
        /// Lines longer than this are refused.
        #[arg(long, default_value_t = 4 << 20)]
        max_line_bytes: usize,
    },
    /// Run association and projection.
    Process {
        /// Stop when no work is left (parked records waiting for nothing new are not work).
        /// This is the only mode of `process`; `serve` runs continuously.
        #[arg(long)]
        until_idle: bool,
        /// Fixed batch size for both stages instead of the adaptive one (1 = one record,
        /// one plugin call and one transaction per batch).
        #[arg(long)]
        batch_size: Option<usize>,
    },
    /// Write a deterministic, realistic workload (NDJSON) to standard output.
    Generate {
        /// About how many records.
        #[arg(long, default_value_t = 100_000)]
        records: u64,
    },
    /// Print a view of a model as NDJSON, ordered by each reference's first intake.
    Export {
        #[arg(value_enum)]
        view: export::ViewKind,
        model: String,
    },
    /// List (or re-queue) parked records.
    Parked(ParkedArgs),
    /// Run the stages continuously until SIGINT/SIGTERM.
    Serve,
    /// Inspect and try plugins.
    #[command(subcommand)]
    Plugins(plugins_cmd::PluginsCommand),
    /// Measure flowhost: without a subcommand, the workload through `batched`, `per_record`
    /// and `floor` modes side by side (`--sweep batch-size`, `--memory` for the other runs).
    Bench(bench::BenchArgs),
    /// Generate a realistic workload, ingest and process it, and summarise.
    Demo {
        /// Records to generate.
        #[arg(long, default_value_t = 200_000)]
        records: u64,
    },
}

#[derive(Args)]
struct ParkedArgs {
    #[command(subcommand)]
    action: Option<ParkedAction>,
    /// Only this model.
    #[arg(long, global = true)]
    model: Option<String>,
    /// Only this reason (REJECTED, PARENT_NOT_FOUND, NO_KEYS, KEY_COLLISION, PLUGIN_FAILED).
    #[arg(long, global = true, value_parser = parse_reason)]
    reason: Option<ParkReason>,
    /// NDJSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum ParkedAction {
    /// Put the matching parked records back in the queue (e.g. after a plugin fix).
    Requeue,
}

fn parse_reason(s: &str) -> Result<ParkReason, String> {
    ParkReason::parse(s).ok_or_else(|| {
        let all: Vec<&str> = ParkReason::ALL.iter().map(|r| r.as_str()).collect();
        format!("unknown reason '{s}'; one of {}", all.join(", "))
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log);
    match run(cli) {
        Ok(code) => code,
        // A reader that stopped early (`… | head`) is not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Plugins(cmd) if !cmd.needs_database() => plugins_cmd::run(cmd),
        Command::Bench(cmd) => bench::run(cmd, &cli.db, &cli.plugins),
        command => {
            let limits = flowhost_runtime::RuntimeConfig {
                call_timeout: std::time::Duration::from_millis(cli.plugin_timeout_ms.max(1)),
                memory_limit: cli.plugin_memory_mb.max(1) << 20,
                ..flowhost_runtime::RuntimeConfig::default()
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let mut registry = flowhost_registry::RegistryConfig::new(cli.plugins);
            if let Some(dir) = cli.versions_dir {
                registry.versions_dir = dir;
            }
            registry.max_batch = cli.plugin_max_batch.max(1);
            for (model, limit) in cli.model_limit {
                let entry = registry.limits.entry(model).or_default();
                *entry = limit.over(*entry);
            }
            let env = app::Env {
                db: cli.db,
                registry,
                limits,
            };
            runtime.block_on(run_async(command, &env))
        }
    }
}

async fn run_async(command: Command, env: &app::Env) -> Result<ExitCode> {
    let db = env.db.as_str();
    match command {
        Command::Ingest {
            input,
            max_line_bytes,
        } => {
            let store = app::open_store(db).await?;
            app::open_registry(env, &store).await?;
            let known: BTreeSet<String> = store
                .models()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .into_iter()
                .map(|m| m.name)
                .collect();
            let summary =
                ingest::ingest(&store, &input, &known, max_line_bytes, true, ingest::BATCH).await?;
            if summary.accepted + summary.duplicates + summary.refused == 0 {
                eprintln!("{}: no records (the input is empty)", input.display());
            }
            println!(
                "accepted {}, duplicates {}, refused {}",
                summary.accepted, summary.duplicates, summary.refused
            );
            store.close().await;
            Ok(if summary.refused > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Process {
            until_idle: _,
            batch_size,
        } => {
            let mut config = EngineConfig::default();
            if let Some(size) = batch_size {
                config.associate = flowhost_core::batch::BatchConfig::fixed(size);
                config.project = flowhost_core::batch::BatchConfig::fixed(size);
            }
            let (engine, _registry) = app::engine(env, config).await?;
            let spinner = if std::io::stderr().is_terminal() {
                let s = indicatif::ProgressBar::new_spinner().with_message("processing");
                s.enable_steady_tick(std::time::Duration::from_millis(120));
                s
            } else {
                indicatif::ProgressBar::hidden()
            };
            let report = engine
                .run_until_idle()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            spinner.finish_and_clear();
            eprintln!(
                "associated {} records in {} batches, projected {} references in {} batches, healed {}, in {:.2} s",
                report.associate.items,
                report.associate.batches,
                report.project.items,
                report.project.batches,
                report.healed,
                report.elapsed.as_secs_f64()
            );
            engine.store().close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Export { view, model } => {
            let store = app::open_store(db).await?;
            let known = store.models().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            if !known.iter().any(|m| m.name == model) {
                let names: Vec<String> = known.into_iter().map(|m| m.name).collect();
                anyhow::bail!("unknown model '{model}'; known: {}", names.join(", "));
            }
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            export::export(&store, view, &model, &mut out).await?;
            std::io::Write::flush(&mut out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Parked(args) => {
            let store = app::open_store(db).await?;
            let filter = ParkedFilter {
                model: args.model,
                reason: args.reason,
            };
            match args.action {
                Some(ParkedAction::Requeue) => {
                    let n = store
                        .requeue(&filter)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    println!("requeued {n}");
                }
                None => {
                    let stdout = std::io::stdout();
                    let mut out = std::io::BufWriter::new(stdout.lock());
                    export::parked(&store, &filter, args.json, &mut out).await?;
                    std::io::Write::flush(&mut out)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve => {
            let (engine, registry) = app::engine(env, EngineConfig::default()).await?;
            let cancel = CancellationToken::new();
            let signal = cancel.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!("shutting down: finishing in-flight batches");
                signal.cancel();
            });
            let watcher = registry.watch(cancel.clone()).await?;
            eprintln!(
                "flowhost serving {} with models {}",
                db,
                engine.plugins().models().join(", ")
            );
            let report = engine
                .serve(cancel)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let _ = watcher.await;
            eprintln!(
                "stopped: associated {} records, projected {} references",
                report.associate.items, report.project.items
            );
            engine.store().close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { records } => demo::run(env, records).await,
        Command::Generate { records } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            workload::generate(records, &mut out)?;
            std::io::Write::flush(&mut out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugins(cmd) => plugins_cmd::run_with_database(cmd, env).await,
        Command::Bench(_) => unreachable!("handled without a runtime"),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

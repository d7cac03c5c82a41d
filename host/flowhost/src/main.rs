//! The flowhost binary: the CLI, configuration, tracing set-up and composition root.

mod app;
mod bench;
mod bench_durability;
mod bench_http;
mod bench_latency;
mod bench_modes;
mod bench_swap;
mod config;
mod demo;
mod export;
mod ingest;
mod plugins_cmd;
mod serve;
mod workload;

use anyhow::Result;

use clap::{Args, Parser, Subcommand};
use flowhost_core::ParkReason;
use flowhost_store::ParkedFilter;
use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// flowhost: turns streams of partial, overlapping records from many source systems into one
/// canonical, lineage-tracked view per real-world thing.
///
/// Settings come from `--config FILE` (TOML), then `FLOWHOST_…` environment variables, then
/// flags, each overriding the one before; `flowhost config` prints the result.
#[derive(Parser)]
#[command(name = "flowhost", version, about)]
struct Cli {
    /// A TOML configuration file (see examples/flowhost.toml).
    #[arg(long, global = true, env = "FLOWHOST_CONFIG")]
    config: Option<PathBuf>,
    /// Database URL: `sqlite://PATH` (created if missing) or `postgres://…`
    /// [database.url, FLOWHOST_DB; default sqlite://flowhost.db].
    #[arg(long, global = true)]
    db: Option<String>,
    /// The plugins folder: `<anything>.wasm` components, each naming its model
    /// [plugins.dir, FLOWHOST_PLUGINS; default ./plugins].
    #[arg(long, global = true)]
    plugins: Option<PathBuf>,
    /// The longest one plugin call may run, in milliseconds
    /// [plugins.timeout_ms, FLOWHOST_PLUGIN_TIMEOUT_MS; default 10000].
    #[arg(long, global = true)]
    plugin_timeout_ms: Option<u64>,
    /// The most memory one plugin instance may use, in MiB
    /// [plugins.memory_mb, FLOWHOST_PLUGIN_MEMORY_MB; default 512].
    #[arg(long, global = true)]
    plugin_memory_mb: Option<usize>,
    /// The most records (or references) in one plugin call
    /// [plugins.max_batch, FLOWHOST_PLUGIN_MAX_BATCH; default 10000].
    #[arg(long, global = true)]
    plugin_max_batch: Option<usize>,
    /// Limits of one model, over the defaults above: `MODEL:timeout_ms=N,memory_mb=N,max_batch=N`
    /// (any of the three) [plugins.models.MODEL.*]. Repeat for several models.
    #[arg(long = "model-limit", global = true, value_parser = config::parse_model_limit)]
    model_limit: Vec<Vec<(String, String)>>,
    /// Where every plugin version that has been current is kept, for rollback
    /// [plugins.versions_dir, FLOWHOST_VERSIONS_DIR; default <plugins>/.versions].
    #[arg(long, global = true)]
    versions_dir: Option<PathBuf>,
    /// The HTTP API's address for `serve` [server.listen, FLOWHOST_LISTEN; default
    /// 127.0.0.1:8080]; port 0 picks a free port (printed at start).
    #[arg(long, global = true)]
    listen: Option<String>,
    /// The bearer token of the admin routes [server.admin_token, FLOWHOST_ADMIN_TOKEN].
    #[arg(long, global = true)]
    admin_token: Option<String>,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `flowhost=debug`
    /// [log.filter, FLOWHOST_LOG; default info for serve, warn otherwise].
    #[arg(long, global = true)]
    log: Option<String>,
    /// Log format [log.format, FLOWHOST_LOG_FORMAT; default text].
    #[arg(long, global = true, value_enum)]
    log_format: Option<config::LogFormat>,
    /// Any setting, as `section.key=value` (e.g. `stages.associate.max_batch=2000`);
    /// repeatable. The specific flags above win over it.
    #[arg(long = "set", global = true, value_parser = config::parse_set)]
    set: Vec<(String, String)>,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// The flags as configuration keys, weakest first.
    fn flag_settings(&self) -> Vec<(String, String)> {
        let mut out = self.set.clone();
        let path = |p: &PathBuf| p.display().to_string();
        let pairs: [(&str, Option<String>); 9] = [
            ("database.url", self.db.clone()),
            ("plugins.dir", self.plugins.as_ref().map(path)),
            (
                "plugins.timeout_ms",
                self.plugin_timeout_ms.map(|v| v.to_string()),
            ),
            (
                "plugins.memory_mb",
                self.plugin_memory_mb.map(|v| v.to_string()),
            ),
            (
                "plugins.max_batch",
                self.plugin_max_batch.map(|v| v.to_string()),
            ),
            ("plugins.versions_dir", self.versions_dir.as_ref().map(path)),
            ("server.listen", self.listen.clone()),
            ("server.admin_token", self.admin_token.clone()),
            ("log.filter", self.log.clone()),
        ];
        out.extend(
            pairs
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_string(), v))),
        );
        if let Some(format) = self.log_format {
            let name = match format {
                config::LogFormat::Text => "text",
                config::LogFormat::Json => "json",
            };
            out.push(("log.format".into(), name.into()));
        }
        out.extend(self.model_limit.iter().flatten().cloned());
        out
    }
}

#[derive(Subcommand)]
enum Command {
    /// Stream NDJSON records (a file, or `-` for standard input) into intake.
    Ingest {
        /// The NDJSON file, or `-`.
        input: PathBuf,
        /// Lines longer than this are refused [server.max_line_bytes; default 4 MiB].
        #[arg(long)]
        max_line_bytes: Option<usize>,
    },
    /// Run association and projection.
    Process {
        /// `process` always stops when no work is left (parked records waiting for nothing
        /// new are not work); this flag only says so. `serve` runs continuously.
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
    /// Run as a service: the HTTP API, the stages and the plugins folder's watcher, until
    /// SIGINT/SIGTERM.
    Serve,
    /// Print the effective configuration (file, environment and flags merged) as TOML.
    Config,
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
    let layers = config::Layers {
        file: cli.config.as_deref(),
        env: std::env::vars().collect(),
        flags: cli.flag_settings(),
    };
    let config = match config::load(&layers) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let default_filter = if matches!(cli.command, Command::Serve) {
        "info"
    } else {
        "warn"
    };
    init_tracing(
        config.log.filter.as_deref().unwrap_or(default_filter),
        config.log.format,
    );
    match run(cli.command, config) {
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

fn init_tracing(filter: &str, format: config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("warning: log filter '{filter}' is invalid ({e}); logging warnings only");
        tracing_subscriber::EnvFilter::new("warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        config::LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        config::LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

fn run(command: Command, config: config::Config) -> Result<ExitCode> {
    match command {
        Command::Plugins(cmd) if !cmd.needs_database() => plugins_cmd::run(cmd),
        Command::Bench(cmd) => bench::run(cmd, &config.database.url, &config.plugins.dir),
        Command::Config => {
            print!("{}", config.to_toml());
            Ok(ExitCode::SUCCESS)
        }
        command => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let env = app::Env::from_config(&config);
            runtime.block_on(async {
                match command {
                    Command::Serve => serve::run(&env, &config).await,
                    command => run_async(command, &env, &config).await,
                }
            })
        }
    }
}

async fn run_async(command: Command, env: &app::Env, config: &config::Config) -> Result<ExitCode> {
    match command {
        Command::Ingest {
            input,
            max_line_bytes,
        } => {
            let store = env.open_store().await?;
            app::open_registry(env, &store).await?;
            let known: BTreeSet<String> = store
                .models()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .into_iter()
                .map(|m| m.name)
                .collect();
            let summary = ingest::ingest(
                &store,
                &input,
                &known,
                max_line_bytes.unwrap_or(config.server.max_line_bytes),
                &config.intake_limits(),
                true,
                flowhost_edges::intake::BATCH,
            )
            .await?;
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
            let mut engine_config = env.engine.clone();
            if let Some(size) = batch_size {
                engine_config.associate = flowhost_core::batch::BatchConfig::fixed(size);
                engine_config.project = flowhost_core::batch::BatchConfig::fixed(size);
            }
            let (engine, _registry) = app::engine(env, engine_config).await?;
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
            let store = env.open_store().await?;
            if let Some(message) = flowhost_edges::models::unknown_model(&store, &model)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
            {
                anyhow::bail!("{message}");
            }
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            export::export(&store, view, &model, &mut out).await?;
            std::io::Write::flush(&mut out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Parked(args) => {
            let store = env.open_store().await?;
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
        Command::Demo { records } => demo::run(env, records).await,
        Command::Generate { records } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            workload::generate(records, &mut out)?;
            std::io::Write::flush(&mut out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugins(cmd) => plugins_cmd::run_with_database(cmd, env).await,
        Command::Bench(_) | Command::Config | Command::Serve => {
            unreachable!("handled before")
        }
    }
}

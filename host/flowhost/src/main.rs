//! The flowhost binary: the CLI, configuration, tracing set-up and composition root.

mod demo;
mod export;
mod plugins_cmd;
mod reassociate_cmd;
mod scaffold;
mod serve;
mod shadow_cmd;

use flowhost::settings::{Settings, init_tracing};
use flowhost::{app, config, ingest, workload};

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
#[command(name = "flowhost", version)]
struct Cli {
    #[command(flatten)]
    settings: Settings,
    #[command(subcommand)]
    command: Command,
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
    /// Run the stages until no work is left: association (which reference each record
    /// belongs to) and projection (each reference's views).
    Process {
        /// `process` always stops when no work is left (parked records waiting for nothing
        /// new are not work); this flag only says so. `serve` runs continuously. While
        /// another live process (a `serve`, another `process`) holds a stage whose work is
        /// not done, `process` waits for it and says who it waits for.
        #[arg(long)]
        until_idle: bool,
        /// Do not wait for other processes: when another one holds a stage whose work is
        /// not done, stop at once with an error naming it (exit code 1).
        #[arg(long)]
        no_wait: bool,
        /// Fixed batch size for both stages instead of the adaptive one (1 = one record,
        /// one plugin call and one transaction per batch).
        #[arg(long)]
        batch_size: Option<usize>,
    },
    /// Decide a model's records again under its current plugin version (after a key-rule
    /// change: earlier records keep the associations their version made until then).
    /// References are kept where the grouping did not change; the merges and splits are
    /// printed first. Needs the model's association: while a host serves the model, ask it
    /// (`POST /v1/models/MODEL/reassociate`) or stop it first.
    Reassociate {
        model: String,
        /// Only print what would change.
        #[arg(long)]
        dry_run: bool,
        /// The report as one JSON object (every merge and split).
        #[arg(long)]
        json: bool,
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
    /// List the processes at work on the database: every `serve` that announced itself
    /// (address, version, started, last seen, live or not) and what each holds (which stage
    /// of which model, since when), then processes holding a lease without announcing
    /// themselves (a `process` run).
    Hosts {
        /// One JSON object per process (what `GET /v1/hosts` lists).
        #[arg(long)]
        json: bool,
    },
    /// Inspect and try plugins.
    #[command(subcommand)]
    Plugins(plugins_cmd::PluginsCommand),
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
    flowhost::settings::bound_malloc_arenas();
    let cli = Cli::parse();
    let config = match cli.settings.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let default_filter = if matches!(cli.command, Command::Serve) {
        // The NATS client logs every reconnection attempt at info; flowhost says once when
        // the connection goes and comes.
        "info,async_nats=warn"
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

fn run(command: Command, config: config::Config) -> Result<ExitCode> {
    match command {
        Command::Plugins(cmd) if !cmd.needs_database() => plugins_cmd::run(cmd),
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
            no_wait,
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
                .run_until_idle(if no_wait {
                    flowhost_engine::OthersAtWork::Stop
                } else {
                    flowhost_engine::OthersAtWork::Wait
                })
                .await;
            let report = match report {
                Ok(report) => report,
                Err(e) => {
                    spinner.finish_and_clear();
                    engine.store().close().await;
                    return Err(anyhow::anyhow!("{e}"));
                }
            };
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
        Command::Reassociate {
            model,
            dry_run,
            json,
        } => reassociate_cmd::run(env, &model, dry_run, json).await,
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
        Command::Hosts { json } => {
            let store = env.open_store().await?;
            let live_within = env.engine.lease_ttl.as_micros() as i64;
            let hosts = flowhost_edges::hosts::hosts_json(&store, None, live_within)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            store.close().await;
            if json {
                for h in &hosts {
                    println!("{h}");
                }
            } else {
                print_hosts(&hosts);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Config | Command::Serve => {
            unreachable!("handled before")
        }
    }
}

/// `flowhost hosts` for people: one paragraph per process.
fn print_hosts(hosts: &[serde_json::Value]) {
    if hosts.is_empty() {
        println!(
            "no processes at work: no `serve` has announced itself on this database and no \
             process holds a lease"
        );
        return;
    }
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    for h in hosts {
        let state = match (h["live"].as_bool(), h["listen"].is_null()) {
            (_, true) => "a process holding leases (not a serve)".to_string(),
            (Some(true), false) => format!("serve on {}, live", text(&h["listen"])),
            _ => format!(
                "serve on {}, NOT live (last seen {}: stopped without saying so, or cut off)",
                text(&h["listen"]),
                text(&h["last_seen"])
            ),
        };
        println!("{}  {state}", text(&h["id"]));
        if !h["started"].is_null() {
            println!(
                "  version {}, started {}, last seen {}",
                text(&h["version"]),
                text(&h["started"]),
                text(&h["last_seen"])
            );
        }
        let leases = h["leases"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if leases.is_empty() {
            println!("  holds no stage");
        }
        for l in leases {
            println!(
                "  holds {} of {} since {}",
                text(&l["stage"]),
                text(&l["model"]),
                text(&l["since"])
            );
        }
    }
}

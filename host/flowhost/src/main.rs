//! The flowhost binary: the CLI, configuration, tracing set-up and composition root.

mod bench;
mod plugins_cmd;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `flowhost=debug`.
    #[arg(long, global = true, env = "FLOWHOST_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect and try plugins.
    #[command(subcommand)]
    Plugins(plugins_cmd::PluginsCommand),
    /// Measure flowhost.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log);
    match run(cli) {
        Ok(code) => code,
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
        .init();
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Plugins(cmd) => plugins_cmd::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
    }
}

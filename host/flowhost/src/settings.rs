//! The settings every flowhost binary takes (the product's `flowhost`, the benchmarks'
//! `flowhost-bench`): `--config FILE`, then `FLOWHOST_…` variables, then flags, each
//! overriding the one before.

use crate::config::{self, Config};
use std::io::IsTerminal;
use std::path::PathBuf;

/// The global flags.
#[derive(clap::Args, Debug, Default)]
pub struct Settings {
    /// A TOML configuration file (see examples/flowhost.toml).
    #[arg(long, global = true, env = "FLOWHOST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Database URL: `sqlite://PATH` (created if missing) or `postgres://…`
    /// [database.url, FLOWHOST_DB; default sqlite://flowhost.db].
    #[arg(long, global = true)]
    pub db: Option<String>,
    /// The plugins folder: `<anything>.wasm` components, each naming its model
    /// [plugins.dir, FLOWHOST_PLUGINS; default ./plugins].
    #[arg(long, global = true)]
    pub plugins: Option<PathBuf>,
    /// The longest one plugin call may run, in milliseconds
    /// [plugins.timeout_ms, FLOWHOST_PLUGIN_TIMEOUT_MS; default 10000].
    #[arg(long, global = true)]
    pub plugin_timeout_ms: Option<u64>,
    /// The most memory one plugin instance may use, in MiB
    /// [plugins.memory_mb, FLOWHOST_PLUGIN_MEMORY_MB; default 512].
    #[arg(long, global = true)]
    pub plugin_memory_mb: Option<usize>,
    /// The most records (or references) in one plugin call
    /// [plugins.max_batch, FLOWHOST_PLUGIN_MAX_BATCH; default 10000].
    #[arg(long, global = true)]
    pub plugin_max_batch: Option<usize>,
    /// Limits of one model, over the defaults above: `MODEL:timeout_ms=N,memory_mb=N,max_batch=N`
    /// (any of the three) [plugins.models.MODEL.*]. Repeat for several models.
    #[arg(long = "model-limit", global = true, value_parser = crate::config::parse_model_limit)]
    pub model_limit: Vec<Vec<(String, String)>>,
    /// Where every plugin version that has been current is kept, for rollback
    /// [plugins.versions_dir, FLOWHOST_VERSIONS_DIR; default <plugins>/.versions].
    #[arg(long, global = true)]
    pub versions_dir: Option<PathBuf>,
    /// The HTTP API's address for `serve` [server.listen, FLOWHOST_LISTEN; default
    /// 127.0.0.1:8080]; port 0 picks a free port (printed at start).
    #[arg(long, global = true)]
    pub listen: Option<String>,
    /// The bearer token of the admin routes [server.admin_token, FLOWHOST_ADMIN_TOKEN].
    #[arg(long, global = true)]
    pub admin_token: Option<String>,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `flowhost=debug`
    /// [log.filter, FLOWHOST_LOG; default info for serve (the NATS client's own lines at warn), warn otherwise].
    #[arg(long, global = true)]
    pub log: Option<String>,
    /// Log format [log.format, FLOWHOST_LOG_FORMAT; default text].
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<crate::config::LogFormat>,
    /// Any setting, as `section.key=value` (e.g. `stages.associate.max_batch=2000`);
    /// repeatable. The specific flags above win over it.
    #[arg(long = "set", global = true, value_parser = crate::config::parse_set)]
    pub set: Vec<(String, String)>,
}

impl Settings {
    /// The flags as configuration keys, weakest first.
    pub fn flag_settings(&self) -> Vec<(String, String)> {
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
                crate::config::LogFormat::Text => "text",
                crate::config::LogFormat::Json => "json",
            };
            out.push(("log.format".into(), name.into()));
        }
        out.extend(self.model_limit.iter().flatten().cloned());
        out
    }
}

impl Settings {
    /// The effective configuration: file, then environment, then these flags.
    pub fn load(&self) -> anyhow::Result<Config> {
        let layers = config::Layers {
            file: self.config.as_deref(),
            env: std::env::vars().collect(),
            flags: self.flag_settings(),
        };
        config::load(&layers)
    }
}

/// Logs to standard error under `filter`, as text or JSON lines.
pub fn init_tracing(filter: &str, format: crate::config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("warning: log filter '{filter}' is invalid ({e}); logging warnings only");
        tracing_subscriber::EnvFilter::new("warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        crate::config::LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        crate::config::LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// Bounds glibc's malloc arenas to two (one per core of the machines flowhost is measured
/// on) unless `MALLOC_ARENA_MAX` says otherwise. glibc gives busy threads arenas of their
/// own, up to eight per core, and each keeps the memory its batches freed: with the stage
/// workers, the SQLite connection threads and the runtime's threads, that was about 70 MB
/// of a 1M-record run's peak RSS, for no measured speed (BENCHMARKS.md: memory). Call it
/// first thing in `main`, before any thread starts.
pub fn bound_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a tunable of the allocator; called before other threads.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

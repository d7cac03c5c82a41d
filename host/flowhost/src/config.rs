//! flowhost's configuration: one TOML file (`--config`), `FLOWHOST_…` environment variables
//! and flags, in that order of strength (a flag beats the environment, which beats the
//! file); every setting has a default, so no file is needed. `flowhost config` prints the
//! result.
//!
//! Every setting `section.key` can come from the variable `FLOWHOST_SECTION_KEY` (dots and
//! dashes become `_`), e.g. `FLOWHOST_SERVER_LISTEN`, and from the flag `--set
//! section.key=value`; the common ones also have their own flags and short variables
//! (`--db` / `FLOWHOST_DB`, …, see [`ALIASES`]).

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// All settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub database: Database,
    pub plugins: Plugins,
    pub server: Server,
    pub intake: Intake,
    pub stages: Stages,
    pub changes: Changes,
    pub log: Log,
}

/// The longest `stages.intake_wake_gather_ms`.
const MAX_GATHER_MS: u64 = 1_000;

/// The change feed (`GET /v1/changes`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Changes {
    /// How long a change stays readable; older ones are deleted (checked every minute).
    /// With the relay on, a change not yet relayed is kept however old.
    pub keep_hours: u64,
    /// With `intake.nats_url` set: relay the change feed to the stream `nats_stream`.
    pub nats_relay: bool,
    /// The stream changes are relayed to (created when missing, over `<nats_subject>.>`).
    pub nats_stream: String,
    /// Each change is published to `<nats_subject>.<model>`.
    pub nats_subject: String,
}

impl Default for Changes {
    fn default() -> Self {
        Self {
            keep_hours: 168,
            nats_relay: true,
            nats_stream: "FLOWHOST_CHANGES".into(),
            nats_subject: "flowhost.changes".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Database {
    /// `sqlite://PATH` (created if missing) or `postgres://…`.
    pub url: String,
    /// Connections in the pool. On SQLite one of them is the writer: this process's writes
    /// take it in turn, the others read.
    pub pool_size: u32,
    /// How long a SQLite write waits for the write lock: its turn at this process's writer,
    /// and another process's write. On PostgreSQL: how long a statement waits for a
    /// connection of the pool.
    pub busy_timeout_ms: u64,
    /// SQLite: `full` flushes every commit to disk before it returns (an acknowledged
    /// record survives a power failure); `normal` survives a crash of the process only.
    pub sqlite_synchronous: Synchronous,
    /// SQLite: the page cache of the whole pool, in MiB, shared out evenly between its
    /// connections. It bounds the host's memory whatever the size of the database.
    pub sqlite_cache_mb: u32,
    /// SQLite: prepared statements kept per connection. Batch statements differ by their
    /// number of rows, and one of thousands of rows holds megabytes: the bound keeps memory
    /// flat as batch sizes vary.
    pub sqlite_statement_cache: usize,
}

/// How SQLite commits reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    #[default]
    Full,
    Normal,
}

impl Default for Database {
    fn default() -> Self {
        Self {
            url: "sqlite://flowhost.db".into(),
            pool_size: 8,
            busy_timeout_ms: 30_000,
            sqlite_synchronous: Synchronous::Full,
            sqlite_cache_mb: flowhost_store::StoreOptions::default().sqlite_cache_mb,
            sqlite_statement_cache: flowhost_store::StoreOptions::default().sqlite_statement_cache,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Plugins {
    /// The watched folder of `*.wasm` components.
    pub dir: PathBuf,
    /// Where every version that has been current is kept (default `<dir>/.versions`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions_dir: Option<PathBuf>,
    /// The longest one plugin call may run.
    pub timeout_ms: u64,
    /// The most memory one plugin instance may use.
    pub memory_mb: usize,
    /// The most records (or references) in one plugin call.
    pub max_batch: usize,
    /// The longest compiling one component may take.
    pub compile_timeout_s: u64,
    /// The longest `describe` may run when a plugin is loaded.
    pub describe_timeout_ms: u64,
    /// The longest each call of the validation probe may run.
    pub probe_timeout_ms: u64,
    /// How long narrowing down the failing records of one batch may take in all.
    pub isolation_budget_ms: u64,
    /// The longest key (aggregation or parent) a plugin may return.
    pub max_key_bytes: usize,
    /// The largest view (canonical, lineage or root) of one reference a plugin may return.
    pub max_view_bytes: usize,
    /// The largest plugin file the folder takes.
    pub max_file_mb: u64,
    /// The most plugin calls that run at once (all models together); more wait their turn.
    pub call_slots: u32,
    /// Roll a model back on its own when a new version does clearly worse than the one
    /// before on its first `watch_records` records (`serve` only).
    pub auto_rollback: bool,
    /// How many records of a new version are judged.
    pub watch_records: usize,
    /// Limits of single models over the ones above.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, ModelLimit>,
}

impl Default for Plugins {
    fn default() -> Self {
        let runtime = flowhost_runtime::RuntimeConfig::default();
        let engine = flowhost_engine::EngineConfig::default();
        Self {
            dir: "./plugins".into(),
            versions_dir: None,
            timeout_ms: runtime.call_timeout.as_millis() as u64,
            memory_mb: runtime.memory_limit >> 20,
            max_batch: flowhost_runtime::Limits::DEFAULT_MAX_BATCH,
            compile_timeout_s: runtime.compile_timeout.as_secs(),
            describe_timeout_ms: runtime.describe_timeout.as_millis() as u64,
            probe_timeout_ms: runtime.probe_timeout.as_millis() as u64,
            isolation_budget_ms: engine.isolation_budget.as_millis() as u64,
            max_key_bytes: runtime.output.max_key_bytes,
            max_view_bytes: runtime.output.max_view_bytes,
            max_file_mb: flowhost_registry::RegistryConfig::DEFAULT_MAX_FILE_BYTES >> 20,
            call_slots: runtime.call_slots,
            auto_rollback: true,
            watch_records: engine.watch_records,
            models: BTreeMap::new(),
        }
    }
}

/// One model's limits (any of the three).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelLimit {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batch: Option<usize>,
}

impl ModelLimit {
    /// As the registry takes them.
    pub fn to_override(self) -> flowhost_registry::LimitOverride {
        flowhost_registry::LimitOverride {
            call_timeout: self
                .timeout_ms
                .map(|ms| std::time::Duration::from_millis(ms.max(1))),
            memory_limit: self.memory_mb.map(|mb| mb.max(1) << 20),
            max_batch: self.max_batch.map(|n| n.max(1)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    /// The HTTP API's address (`serve`).
    pub listen: String,
    /// Required as `Authorization: Bearer <token>` on the admin routes; a non-loopback
    /// `listen` needs one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    /// The largest request body (413 above it).
    pub body_limit_bytes: usize,
    /// The longest NDJSON line (refused above it), for HTTP and `ingest`.
    pub max_line_bytes: usize,
    /// On SIGTERM/SIGINT: how long in-flight requests and batches may take to finish.
    pub shutdown_deadline_s: u64,
    /// The most requests served at once; more get 503 with `retry-after`.
    pub max_concurrent_requests: usize,
    /// How long a request body may send nothing before the request ends (408).
    pub body_idle_timeout_s: u64,
    /// How long a client may take to send a request's headers (the connection closes).
    pub header_read_timeout_s: u64,
    /// The longest one request may take in all.
    pub request_timeout_s: u64,
    /// The most open connections; more are closed at once.
    pub max_connections: usize,
    /// HTTP intake: concurrent requests share transactions (group commit), each answered
    /// once its own records are durable. Unset: on with SQLite (one writer: shared commits
    /// are several times faster), off with PostgreSQL (which commits concurrent
    /// transactions in parallel, and measured faster without).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_commit: Option<bool>,
    /// How long a shared transaction waits for more requests once it has one (0: it takes
    /// what is waiting and commits).
    pub group_commit_linger_ms: u64,
    /// The most records in one shared transaction.
    pub group_commit_max_records: usize,
}

impl Default for Server {
    fn default() -> Self {
        let d = flowhost_server::ServerConfig::default();
        Self {
            listen: d.listen.to_string(),
            admin_token: None,
            body_limit_bytes: d.body_limit,
            max_line_bytes: d.max_line_bytes,
            shutdown_deadline_s: 30,
            max_concurrent_requests: d.max_concurrent_requests,
            body_idle_timeout_s: d.body_idle_timeout.as_secs(),
            header_read_timeout_s: d.header_read_timeout.as_secs(),
            request_timeout_s: d.request_timeout.as_secs(),
            max_connections: d.max_connections,
            group_commit: None,
            group_commit_linger_ms: 0,
            group_commit_max_records: flowhost_edges::group::GroupConfig::default().max_records,
        }
    }
}

/// What one record may hold (HTTP and `ingest`); a line over a limit is refused naming it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Intake {
    pub max_id_bytes: usize,
    /// For `source.system` and `source.adapter`.
    pub max_system_bytes: usize,
    pub max_payload_bytes: usize,
    /// Nesting of objects and arrays in a payload.
    pub max_depth: usize,
    /// Values (strings, numbers, booleans, nulls) in one payload.
    pub max_values: usize,
    /// How far ahead of the intake clock `occurred_at` may be, in seconds.
    pub max_future_s: u64,
    /// The NATS server (`nats://host:port`) whose JetStream `serve` takes records from and
    /// relays the change feed to; unset: no NATS.
    pub nats_url: Option<String>,
    /// With `nats_url` set: take records from the stream `nats_stream`.
    pub nats_consume: bool,
    /// The stream records come from (created when missing, over `nats_subjects`).
    pub nats_stream: String,
    /// Its subjects, comma-separated.
    pub nats_subjects: String,
    /// The durable consumer every host shares.
    pub nats_consumer: String,
    /// A refused line is published to `<nats_refused_subject>.<model>`.
    pub nats_refused_subject: String,
    /// The stream that keeps refused lines (created when missing); empty: none.
    pub nats_refused_stream: String,
    /// The most messages appended in one transaction.
    pub nats_batch_messages: usize,
    /// How long a batch waits for more messages once it has one, in milliseconds.
    pub nats_linger_ms: u64,
}

impl Default for Intake {
    fn default() -> Self {
        let d = flowhost_core::intake::IntakeLimits::default();
        Self {
            max_id_bytes: d.max_id_bytes,
            max_system_bytes: d.max_system_bytes,
            max_payload_bytes: d.max_payload_bytes,
            max_depth: d.max_depth,
            max_values: d.max_values,
            max_future_s: d.max_future.as_secs(),
            nats_url: None,
            nats_consume: true,
            nats_stream: "FLOWHOST_INTAKE".into(),
            nats_subjects: "flowhost.intake.>".into(),
            nats_consumer: "flowhost".into(),
            nats_refused_subject: "flowhost.refused".into(),
            nats_refused_stream: "FLOWHOST_REFUSED".into(),
            nats_batch_messages: 500,
            nats_linger_ms: 5,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Stages {
    pub associate: StageBatch,
    pub project: StageBatch,
    /// How often an idle stage looks for new work.
    pub idle_poll_ms: u64,
    /// How long a stage's lease lasts without renewal (renewed every third of it while a
    /// batch runs); a host that stops loses its leases within this time.
    pub lease_ttl_ms: u64,
    /// Projection workers per model in this process, each claiming its own references.
    pub project_workers: usize,
    /// Records this process's intake appends wake association at once (after
    /// `intake_wake_gather_ms`) instead of at its next idle poll.
    pub intake_wakes_association: bool,
    /// How long a woken association waits for more appends before it looks.
    pub intake_wake_gather_ms: u64,
}

impl Default for Stages {
    fn default() -> Self {
        let e = flowhost_engine::EngineConfig::default();
        Self {
            associate: StageBatch::from(e.associate),
            project: StageBatch::from(e.project),
            idle_poll_ms: e.idle_poll.as_millis() as u64,
            lease_ttl_ms: e.lease_ttl.as_millis() as u64,
            project_workers: e.project_workers,
            intake_wakes_association: e.intake_wake.is_some(),
            intake_wake_gather_ms: e.intake_wake.unwrap_or_default().as_millis() as u64,
        }
    }
}

/// Batch size bounds and latency target of a stage: batches grow while they finish under
/// the target and shrink when they take longer. A setting left out keeps the stage's
/// default.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StageBatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_batch: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batch: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_batch: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_latency_ms: Option<u64>,
}

impl From<flowhost_core::batch::BatchConfig> for StageBatch {
    fn from(b: flowhost_core::batch::BatchConfig) -> Self {
        Self {
            min_batch: Some(b.min),
            max_batch: Some(b.max),
            initial_batch: Some(b.initial),
            target_latency_ms: Some(b.target.as_millis() as u64),
        }
    }
}

impl StageBatch {
    /// These settings over `defaults`.
    fn over(self, defaults: StageBatch) -> StageBatch {
        StageBatch {
            min_batch: self.min_batch.or(defaults.min_batch),
            max_batch: self.max_batch.or(defaults.max_batch),
            initial_batch: self.initial_batch.or(defaults.initial_batch),
            target_latency_ms: self.target_latency_ms.or(defaults.target_latency_ms),
        }
    }

    fn to_batch(self, name: &str) -> Result<flowhost_core::batch::BatchConfig> {
        let (Some(min), Some(max), Some(initial), Some(target)) = (
            self.min_batch,
            self.max_batch,
            self.initial_batch,
            self.target_latency_ms,
        ) else {
            bail!("stages.{name}: incomplete settings");
        };
        if min == 0 || min > initial || initial > max {
            bail!(
                "stages.{name}: need 0 < min_batch <= initial_batch <= max_batch, got {min} / {initial} / {max}"
            );
        }
        Ok(flowhost_core::batch::BatchConfig {
            min,
            max,
            initial,
            target: std::time::Duration::from_millis(target.max(1)),
        })
    }
}

/// How logs look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people: one readable line per event (colours in a terminal).
    #[default]
    Text,
    /// One JSON object per line with the span fields, for log collectors.
    Json,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// A tracing filter, e.g. `info` or `info,flowhost_engine=warn` (default: `info` for
    /// `serve`, `warn` for the other commands).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    pub format: LogFormat,
}

/// A setting in milliseconds as a duration (at least 1 ms).
fn ms(millis: u64) -> std::time::Duration {
    std::time::Duration::from_millis(millis.max(1))
}

/// Short variables kept beside the generated `FLOWHOST_SECTION_KEY` ones.
pub const ALIASES: &[(&str, &str)] = &[
    ("FLOWHOST_DB", "database.url"),
    ("FLOWHOST_PLUGINS", "plugins.dir"),
    ("FLOWHOST_VERSIONS_DIR", "plugins.versions_dir"),
    ("FLOWHOST_PLUGIN_TIMEOUT_MS", "plugins.timeout_ms"),
    ("FLOWHOST_PLUGIN_MEMORY_MB", "plugins.memory_mb"),
    ("FLOWHOST_PLUGIN_MAX_BATCH", "plugins.max_batch"),
    ("FLOWHOST_LISTEN", "server.listen"),
    ("FLOWHOST_ADMIN_TOKEN", "server.admin_token"),
    ("FLOWHOST_LOG", "log.filter"),
];

/// Settings with no default (absent from the defaults' table) that can still be set, and
/// whether each is a boolean (else text).
const OPTIONAL: &[(&str, bool)] = &[
    ("plugins.versions_dir", false),
    ("server.admin_token", false),
    ("server.group_commit", true),
    ("intake.nats_url", false),
    ("log.filter", false),
];

/// `intake.nats_subjects` as a list.
fn nats_subjects(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// A subject: dot-separated tokens, none empty, no spaces; wildcards (`*`, a last `>`) only
/// where the setting takes them.
fn check_subject(key: &str, subject: &str, wildcards: bool) -> Result<()> {
    let tokens: Vec<&str> = subject.split('.').collect();
    let bad_token = |t: &&str| {
        t.is_empty()
            || t.chars().any(|c| c.is_whitespace() || c.is_control())
            || (t.contains(['*', '>']) && (!wildcards || t.len() > 1))
    };
    let misplaced_tail = tokens
        .iter()
        .enumerate()
        .any(|(n, t)| *t == ">" && n + 1 != tokens.len());
    if subject.is_empty() || tokens.iter().any(bad_token) || misplaced_tail {
        bail!(
            "{key}: '{subject}' is not a NATS subject{} (dot-separated names, no spaces)",
            if wildcards { "" } else { " without wildcards" }
        );
    }
    Ok(())
}

/// Every settable leaf (`section.key`) with an example of its type.
fn leaves() -> Vec<(String, Value)> {
    fn walk(prefix: &str, table: &Table, out: &mut Vec<(String, Value)>) {
        for (k, v) in table {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                Value::Table(t) => walk(&path, t, out),
                other => out.push((path, other.clone())),
            }
        }
    }
    let defaults = Table::try_from(Config::default()).expect("the defaults serialise");
    let mut out = Vec::new();
    walk("", &defaults, &mut out);
    out.extend(OPTIONAL.iter().map(|&(k, boolean)| {
        let example = match boolean {
            true => Value::Boolean(false),
            false => Value::String(String::new()),
        };
        (k.to_string(), example)
    }));
    out
}

/// The variable of a setting: `server.admin_token` → `FLOWHOST_SERVER_ADMIN_TOKEN`.
pub fn env_name(key: &str) -> String {
    format!(
        "FLOWHOST_{}",
        key.replace(['.', '-'], "_").to_ascii_uppercase()
    )
}

/// Parses `text` as the type of `example`.
fn typed(text: &str, example: &Value) -> Result<Value, String> {
    match example {
        Value::Integer(_) => text
            .trim()
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| format!("'{text}' is not a whole number")),
        Value::Float(_) => text
            .trim()
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|_| format!("'{text}' is not a number")),
        Value::Boolean(_) => match text.trim() {
            "true" | "1" | "yes" => Ok(Value::Boolean(true)),
            "false" | "0" | "no" => Ok(Value::Boolean(false)),
            _ => Err(format!("'{text}' is not true or false")),
        },
        _ => Ok(Value::String(text.to_string())),
    }
}

/// Sets `key` (dotted) in `table`, creating the sections on the way.
fn set(table: &mut Table, key: &str, value: Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("a key has a name");
    let mut at = table;
    for part in parts {
        at = at
            .entry(part.to_string())
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .expect("sections are tables");
    }
    at.insert(last.to_string(), value);
}

/// The layers, weakest first.
pub struct Layers<'a> {
    /// The `--config` file, if any.
    pub file: Option<&'a Path>,
    /// The environment (`std::env::vars()`, or a given list in tests).
    pub env: Vec<(String, String)>,
    /// Flags, as `(key, value)` in the order given.
    pub flags: Vec<(String, String)>,
}

/// Builds the configuration from its layers; an error names the file (with line), the
/// variable or the flag that is wrong.
pub fn load(layers: &Layers) -> Result<Config> {
    let mut table = Table::new();
    if let Some(file) = layers.file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the config file {}", file.display()))?;
        // Read alone first, so that its mistakes are reported with their line.
        toml::from_str::<Config>(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        table = text
            .parse::<Table>()
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    }
    let leaves = leaves();
    let example = |key: &str| leaves.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let mut from_env: BTreeMap<String, (String, String)> = BTreeMap::new();
    // Aliases first, so that the full name wins when both are set.
    for (var, key) in ALIASES {
        if let Some((_, v)) = layers.env.iter().find(|(name, _)| name == var) {
            from_env.insert(key.to_string(), (var.to_string(), v.clone()));
        }
    }
    for (key, _) in &leaves {
        let var = env_name(key);
        if let Some((_, v)) = layers.env.iter().find(|(name, _)| *name == var) {
            from_env.insert(key.clone(), (var, v.clone()));
        }
    }
    for (key, (var, text)) in from_env {
        let value = typed(&text, example(&key).expect("known key"))
            .map_err(|e| anyhow::anyhow!("environment variable {var}: {e}"))?;
        set(&mut table, &key, value);
    }
    for (key, text) in &layers.flags {
        if let Some(model_key) = key.strip_prefix("plugins.models.") {
            let (model, limit) = model_key.rsplit_once('.').unwrap_or((model_key, ""));
            if model.is_empty() || !["timeout_ms", "memory_mb", "max_batch"].contains(&limit) {
                bail!("--set {key}: expected plugins.models.MODEL.timeout_ms|memory_mb|max_batch");
            }
            let value =
                typed(text, &Value::Integer(0)).map_err(|e| anyhow::anyhow!("--set {key}: {e}"))?;
            set(&mut table, key, value);
            continue;
        }
        let Some(example) = example(key) else {
            let known: Vec<&str> = leaves.iter().map(|(k, _)| k.as_str()).collect();
            bail!(
                "--set {key}: no such setting; the settings are {}",
                known.join(", ")
            );
        };
        let value = typed(text, example).map_err(|e| anyhow::anyhow!("--set {key}: {e}"))?;
        set(&mut table, key, value);
    }
    let mut config: Config =
        Table::try_into(table).map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    let defaults = Stages::default();
    config.stages.associate = config.stages.associate.over(defaults.associate);
    config.stages.project = config.stages.project.over(defaults.project);
    config.check()?;
    Ok(config)
}

/// Parses `--set KEY=VALUE`.
pub fn parse_set(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| {
            format!("'{text}': expected section.key=value, e.g. server.listen=127.0.0.1:9000")
        })
}

/// Parses `--model-limit MODEL:timeout_ms=N,memory_mb=N,max_batch=N` into `--set` pairs.
pub fn parse_model_limit(text: &str) -> Result<Vec<(String, String)>, String> {
    let (model, settings) = text
        .split_once(':')
        .ok_or_else(|| format!("'{text}': expected MODEL:KEY=VALUE[,KEY=VALUE]"))?;
    if model.is_empty() {
        return Err(format!("'{text}': the model name is missing"));
    }
    let mut out = Vec::new();
    for setting in settings.split(',').filter(|s| !s.is_empty()) {
        let (key, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("'{setting}': expected KEY=VALUE"))?;
        if !["timeout_ms", "memory_mb", "max_batch"].contains(&key) {
            return Err(format!(
                "unknown limit '{key}'; one of timeout_ms, memory_mb, max_batch"
            ));
        }
        if value.parse::<u64>().is_err() {
            return Err(format!("{key}: '{value}' is not a whole number"));
        }
        out.push((format!("plugins.models.{model}.{key}"), value.to_string()));
    }
    Ok(out)
}

impl Config {
    fn check(&self) -> Result<()> {
        self.listen()?;
        self.stages.associate.to_batch("associate")?;
        self.stages.project.to_batch("project")?;
        if self.database.pool_size == 0 {
            bail!("database.pool_size must be at least 1");
        }
        if !(1..=10_000).contains(&self.database.sqlite_statement_cache) {
            bail!(
                "database.sqlite_statement_cache must be between 1 and 10000 (it is {})",
                self.database.sqlite_statement_cache
            );
        }
        if !(1..=65_536).contains(&self.database.sqlite_cache_mb) {
            bail!(
                "database.sqlite_cache_mb must be between 1 and 65536 (it is {})",
                self.database.sqlite_cache_mb
            );
        }
        if !(1..=64).contains(&self.stages.project_workers) {
            bail!(
                "stages.project_workers must be between 1 and 64 (it is {})",
                self.stages.project_workers
            );
        }
        // A woken association does not look for work while it gathers: a long wait would
        // stall it, and past the idle poll it gains nothing anyway.
        if self.stages.intake_wake_gather_ms > MAX_GATHER_MS {
            bail!(
                "stages.intake_wake_gather_ms must be at most {MAX_GATHER_MS} (it is {}); to \
                 leave association to its idle poll, set stages.intake_wakes_association = false",
                self.stages.intake_wake_gather_ms
            );
        }
        if self.plugins.auto_rollback && !(10..=1_000_000).contains(&self.plugins.watch_records) {
            bail!(
                "plugins.watch_records must be between 10 and 1000000 (it is {}); to turn the \
                 watching off, set plugins.auto_rollback = false",
                self.plugins.watch_records
            );
        }
        let slots = flowhost_runtime::RuntimeConfig::MAX_CALL_SLOTS;
        if !(1..=slots).contains(&self.plugins.call_slots) {
            bail!(
                "plugins.call_slots must be between 1 and {slots} (it is {})",
                self.plugins.call_slots
            );
        }
        self.check_nats()?;
        Ok(())
    }

    /// The NATS settings, checked whether or not a URL is set (a mistake shows at once, not
    /// the day NATS is turned on).
    fn check_nats(&self) -> Result<()> {
        let (i, c) = (&self.intake, &self.changes);
        if let Some(url) = &i.nats_url
            && !["nats://", "tls://", "ws://", "wss://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
        {
            bail!("intake.nats_url: '{url}' is not a NATS URL like nats://127.0.0.1:4222");
        }
        for (key, name) in [
            ("intake.nats_stream", &i.nats_stream),
            ("intake.nats_consumer", &i.nats_consumer),
            ("changes.nats_stream", &c.nats_stream),
        ] {
            if name.is_empty()
                || name.len() > 255
                || name
                    .chars()
                    .any(|ch| ch.is_whitespace() || ch.is_control() || ".*>/\\".contains(ch))
            {
                bail!(
                    "{key}: '{name}' is not a stream or consumer name (no spaces, '.', '*', '>', '/' or '\\')"
                );
            }
        }
        let subjects = nats_subjects(&i.nats_subjects);
        if subjects.is_empty() {
            bail!("intake.nats_subjects: at least one subject, e.g. flowhost.intake.>");
        }
        for subject in &subjects {
            check_subject("intake.nats_subjects", subject, true)?;
        }
        check_subject(
            "intake.nats_refused_subject",
            &i.nats_refused_subject,
            false,
        )?;
        check_subject("changes.nats_subject", &c.nats_subject, false)?;
        if !i.nats_refused_stream.is_empty() && i.nats_refused_stream.contains(['.', '*', '>', ' '])
        {
            bail!(
                "intake.nats_refused_stream: '{}' is not a stream name",
                i.nats_refused_stream
            );
        }
        if !(1..=10_000).contains(&i.nats_batch_messages) {
            bail!(
                "intake.nats_batch_messages must be between 1 and 10000 (it is {})",
                i.nats_batch_messages
            );
        }
        if i.nats_linger_ms > MAX_GATHER_MS {
            bail!(
                "intake.nats_linger_ms must be at most {MAX_GATHER_MS} (it is {})",
                i.nats_linger_ms
            );
        }
        Ok(())
    }

    /// The NATS edge's settings, when `intake.nats_url` is set.
    pub fn nats(&self, lease_ttl: std::time::Duration) -> Option<flowhost_nats::NatsConfig> {
        let (i, c) = (&self.intake, &self.changes);
        let url = i.nats_url.clone()?;
        Some(flowhost_nats::NatsConfig {
            url,
            intake: i.nats_consume.then(|| flowhost_nats::IntakeConfig {
                stream: i.nats_stream.clone(),
                subjects: nats_subjects(&i.nats_subjects),
                consumer: i.nats_consumer.clone(),
                refused_subject: i.nats_refused_subject.clone(),
                refused_stream: i.nats_refused_stream.clone(),
                batch_messages: i.nats_batch_messages,
                linger: ms(i.nats_linger_ms),
                max_line: self.server.max_line_bytes,
                limits: self.intake_limits(),
            }),
            relay: c.nats_relay.then(|| flowhost_nats::RelayConfig {
                stream: c.nats_stream.clone(),
                subject: c.nats_subject.clone(),
            }),
            lease_ttl,
        })
    }

    /// `server.listen` as an address.
    pub fn listen(&self) -> Result<std::net::SocketAddr> {
        use std::net::ToSocketAddrs;
        self.server
            .listen
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .with_context(|| {
                format!(
                    "server.listen: '{}' is not an address like 127.0.0.1:8080",
                    self.server.listen
                )
            })
    }

    pub fn store_options(&self) -> flowhost_store::StoreOptions {
        flowhost_store::StoreOptions {
            max_connections: self.database.pool_size.max(1),
            busy_timeout: std::time::Duration::from_millis(self.database.busy_timeout_ms),
            durable_commits: self.database.sqlite_synchronous == Synchronous::Full,
            sqlite_cache_mb: self.database.sqlite_cache_mb,
            sqlite_statement_cache: self.database.sqlite_statement_cache,
        }
    }

    pub fn runtime(&self) -> flowhost_runtime::RuntimeConfig {
        flowhost_runtime::RuntimeConfig {
            call_timeout: ms(self.plugins.timeout_ms),
            memory_limit: self.plugins.memory_mb.max(1) << 20,
            compile_timeout: std::time::Duration::from_secs(self.plugins.compile_timeout_s.max(1)),
            describe_timeout: ms(self.plugins.describe_timeout_ms),
            probe_timeout: ms(self.plugins.probe_timeout_ms),
            call_slots: self.plugins.call_slots,
            output: flowhost_runtime::OutputLimits {
                max_key_bytes: self.plugins.max_key_bytes.max(1),
                max_view_bytes: self.plugins.max_view_bytes.max(2),
                ..flowhost_runtime::OutputLimits::default()
            },
            ..flowhost_runtime::RuntimeConfig::default()
        }
    }

    pub fn registry(&self) -> flowhost_registry::RegistryConfig {
        let mut registry = flowhost_registry::RegistryConfig::new(self.plugins.dir.clone());
        if let Some(dir) = &self.plugins.versions_dir {
            registry.versions_dir = dir.clone();
        }
        registry.max_batch = self.plugins.max_batch.max(1);
        registry.max_file_bytes = self.plugins.max_file_mb.max(1) << 20;
        for (model, limit) in &self.plugins.models {
            registry.limits.insert(model.clone(), limit.to_override());
        }
        registry
    }

    pub fn engine(&self) -> flowhost_engine::EngineConfig {
        flowhost_engine::EngineConfig {
            // Checked at load.
            associate: self
                .stages
                .associate
                .to_batch("associate")
                .unwrap_or_default(),
            project: self.stages.project.to_batch("project").unwrap_or_default(),
            idle_poll: ms(self.stages.idle_poll_ms),
            lease_ttl: ms(self.stages.lease_ttl_ms),
            project_workers: self.stages.project_workers,
            intake_wake: self
                .stages
                .intake_wakes_association
                .then(|| ms(self.stages.intake_wake_gather_ms)),
            isolation_budget: ms(self.plugins.isolation_budget_ms),
            watch_records: match self.plugins.auto_rollback {
                true => self.plugins.watch_records,
                false => 0,
            },
            ..flowhost_engine::EngineConfig::default()
        }
    }

    pub fn intake_limits(&self) -> flowhost_core::intake::IntakeLimits {
        flowhost_core::intake::IntakeLimits {
            max_id_bytes: self.intake.max_id_bytes.max(1),
            max_system_bytes: self.intake.max_system_bytes.max(1),
            max_payload_bytes: self.intake.max_payload_bytes.max(2),
            max_depth: self.intake.max_depth.max(1),
            max_values: self.intake.max_values,
            max_future: std::time::Duration::from_secs(self.intake.max_future_s),
        }
    }

    pub fn server(&self) -> Result<flowhost_server::ServerConfig> {
        Ok(flowhost_server::ServerConfig {
            listen: self.listen()?,
            admin_token: self.server.admin_token.clone().filter(|t| !t.is_empty()),
            body_limit: self.server.body_limit_bytes,
            max_line_bytes: self.server.max_line_bytes,
            intake: self.intake_limits(),
            max_concurrent_requests: self.server.max_concurrent_requests.max(1),
            body_idle_timeout: std::time::Duration::from_secs(
                self.server.body_idle_timeout_s.max(1),
            ),
            header_read_timeout: std::time::Duration::from_secs(
                self.server.header_read_timeout_s.max(1),
            ),
            request_timeout: std::time::Duration::from_secs(self.server.request_timeout_s.max(1)),
            max_connections: self.server.max_connections.max(1),
            group_commit: self
                .server
                .group_commit
                .unwrap_or_else(|| self.database.url.starts_with("sqlite:"))
                .then(|| flowhost_edges::group::GroupConfig {
                    linger: std::time::Duration::from_millis(self.server.group_commit_linger_ms),
                    max_records: self.server.group_commit_max_records.max(1),
                }),
        })
    }

    /// As TOML, with the admin token and a database password hidden.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        shown.database.url = flowhost_store::redacted(&shown.database.url);
        if shown.server.admin_token.is_some() {
            shown.server.admin_token = Some("(set)".into());
        }
        toml::to_string(&shown).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn flags_beat_the_environment_which_beats_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("flowhost.toml");
        std::fs::write(
            &file,
            "[server]\nlisten = \"127.0.0.1:7001\"\nbody_limit_bytes = 1000\n\
             [database]\nurl = \"sqlite://file.db\"\npool_size = 3\n",
        )
        .unwrap();
        let layers = Layers {
            file: Some(&file),
            env: env(&[
                ("FLOWHOST_SERVER_LISTEN", "127.0.0.1:7002"),
                ("FLOWHOST_DB", "sqlite://env.db"),
            ]),
            flags: vec![("server.listen".into(), "127.0.0.1:7003".into())],
        };
        let c = load(&layers).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:7003");
        assert_eq!(c.database.url, "sqlite://env.db");
        assert_eq!(c.database.pool_size, 3);
        assert_eq!(c.server.body_limit_bytes, 1000);
        assert_eq!(c.plugins.timeout_ms, 10_000, "defaults fill the rest");
    }

    #[test]
    fn the_full_variable_name_beats_its_alias() {
        let layers = Layers {
            file: None,
            env: env(&[
                ("FLOWHOST_DB", "sqlite://a.db"),
                ("FLOWHOST_DATABASE_URL", "sqlite://b.db"),
            ]),
            flags: vec![],
        };
        assert_eq!(load(&layers).unwrap().database.url, "sqlite://b.db");
    }

    /// The message of a configuration that does not load.
    fn load_error(file: Option<&Path>, vars: &[(&str, &str)], flags: &[(&str, &str)]) -> String {
        let flags = flags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        load(&Layers {
            file,
            env: env(vars),
            flags,
        })
        .unwrap_err()
        .to_string()
    }

    #[test]
    fn mistakes_name_their_place() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap();
        let e = load_error(Some(&file), &[], &[]);
        assert!(
            e.contains("bad.toml") && e.contains("lisen") && e.contains("line 3"),
            "{e}"
        );

        let e = load_error(None, &[("FLOWHOST_DATABASE_POOL_SIZE", "many")], &[]);
        assert!(
            e.contains("FLOWHOST_DATABASE_POOL_SIZE") && e.contains("many"),
            "{e}"
        );

        let e = load_error(None, &[], &[("server.lissen", "x")]);
        assert!(
            e.contains("server.lissen") && e.contains("server.listen"),
            "{e}"
        );

        let e = load_error(None, &[], &[("stages.project.min_batch", "900")]);
        assert!(e.contains("stages.project"), "{e}");

        for (key, value) in [
            ("stages.project_workers", "0"),
            ("stages.project_workers", "65"),
            ("stages.intake_wake_gather_ms", "600000"),
            ("database.sqlite_cache_mb", "0"),
            ("database.sqlite_cache_mb", "70000"),
            ("database.sqlite_statement_cache", "0"),
            ("plugins.call_slots", "0"),
            ("plugins.call_slots", "257"),
        ] {
            let e = load_error(None, &[], &[(key, value)]);
            assert!(e.contains(key) && e.contains(value), "{key}={value}: {e}");
        }

        let e = load_error(None, &[], &[("server.listen", "nowhere")]);
        assert!(e.contains("server.listen"), "{e}");
    }

    #[test]
    fn model_limits_come_from_the_file_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.toml");
        std::fs::write(&file, "[plugins.models.device]\ntimeout_ms = 500\n").unwrap();
        let mut flags = parse_model_limit("device:max_batch=7").unwrap();
        flags.extend(parse_model_limit("sensor:memory_mb=64").unwrap());
        let c = load(&Layers {
            file: Some(&file),
            env: vec![],
            flags,
        })
        .unwrap();
        let device = c.plugins.models["device"];
        assert_eq!((device.timeout_ms, device.max_batch), (Some(500), Some(7)));
        assert_eq!(c.plugins.models["sensor"].memory_mb, Some(64));
        assert!(parse_model_limit("device:speed=1").is_err());
    }

    #[test]
    fn the_example_file_is_valid_and_says_the_defaults() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/flowhost.toml");
        let c = load(&Layers {
            file: Some(&example),
            env: vec![],
            flags: vec![],
        })
        .unwrap();
        assert_eq!(c.server.listen, Config::default().server.listen);
        assert_eq!(
            c.stages.associate.max_batch,
            Config::default().stages.associate.max_batch
        );
    }
}

//! `flowhost plugins …`: check a component, and the plugin author's test loop.

use anyhow::{Context, Result};
use clap::Subcommand;
use flowhost_core::association::{self, Outcome};
use flowhost_core::intake::parse_line;
use flowhost_core::{Association, Group, KeyedRecord, Kind, ParentKey, Record};
use flowhost_runtime::{Plugin, Runtime, RuntimeConfig};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum PluginsCommand {
    /// Load a component, print what it describes and run a probe batch.
    Check {
        /// The `.wasm` component.
        file: PathBuf,
    },
    /// Run a plugin on the records of an NDJSON file, without a database: print what it
    /// decided per record, then the projection of the records that share keys.
    Test {
        /// The `.wasm` component.
        file: PathBuf,
        /// NDJSON records (lines of other models are skipped).
        input: PathBuf,
        /// One JSON object per line instead of the readable report.
        #[arg(long)]
        json: bool,
    },
    /// Per model: the current version, when and from where it was loaded, its state, how far
    /// re-projection has come, the last refusal, and the earlier versions kept.
    List {
        /// One JSON object per model instead of the readable report.
        #[arg(long)]
        json: bool,
    },
    /// Make an earlier version of a model current, at once (a running host picks it up
    /// within a fraction of a second; a restart keeps it until a new file arrives).
    Rollback {
        model: String,
        /// The version (or a unique prefix of it) to return to; default: the version that
        /// was current before the present one.
        #[arg(long)]
        to: Option<String>,
    },
}

impl PluginsCommand {
    /// Whether the command works on the database (and runs on the async runtime).
    pub fn needs_database(&self) -> bool {
        matches!(self, Self::List { .. } | Self::Rollback { .. })
    }
}

pub fn run(cmd: PluginsCommand) -> Result<ExitCode> {
    match cmd {
        PluginsCommand::Check { file } => check(&file),
        PluginsCommand::Test { file, input, json } => test(&file, &input, json),
        PluginsCommand::List { .. } | PluginsCommand::Rollback { .. } => {
            unreachable!("run with the database")
        }
    }
}

pub async fn run_with_database(cmd: PluginsCommand, env: &crate::app::Env) -> Result<ExitCode> {
    let store = crate::app::open_store(&env.db).await?;
    let code = match cmd {
        PluginsCommand::List { json } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            list(&store, json, &mut out).await?;
            std::io::Write::flush(&mut out)?;
            ExitCode::SUCCESS
        }
        PluginsCommand::Rollback { model, to } => {
            let runtime = Runtime::new(env.limits.clone())?;
            let before = store
                .plugin_states()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .into_iter()
                .find(|s| s.model == model)
                .map(|s| s.version);
            match flowhost_registry::rollback(
                &store,
                &runtime,
                &env.registry.versions_dir,
                &model,
                to.as_deref(),
            )
            .await
            {
                Ok(version) => {
                    println!(
                        "{model}: now {} (was {})",
                        short(&version),
                        before.as_deref().map(short).unwrap_or("none")
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        PluginsCommand::Check { .. } | PluginsCommand::Test { .. } => unreachable!("no database"),
    };
    store.close().await;
    Ok(code)
}

use flowhost_registry::short;

fn when(micros: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| "?".into())
}

/// `flowhost plugins list`, from the database (what every host recorded).
async fn list(
    store: &flowhost_store::Store,
    as_json: bool,
    out: &mut impl std::io::Write,
) -> Result<()> {
    let err = |e: flowhost_store::StoreError| anyhow::anyhow!("{e}");
    let states = store.plugin_states().await.map_err(err)?;
    let versions = store.plugin_versions(None).await.map_err(err)?;
    let files = store.plugin_files().await.map_err(err)?;
    for s in &states {
        let progress = store
            .reprojection(&s.model, &s.version)
            .await
            .map_err(err)?;
        let file = versions
            .iter()
            .find(|v| v.model == s.model && v.version == s.version)
            .map(|v| v.file.clone());
        let previous: Vec<_> = versions
            .iter()
            .filter(|v| v.model == s.model && v.version != s.version)
            .collect();
        let errors: Vec<_> = files
            .iter()
            .filter(|f| f.model.as_deref() == Some(&s.model) && f.error.is_some())
            .collect();
        if as_json {
            let line = json!({
                "model": s.model,
                "kind": s.kind,
                "version": s.version,
                "source": s.source.as_str(),
                "since": when(s.since_micros),
                "file": file,
                "state": s.state,
                "views": {"current": progress.current, "total": progress.total, "failed": progress.failed},
                "last_error": errors.first().map(|f| json!({"file": f.file, "error": f.error, "at": when(f.checked_micros)})),
                "previous": previous.iter().map(|v| json!({"version": v.version, "file": v.file, "last_current": when(v.last_current_micros)})).collect::<Vec<_>>(),
            });
            writeln!(out, "{line}")?;
            continue;
        }
        writeln!(
            out,
            "{}  {}  {} ({})  since {}",
            s.model,
            s.kind,
            short(&s.version),
            s.source.as_str(),
            when(s.since_micros)
        )?;
        writeln!(out, "  file        {}", file.as_deref().unwrap_or("?"))?;
        writeln!(out, "  state       {}", s.state)?;
        if s.kind == "entity" {
            let done = if progress.current == progress.total {
                "all by the current version".to_string()
            } else {
                format!("re-projection {} to go", progress.total - progress.current)
            };
            writeln!(
                out,
                "  views       {} of {} ({done})",
                progress.current, progress.total
            )?;
        }
        if progress.failed > 0 {
            writeln!(
                out,
                "  failed      {} references whose projection failed (re-tried on new records, a new version, or `parked requeue`)",
                progress.failed
            )?;
        }
        for f in &errors {
            writeln!(
                out,
                "  last error  {}: {} ({})",
                f.file,
                f.error.as_deref().unwrap_or(""),
                when(f.checked_micros)
            )?;
        }
        for (i, v) in previous.iter().enumerate() {
            let label = if i == 0 { "previous" } else { "" };
            writeln!(
                out,
                "  {label:<11} {}  {}  (current until {})",
                short(&v.version),
                v.file,
                when(v.last_current_micros)
            )?;
        }
    }
    let orphans: Vec<_> = files
        .iter()
        .filter(|f| f.model.is_none() && f.error.is_some())
        .collect();
    for f in orphans {
        if as_json {
            writeln!(
                out,
                "{}",
                json!({"file": f.file, "error": f.error, "at": when(f.checked_micros)})
            )?;
        } else {
            writeln!(
                out,
                "refused  {}: {} ({})",
                f.file,
                f.error.as_deref().unwrap_or(""),
                when(f.checked_micros)
            )?;
        }
    }
    Ok(())
}

/// One model's limits from `--model-limit`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ModelLimit {
    timeout_ms: Option<u64>,
    memory_mb: Option<usize>,
    max_batch: Option<usize>,
}

impl ModelLimit {
    /// These limits over earlier ones for the same model.
    pub fn over(
        self,
        earlier: flowhost_registry::LimitOverride,
    ) -> flowhost_registry::LimitOverride {
        flowhost_registry::LimitOverride {
            call_timeout: self
                .timeout_ms
                .map(|ms| std::time::Duration::from_millis(ms.max(1)))
                .or(earlier.call_timeout),
            memory_limit: self
                .memory_mb
                .map(|mb| mb.max(1) << 20)
                .or(earlier.memory_limit),
            max_batch: self.max_batch.map(|n| n.max(1)).or(earlier.max_batch),
        }
    }
}

/// Parses `MODEL:timeout_ms=N,memory_mb=N,max_batch=N`.
pub fn parse_model_limit(text: &str) -> Result<(String, ModelLimit), String> {
    let (model, settings) = text
        .split_once(':')
        .ok_or_else(|| format!("'{text}': expected MODEL:KEY=VALUE[,KEY=VALUE]"))?;
    if model.is_empty() {
        return Err(format!("'{text}': the model name is missing"));
    }
    let mut limit = ModelLimit::default();
    for setting in settings.split(',').filter(|s| !s.is_empty()) {
        let (key, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("'{setting}': expected KEY=VALUE"))?;
        let number = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{key}: '{v}' is not a whole number"))
        };
        match key {
            "timeout_ms" => limit.timeout_ms = Some(number(value)?),
            "memory_mb" => limit.memory_mb = Some(number(value)? as usize),
            "max_batch" => limit.max_batch = Some(number(value)? as usize),
            other => {
                return Err(format!(
                    "unknown limit '{other}'; one of timeout_ms, memory_mb, max_batch"
                ));
            }
        }
    }
    Ok((model.to_string(), limit))
}

/// Loads a plugin, or prints the one-line reason and returns `None`.
fn load(file: &Path) -> Result<Option<Plugin>> {
    let runtime = Runtime::new(RuntimeConfig::default())?;
    match runtime.load(file) {
        Ok(plugin) => Ok(Some(plugin)),
        Err(e) => {
            eprintln!("{e}");
            Ok(None)
        }
    }
}

fn check(file: &Path) -> Result<ExitCode> {
    let Some(plugin) = load(file)? else {
        return Ok(ExitCode::FAILURE);
    };
    let d = plugin.description();
    println!("{}: ok", file.display());
    println!("  model     {}", d.model);
    println!("  kind      {}", d.kind.as_str());
    println!(
        "  version   {} (content {})",
        d.version,
        &plugin.version()[..16]
    );
    println!(
        "  parents   {}",
        if d.parents.is_empty() {
            "-".to_string()
        } else {
            d.parents.join(", ")
        }
    );
    if d.policies.is_empty() {
        println!("  policies  - (every path: last)");
    } else {
        for (i, p) in d.policies.iter().enumerate() {
            let label = if i == 0 { "policies" } else { "" };
            println!("  {label:<9} {} = {}", p.path, p.policy);
        }
    }
    let info = plugin.load_info();
    println!(
        "  loaded    in {:.1} ms ({})",
        info.took.as_secs_f64() * 1e3,
        if info.from_cache {
            "cached artefact"
        } else {
            "compiled"
        }
    );
    match plugin.probe() {
        Ok(summary) => {
            println!("  probe     {summary}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: probe batch failed: {e}", file.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

fn test(file: &Path, input: &Path, as_json: bool) -> Result<ExitCode> {
    let Some(plugin) = load(file)? else {
        return Ok(ExitCode::FAILURE);
    };
    let d = plugin.description().clone();
    let reader = std::io::BufReader::new(
        std::fs::File::open(input).with_context(|| format!("cannot open {}", input.display()))?,
    );
    let now = chrono_now();
    let mut records = Vec::new();
    let mut lines = Vec::new();
    let mut refused = 0;
    for (i, line) in reader.split(b'\n').enumerate() {
        let line_no = i + 1;
        let line = line.with_context(|| format!("cannot read {}", input.display()))?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_line(&line, now) {
            Ok(r) if r.model == d.model => {
                lines.push(line_no);
                records.push(Record {
                    seq: line_no as i64,
                    model: r.model,
                    source: r.source,
                    external_id: r.external_id,
                    occurred_at: r.occurred_at,
                    occurred_micros: r.occurred_micros,
                    payload: r.payload,
                });
            }
            Ok(_) => {}
            Err(e) => {
                refused += 1;
                eprintln!("line {line_no}: {e}");
            }
        }
    }
    let associations = match plugin.associate(&records) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{}: associate failed: {e}", file.display());
            return Ok(ExitCode::FAILURE);
        }
    };

    // Without a database every parent is taken as found, named by its key.
    let (_, parent_keys) = association::lookups(d.kind, &records, &associations);
    let parents: HashMap<ParentKey, String> = parent_keys
        .into_iter()
        .map(|p| {
            let name = format!("<{} {}>", p.model, p.key);
            (p, name)
        })
        .collect();
    let mut n = 0;
    let mut mint = || {
        n += 1;
        format!("ref-{n}")
    };
    let decision = association::decide(
        &d.model,
        d.kind,
        &records,
        &associations,
        &HashMap::new(),
        &parents,
        &mut mint,
    );

    let mut groups: BTreeMap<String, Vec<KeyedRecord>> = BTreeMap::new();
    for (i, ((record, assoc), outcome)) in records
        .iter()
        .zip(&associations)
        .zip(&decision.outcomes)
        .enumerate()
    {
        let line = lines[i];
        let decided = match assoc {
            Association::Keyed { keys, parents } => json!({
                "keys": keys,
                "parents": parents.iter().map(|p| json!({"model": p.model, "key": p.key})).collect::<Vec<_>>(),
            }),
            Association::Rejected { code, message } => {
                json!({"rejected": {"code": code, "message": message}})
            }
        };
        let (outcome_json, readable) = match outcome {
            Outcome::Keyed {
                reference, parents, ..
            } => {
                groups
                    .entry(reference.clone())
                    .or_default()
                    .push(KeyedRecord {
                        record: record.clone(),
                        parents: parents.clone(),
                    });
                (json!({"reference": reference}), format!("→ {reference}"))
            }
            Outcome::Attached { parents } => {
                let names: Vec<String> = parents.iter().map(|p| p.reference.clone()).collect();
                (
                    json!({"attached": names}),
                    format!("→ under {}", names.join(", ")),
                )
            }
            Outcome::Parked {
                reason, details, ..
            } => (
                json!({"parked": reason.as_str(), "details": details}),
                format!("→ parked {reason}: {details}"),
            ),
        };
        if as_json {
            println!(
                "{}",
                json!({"line": line, "system": record.source.system, "id": record.external_id,
                       "decision": decided, "outcome": outcome_json})
            );
        } else {
            let what = match assoc {
                Association::Keyed { keys, parents } => {
                    let parents: Vec<String> = parents
                        .iter()
                        .map(|p| format!("{} {}", p.model, p.key))
                        .collect();
                    format!(
                        "keys [{}] parents [{}]",
                        keys.join(", "),
                        parents.join(", ")
                    )
                }
                Association::Rejected { code, message } => format!("rejected {code}: {message}"),
            };
            println!(
                "line {line} {}/{}: {what} {readable}",
                record.source.system, record.external_id
            );
        }
    }

    if d.kind == Kind::Entity && !groups.is_empty() {
        let groups: Vec<Group> = groups
            .into_iter()
            .map(|(reference, records)| Group { reference, records })
            .collect();
        let projections = match plugin.project(&groups) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{}: project failed: {e}", file.display());
                return Ok(ExitCode::FAILURE);
            }
        };
        for (g, p) in groups.iter().zip(projections) {
            let canonical: Value = serde_json::from_str(&p.canonical)?;
            let lineage: Value = serde_json::from_str(&p.lineage)?;
            let root: Value = serde_json::from_str(&p.root)?;
            let record_lines: Vec<i64> = g.records.iter().map(|r| r.record.seq).collect();
            if as_json {
                println!(
                    "{}",
                    json!({"reference": p.reference, "lines": record_lines, "canonical": canonical,
                           "lineage": lineage, "root": root})
                );
            } else {
                println!("\n{} (lines {:?})", p.reference, record_lines);
                println!("  canonical {canonical}");
                println!("  lineage   {lineage}");
                println!("  root      {root}");
            }
        }
    }
    Ok(if refused > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

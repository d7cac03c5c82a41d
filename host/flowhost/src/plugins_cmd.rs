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
    /// Run a plugin on the records of an NDJSON file, without a database: what it decided
    /// (counts per outcome with a few examples of each, or every record with --all), then
    /// the projection of the records that share keys (a few references, or all).
    Test {
        /// The `.wasm` component.
        file: PathBuf,
        /// NDJSON records (lines of other models are skipped).
        input: PathBuf,
        /// Every record's decision and every reference's projection, not a summary.
        #[arg(long)]
        all: bool,
        /// One JSON object per record and per reference (everything, for tools).
        #[arg(long)]
        json: bool,
    },
    /// Write a new plugin project (Rust): the model with a commented key rule, parents and
    /// policies, a native test on a small NDJSON sample, and a README with the commands to
    /// build, test, try and deploy it.
    New(crate::scaffold::NewPlugin),
    /// Per model: the current version, when and from where it was loaded, its state, how far
    /// re-projection has come, the last refusal, and the earlier versions kept.
    List {
        /// One JSON object per model instead of the readable report.
        #[arg(long)]
        json: bool,
    },
    /// Try a candidate version on live traffic: check the component and place it as
    /// `<plugins>/shadow/<model>.wasm`. A running `serve` calls it on every batch the live
    /// version decides, writing nothing to the live tables, and records what would differ.
    Shadow {
        /// The candidate `.wasm` component.
        file: PathBuf,
    },
    /// What a model's candidate would change: records whose keys, parents or decision
    /// differ, and references whose views differ, each named by system and id.
    Diff {
        model: String,
        /// Run the candidate and the live version over the model's last N records now,
        /// instead of reading the shadow run's findings (writes nothing).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        replay: Option<u64>,
        /// Differences to show.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        limit: u64,
        /// The report as one JSON object (as `GET /v1/plugins/{model}/shadow`).
        #[arg(long)]
        json: bool,
    },
    /// Make the shadow run's candidate current: it replaces the model's file in the
    /// plugins folder (one rename) and is swapped in as usual, then watched on its first
    /// records like any new version.
    Promote { model: String },
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
        matches!(
            self,
            Self::List { .. }
                | Self::Rollback { .. }
                | Self::Shadow { .. }
                | Self::Diff { .. }
                | Self::Promote { .. }
        )
    }
}

pub fn run(cmd: PluginsCommand) -> Result<ExitCode> {
    match cmd {
        PluginsCommand::Check { file } => check(&file),
        PluginsCommand::Test {
            file,
            input,
            all,
            json,
        } => test(
            &file,
            &input,
            if json {
                Report::Json
            } else if all {
                Report::All
            } else {
                Report::Summary
            },
        ),
        PluginsCommand::New(new) => crate::scaffold::run(new),
        PluginsCommand::List { .. }
        | PluginsCommand::Rollback { .. }
        | PluginsCommand::Shadow { .. }
        | PluginsCommand::Diff { .. }
        | PluginsCommand::Promote { .. } => {
            unreachable!("run with the database")
        }
    }
}

pub async fn run_with_database(cmd: PluginsCommand, env: &flowhost::app::Env) -> Result<ExitCode> {
    let store = env.open_store().await?;
    let code = match cmd {
        PluginsCommand::List { json } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let listed = list(&store, json, &mut out).await?;
            std::io::Write::flush(&mut out)?;
            if listed == 0 {
                // Nothing was ever loaded from this database: say where we looked.
                eprintln!(
                    "no plugins in {}: no model has ever been loaded into {}; drop *.wasm components there (or name the folder with --plugins)",
                    env.registry.dir.display(),
                    flowhost_store::redacted(&env.db)
                );
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
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
        PluginsCommand::Shadow { file } => crate::shadow_cmd::place(env, &file).await?,
        PluginsCommand::Diff {
            model,
            replay,
            limit,
            json,
        } => {
            crate::shadow_cmd::diff(
                env,
                &store,
                &model,
                replay.map(|n| n as usize),
                limit as usize,
                json,
            )
            .await?
        }
        PluginsCommand::Promote { model } => {
            crate::shadow_cmd::promote(env, &store, &model).await?
        }
        PluginsCommand::Check { .. } | PluginsCommand::Test { .. } | PluginsCommand::New(_) => {
            unreachable!("no database")
        }
    };
    store.close().await;
    Ok(code)
}

use flowhost_registry::short;

/// `flowhost plugins list`, from the database (what every host recorded): the same objects
/// as `GET /v1/plugins`, as NDJSON or readable text. Returns how many models it listed.
async fn list(
    store: &flowhost_store::Store,
    as_json: bool,
    out: &mut impl std::io::Write,
) -> Result<usize> {
    let (models, refused) = flowhost_edges::models::plugins_json(store)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if as_json {
        for line in models.iter().chain(&refused) {
            writeln!(out, "{line}")?;
        }
        return Ok(models.len());
    }
    let s = |v: &Value| v.as_str().unwrap_or("?").to_string();
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    for m in &models {
        writeln!(
            out,
            "{}  {}  {} ({})  since {}",
            s(&m["model"]),
            s(&m["kind"]),
            short(&s(&m["version"])),
            s(&m["source"]),
            s(&m["since"])
        )?;
        writeln!(out, "  file        {}", s(&m["file"]))?;
        writeln!(out, "  state       {}", s(&m["state"]))?;
        let views = &m["views"];
        let (current, total, failed) = (
            n(&views["current"]),
            n(&views["total"]),
            n(&views["failed"]),
        );
        if m["kind"] == "entity" {
            let done = if current == total {
                "all by the current version".to_string()
            } else {
                format!("re-projection {} to go", total - current)
            };
            writeln!(out, "  views       {current} of {total} ({done})")?;
        }
        if failed > 0 {
            writeln!(
                out,
                "  failed      {failed} references whose projection failed (re-tried on new records, a new version, or `parked requeue`)"
            )?;
            for f in views["failed_examples"].as_array().into_iter().flatten() {
                writeln!(out, "    {}  {}", s(&f["reference"]), s(&f["error"]))?;
            }
        }
        if let Some(e) = m["last_error"].as_object() {
            writeln!(
                out,
                "  last error  {}: {} ({})",
                e.get("file").map(s).unwrap_or_default(),
                e.get("error").map(s).unwrap_or_default(),
                e.get("at").map(s).unwrap_or_default()
            )?;
        }
        if let Some(sh) = m["shadow"].as_object() {
            writeln!(
                out,
                "  shadow      candidate {} ({}): {} records compared, {} differ, {} views differ (`flowhost plugins diff {}`)",
                short(&sh.get("candidate").map(s).unwrap_or_default()),
                sh.get("file").map(s).unwrap_or_default(),
                sh.get("records").map(n).unwrap_or(0),
                sh.get("record_diffs").map(n).unwrap_or(0),
                sh.get("view_diffs").map(n).unwrap_or(0),
                s(&m["model"])
            )?;
        }
        for (i, v) in m["previous"].as_array().into_iter().flatten().enumerate() {
            let label = if i == 0 { "previous" } else { "" };
            writeln!(
                out,
                "  {label:<11} {}  {}  (current until {})",
                short(&s(&v["version"])),
                s(&v["file"]),
                s(&v["last_current"])
            )?;
        }
    }
    for f in &refused {
        writeln!(
            out,
            "refused  {}: {} ({})",
            s(&f["file"]),
            s(&f["error"]),
            s(&f["at"])
        )?;
    }
    Ok(models.len())
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

/// How `plugins test` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Report {
    /// Counts per outcome, the first few examples of each, a few references.
    Summary,
    /// Every record and every reference, readable.
    All,
    /// Every record and every reference, one JSON object per line.
    Json,
}

/// Examples per outcome, refused lines and references a summary shows.
const SUMMARY_EXAMPLES: usize = 3;

/// Outcomes in the order they were first met: count and first examples of each.
#[derive(Default)]
struct Tally {
    kinds: Vec<(String, usize, Vec<String>)>,
}

impl Tally {
    fn add(&mut self, kind: String, example: impl FnOnce() -> String) {
        let at = match self.kinds.iter().position(|(k, _, _)| *k == kind) {
            Some(at) => at,
            None => {
                self.kinds.push((kind, 0, Vec::new()));
                self.kinds.len() - 1
            }
        };
        let (_, count, examples) = &mut self.kinds[at];
        *count += 1;
        if examples.len() < SUMMARY_EXAMPLES {
            examples.push(example());
        }
    }
}

fn test(file: &Path, input: &Path, report: Report) -> Result<ExitCode> {
    let as_json = report == Report::Json;
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
    let mut others = 0;
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
            Ok(_) => others += 1,
            Err(e) => {
                refused += 1;
                if report != Report::Summary || refused <= SUMMARY_EXAMPLES {
                    eprintln!("line {line_no}: {e}");
                }
            }
        }
    }
    if report == Report::Summary && refused > SUMMARY_EXAMPLES {
        eprintln!(
            "… and {} more refused lines (--all lists them all)",
            refused - SUMMARY_EXAMPLES
        );
    }
    let associations = match plugin
        .associate(&records)
        .map_err(|e| e.to_string())
        .and_then(|out| every_item(out, |i| format!("line {}", lines[i])))
    {
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
    let mut tally = Tally::default();
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
        let kind = match outcome {
            Outcome::Keyed { .. } => "keyed to a reference".to_string(),
            Outcome::Attached { .. } => "attached under a parent".to_string(),
            Outcome::Parked { reason, .. } => format!("parked {reason}"),
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
        let readable_line = || {
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
            format!(
                "line {line} {}/{}: {what} {readable}",
                record.source.system, record.external_id
            )
        };
        match report {
            Report::Json => println!(
                "{}",
                json!({"line": line, "system": record.source.system, "id": record.external_id,
                       "decision": decided, "outcome": outcome_json})
            ),
            Report::All => println!("{}", readable_line()),
            Report::Summary => tally.add(kind, readable_line),
        }
    }
    if report == Report::Summary {
        println!(
            "{}: {} records of model '{}' from {} ({} lines of other models skipped, {} refused)",
            file.display(),
            records.len(),
            d.model,
            input.display(),
            others,
            refused
        );
        for (kind, count, examples) in &tally.kinds {
            println!("\n{count} {kind}, e.g.");
            for example in examples {
                println!("  {example}");
            }
        }
    }

    if d.kind == Kind::Entity && !groups.is_empty() {
        // References in the order their first record appears in the file.
        let mut groups: Vec<Group> = groups
            .into_iter()
            .map(|(reference, records)| Group { reference, records })
            .collect();
        groups.sort_by_key(|g| g.records.first().map(|r| r.record.seq));
        let projections = match plugin
            .project(&groups)
            .map_err(|e| e.to_string())
            .and_then(|out| every_item(out, |i| format!("reference {}", groups[i].reference)))
        {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{}: project failed: {e}", file.display());
                return Ok(ExitCode::FAILURE);
            }
        };
        let shown = match report {
            Report::Summary => SUMMARY_EXAMPLES.min(groups.len()),
            Report::All | Report::Json => groups.len(),
        };
        if report == Report::Summary {
            println!(
                "\n{} references projected; the first {shown}:",
                groups.len()
            );
        }
        for (g, p) in groups.iter().zip(projections).take(shown) {
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
    if report == Report::Summary {
        println!("\nEvery record and reference: --all (readable) or --json.");
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

/// The results of a plugin call when every item passed the output checks; otherwise the
/// first item that did not, named by `name`.
fn every_item<T>(
    out: Vec<Result<T, flowhost_runtime::CallError>>,
    name: impl Fn(usize) -> String,
) -> Result<Vec<T>, String> {
    out.into_iter()
        .enumerate()
        .map(|(i, r)| r.map_err(|e| format!("{}: {e}", name(i))))
        .collect()
}

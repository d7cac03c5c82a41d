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
use std::time::Instant;

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
}

pub fn run(cmd: PluginsCommand) -> Result<ExitCode> {
    match cmd {
        PluginsCommand::Check { file } => check(&file),
        PluginsCommand::Test { file, input, json } => test(&file, &input, json),
    }
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
    match probe(&plugin) {
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

/// A small batch through `associate` and `project`; the runtime checks lengths and JSON.
fn probe(plugin: &Plugin) -> Result<String, flowhost_runtime::CallError> {
    let model = &plugin.description().model;
    let records: Vec<Record> = (1..=3)
        .map(|i| Record {
            seq: i,
            model: model.clone(),
            source: flowhost_core::Source {
                system: "probe".into(),
                adapter: "probe".into(),
            },
            external_id: format!("P-{i}"),
            occurred_at: "2026-01-01T00:00:00Z".into(),
            occurred_micros: 1_767_225_600_000_000 + i,
            payload: json!({"name": format!("probe {i}"), "n": i}).to_string(),
        })
        .collect();
    let started = Instant::now();
    let associations = plugin.associate(&records)?;
    let keyed = associations
        .iter()
        .filter(|a| matches!(a, Association::Keyed { .. }))
        .count();
    let groups = vec![Group {
        reference: "00000000-0000-7000-8000-000000000000".into(),
        records: records
            .into_iter()
            .map(|record| KeyedRecord {
                record,
                parents: Vec::new(),
            })
            .collect(),
    }];
    let projections = plugin.project(&groups)?;
    Ok(format!(
        "associate 3 records → {} results ({keyed} keyed); project 1 group → {} projection ({:.1} ms)",
        associations.len(),
        projections.len(),
        started.elapsed().as_secs_f64() * 1e3
    ))
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

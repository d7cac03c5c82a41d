//! `flowhost plugins shadow | diff | promote`: a candidate version tried on live traffic
//! beside the live one, what it would change, and making it current.

use anyhow::{Context, Result, anyhow, bail};
use flowhost_engine::Comparison;
use flowhost_registry::{SHADOW_DIR, short};
use flowhost_runtime::{Plugin, Runtime};
use flowhost_store::Store;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `flowhost plugins shadow FILE`: checks the component and places it as
/// `<plugins>/shadow/<model>.wasm` (a running host starts its shadow run at once).
pub async fn place(env: &flowhost::app::Env, file: &Path) -> Result<ExitCode> {
    let (dir, limits, file) = (
        env.registry.dir.clone(),
        env.limits.clone(),
        file.to_path_buf(),
    );
    // Loading runs the plugin, which blocks: off the async runtime's threads.
    tokio::task::spawn_blocking(move || place_checked(&dir, limits, &file)).await?
}

fn place_checked(
    plugins: &Path,
    limits: flowhost_runtime::RuntimeConfig,
    file: &Path,
) -> Result<ExitCode> {
    let runtime = Runtime::new(limits)?;
    let plugin = match runtime.load(file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if let Err(e) = plugin.probe() {
        eprintln!("{}: the probe batch failed: {e}", file.display());
        return Ok(ExitCode::FAILURE);
    }
    let model = plugin.description().model.clone();
    let dir = plugins.join(SHADOW_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let target = dir.join(format!("{model}.wasm"));
    // Written beside its final name and renamed, so the host never reads half a file.
    let partial = dir.join(format!(".{model}.wasm.partial"));
    std::fs::copy(file, &partial)
        .with_context(|| format!("cannot copy {} to {}", file.display(), partial.display()))?;
    std::fs::rename(&partial, &target)
        .with_context(|| format!("cannot move the candidate to {}", target.display()))?;
    println!(
        "{model}: candidate {} placed as {}; a running host compares it with the live version on every batch (`flowhost plugins diff {model}`)",
        short(plugin.version()),
        target.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `flowhost plugins diff MODEL`: the shadow run's findings, or a replay of the model's
/// latest records.
pub async fn diff(
    env: &flowhost::app::Env,
    store: &Store,
    model: &str,
    replay: Option<usize>,
    limit: usize,
    as_json: bool,
) -> Result<ExitCode> {
    if let Some(message) = flowhost_edges::models::unknown_model(store, model)
        .await
        .map_err(|e| anyhow!("{e}"))?
    {
        eprintln!("error: {message}");
        return Ok(ExitCode::FAILURE);
    }
    let report = match replay {
        None => match flowhost_edges::models::shadow_json(store, model, limit)
            .await
            .map_err(|e| anyhow!("{e}"))?
        {
            Some(report) => report,
            None => {
                eprintln!(
                    "no shadow run of '{model}': place a candidate as {}/{model}.wasm, or run `flowhost plugins shadow FILE`",
                    env.registry.dir.join(SHADOW_DIR).display()
                );
                return Ok(ExitCode::FAILURE);
            }
        },
        Some(n) => replayed(env, store, model, n, limit).await?,
    };
    if as_json {
        println!("{report}");
    } else {
        print_report(&report, replay);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the candidate and the live version over the model's last `n` records (in batches
/// of the plugin's batch size, intake order) against the live key index, writing nothing.
async fn replayed(
    env: &flowhost::app::Env,
    store: &Store,
    model: &str,
    n: usize,
    limit: usize,
) -> Result<Value> {
    let runtime = Runtime::new(env.limits.clone())?;
    let candidate_file = candidate_file(env, store, model).await?;
    let candidate = load(&runtime, &candidate_file).await?;
    let state = store
        .plugin_states()
        .await
        .map_err(|e| anyhow!("{e}"))?
        .into_iter()
        .find(|s| s.model == model)
        .ok_or_else(|| anyhow!("'{model}' has no current version to compare with"))?;
    let kept = store
        .plugin_versions(Some(model))
        .await
        .map_err(|e| anyhow!("{e}"))?
        .into_iter()
        .find(|v| v.version == state.version)
        .ok_or_else(|| anyhow!("the current version of '{model}' is not kept"))?;
    let live = load(&runtime, Path::new(&kept.archive)).await?;
    let records = store
        .latest_records(model, n)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let batch = env
        .registry
        .limits
        .get(model)
        .and_then(|l| l.max_batch)
        .unwrap_or(env.registry.max_batch)
        .max(1);
    let mut found = Comparison::default();
    for chunk in records.chunks(batch) {
        let one = flowhost_engine::compare(store, &live, &candidate, chunk.to_vec(), None)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        found.add(one);
    }
    let c = found.counts;
    let diffs: Vec<Value> = found
        .diffs
        .iter()
        .take(limit)
        .map(flowhost_edges::models::diff_json)
        .collect();
    Ok(json!({
        "model": model,
        "candidate": candidate.version(),
        "file": candidate_file.display().to_string(),
        "live": live.version(),
        "replayed": records.len(),
        "batches": c.batches,
        "records": c.records,
        "skipped": c.skipped,
        "record_diffs": c.record_diffs,
        "views": c.views,
        "view_diffs": c.view_diffs,
        "diffs": diffs,
    }))
}

/// Loads a plugin on a blocking thread (loading calls it).
async fn load(runtime: &Runtime, file: &Path) -> Result<Plugin> {
    let (runtime, file) = (runtime.clone(), file.to_path_buf());
    tokio::task::spawn_blocking(move || runtime.load(&file).map_err(|e| anyhow!("{e}"))).await?
}

/// The candidate of a model: the file of its shadow run, else `<plugins>/shadow/<model>.wasm`.
async fn candidate_file(env: &flowhost::app::Env, store: &Store, model: &str) -> Result<PathBuf> {
    let run = store.shadow(model, 0).await.map_err(|e| anyhow!("{e}"))?;
    if let Some((run, _)) = run
        && run.ended.is_none()
        && Path::new(&run.file).is_file()
    {
        return Ok(PathBuf::from(run.file));
    }
    let file = env
        .registry
        .dir
        .join(SHADOW_DIR)
        .join(format!("{model}.wasm"));
    if !file.is_file() {
        bail!(
            "no candidate of '{model}': place one as {} (or run `flowhost plugins shadow FILE`)",
            file.display()
        );
    }
    Ok(file)
}

fn print_report(r: &Value, replay: Option<usize>) {
    let s = |v: &Value| v.as_str().unwrap_or("?").to_string();
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    let state = match replay {
        Some(_) => format!("replayed over the last {} records", n(&r["replayed"])),
        None if r["running"] == true => format!("running since {}", s(&r["started"])),
        None => format!("ended: {}", s(&r["ended"])),
    };
    println!(
        "{}: candidate {} ({}) beside live {}, {state}",
        s(&r["model"]),
        short(&s(&r["candidate"])),
        s(&r["file"]),
        short(&s(&r["live"]))
    );
    println!(
        "  records     {} compared in {} batches, {} skipped; {} differ",
        n(&r["records"]),
        n(&r["batches"]),
        n(&r["skipped"]),
        n(&r["record_diffs"])
    );
    println!(
        "  views       {} references compared; {} differ",
        n(&r["views"]),
        n(&r["view_diffs"])
    );
    let diffs = r["diffs"].as_array().cloned().unwrap_or_default();
    for d in &diffs {
        println!("  {}", s(&d["summary"]));
    }
    let total = n(&r["record_diffs"]) + n(&r["view_diffs"]);
    if (diffs.len() as i64) < total {
        println!(
            "  ({} of {total} differences shown; --limit N for more{})",
            diffs.len(),
            if replay.is_none() {
                format!(", at most {} are kept per run", n(&r["kept"]))
            } else {
                String::new()
            }
        );
    }
}

/// `flowhost plugins promote MODEL`: the shadow run's candidate replaces the model's file
/// in the folder (one rename), which a running host swaps in as usual; the run ends.
pub async fn promote(env: &flowhost::app::Env, store: &Store, model: &str) -> Result<ExitCode> {
    let run = store.shadow(model, 0).await.map_err(|e| anyhow!("{e}"))?;
    let Some((run, _)) = run.filter(|(r, _)| r.ended.is_none()) else {
        eprintln!(
            "error: no shadow run of '{model}' is going; place a candidate as {}/{model}.wasm first",
            env.registry.dir.join(SHADOW_DIR).display()
        );
        return Ok(ExitCode::FAILURE);
    };
    let source = PathBuf::from(&run.file);
    let bytes = std::fs::read(&source)
        .with_context(|| format!("cannot read the candidate {}", source.display()))?;
    if flowhost_runtime::content_hash(&bytes) != run.version {
        eprintln!(
            "error: {} changed since its shadow run started ({}); wait until the host has looked at it, then promote",
            source.display(),
            short(&run.version)
        );
        return Ok(ExitCode::FAILURE);
    }
    // The folder's file of the model, as the hosts recorded it; else `<model>.wasm`.
    let files = store.plugin_files().await.map_err(|e| anyhow!("{e}"))?;
    let name = files
        .iter()
        .filter(|f| f.model.as_deref() == Some(model) && f.error.is_none())
        .filter_map(|f| Path::new(&f.file).file_name().map(|n| n.to_owned()))
        .find(|n| env.registry.dir.join(n).is_file())
        .unwrap_or_else(|| format!("{model}.wasm").into());
    let target = env.registry.dir.join(name);
    store
        .end_shadow(model, &run.version, "promoted")
        .await
        .map_err(|e| anyhow!("{e}"))?;
    std::fs::rename(&source, &target)
        .with_context(|| format!("cannot move {} over {}", source.display(), target.display()))?;
    println!(
        "{model}: candidate {} promoted to {}; a running host swaps it in within moments and watches its first records (rolled back if clearly worse)",
        short(&run.version),
        target.display()
    );
    Ok(ExitCode::SUCCESS)
}

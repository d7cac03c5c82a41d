//! `flowhost reassociate MODEL [--dry-run]`: a model's records decided again under its
//! current version (after a key-rule change), with what changes printed first.

use anyhow::Result;
use flowhost_engine::Reassociated;
use flowhost_registry::short;
use std::process::ExitCode;

/// How many merges and splits the readable report lists.
const LISTED: usize = 20;

pub async fn run(
    env: &flowhost::app::Env,
    model: &str,
    dry_run: bool,
    as_json: bool,
) -> Result<ExitCode> {
    let (engine, _registry) = flowhost::app::engine(env, env.engine.clone()).await?;
    let store = engine.store().clone();
    if let Some(message) = flowhost_edges::models::unknown_model(&store, model)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
    {
        store.close().await;
        anyhow::bail!("{message}");
    }
    let out = engine.reassociate(model, !dry_run).await;
    store.close().await;
    let report = match out {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if as_json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print(r: &Reassociated) {
    println!(
        "{}: {} records decided again by version {}: {} keyed, {} parked",
        r.model,
        r.records,
        short(&r.version),
        r.keyed,
        r.parked
    );
    println!(
        "  references  {} before, {} after: {} unchanged, {} merges, {} splits, {} retired",
        r.references_before,
        r.references_after,
        r.unchanged,
        r.merges.len(),
        r.splits.len(),
        r.retired
    );
    println!("  records     {} change reference (or park)", r.moved);
    println!(
        "  children    {} records of other models find their parents again",
        r.children
    );
    for m in r.merges.iter().take(LISTED) {
        println!(
            "  merge  {} takes {} ({} records)",
            m.into,
            m.from.join(", "),
            m.records
        );
    }
    for s in r.splits.iter().take(LISTED) {
        println!(
            "  split  {} goes to {} ({} records)",
            s.from,
            s.into.join(", "),
            s.records
        );
    }
    let more = (r.merges.len().saturating_sub(LISTED)) + (r.splits.len().saturating_sub(LISTED));
    if more > 0 {
        println!("  … {more} more (--json lists all)");
    }
    if r.applied {
        println!(
            "applied: every view of {} is re-projected (by a running host, or `flowhost process`)",
            r.model
        );
    } else {
        println!("dry run: nothing changed; run it without --dry-run to apply");
    }
}

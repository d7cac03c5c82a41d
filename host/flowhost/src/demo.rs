//! `flowhost demo`: the README's main job on the embedded default. Generates a realistic
//! workload, ingests it through the same path as `flowhost ingest`, processes it until idle,
//! and prints what happened and where to look next.

use anyhow::Result;
use flowhost::{app, ingest, workload};
use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Instant;

pub async fn run(env: &app::Env, records: u64) -> Result<ExitCode> {
    let (db, plugins) = (env.db.as_str(), env.registry.dir.as_path());
    let (engine, _registry) = app::engine(env, env.engine.clone()).await?;
    let models = engine.plugins().models();
    println!("flowhost demo on {db}");
    println!("plugins folder {}:", plugins.display());
    for m in &models {
        if let Some(p) = engine.plugins().get(m) {
            let d = p.description();
            println!(
                "  {:<8} {:<12} v{} ({}) from {}",
                d.model,
                d.kind.as_str(),
                d.version,
                &p.version()[..12],
                p.file()
            );
        }
    }
    if models.is_empty() {
        anyhow::bail!(
            "no plugins in {}: build them with `cargo xtask build-plugins`",
            plugins.display()
        );
    }

    let dir = db
        .strip_prefix("sqlite://")
        .and_then(|p| std::path::Path::new(p).parent().map(|d| d.to_path_buf()))
        .unwrap_or_else(|| std::path::PathBuf::from("."));
    let file = dir.join("workload.ndjson");
    let stats = {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
        let stats = workload::generate(records, &mut out)?;
        std::io::Write::flush(&mut out)?;
        stats
    };
    println!(
        "\nworkload {}: {} lines ({} devices seen by 2–3 systems, sensors, readings, late parents, {} re-sends)",
        file.display(),
        stats.lines,
        stats.things,
        stats.resends
    );

    let store = engine.store().clone();
    let known: BTreeSet<String> = models.iter().cloned().collect();
    let statements_before = store.statements();
    let started = Instant::now();
    let summary = ingest::ingest(
        &store,
        &file,
        &known,
        4 << 20,
        &Default::default(),
        true,
        flowhost_edges::intake::BATCH,
    )
    .await?;
    let ingest_time = started.elapsed();
    println!(
        "ingest   accepted {}, duplicates {}, refused {} in {:.2} s ({:.0} records/s)",
        summary.accepted,
        summary.duplicates,
        summary.refused,
        ingest_time.as_secs_f64(),
        stats.lines as f64 / ingest_time.as_secs_f64()
    );

    let report = engine
        .run_until_idle(flowhost_engine::OthersAtWork::Wait)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let total = started.elapsed();
    let per = |items: u64, d: std::time::Duration| items as f64 / d.as_secs_f64().max(1e-9);
    println!(
        "process  associated {} records in {} batches, projected {} references in {} batches, healed {} parked records, in {:.2} s",
        report.associate.items,
        report.associate.batches,
        report.project.items,
        report.project.batches,
        report.healed,
        report.elapsed.as_secs_f64()
    );
    println!(
        "stages   associate {:.0} records/s (batch p50 {:.0} ms, p99 {:.0} ms); project {:.0} references/s (batch p50 {:.0} ms, p99 {:.0} ms)",
        per(report.associate.items, report.associate.busy),
        report.associate.percentile(0.5).as_secs_f64() * 1e3,
        report.associate.percentile(0.99).as_secs_f64() * 1e3,
        per(report.project.items, report.project.busy),
        report.project.percentile(0.5).as_secs_f64() * 1e3,
        report.project.percentile(0.99).as_secs_f64() * 1e3,
    );
    let statements = store.statements() - statements_before;

    println!(
        "total    {} lines end to end in {:.2} s: {:.0} records/s, {:.1} statements per 1,000 records",
        stats.lines,
        total.as_secs_f64(),
        per(stats.lines, total),
        statements as f64 * 1000.0 / stats.lines as f64
    );

    if cfg!(debug_assertions) {
        println!(
            "         (the dev build `cargo xtask` shares with the tests; the release build, \
             `cargo build --release -p flowhost`, is faster: BENCHMARKS.md)"
        );
    }

    let counts = store.counts().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("\nreferences per model:");
    for (model, n) in &counts.references {
        println!("  {model:<8} {n}");
    }
    println!("keyed records per model:");
    for (model, n) in &counts.keyed {
        println!("  {model:<8} {n}");
    }
    println!("parked by reason:");
    if counts.parked.is_empty() {
        println!("  none");
    }
    for (model, reason, n) in &counts.parked {
        println!("  {model:<8} {reason:<17} {n}");
    }
    println!(
        "\nwords: a reference is one real-world thing, found in records from several systems;\n\
         its views are canonical (merged values), lineage (each value's sources) and root (the\n\
         newest of each field). A record is keyed once tied to a reference. A parked record\n\
         waits, with a reason (a parent not seen yet, a record the model refused); healed\n\
         records went back to the queue when what they waited for arrived."
    );

    let bin = std::env::current_exe()
        .map(|p| short(&p))
        .unwrap_or_else(|_| "flowhost".into());
    let db_short = match db.strip_prefix("sqlite://") {
        Some(path) => format!("sqlite://{}", short(std::path::Path::new(path))),
        None => flowhost_store::redacted(db),
    };
    println!("\nwhere to look next (in this shell):");
    println!("  alias flowhost={bin}");
    println!(
        "  export FLOWHOST_DB={db_short} FLOWHOST_PLUGINS={}",
        short(plugins)
    );
    println!("  flowhost export canonical device | head");
    println!("  flowhost export lineage device | head -3");
    println!("  flowhost export root sensor | head -3");
    println!("  flowhost export values reading | head -3");
    println!("  flowhost parked");
    println!(
        "  flowhost plugins test $FLOWHOST_PLUGINS/device.wasm {}    # a summary; --all for every record",
        short(&file)
    );
    println!(
        "  flowhost serve    # the service: HTTP API on 127.0.0.1:8080, plugins folder watched;"
    );
    println!("                    # open http://127.0.0.1:8080/ for the operator page");
    println!(
        "  curl -s localhost:8080/v1/models; curl -s 'localhost:8080/v1/models/device/canonical?limit=3'"
    );
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// A path as short as it can be said from the current directory (relative when inside it).
fn short(path: &std::path::Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(|p| p.display().to_string()))
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| path.display().to_string())
}

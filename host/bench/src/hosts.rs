//! `flowhost-bench hosts`: the same workload processed by 1, 2, 3 … `flowhost process
//! --until-idle` processes at once on one PostgreSQL database (a fresh database per run),
//! to show how the work spreads over hosts and what it does to records/s.
//!
//! Each run ingests the workload first (not timed), then starts the processes together and
//! times until the last one exits: they share projection (claims per reference), and each
//! model's association goes to one of them at a time. Every process reports what it did,
//! which is how the spread is shown.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use sqlx::Connection;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

pub struct Hosts {
    pub hosts: Vec<usize>,
    pub records: u64,
    pub json: bool,
}

pub async fn run(db: &str, plugins: &Path, opts: Hosts) -> Result<ExitCode> {
    if !db.starts_with("postgres://") && !db.starts_with("postgresql://") {
        bail!(
            "hosts needs a PostgreSQL server to share: pass --db postgres://user@host:port/db \
             (each run creates and drops a database of its own there)"
        );
    }
    if opts.hosts.is_empty() || opts.hosts.contains(&0) {
        bail!("--hosts takes host counts of at least 1, e.g. 1,2,3");
    }
    let dir = std::env::temp_dir().join(format!("flowhost-bench-hosts-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let input = dir.join("workload.ndjson");
    let mut workload = Vec::new();
    flowhost::workload::generate(opts.records, &mut workload)?;
    std::fs::write(&input, &workload)?;
    let lines = workload.iter().filter(|&&b| b == b'\n').count();
    let mut runs = Vec::new();
    for &n in &opts.hosts {
        let mut run = measure(db, plugins, &input, n).await?;
        run["records_per_s"] = json!(lines as f64 / run["seconds"].as_f64().unwrap_or(f64::MAX));
        runs.push(run);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let out = json!({
        "records": lines,
        "cores": std::thread::available_parallelism().map(usize::from).unwrap_or(1),
        "runs": runs,
    });
    if opts.json {
        println!("{out}");
    } else {
        print_table(&out);
    }
    Ok(ExitCode::SUCCESS)
}

/// One run: a fresh database, the workload ingested, `n` processes until all are idle.
async fn measure(admin_url: &str, plugins: &Path, input: &Path, n: usize) -> Result<Value> {
    let name = format!("flowhost_bench_hosts_{}_{n}", std::process::id());
    let url = with_database(admin_url, &name)?;
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .with_context(|| format!("connect to {}", flowhost_store::redacted(admin_url)))?;
    let drop_it = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    sqlx::query(sqlx::AssertSqlSafe(drop_it.clone()))
        .execute(&mut admin)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    let result = async {
        let bin = crate::flowhost_binary()?;
        let base = |cmd: &mut tokio::process::Command| {
            cmd.args(["--db", url.as_str(), "--plugins"])
                .arg(plugins)
                .args(["--log", "warn"]);
        };
        let mut ingest = tokio::process::Command::new(&bin);
        base(&mut ingest);
        let out = ingest.arg("ingest").arg(input).output().await?;
        if !out.status.success() {
            bail!("ingest failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let started = Instant::now();
        let mut children = Vec::new();
        for _ in 0..n {
            let mut cmd = tokio::process::Command::new(&bin);
            base(&mut cmd);
            cmd.args(["process", "--until-idle"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true);
            children.push(cmd.spawn().context("start flowhost process")?);
        }
        let mut processes = Vec::new();
        for child in children {
            let out = child.wait_with_output().await?;
            let log = String::from_utf8_lossy(&out.stderr).to_string();
            if !out.status.success() {
                bail!("a process failed: {log}");
            }
            processes.push(report_of(&log).with_context(|| format!("no report in: {log}"))?);
        }
        let seconds = started.elapsed().as_secs_f64();
        let associated: u64 = processes
            .iter()
            .map(|p| p["associated"].as_u64().unwrap_or(0))
            .sum();
        let projected: u64 = processes
            .iter()
            .map(|p| p["projected"].as_u64().unwrap_or(0))
            .sum();
        Ok(json!({
            "hosts": n,
            "seconds": seconds,
            "associated": associated,
            "projected": projected,
            "processes": processes,
        }))
    }
    .await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(drop_it))
        .execute(&mut admin)
        .await;
    result
}

/// `url` with its database name replaced.
fn with_database(url: &str, name: &str) -> Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    Ok(format!("{}/{name}{query}", &base[..path]))
}

/// The numbers of a `process --until-idle` summary line: `associated A records in B
/// batches, projected P references in Q batches, healed H, in S s`.
fn report_of(log: &str) -> Option<Value> {
    let line = log.lines().rev().find(|l| l.starts_with("associated "))?;
    let numbers: Vec<f64> = line
        .split([' ', ','])
        .filter_map(|w| w.parse::<f64>().ok())
        .collect();
    let [associated, a_batches, projected, p_batches, healed, seconds] = numbers[..] else {
        return None;
    };
    Some(json!({
        "associated": associated as u64,
        "associate_batches": a_batches as u64,
        "projected": projected as u64,
        "project_batches": p_batches as u64,
        "healed": healed as u64,
        "seconds": seconds,
    }))
}

fn print_table(v: &Value) {
    println!(
        "{} records through N `process --until-idle` processes on one PostgreSQL ({} cores)",
        v["records"], v["cores"]
    );
    println!(
        "{:>5} {:>9} {:>11}  per process: associated / projected (batches)",
        "hosts", "seconds", "records/s"
    );
    for run in v["runs"].as_array().into_iter().flatten() {
        let spread: Vec<String> = run["processes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                format!(
                    "{} / {} ({} / {})",
                    p["associated"], p["projected"], p["associate_batches"], p["project_batches"]
                )
            })
            .collect();
        println!(
            "{:>5} {:>9.2} {:>11.0}  {}",
            run["hosts"],
            run["seconds"].as_f64().unwrap_or(0.0),
            run["records_per_s"].as_f64().unwrap_or(0.0),
            spread.join(" | ")
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_names_and_reports_are_read() {
        use super::{report_of, with_database};
        assert_eq!(
            with_database("postgres://u@h:5432/db?sslmode=disable", "x").unwrap(),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://u@h", "x").unwrap(),
            "postgres://u@h/x"
        );
        let r = report_of(
            "noise\nassociated 10 records in 2 batches, projected 7 references in 3 batches, healed 1, in 0.50 s\n",
        )
        .unwrap();
        assert_eq!(r["associated"], 10);
        assert_eq!(r["project_batches"], 3);
        assert_eq!(r["seconds"], 0.5);
    }
}

//! What the rows cost on the embedded SQLite store, against a plain reference:
//!
//! - [`plain`]: the least any store of these records could do: parse each NDJSON line and
//!   insert it as one row of a plain table (no index beyond the row id) in a SQLite file in
//!   WAL mode, 5,000 rows a transaction, with the store's `synchronous` setting. The modes
//!   run it beside `batched` and `floor` as the reference the pipeline is held to.
//! - [`tables`] (`flowhost-bench tables`): each table the pipeline writes, on its own, on a
//!   fresh database with flowhost's schema: the same records, rows shaped as the pipeline
//!   writes them, 5,000 rows a transaction, timed per table (parsing timed apart).

use anyhow::{Context, Result, bail};
use flowhost_core::intake::{IntakeRecord, parse_line};
use serde_json::{Value, json};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, QueryBuilder, Sqlite, SqliteConnection};
use std::io::BufRead;
use std::path::Path;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Rows per transaction, as the floor writes them.
const TRANSACTION: usize = 5_000;
/// SQLite's bound on parameters per statement, with room to spare.
const MAX_PARAMS: usize = 32_000;

/// A connection to the SQLite file `url` with the store's journal and `synchronous` settings
/// (and SQLite's memory statistics off, as the store has them).
async fn connect(url: &str) -> Result<SqliteConnection> {
    // The same process-wide SQLite setting as the store's connections.
    flowhost_store::without_memory_statistics();
    let options = super::modes::store_options();
    let connect = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(if options.durable_commits {
            SqliteSynchronous::Full
        } else {
            SqliteSynchronous::Normal
        });
    Ok(SqliteConnection::connect_with(&connect).await?)
}

/// The plain reference: parse every line, insert one row per record, 5,000 a transaction.
/// Returns the mode's answer (the same fields as the other modes).
pub async fn plain(url: &str, file: &Path, lines: u64) -> Result<Value> {
    let mut db = connect(url).await?;
    sqlx::query(
        "CREATE TABLE plain (id INTEGER PRIMARY KEY, model TEXT NOT NULL, system TEXT NOT NULL, \
         external_id TEXT NOT NULL, occurred_at TEXT NOT NULL, payload TEXT NOT NULL)",
    )
    .execute(&mut db)
    .await?;
    let started = Instant::now();
    let cpu_started = super::modes::cpu_seconds();
    let reader = std::io::BufReader::new(std::fs::File::open(file)?);
    let mut batch: Vec<[String; 5]> = Vec::with_capacity(TRANSACTION);
    let mut statements = 0u64;
    for line in reader.split(b'\n') {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let v: Value = serde_json::from_slice(&line).context("a workload line")?;
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        batch.push([
            text("model"),
            v["source"]["system"].as_str().unwrap_or_default().into(),
            text("id"),
            text("occurred_at"),
            v["payload"].to_string(),
        ]);
        if batch.len() == TRANSACTION {
            statements += insert_plain(&mut db, &batch).await?;
            batch.clear();
        }
    }
    statements += insert_plain(&mut db, &batch).await?;
    let total = started.elapsed();
    let cores = super::modes::cores_busy(cpu_started, total);
    db.close().await?;
    Ok(super::modes::mode_result(
        lines,
        (total, cores),
        statements,
        [total, Duration::ZERO, Duration::ZERO],
        json!({"plain": lines}),
    ))
}

/// One transaction of plain rows; returns the statements it ran.
async fn insert_plain(db: &mut SqliteConnection, rows: &[[String; 5]]) -> Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut tx = db.begin().await?;
    let mut statements = 2;
    for chunk in rows.chunks(MAX_PARAMS / 5) {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "INSERT INTO plain (model, system, external_id, occurred_at, payload) ",
        );
        qb.push_values(chunk, |mut b, r| {
            for field in r {
                b.push_bind(field.as_str());
            }
        });
        qb.build().execute(&mut *tx).await?;
        statements += 1;
    }
    tx.commit().await?;
    Ok(statements)
}

/// One table's cost: rows written, the time, and so microseconds per row.
struct Cost {
    table: &'static str,
    what: &'static str,
    rows: usize,
    time: Duration,
}

/// `flowhost-bench tables`: each table the pipeline writes, timed on its own.
pub async fn tables(db: &str, records: u64, as_json: bool) -> Result<ExitCode> {
    if db.starts_with("postgres") {
        bail!("`flowhost-bench tables` measures the embedded SQLite store; leave out --db");
    }
    let dir = std::env::temp_dir().join(format!("flowhost-bench-tables-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let result = measure(&dir, records).await;
    let _ = std::fs::remove_dir_all(&dir);
    let (lines, costs, plain) = result?;
    let per_row = |c: &Cost| c.time.as_secs_f64() * 1e6 / c.rows.max(1) as f64;
    let all: f64 = costs.iter().map(|c| c.time.as_secs_f64()).sum();
    if as_json {
        let list: Vec<Value> = costs
            .iter()
            .map(|c| {
                json!({"table": c.table, "write": c.what, "rows": c.rows,
                       "seconds": c.time.as_secs_f64(), "us_per_row": per_row(c)})
            })
            .collect();
        println!(
            "{}",
            json!({"records": lines, "tables": list, "plain": plain, "sum_seconds": all})
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "flowhost-bench tables: {lines} records on SQLite (WAL), each table on its own, \
         {TRANSACTION} rows a transaction"
    );
    println!(
        "{:<10} {:<44} {:>9} {:>9} {:>8} {:>7}",
        "table", "write", "rows", "seconds", "µs/row", "share"
    );
    for c in &costs {
        println!(
            "{:<10} {:<44} {:>9} {:>9.3} {:>8.2} {:>6.0}%",
            c.table,
            c.what,
            c.rows,
            c.time.as_secs_f64(),
            per_row(c),
            c.time.as_secs_f64() * 100.0 / all.max(1e-9)
        );
    }
    println!(
        "all of the above: {:.3} s ({:.0} records/s); plain reference: {:.3} s ({:.0} records/s)",
        all,
        lines as f64 / all.max(1e-9),
        plain["seconds"].as_f64().unwrap_or(0.0),
        plain["records_per_s"].as_f64().unwrap_or(0.0)
    );
    Ok(ExitCode::SUCCESS)
}

async fn measure(dir: &Path, records: u64) -> Result<(u64, Vec<Cost>, Value)> {
    let (file, lines) = super::modes::workload_file(dir, records, None)?;
    let plain = plain(
        &format!("sqlite://{}", dir.join("plain.db").display()),
        &file,
        lines,
    )
    .await?;

    let url = format!("sqlite://{}", dir.join("tables.db").display());
    // The schema, by the store's own migrations.
    flowhost_store::Store::open_with(&url, &super::modes::store_options())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .close()
        .await;
    let mut db = connect(&url).await?;
    let mut costs = Vec::new();

    let started = Instant::now();
    let now = chrono::Utc::now();
    let reader = std::io::BufReader::new(std::fs::File::open(&file)?);
    let mut parsed: Vec<IntakeRecord> = Vec::with_capacity(lines as usize);
    for line in reader.split(b'\n') {
        let line = line?;
        if !line.is_empty()
            && let Ok(r) = parse_line(&line, now)
        {
            parsed.push(r);
        }
    }
    costs.push(Cost {
        table: "(parse)",
        what: "intake's checks, canonical hash; no write",
        rows: parsed.len(),
        time: started.elapsed(),
    });
    let n = parsed.len();
    let refs: Vec<String> = (0..n)
        .map(|i| format!("0193b2c4-{i:08x}-7000-8000-000000000000"))
        .collect();
    let micros = flowhost_store::now_micros();

    // Each write: (table, what, columns per row, the SQL before VALUES, after, one row's binds).
    type Bind<'a> =
        Box<dyn Fn(&mut sqlx::query_builder::Separated<'_, Sqlite, &'static str>, usize) + 'a>;
    let writes: Vec<(&'static str, &'static str, usize, &str, &str, Bind)> = vec![
        (
            "intake",
            "every record, unique on its identity",
            9,
            "INSERT INTO intake (model, system, adapter, external_id, occurred_at, \
             occurred_micros, payload, payload_hash, received_micros) ",
            " ON CONFLICT (model, system, external_id, payload_hash) DO NOTHING RETURNING seq",
            Box::new(|b, i| {
                let r = &parsed[i];
                b.push_bind(r.model.as_str())
                    .push_bind(r.source.system.as_str())
                    .push_bind(r.source.adapter.as_str())
                    .push_bind(r.external_id.as_str())
                    .push_bind(r.occurred_at.as_str())
                    .push_bind(r.occurred_micros)
                    .push_bind(r.payload.as_str())
                    .push_bind(r.payload_hash.as_str())
                    .push_bind(micros);
            }),
        ),
        (
            "queue",
            "every record queued (insert)",
            2,
            "INSERT INTO queue (model, seq) ",
            "",
            Box::new(|b, i| {
                b.push_bind(parsed[i].model.as_str())
                    .push_bind(i as i64 + 1);
            }),
        ),
        (
            "keys",
            "one key per record (claim)",
            3,
            "INSERT INTO keys (model, key, reference) ",
            " ON CONFLICT (model, key) DO NOTHING RETURNING key",
            Box::new(|b, i| {
                b.push_bind(parsed[i].model.as_str())
                    .push_bind(format!(
                        "id:{}:{}",
                        parsed[i].source.system, parsed[i].external_id
                    ))
                    .push_bind(refs[i].as_str());
            }),
        ),
        (
            "keyed",
            "every record attached to its reference",
            7,
            "INSERT INTO keyed (seq, model, reference, parent_ref, parents, plugin_version, \
             keyed_micros) ",
            " ON CONFLICT (seq) DO NOTHING",
            Box::new(|b, i| {
                b.push_bind(i as i64 + 1)
                    .push_bind(parsed[i].model.as_str())
                    .push_bind(refs[i].as_str())
                    .push_bind(None::<String>)
                    .push_bind("[]")
                    .push_bind("0.1.0")
                    .push_bind(micros);
            }),
        ),
        (
            "dirty",
            "one mark per record's reference (upsert)",
            3,
            "INSERT INTO dirty (reference, model, stamp) ",
            " ON CONFLICT (reference) DO UPDATE SET stamp = excluded.stamp, error = NULL",
            Box::new(|b, i| {
                b.push_bind(refs[i].as_str())
                    .push_bind(parsed[i].model.as_str())
                    .push_bind(i as i64);
            }),
        ),
        (
            "views",
            "one view per record (payload-sized JSON ×3)",
            9,
            "INSERT INTO views (reference, model, first_seq, canonical, root, lineage, parents, \
             plugin_version, updated_micros) ",
            " ON CONFLICT (reference) DO UPDATE SET canonical = excluded.canonical",
            Box::new(|b, i| {
                let p = parsed[i].payload.as_str();
                b.push_bind(refs[i].as_str())
                    .push_bind(parsed[i].model.as_str())
                    .push_bind(i as i64 + 1)
                    .push_bind(p)
                    .push_bind(p)
                    .push_bind(p)
                    .push_bind("{}")
                    .push_bind("0.1.0")
                    .push_bind(micros);
            }),
        ),
        (
            "changes",
            "one change per view",
            4,
            "INSERT INTO changes (model, reference, plugin_version, changed_micros) ",
            "",
            Box::new(|b, i| {
                b.push_bind(parsed[i].model.as_str())
                    .push_bind(refs[i].as_str())
                    .push_bind("0.1.0")
                    .push_bind(micros);
            }),
        ),
    ];
    let all: Vec<usize> = (0..n).collect();
    for (table, what, columns, head, tail, bind) in &writes {
        let started = Instant::now();
        for transaction in all.chunks(TRANSACTION) {
            let mut tx = db.begin().await?;
            for chunk in transaction.chunks(MAX_PARAMS / columns) {
                let mut qb = QueryBuilder::<Sqlite>::new(*head);
                qb.push_values(chunk, |mut fields, &i| bind(&mut fields, i));
                qb.push(*tail);
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }
        costs.push(Cost {
            table,
            what,
            rows: n,
            time: started.elapsed(),
        });
        if table == &"queue" {
            // The queue's rows are deleted again when association consumes them.
            let started = Instant::now();
            for transaction in all.chunks(TRANSACTION) {
                let mut tx = db.begin().await?;
                let mut qb = QueryBuilder::<Sqlite>::new("DELETE FROM queue WHERE pos IN (");
                let mut list = qb.separated(", ");
                for &i in transaction {
                    list.push_bind(i as i64 + 1);
                }
                qb.push(")");
                qb.build().execute(&mut *tx).await?;
                tx.commit().await?;
            }
            costs.push(Cost {
                table: "queue",
                what: "every record consumed (delete)",
                rows: n,
                time: started.elapsed(),
            });
        }
    }
    db.close().await?;
    Ok((lines, costs, plain))
}

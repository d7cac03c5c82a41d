//! Scratch databases on the real SQLite and PostgreSQL, and direct queries on them.

/// Notes a PostgreSQL scratch database in the file `FLOWHOST_TEST_TALLY` names (set by
/// `cargo xtask test`, which counts them in its summary). One short append per line.
fn note_postgres(name: &str) {
    use std::io::Write;
    if let Some(path) = std::env::var_os("FLOWHOST_TEST_TALLY")
        && let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = file.write_all(format!("{name}\n").as_bytes());
    }
}

/// The maintenance database of the machine's PostgreSQL.
pub const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database that exists for one test: a SQLite file in a temporary folder, or a
/// PostgreSQL database created for the test and dropped when this is dropped.
pub struct Scratch {
    pub url: String,
    pub backend: &'static str,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

/// Runs a future on a fresh runtime in its own thread, so it works from sync and async code.
fn block_on_thread<T: Send + 'static>(
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    })
    .join()
    .expect("helper thread")
}

pub(crate) fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Scratch {
    /// A new SQLite file.
    pub fn sqlite() -> Scratch {
        let dir = tempfile::tempdir().expect("temp dir");
        Scratch {
            url: format!("sqlite://{}", dir.path().join("flowhost.db").display()),
            backend: "sqlite",
            _dir: Some(dir),
            pg_name: None,
        }
    }

    /// A new PostgreSQL database; `None` when PostgreSQL is unreachable outside CI. Under
    /// `CI=true` an unreachable PostgreSQL fails the test.
    pub fn postgres() -> Option<Scratch> {
        let name = format!("flowhost_t_{}", unique_suffix());
        let create = name.clone();
        let made = block_on_thread(async move {
            use sqlx::Connection;
            let mut admin = sqlx::PgConnection::connect(PG_ADMIN).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {create}")))
                .execute(&mut admin)
                .await?;
            Ok::<_, sqlx::Error>(())
        });
        match made {
            Ok(()) => {
                note_postgres(&name);
                Some(Scratch {
                    url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
                    backend: "postgres",
                    _dir: None,
                    pg_name: Some(name),
                })
            }
            Err(e) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "PostgreSQL at {PG_ADMIN} is unreachable under CI: {e}"
                );
                eprintln!("PostgreSQL unreachable ({e}); this test runs on SQLite only");
                None
            }
        }
    }

    /// SQLite, and PostgreSQL when reachable.
    pub fn both() -> Vec<Scratch> {
        let mut out = vec![Scratch::sqlite()];
        out.extend(Scratch::postgres());
        out
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            block_on_thread(async move {
                use sqlx::Connection;
                if let Ok(mut admin) = sqlx::PgConnection::connect(PG_ADMIN).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut admin)
                    .await;
                }
            });
        }
    }
}

/// Rows of `(text, count)` from a query on a scratch database (SQLite or PostgreSQL), for
/// checks the CLI does not expose (which plugin version keyed each record, say).
pub fn count_by(url: &str, sql: &str) -> Vec<(String, i64)> {
    let (url, sql) = (url.to_string(), sql.to_string());
    block_on_thread(async move {
        if url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(&url).await.expect("open sqlite");
            let rows = sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(sql))
                .fetch_all(&pool)
                .await
                .expect("query");
            pool.close().await;
            rows
        } else {
            let pool = sqlx::PgPool::connect(&url).await.expect("open postgres");
            let rows = sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(sql))
                .fetch_all(&pool)
                .await
                .expect("query");
            pool.close().await;
            rows
        }
    })
}

/// Runs statements on a scratch database (SQLite or PostgreSQL), for what an operator might
/// do to it behind flowhost's back (a constraint of their own, a read-only switch).
pub fn execute(url: &str, statements: &[&str]) {
    let url = url.to_string();
    let statements: Vec<String> = statements.iter().map(|s| s.to_string()).collect();
    block_on_thread(async move {
        if url.starts_with("sqlite:") {
            run_all::<sqlx::SqliteConnection>(&url, statements).await
        } else {
            run_all::<sqlx::PgConnection>(&url, statements).await
        }
    })
}

/// Runs each statement on one connection of type `C` to `url`.
async fn run_all<C>(url: &str, statements: Vec<String>)
where
    C: sqlx::Connection,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = C::Database>,
{
    let mut c = C::connect(url).await.expect("open the database");
    for s in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(s))
            .execute(&mut c)
            .await
            .expect("statement");
    }
}

/// Whether the database has no work left: nothing queued, no reference marked for
/// projection (but those whose projection failed).
pub fn settled(url: &str) -> bool {
    count_by(
        url,
        "SELECT 'n', (SELECT COUNT(*) FROM queue) + (SELECT COUNT(*) FROM dirty WHERE error IS NULL)",
    )[0]
    .1 == 0
}

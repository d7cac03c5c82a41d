//! Helpers for flowhost's end-to-end tests: where the built binary and plugin components
//! are, scratch databases on the real SQLite and PostgreSQL, and waiting on conditions.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests live in the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// The folder `cargo xtask build-plugins` fills with `<model>.wasm`.
pub fn plugins_dir() -> PathBuf {
    let dir = target_dir().join("plugins");
    assert!(
        dir.join("device.wasm").exists(),
        "{} has no plugins: run `cargo xtask build-plugins` (or `cargo xtask test`)",
        dir.display()
    );
    dir
}

/// One built plugin component.
pub fn plugin(model: &str) -> PathBuf {
    plugins_dir().join(format!("{model}.wasm"))
}

/// The `flowhost` binary built by `cargo xtask test` (debug profile).
pub fn binary() -> PathBuf {
    let bin = target_dir().join("debug").join("flowhost");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p flowhost` (or `cargo xtask test`)",
        bin.display()
    );
    bin
}

/// A scratch folder for the compile cache shared by the tests of one run.
pub fn cache_dir() -> PathBuf {
    target_dir().join("test-cache")
}

/// Runs the binary with `args`, with the test compile cache.
pub fn flowhost(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .env("FLOWHOST_CACHE_DIR", cache_dir())
        .env_remove("FLOWHOST_DB")
        .env_remove("FLOWHOST_PLUGINS")
        .output()
        .expect("run flowhost")
}

/// The text of an output stream.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
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

fn unique_suffix() -> String {
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
            Ok(()) => Some(Scratch {
                url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
                backend: "postgres",
                _dir: None,
                pg_name: Some(name),
            }),
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

/// The CLI against one database and a plugins folder.
pub struct Host {
    pub db: String,
    pub plugins: PathBuf,
}

impl Host {
    /// The CLI on `db` with the example plugins.
    pub fn new(db: &str) -> Host {
        Host {
            db: db.to_string(),
            plugins: plugins_dir(),
        }
    }

    /// The command with `--db` and `--plugins` set, ready for more arguments.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(binary());
        cmd.arg("--db")
            .arg(&self.db)
            .arg("--plugins")
            .arg(&self.plugins)
            .env("FLOWHOST_CACHE_DIR", cache_dir())
            .env_remove("FLOWHOST_DB")
            .env_remove("FLOWHOST_PLUGINS");
        cmd
    }

    /// Runs the CLI with `args`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run flowhost")
    }

    /// Ingests NDJSON text through standard input.
    pub fn ingest(&self, ndjson: &str) -> Output {
        self.ingest_bytes(ndjson.as_bytes())
    }

    /// Ingests raw bytes (which may be invalid UTF-8) through standard input.
    pub fn ingest_bytes(&self, ndjson: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .command()
            .args(["ingest", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn ingest");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(ndjson)
            .expect("write stdin");
        child.wait_with_output().expect("ingest output")
    }

    /// `process --until-idle`, which must succeed.
    pub fn process(&self) {
        let out = self.run(&["process", "--until-idle"]);
        assert!(
            out.status.success(),
            "process failed: {}",
            text(&out.stderr)
        );
    }

    /// The lines of an export, parsed.
    pub fn export(&self, view: &str, model: &str) -> Vec<serde_json::Value> {
        let out = self.run(&["export", view, model]);
        assert!(out.status.success(), "export failed: {}", text(&out.stderr));
        json_lines(&out.stdout)
    }

    /// Parked records as exported (`parked --json`).
    pub fn parked(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["parked", "--json"]);
        assert!(out.status.success(), "parked failed: {}", text(&out.stderr));
        json_lines(&out.stdout)
    }
}

/// Parses NDJSON output.
pub fn json_lines(bytes: &[u8]) -> Vec<serde_json::Value> {
    text(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// One NDJSON record line.
pub fn line(model: &str, system: &str, id: &str, payload: serde_json::Value) -> String {
    serde_json::json!({
        "model": model,
        "source": {"system": system, "adapter": format!("{system}-v1")},
        "id": id,
        "occurred_at": "2026-03-01T10:00:00Z",
        "payload": payload,
    })
    .to_string()
        + "\n"
}

/// Waits for `condition` to hold, checking every few milliseconds, until `deadline`.
pub fn wait_for(what: &str, deadline: std::time::Duration, mut condition: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !condition() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Asserts a CLI run succeeded, showing its output otherwise.
pub fn block_until_ok(out: &Output) {
    assert!(
        out.status.success(),
        "failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Everything a user reads back from a host, with references renamed by their order of
/// first intake (`device#0`, …) so that two runs that minted different UUIDs compare equal.
pub fn snapshot(host: &Host) -> serde_json::Value {
    use serde_json::{Value, json};
    use std::collections::HashMap;
    let mut names: HashMap<String, String> = HashMap::new();
    for model in ["device", "sensor"] {
        for (i, v) in host.export("canonical", model).iter().enumerate() {
            names.insert(
                v["id"].as_str().unwrap_or_default().to_string(),
                format!("{model}#{i}"),
            );
        }
    }
    let rename = |v: &Value| -> Value {
        match v.as_str().and_then(|s| names.get(s)) {
            Some(name) => Value::String(name.clone()),
            None => v.clone(),
        }
    };
    let mut views = serde_json::Map::new();
    for model in ["device", "sensor"] {
        for view in ["canonical", "root", "lineage"] {
            let lines: Vec<Value> = host
                .export(view, model)
                .into_iter()
                .map(|mut v| {
                    v["id"] = rename(&v["id"]);
                    if let Some(parents) = v.get_mut("parents").and_then(Value::as_object_mut) {
                        for p in parents.values_mut() {
                            *p = rename(p);
                        }
                    }
                    v
                })
                .collect();
            views.insert(format!("{view} {model}"), Value::Array(lines));
        }
    }
    let values: Vec<Value> = host
        .export("values", "reading")
        .into_iter()
        .map(|mut v| {
            v["parent"]["id"] = rename(&v["parent"]["id"]);
            v
        })
        .collect();
    let mut parked: Vec<(String, String, String, String)> = host
        .parked()
        .into_iter()
        .map(|p| {
            (
                p["model"].as_str().unwrap_or_default().to_string(),
                p["source"]["system"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["id"].as_str().unwrap_or_default().to_string(),
                p["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    parked.sort();
    json!({"views": views, "values": values, "parked": parked})
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
        use sqlx::Connection;
        if url.starts_with("sqlite:") {
            let mut c = sqlx::SqliteConnection::connect(&url)
                .await
                .expect("open sqlite");
            for s in statements {
                sqlx::raw_sql(sqlx::AssertSqlSafe(s))
                    .execute(&mut c)
                    .await
                    .expect("statement");
            }
        } else {
            let mut c = sqlx::PgConnection::connect(&url)
                .await
                .expect("open postgres");
            for s in statements {
                sqlx::raw_sql(sqlx::AssertSqlSafe(s))
                    .execute(&mut c)
                    .await
                    .expect("statement");
            }
        }
    })
}

/// A running `flowhost serve`, its log in a file; stopped (SIGKILL) when dropped.
pub struct Server {
    child: std::process::Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `serve` for `host` with extra global arguments, logging at info.
    pub fn start(host: &Host, args: &[&str]) -> Server {
        Self::start_command(host.command(), args)
    }

    /// Starts `serve` from a prepared command (`Host::command` with changes, say another
    /// environment) with extra global arguments, logging at info.
    pub fn start_command(mut command: Command, args: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("serve.log");
        let file = std::fs::File::create(&log).expect("log file");
        if !args.contains(&"--log") {
            command.args(["--log", "info"]);
        }
        // Tests run side by side: each server takes a free port (see `url`).
        if !args.contains(&"--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        let child = command
            .args(args)
            .arg("serve")
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start serve");
        Server {
            child,
            log,
            _dir: dir,
        }
    }

    /// What the service has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The HTTP API's base URL (`http://127.0.0.1:PORT`), once the server says it listens.
    pub fn url(&mut self) -> String {
        let mut found = None;
        let deadline = std::time::Duration::from_secs(120);
        wait_for("the server to listen", deadline, || {
            let log = self.log();
            found = log
                .lines()
                .find_map(|l| l.split("listening on ").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
                .map(|u| u.trim_end_matches(',').to_string());
            assert!(
                found.is_some() || self.running(),
                "serve exited before listening:\n{log}"
            );
            found.is_some()
        });
        found.expect("found")
    }

    /// The process id (to send it signals).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits for the process to exit, with its status.
    pub fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().expect("serve exits")
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then the exit status and everything the service logged.
    pub fn stop_with_log(mut self) -> (std::process::ExitStatus, String) {
        // SAFETY: kill(2) with SIGTERM on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("serve exits");
        (status, self.log())
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) with SIGTERM on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().expect("serve exits")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    /// The body as JSON (panics with the body otherwise).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// An NDJSON body, one value per line.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        json_lines(self.body.as_bytes())
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// A small blocking client of the HTTP API.
pub struct Http {
    pub base: String,
    client: reqwest::blocking::Client,
}

impl Http {
    pub fn new(base: &str) -> Http {
        Http {
            base: base.trim_end_matches('/').to_string(),
            client: reqwest::blocking::Client::builder()
                .timeout(std::time::Duration::from_secs(120))
                .build()
                .expect("client"),
        }
    }

    fn send(&self, request: reqwest::blocking::RequestBuilder) -> Answer {
        let response = request.send().expect("request");
        Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().expect("body"),
        }
    }

    pub fn get(&self, path: &str) -> Answer {
        self.send(self.client.get(format!("{}{path}", self.base)))
    }

    /// POST with optional bearer token and body.
    pub fn post(&self, path: &str, token: Option<&str>, body: &str) -> Answer {
        let mut r = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-ndjson")
            .body(body.to_string());
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        self.send(r)
    }

    /// `POST /v1/records` of NDJSON text.
    pub fn records(&self, ndjson: &str) -> Answer {
        self.post("/v1/records", None, ndjson)
    }

    /// `POST /v1/records` with a body sent in chunks, without a `content-length`.
    pub fn records_chunked(&self, ndjson: &str) -> Answer {
        let reader = std::io::Cursor::new(ndjson.as_bytes().to_vec());
        self.send(
            self.client
                .post(format!("{}/v1/records", self.base))
                .header("content-type", "application/x-ndjson")
                .body(reqwest::blocking::Body::new(reader)),
        )
    }

    /// A raw request (any method, headers and body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut r = self
            .client
            .request(method, format!("{}{path}", self.base))
            .body(body);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        self.send(r)
    }
}

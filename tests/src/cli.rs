//! The CLI against one database, NDJSON lines, and waiting on conditions.

use crate::{binary, cache_dir, plugins_dir, text};
use std::path::PathBuf;
use std::process::{Command, Output};

/// The CLI against one database and a plugins folder.
pub struct Host {
    pub db: String,
    pub plugins: PathBuf,
}

/// A plugins folder of the test's own holding copies of the three example plugins, which
/// the test may change (swap a version in, remove one).
pub fn own_plugins() -> tempfile::TempDir {
    let folder = tempfile::tempdir().expect("plugins folder");
    for model in ["device", "sensor", "reading"] {
        std::fs::copy(
            crate::plugin(model),
            folder.path().join(format!("{model}.wasm")),
        )
        .expect("copy a plugin");
    }
    folder
}

impl Host {
    /// The CLI on `db` with the plugins in `folder`.
    pub fn with_plugins(db: &str, folder: &std::path::Path) -> Host {
        Host {
            db: db.to_string(),
            plugins: folder.to_path_buf(),
        }
    }

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

    /// Runs `flowhost-bench` on the same database and plugins with `args`.
    pub fn bench(&self, args: &[&str]) -> Output {
        Command::new(crate::bench_binary())
            .arg("--db")
            .arg(&self.db)
            .arg("--plugins")
            .arg(&self.plugins)
            .env("FLOWHOST_CACHE_DIR", cache_dir())
            .env_remove("FLOWHOST_DB")
            .env_remove("FLOWHOST_PLUGINS")
            .args(args)
            .output()
            .expect("run flowhost-bench")
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

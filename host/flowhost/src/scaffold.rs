//! `flowhost plugins new`: a ready plugin project (Rust or Python) — the model with a
//! commented key rule, parents and policies, a native test on a small NDJSON sample through
//! the SDK's test harness (Rust) or the guest library's (plain Python), and a README with
//! the commands to build, test, try and deploy it.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What kind of model to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NewKind {
    /// Records are associated into references and projected into views.
    Entity,
    /// Records only hang under one parent reference (never merged, never projected).
    ValueObject,
}

/// The guest languages a project can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    /// Built with componentize-py (PyPI) against `sdk/python`; projection is the host's.
    Python,
}

/// What `plugins new` is asked for.
#[derive(Debug, clap::Args)]
pub struct NewPlugin {
    /// The model's name (lower-case letters, digits and `_`): `pump`, `cold_room`.
    pub name: String,
    #[arg(long, value_enum, default_value = "entity")]
    pub kind: NewKind,
    /// A parent model its records name (repeatable); a value object needs exactly one.
    #[arg(long = "parent")]
    pub parents: Vec<String>,
    #[arg(long, value_enum, default_value = "rust")]
    pub lang: Lang,
    /// The folder the project's folder is made in.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// flowhost's SDK (the `sdk/` folder of a checkout) [default: the checkout this binary
    /// was built from].
    #[arg(long)]
    pub sdk: Option<PathBuf>,
}

/// The SDK of the checkout this binary was built from.
fn default_sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk")
}

/// A model name: lower-case letters, digits and `_`, starting with a letter, at most 64.
fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        bail!(
            "{what} '{name}' is not a model name: use lower-case letters, digits and '_', \
             starting with a letter (at most 64 characters), e.g. 'pump' or 'cold_room'"
        );
    }
    Ok(())
}

/// `cold_room` → `ColdRoom`.
fn type_name(name: &str) -> String {
    name.split('_')
        .filter(|p| !p.is_empty())
        .map(|p| p[..1].to_uppercase() + &p[1..])
        .collect()
}

pub fn run(new: NewPlugin) -> Result<ExitCode> {
    check_name("the model", &new.name)?;
    for p in &new.parents {
        check_name("the parent", p)?;
        if *p == new.name {
            bail!("--parent {p}: a model cannot be its own parent");
        }
    }
    let mut parents = new.parents.clone();
    parents.dedup();
    if new.kind == NewKind::ValueObject && parents.len() != 1 {
        bail!(
            "--kind value-object needs exactly one --parent (the model its records hang under); \
             got {}",
            parents.len()
        );
    }
    let sdk = new.sdk.clone().unwrap_or_else(default_sdk);
    let sdk = sdk.canonicalize().with_context(|| {
        format!(
            "the SDK is not at {}: pass --sdk PATH to a flowhost checkout's sdk/ folder",
            sdk.display()
        )
    })?;
    let sdk_manifest = std::fs::read_to_string(sdk.join("Cargo.toml")).unwrap_or_default();
    let python_library = sdk.join("python/flowhost.py");
    if new.lang == Lang::Python && !python_library.is_file() {
        bail!(
            "{} is not flowhost's SDK (no python/flowhost.py in it): pass --sdk PATH to a \
             flowhost checkout's sdk/ folder",
            sdk.display()
        );
    }
    if !sdk_manifest.contains("name = \"flowhost-sdk\"") {
        bail!(
            "{} is not flowhost's SDK (no flowhost-sdk package in its Cargo.toml): pass --sdk \
             PATH to a flowhost checkout's sdk/ folder",
            sdk.display()
        );
    }
    std::fs::create_dir_all(&new.dir)
        .with_context(|| format!("cannot create {}", new.dir.display()))?;
    let project = new.dir.join(&new.name);
    if project.exists()
        && std::fs::read_dir(&project)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!(
            "{} exists and is not empty: choose another name or --dir",
            project.display()
        );
    }
    if new.lang == Lang::Python {
        return python::write(&new, &parents, &sdk, &project);
    }
    let parent_dir = new.dir.canonicalize()?;
    let workspace = enclosing_workspace(&parent_dir);
    let files = files(&new.name, new.kind, &parents, &sdk, workspace.is_none());
    std::fs::create_dir_all(project.join("src"))?;
    std::fs::create_dir_all(project.join("tests"))?;
    for (path, text) in &files {
        std::fs::write(project.join(path), text)
            .with_context(|| format!("cannot write {}", project.join(path).display()))?;
    }
    // The versions the SDK is tested with, so the first build resolves nothing new.
    if let Some(lock) = sdk.parent().map(|p| p.join("Cargo.lock"))
        && lock.is_file()
        && workspace.is_none()
    {
        std::fs::copy(&lock, project.join("Cargo.lock"))?;
    }
    println!(
        "wrote {} ({} model '{}'):",
        project.display(),
        kind_word(new.kind),
        new.name
    );
    for (path, _) in &files {
        println!("  {path}");
    }
    if let Some(ws) = workspace {
        println!(
            "note: {} is inside the Cargo workspace at {}; add the folder to its `members` \
             (unless a glob there covers it), or to `exclude` to build it on its own",
            project.display(),
            ws.display()
        );
    }
    let wasm = format!("plugin_{}.wasm", new.name);
    println!("next:");
    println!("  cd {}", project.display());
    println!(
        "  cargo test                                   # the model natively, on sample.ndjson"
    );
    println!("  cargo build --target wasm32-wasip2 --release # the component");
    println!("  flowhost plugins test target/wasm32-wasip2/release/{wasm} sample.ndjson");
    println!(
        "  cp target/wasm32-wasip2/release/{wasm} <plugins folder>/{}.wasm",
        new.name
    );
    Ok(ExitCode::SUCCESS)
}

fn kind_word(kind: NewKind) -> &'static str {
    match kind {
        NewKind::Entity => "entity",
        NewKind::ValueObject => "value-object",
    }
}

/// The nearest folder at or above `dir` whose `Cargo.toml` declares a `[workspace]`.
fn enclosing_workspace(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| {
            std::fs::read_to_string(d.join("Cargo.toml"))
                .is_ok_and(|t| t.lines().any(|l| l.trim() == "[workspace]"))
        })
        .map(Path::to_path_buf)
}

/// The project's files: (path in the project, text).
fn files(
    name: &str,
    kind: NewKind,
    parents: &[String],
    sdk: &Path,
    own_workspace: bool,
) -> Vec<(String, String)> {
    let ty = type_name(name);
    let crate_name = format!("plugin_{name}");
    // A TOML string, quoted and escaped, whatever the path holds.
    let sdk_path = toml::Value::String(sdk.display().to_string()).to_string();
    let cargo = format!(
        r#"[package]
name = "plugin-{name}"
description = "flowhost plugin: the {name} model."
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the WebAssembly component; rlib: the model linked natively in tests.
crate-type = ["cdylib", "rlib"]

[dependencies]
# flowhost's SDK is not published: this is the checkout it was generated from.
flowhost-sdk = {{ path = {sdk_path} }}

[profile.release]
lto = true
codegen-units = 1
{workspace}"#,
        workspace = if own_workspace {
            "\n# A project of its own, not part of an enclosing Cargo workspace.\n[workspace]\n"
        } else {
            ""
        }
    );
    let describe = match kind {
        NewKind::Entity => {
            let mut d =
                format!("        Description::entity(\"{name}\", env!(\"CARGO_PKG_VERSION\"))");
            for p in parents {
                d += &format!("\n            .with_parent(\"{p}\")");
            }
            d += "\n            // Which value the root view keeps for a path (default: the latest\n            // `occurred_at`). Others: Policy::First, Policy::Max, Policy::Min,\n            // Policy::Coalesce(vec![\"oem\".into(), \"bms\".into()]) (by source system).\n            .with_policy(\"name\", Policy::Last)";
            d
        }
        NewKind::ValueObject => format!(
            "        Description::value_object(\"{name}\", env!(\"CARGO_PKG_VERSION\"), \"{}\")",
            parents[0]
        ),
    };
    let keys = match kind {
        NewKind::Entity => format!(
            r#"    /// The aggregation keys: two records that share a key describe the same {name}.
    /// Normalise them (trim, one case) and prefix them with what they are. Here:
    /// `serial:` + the upper-cased, trimmed `serial` (a string or a list of strings); a
    /// record without one is parked `NO_KEYS` until its source sends one (the host adds
    /// the source key `src:<system>:<id>` itself). Change this to what identifies a {name}
    /// in your sources; return `Err(Rejection::new(CODE, message))` to refuse a record.
    fn keys(record: &Record) -> Result<Vec<String>, Rejection> {{
        if let Some(bad) = record
            .get("serial")
            .filter(|v| !(v.is_null() || v.is_string() || v.is_array()))
        {{
            return Err(Rejection::new(
                "BAD_SERIAL",
                format!("serial must be a string or a list of strings, got {{bad}}"),
            ));
        }}
        Ok(record
            .strings("serial")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| key("serial", &s.to_uppercase()))
            .collect())
    }}
"#
        ),
        NewKind::ValueObject => {
            r#"    /// A value object owns no keys: its records are never merged, only listed under
    /// their parent.
    fn keys(_record: &Record) -> Result<Vec<String>, Rejection> {
        Ok(Vec::new())
    }
"#
            .to_string()
        }
    };
    let parents_fn = if parents.is_empty() {
        String::new()
    } else {
        let mut body = String::from("        let mut parents = Vec::new();\n");
        for p in parents {
            let otherwise = if kind == NewKind::ValueObject {
                format!(
                    "\n                return Err(Rejection::new(\n                    \"MISSING_{}\",\n                    \"{p}_id must be a non-empty string\",\n                ));\n            ",
                    p.to_uppercase()
                )
            } else {
                String::new()
            };
            body += &format!(
                r#"        // The {p} by its source key in this record's system: `{p}_id` names the
        // {p} as that system does.
        match record.get("{p}_id").and_then(|v| v.as_str()) {{
            Some(id) if !id.trim().is_empty() => {{
                parents.push(ParentKey::by_source("{p}", &record.source.system, id))
            }}
            _ => {{{otherwise}}}
        }}
"#
            );
        }
        format!(
            r#"
    /// The parents the record names. A parent that is not keyed yet parks the record
    /// `PARENT_NOT_FOUND` until it is.
    fn parents(record: &Record) -> Result<Vec<ParentKey>, Rejection> {{
{body}        Ok(parents)
    }}
"#
        )
    };
    let uses = match (kind, parents.is_empty()) {
        (NewKind::Entity, true) => "Description, Model, Policy, Record, Rejection, key",
        (NewKind::Entity, false) => "Description, Model, ParentKey, Policy, Record, Rejection, key",
        (NewKind::ValueObject, _) => "Description, Model, ParentKey, Record, Rejection",
    };
    let lib = format!(
        r#"//! The `{name}` model. Describe here what a {name} is and which systems send it.
//!
//! flowhost calls this plugin once per batch; the SDK calls the functions below once per
//! record. Build the component with `cargo build --target wasm32-wasip2 --release`.

use flowhost_sdk::{{{uses}}};

pub struct {ty};

impl Model for {ty} {{
    fn describe() -> Description {{
{describe}
    }}

{keys}{parents_fn}}}

flowhost_sdk::export_model!({ty});
"#
    );
    let sample = sample(name, kind, parents);
    let test = match kind {
        NewKind::Entity => format!(
            r#"//! The model natively, on `sample.ndjson`, through the SDK's test harness.

use flowhost_sdk::{{json, testing}};
use {crate_name}::{ty};

const SAMPLE: &str = include_str!("../sample.ndjson");

#[test]
fn records_that_share_a_serial_share_a_key() {{
    let records = testing::records(SAMPLE, "{name}");
    assert_eq!(records.len(), 3);
    let decided = testing::associate::<{ty}>(&records);
    let keys = |i: usize| decided[i].as_ref().expect("keyed").keys.clone();
    assert_eq!(keys(0), ["serial:SN-1"]);
    assert_eq!(keys(1), keys(0), "two systems, one serial: one {name}");
    assert!(keys(2).is_empty(), "no serial: it waits (NO_KEYS)");
}}

#[test]
fn the_views_merge_what_the_sources_said() {{
    let records = testing::records(SAMPLE, "{name}");
    let views = testing::project_together::<{ty}>(&records[..2]);
    assert_eq!(views.canonical["serial"], json!(["sn-1"]));
    assert_eq!(views.canonical["name"], json!(["First", "Second"]));
    assert_eq!(views.root["name"], json!("Second"), "the latest name");
}}
"#
        ),
        NewKind::ValueObject => format!(
            r#"//! The model natively, on `sample.ndjson`, through the SDK's test harness.

use flowhost_sdk::testing;
use {crate_name}::{ty};

const SAMPLE: &str = include_str!("../sample.ndjson");

#[test]
fn records_hang_under_their_parent_or_are_refused() {{
    let records = testing::records(SAMPLE, "{name}");
    let decided = testing::associate::<{ty}>(&records);
    assert_eq!(decided[0].as_ref().expect("keyed").parents.len(), 1);
    assert!(decided[2].is_err(), "no parent id: refused");
}}
"#
        ),
    };
    let readme = format!(
        r#"# plugin-{name}

The `{name}` model for flowhost ({kind}).

- `src/lib.rs`: the model: its keys{parents_note}, and its description.
- `tests/model.rs`: the model run natively on `sample.ndjson` (`cargo test`).
- `sample.ndjson`: a few records in flowhost's intake format.

Commands (from this folder; the component target once: `rustup target add wasm32-wasip2`):

```sh
cargo test                                    # the model natively
cargo build --target wasm32-wasip2 --release  # the component
flowhost plugins check target/wasm32-wasip2/release/{crate_name}.wasm
flowhost plugins test target/wasm32-wasip2/release/{crate_name}.wasm sample.ndjson
```

The component is `target/wasm32-wasip2/release/{crate_name}.wasm`. To run it, copy it into
a host's plugins folder as `{name}.wasm`; a running `flowhost serve` validates it and swaps
it in (a file that fails validation never replaces a working version).
"#,
        kind = kind_word(kind),
        parents_note = if parents.is_empty() {
            String::new()
        } else {
            format!(", its parents ({})", parents.join(", "))
        },
    );
    vec![
        ("Cargo.toml".into(), cargo),
        ("src/lib.rs".into(), lib),
        ("tests/model.rs".into(), test),
        ("sample.ndjson".into(), sample),
        ("README.md".into(), readme),
        (".gitignore".into(), "/target\n".into()),
    ]
}

/// A few records of the model in flowhost's intake format: two systems naming one thing
/// and one record without a key (an entity), or three values, the last without a parent.
fn sample(name: &str, kind: NewKind, parents: &[String]) -> String {
    let parent_field = |system: &str| -> String {
        parents
            .first()
            .map(|p| format!(",\"{p}_id\":\"{}-1\"", &system[..1].to_uppercase()))
            .unwrap_or_default()
    };
    match kind {
        NewKind::Entity => format!(
            "{{\"model\":\"{name}\",\"source\":{{\"system\":\"bms\",\"adapter\":\"bms-v1\"}},\"id\":\"A-1\",\"occurred_at\":\"2026-03-01T10:00:00Z\",\"payload\":{{\"serial\":\"sn-1\",\"name\":\"First\"{}}}}}\n\
             {{\"model\":\"{name}\",\"source\":{{\"system\":\"oem\"}},\"id\":\"X-9\",\"occurred_at\":\"2026-03-01T11:00:00Z\",\"payload\":{{\"serial\":\"SN-1 \",\"name\":\"Second\",\"firmware\":\"1.2\"}}}}\n\
             {{\"model\":\"{name}\",\"source\":{{\"system\":\"bms\"}},\"id\":\"A-2\",\"occurred_at\":\"2026-03-01T12:00:00Z\",\"payload\":{{\"name\":\"No serial yet\"}}}}\n",
            parent_field("bms")
        ),
        NewKind::ValueObject => format!(
            "{{\"model\":\"{name}\",\"source\":{{\"system\":\"bms\"}},\"id\":\"V-1\",\"occurred_at\":\"2026-03-01T10:00:00Z\",\"payload\":{{\"value\":1{}}}}}\n\
             {{\"model\":\"{name}\",\"source\":{{\"system\":\"bms\"}},\"id\":\"V-2\",\"occurred_at\":\"2026-03-01T10:05:00Z\",\"payload\":{{\"value\":2{}}}}}\n\
             {{\"model\":\"{name}\",\"source\":{{\"system\":\"bms\"}},\"id\":\"V-3\",\"occurred_at\":\"2026-03-01T10:10:00Z\",\"payload\":{{\"value\":3}}}}\n",
            parent_field("bms"),
            parent_field("bms")
        ),
    }
}

mod python;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_turned_into_types() {
        assert!(check_name("the model", "cold_room").is_ok());
        for bad in ["Pump", "1pump", "pump-x", "", "pump!", &"a".repeat(65)] {
            assert!(check_name("the model", bad).is_err(), "{bad}");
        }
        assert_eq!(type_name("cold_room"), "ColdRoom");
        assert_eq!(type_name("pump"), "Pump");
    }

    #[test]
    fn the_sdk_path_is_written_as_a_toml_string_whatever_it_holds() {
        let odd = r#"/tmp/a "quoted" \ path"#;
        let files = files("pump", NewKind::Entity, &[], Path::new(odd), true);
        let manifest: toml::Table = toml::from_str(&files[0].1).expect("valid TOML");
        assert_eq!(
            manifest["dependencies"]["flowhost-sdk"]["path"].as_str(),
            Some(odd)
        );
        assert!(manifest.contains_key("workspace"));
    }
}

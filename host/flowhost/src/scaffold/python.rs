//! `flowhost plugins new NAME --lang python`: a Python plugin project built with
//! componentize-py against the checkout's guest library (`sdk/python/flowhost.py`) and WIT.

use super::{NewKind, NewPlugin, kind_word, sample, type_name};
use anyhow::{Context, Result};
use std::path::Path;
use std::process::ExitCode;

/// The componentize-py release the guest library is tested with.
const COMPONENTIZE_PY: &str = "0.25.1";

pub fn write(new: &NewPlugin, parents: &[String], sdk: &Path, project: &Path) -> Result<ExitCode> {
    let library = sdk.join("python");
    let wit = sdk
        .parent()
        .map(|p| p.join("wit"))
        .filter(|w| w.join("flowhost.wit").is_file())
        .with_context(|| {
            format!(
                "no wit/flowhost.wit beside {}: pass --sdk PATH to a flowhost checkout's sdk/ folder",
                sdk.display()
            )
        })?;
    let files = files(&new.name, new.kind, parents, &library, &wit);
    std::fs::create_dir_all(project)
        .with_context(|| format!("cannot create {}", project.display()))?;
    for (path, text) in &files {
        std::fs::write(project.join(path), text)
            .with_context(|| format!("cannot write {}", project.join(path).display()))?;
    }
    println!(
        "wrote {} ({} model '{}', Python):",
        project.display(),
        kind_word(new.kind),
        new.name
    );
    for (path, _) in &files {
        println!("  {path}");
    }
    println!("next:");
    println!("  cd {}", project.display());
    println!("  python3 -m unittest                       # the model natively, on sample.ndjson");
    println!("  pip install componentize-py=={COMPONENTIZE_PY}      # once");
    println!("  {}", build_command(&new.name, &library, &wit));
    println!("  flowhost plugins test {}.wasm sample.ndjson", new.name);
    println!("  cp {0}.wasm <plugins folder>/{0}.wasm", new.name);
    Ok(ExitCode::SUCCESS)
}

/// A path as one shell word.
fn quoted(path: &Path) -> String {
    let text = path.display().to_string();
    if text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c))
    {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

fn build_command(name: &str, library: &Path, wit: &Path) -> String {
    format!(
        "componentize-py -d {} -w plugin componentize -p . -p {} app -o {name}.wasm",
        quoted(wit),
        quoted(library)
    )
}

/// A Python string literal for any text.
fn py_str(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

fn files(
    name: &str,
    kind: NewKind,
    parents: &[String],
    library: &Path,
    wit: &Path,
) -> Vec<(String, String)> {
    let ty = type_name(name);
    let parents_list = parents
        .iter()
        .map(|p| py_str(p))
        .collect::<Vec<_>>()
        .join(", ");
    let describe = match kind {
        NewKind::Entity => format!(
            r#"        # Which value the root view keeps for a path (default: flowhost.LAST, the
        # latest occurred_at). Others: flowhost.FIRST, flowhost.MAX, flowhost.MIN,
        # flowhost.coalesce("oem", "bms") (by source system).
        return flowhost.entity(
            "{name}", "0.1.0", parents=[{parents_list}], policies={{"name": flowhost.LAST}}
        )"#
        ),
        NewKind::ValueObject => {
            format!(
                r#"        return flowhost.value_object("{name}", "0.1.0", parents=[{parents_list}])"#
            )
        }
    };
    let keys = match kind {
        NewKind::Entity => format!(
            r#"    def keys(self, record):
        """The aggregation keys: two records that share a key describe the same {name}.
        Normalise them (trim, one case) and prefix them with what they are. Here:
        `serial:` + the upper-cased, trimmed `serial` (a string or a list of strings;
        anything else rejects the record BAD_SERIAL). A record without one parks NO_KEYS
        until its source sends one (the host adds the source key `src:<system>:<id>`
        itself). Raise flowhost.Rejection(CODE, message) to refuse a record."""
        return ["serial:" + s.strip().upper() for s in record.strings("serial")]
"#
        ),
        NewKind::ValueObject => r#"    def keys(self, record):
        """A value object owns no keys: its records are never merged, only listed under
        their parent."""
        return []
"#
        .to_string(),
    };
    let parents_fn = if parents.is_empty() {
        String::new()
    } else {
        let mut body = String::from("        parents = []\n");
        for p in parents {
            let otherwise = if kind == NewKind::ValueObject {
                format!(
                    "        else:\n            raise flowhost.Rejection(\"MISSING_{}\", \"{p}_id must be a non-empty string\")\n",
                    p.to_uppercase()
                )
            } else {
                String::new()
            };
            body += &format!(
                r#"        # The {p} by its source key in this record's system: `{p}_id` names the
        # {p} as that system does.
        {p}_id = record.get("{p}_id")
        if isinstance({p}_id, str) and {p}_id.strip():
            parents.append(("{p}", flowhost.source_key(record.system, {p}_id)))
{otherwise}"#
            );
        }
        format!(
            r#"
    def parents(self, record):
        """The parents the record names, as (model, key). A parent that is not keyed yet
        parks the record PARENT_NOT_FOUND until it is."""
{body}        return parents
"#
        )
    };
    let app = format!(
        r#""""The `{name}` model. Describe here what a {name} is and which systems send it.

flowhost calls this plugin once per batch; the guest library (flowhost.py) calls `keys`
and `parents` once per record. The host projects the views (flowhost's default projection).
"""

import flowhost


class {ty}(flowhost.Model):
    def describe(self):
{describe}

{keys}{parents_fn}

# componentize-py exports the class named `Model`.
Model = flowhost.export({ty})
"#
    );
    let checks = match kind {
        NewKind::Entity => format!(
            r#"    def test_records_that_share_a_serial_share_a_key(self):
        records = flowhost.records(SAMPLE, "{name}")
        self.assertEqual(len(records), 3)
        decided = flowhost.associate(app.Model, records)
        self.assertEqual(decided[0]["keys"], ["serial:SN-1"])
        self.assertEqual(decided[1]["keys"], decided[0]["keys"], "two systems, one serial")
        self.assertEqual(decided[2]["keys"], [], "no serial: it waits (NO_KEYS)")
"#
        ),
        NewKind::ValueObject => format!(
            r#"    def test_records_hang_under_their_parent_or_are_refused(self):
        records = flowhost.records(SAMPLE, "{name}")
        decided = flowhost.associate(app.Model, records)
        self.assertEqual(len(decided[0]["parents"]), 1)
        self.assertIsInstance(decided[2], flowhost.Rejection, "no parent id: refused")
"#
        ),
    };
    let test = format!(
        r#""""The model in plain Python, on sample.ndjson: `python3 -m unittest`."""

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
# The guest library of the flowhost checkout this project was made from.
sys.path[:0] = [HERE, {library}]

import app  # noqa: E402
import flowhost  # noqa: E402

with open(os.path.join(HERE, "sample.ndjson"), encoding="utf-8") as f:
    SAMPLE = f.read()


class ModelTest(unittest.TestCase):
{checks}

if __name__ == "__main__":
    unittest.main()
"#,
        library = py_str(&library.display().to_string()),
    );
    let readme = format!(
        r#"# {name} (Python)

The `{name}` model for flowhost ({kind}), in Python.

- `app.py`: the model: its keys{parents_note}, and its description.
- `test_model.py`: the model run in plain Python on `sample.ndjson`.
- `sample.ndjson`: a few records in flowhost's intake format.

The component is built with componentize-py (from PyPI) against flowhost's guest library
(`{library}`) and WIT (`{wit}`). It holds a whole Python interpreter, so it is about 18 MB
and compiles in several seconds the first time a host loads it (then from the cache).
Views are made by the host's default projection, the same as for a Rust plugin.

```sh
python3 -m unittest                       # the model natively
pip install componentize-py=={COMPONENTIZE_PY}      # once
{build}
flowhost plugins check {name}.wasm
flowhost plugins test {name}.wasm sample.ndjson
```

To run it, copy `{name}.wasm` into a host's plugins folder; a running `flowhost serve`
validates it and swaps it in (a file that fails validation never replaces a working
version).
"#,
        kind = kind_word(kind),
        parents_note = if parents.is_empty() {
            String::new()
        } else {
            format!(", its parents ({})", parents.join(", "))
        },
        library = library.display(),
        wit = wit.display(),
        build = build_command(name, library, wit),
    );
    vec![
        ("app.py".into(), app),
        ("test_model.py".into(), test),
        ("sample.ndjson".into(), sample(name, kind, parents)),
        ("README.md".into(), readme),
        (".gitignore".into(), "*.wasm\n__pycache__/\n".into()),
    ]
}

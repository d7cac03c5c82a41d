//! `flowhost plugins new`: the project it writes builds as written — its native test passes
//! and its component loads, passes the probe and runs on its sample — for an entity with a
//! parent and for a value object; bad names, kinds, folders and SDK paths are refused by
//! name; inside another Cargo workspace it says what to do.

use flowhost_tests::{flowhost, target_dir, text};
use std::path::Path;
use std::process::Command;

/// Runs cargo in a generated project, with a target folder shared by the test's runs.
fn cargo(project: &Path, args: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(args)
        .current_dir(project)
        .env("CARGO_TARGET_DIR", target_dir().join("scaffold"))
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "cargo {args:?} in {}:\n{}",
        project.display(),
        text(&out.stderr)
    );
}

#[test]
fn a_new_plugin_builds_tests_and_loads_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    let out = flowhost(&[
        "plugins", "new", "pump", "--parent", "site", "--dir", dir_arg,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("cargo build --target wasm32-wasip2 --release"),
        "{said}"
    );
    let project = dir.path().join("pump");
    for file in [
        "Cargo.toml",
        "src/lib.rs",
        "tests/model.rs",
        "sample.ndjson",
        "README.md",
    ] {
        assert!(project.join(file).is_file(), "{file}");
    }
    cargo(&project, &["fmt", "--check"]);
    cargo(&project, &["test", "--quiet"]);
    cargo(
        &project,
        &["build", "--quiet", "--target", "wasm32-wasip2", "--release"],
    );
    let wasm = target_dir().join("scaffold/wasm32-wasip2/release/plugin_pump.wasm");
    let wasm = wasm.to_str().unwrap();
    let check = flowhost(&["plugins", "check", wasm]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    let report = text(&check.stdout) + &text(&check.stderr);
    assert!(
        report.contains("pump") && report.contains("site"),
        "{report}"
    );
    let sample = project.join("sample.ndjson");
    let tried = flowhost(&["plugins", "test", wasm, sample.to_str().unwrap(), "--json"]);
    assert!(tried.status.success(), "{}", text(&tried.stderr));
    assert!(
        text(&tried.stdout).contains("NO_KEYS"),
        "{}",
        text(&tried.stdout)
    );

    // A value object under it: its own test passes too.
    let out = flowhost(&[
        "plugins",
        "new",
        "pump_reading",
        "--kind",
        "value-object",
        "--parent",
        "pump",
        "--dir",
        dir_arg,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    cargo(&dir.path().join("pump_reading"), &["fmt", "--check"]);
    cargo(&dir.path().join("pump_reading"), &["test", "--quiet"]);
}

#[test]
fn bad_requests_for_a_new_plugin_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    std::fs::create_dir_all(dir.path().join("taken/src")).unwrap();
    for (args, words) in [
        (vec!["Pump!"], "is not a model name"),
        (
            vec!["pump", "--parent", "Site"],
            "the parent 'Site' is not a model name",
        ),
        (vec!["pump", "--parent", "pump"], "cannot be its own parent"),
        (
            vec!["v", "--kind", "value-object"],
            "needs exactly one --parent",
        ),
        (vec!["taken"], "exists and is not empty"),
        (
            vec!["pump", "--sdk", "/nonexistent/sdk"],
            "the SDK is not at /nonexistent/sdk",
        ),
        (vec!["pump", "--sdk", d], "is not flowhost's SDK"),
        (vec!["pump", "--lang", "cobol"], "invalid value 'cobol'"),
    ] {
        let mut all = vec!["plugins", "new"];
        all.extend(&args);
        all.extend(["--dir", d]);
        let out = flowhost(&all);
        assert!(!out.status.success(), "{args:?}");
        let said = text(&out.stderr);
        assert!(said.contains(words), "{args:?}: {said}");
    }
    assert!(
        !dir.path().join("pump").exists(),
        "nothing written on a refusal"
    );

    // Inside another Cargo workspace: no workspace of its own, and a note on what to do.
    std::fs::write(dir.path().join("Cargo.toml"), "[workspace]\nmembers = []\n").unwrap();
    let out = flowhost(&["plugins", "new", "pump", "--dir", d]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("inside the Cargo workspace"),
        "{}",
        text(&out.stdout)
    );
    let manifest = std::fs::read_to_string(dir.path().join("pump/Cargo.toml")).unwrap();
    assert!(!manifest.contains("[workspace]"), "{manifest}");
}

/// Runs a program in a generated project; it must succeed.
fn run_in(project: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(project)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} in {}:\n{}{}",
        project.display(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout) + &text(&out.stderr)
}

#[test]
fn a_new_python_plugin_tests_builds_and_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    let out = flowhost(&[
        "plugins", "new", "pump", "--lang", "python", "--parent", "site", "--dir", dir_arg,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    let project = dir.path().join("pump");
    for file in ["app.py", "test_model.py", "sample.ndjson", "README.md"] {
        assert!(project.join(file).is_file(), "{file}");
    }
    // The native test, in plain Python.
    let tested = run_in(&project, "python3", &["-m", "unittest", "-v"]);
    assert!(tested.contains("OK"), "{tested}");
    // The build command the project prints, as printed (componentize-py is installed by
    // `cargo xtask build-plugins`).
    let build = said
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("componentize-py "))
        .unwrap_or_else(|| panic!("no build command in: {said}"));
    let words: Vec<&str> = build.split_whitespace().collect();
    let mut args = vec![
        "-c",
        "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())",
    ];
    args.extend(&words[1..]);
    run_in(&project, "python3", &args);
    let wasm = project.join("pump.wasm");
    let wasm = wasm.to_str().unwrap();
    let check = flowhost(&["plugins", "check", wasm]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    let sample = project.join("sample.ndjson");
    let tried = flowhost(&["plugins", "test", wasm, sample.to_str().unwrap(), "--json"]);
    assert!(tried.status.success(), "{}", text(&tried.stderr));
    let shown = text(&tried.stdout);
    assert!(shown.contains("NO_KEYS"), "{shown}");
    assert!(shown.contains("serial:SN-1"), "{shown}");

    // A value object under it: its own test passes too.
    let out = flowhost(&[
        "plugins",
        "new",
        "pump_reading",
        "--lang",
        "python",
        "--kind",
        "value-object",
        "--parent",
        "pump",
        "--dir",
        dir_arg,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    run_in(
        &dir.path().join("pump_reading"),
        "python3",
        &["-m", "unittest"],
    );
}

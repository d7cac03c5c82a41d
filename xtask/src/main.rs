//! flowhost's project automation (`cargo xtask <command>`).
//!
//! - `build-plugins`: install the `wasm32-wasip2` target if missing, build every plugin
//!   component in the `plugin` profile and place it at `target/plugins/<model>.wasm`
//!   (fixtures at `target/plugins/fixtures/`). Cargo skips what has not changed, and a
//!   component whose bytes did not change is not copied again.
//! - `test`: build the plugins and the binaries, run the whole test suite, then each fuzz
//!   target for a few seconds (`FLOWHOST_FUZZ_SECONDS`, default 10; 0 skips them).
//!
//! `demo` and `test` build the same thing (the workspace's binaries in the dev profile, whose
//! dependencies are optimised), so whichever runs second reuses the first one's build; each
//! phase prints one progress line with the time since the command started.
//! - `fuzz [SECONDS]`: run each fuzz target longer (default 120 s each); findings are kept
//!   in `fuzz/artifacts/<target>/`.
//! - `demo`: the README's main job, on the embedded SQLite default.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The example plugins: crate name and model.
const PLUGINS: &[(&str, &str)] = &[
    ("plugin-device", "device"),
    ("plugin-sensor", "sensor"),
    ("plugin-reading", "reading"),
];

/// Test fixtures (misbehaving plugins), placed at `target/plugins/fixtures/<name>.wasm`.
const FIXTURES: &[(&str, &str)] = &[
    ("fixture-faulty", "faulty"),
    ("fixture-broken-describe", "broken-describe"),
    ("fixture-other-world", "other-world"),
    ("fixture-device-v2", "device-v2"),
    ("fixture-device-flaky", "device-flaky"),
    ("fixture-sleepy-describe", "sleepy-describe"),
];

/// Fixtures written by hand as core modules (`plugins/fixtures/wat/<name>.wat`), made into
/// components of the `plugin` world here; placed at `target/plugins/fixtures/<name>.wasm`.
const WAT_FIXTURES: &[&str] = &["memories", "table"];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("build-plugins") => build_plugins(&root).map(|_| ()),
        Some("test") => test(&root, &args[1..]),
        Some("fuzz") => {
            let seconds = match args.get(1) {
                Some(s) => s.parse().context("fuzz takes the seconds per target")?,
                None => 120,
            };
            fuzz(&root, seconds)
        }
        Some("demo") => demo(&root, &args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n\
                 commands:\n  \
                 build-plugins   build the plugin components into target/plugins/\n  \
                 test            build plugins and binary, run every test, fuzz briefly\n  \
                 fuzz [SECONDS]  run each fuzz target (default 120 s each)\n  \
                 demo            run the demo on the embedded SQLite default"
            );
            std::process::exit(2);
        }
    }
}

/// One progress line per phase: `[xtask 2/4, 3m05s] what`.
struct Phases {
    started: std::time::Instant,
    total: usize,
    done: usize,
}

impl Phases {
    fn new(total: usize) -> Self {
        Self {
            started: std::time::Instant::now(),
            total,
            done: 0,
        }
    }

    fn next(&mut self, what: &str) {
        self.done += 1;
        let s = self.started.elapsed().as_secs();
        eprintln!(
            "\n[xtask {}/{}, {}m{:02}s] {what}",
            self.done,
            self.total,
            s / 60,
            s % 60
        );
    }
}

/// Builds the workspace's binaries (`flowhost`, `flowhost-bench`) in the dev profile. All of
/// the workspace is named so that dependencies are built with the same features as for the
/// tests, and `demo` and `test` share one build.
fn build_binaries() -> Result<()> {
    run(cargo().args(["build", "--workspace", "--bins"]))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// `cmd` without the lints CI folds into the workspace's build (`.ci/run`): they are for
/// flowhost's own crates, not for tools it installs or the fuzz targets' instrumented build.
fn unlinted(mut cmd: Command) -> Command {
    cmd.env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTFLAGS");
    cmd
}

fn ensure_wasm_target() -> Result<()> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("rustup is needed to install the wasm32-wasip2 target")?;
    if !String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == "wasm32-wasip2")
    {
        run(Command::new("rustup").args(["target", "add", "wasm32-wasip2"]))?;
    }
    Ok(())
}

/// Builds every plugin; returns the folder holding `<model>.wasm`.
fn build_plugins(root: &Path) -> Result<PathBuf> {
    ensure_wasm_target()?;
    let mut cmd = cargo();
    cmd.args(["build", "--profile", "plugin", "--target", "wasm32-wasip2"]);
    for (krate, _) in PLUGINS.iter().chain(FIXTURES) {
        cmd.args(["-p", krate]);
    }
    run(&mut cmd)?;
    let target = target_dir(root);
    let built = target.join("wasm32-wasip2").join("plugin");
    let out = target.join("plugins");
    std::fs::create_dir_all(&out)?;
    for (krate, model) in PLUGINS {
        let from = built.join(format!("{}.wasm", krate.replace('-', "_")));
        copy_if_changed(&from, &out.join(format!("{model}.wasm")))?;
    }
    let fixtures = out.join("fixtures");
    std::fs::create_dir_all(&fixtures)?;
    for (krate, name) in FIXTURES {
        let from = built.join(format!("{}.wasm", krate.replace('-', "_")));
        copy_if_changed(&from, &fixtures.join(format!("{name}.wasm")))?;
    }
    for name in WAT_FIXTURES {
        let component = wat_component(root, name)?;
        write_if_changed(&component, &fixtures.join(format!("{name}.wasm")))?;
    }
    build_python_plugins(root, &out.join("python"))?;
    eprintln!("plugins in {}", out.display());
    Ok(out)
}

/// The componentize-py release Python plugins are built with.
const COMPONENTIZE_PY: &str = "0.25.1";

/// Builds each `plugins/python/<model>/app.py` (with the guest library `sdk/python`) into
/// `<out>/<model>.wasm` with componentize-py, installing it with pip when it is missing. A
/// plugin whose inputs (its files, the library, the WIT, the tool's version) are unchanged
/// since its last build is not built again: a build takes about 20 s.
fn build_python_plugins(root: &Path, out: &Path) -> Result<()> {
    let sources = root.join("plugins/python");
    let mut models: Vec<PathBuf> = std::fs::read_dir(&sources)
        .with_context(|| format!("{}", sources.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("app.py").is_file())
        .collect();
    models.sort();
    std::fs::create_dir_all(out)?;
    let mut tool_checked = false;
    for dir in models {
        let model = dir.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        let wasm = out.join(format!("{model}.wasm"));
        let stamp = out.join(format!(".{model}.inputs"));
        let inputs = python_inputs_hash(root, &dir)?;
        if wasm.is_file() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&inputs) {
            continue;
        }
        if !tool_checked {
            ensure_componentize_py()?;
            tool_checked = true;
        }
        let partial = out.join(format!(".{model}.wasm.partial"));
        run(componentize_py()
            .arg("-d")
            .arg(root.join("wit"))
            .args(["-w", "plugin", "componentize", "-p"])
            .arg(&dir)
            .arg("-p")
            .arg(root.join("sdk/python"))
            .arg("app")
            .arg("-o")
            .arg(&partial))?;
        std::fs::rename(&partial, &wasm)?;
        std::fs::write(&stamp, inputs)?;
    }
    Ok(())
}

/// A digest of what a Python plugin's component is built from.
fn python_inputs_hash(root: &Path, dir: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut files = Vec::new();
    for folder in [dir.to_path_buf(), root.join("sdk/python"), root.join("wit")] {
        for entry in std::fs::read_dir(&folder).with_context(|| format!("{}", folder.display()))? {
            let path = entry?.path();
            if path.extension().is_some_and(|x| x == "py" || x == "wit") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut h = Sha256::new();
    h.update(COMPONENTIZE_PY.as_bytes());
    for f in files {
        h.update(
            f.strip_prefix(root)
                .unwrap_or(&f)
                .to_string_lossy()
                .as_bytes(),
        );
        h.update(std::fs::read(&f)?);
    }
    Ok(hex::encode(h.finalize()))
}

/// componentize-py through the interpreter pip installed it for (its script may not be on
/// `PATH` right after the install).
fn componentize_py() -> Command {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-c",
        "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())",
    ]);
    cmd
}

/// componentize-py at the pinned release, installed with pip when missing or another.
fn ensure_componentize_py() -> Result<()> {
    let installed = Command::new("python3")
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('componentize-py'))",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if installed.as_deref() == Some(COMPONENTIZE_PY) {
        return Ok(());
    }
    run(Command::new("python3").args([
        "-m",
        "pip",
        "install",
        "--quiet",
        &format!("componentize-py=={COMPONENTIZE_PY}"),
    ]))
    .context("componentize-py (from PyPI) builds the Python plugins; pip could not install it")
}

/// A hand-written core module made into a component of flowhost's `plugin` world.
fn wat_component(root: &Path, name: &str) -> Result<Vec<u8>> {
    let path = root
        .join("plugins/fixtures/wat")
        .join(format!("{name}.wat"));
    let mut module = wat::parse_file(&path).with_context(|| format!("{}", path.display()))?;
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve.push_dir(root.join("wit"))?;
    let world = resolve.select_world(&[package], Some("plugin"))?;
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )?;
    wit_component::ComponentEncoder::default()
        .module(&module)?
        .validate(true)
        .encode()
        .with_context(|| format!("making {} a component", path.display()))
}

fn copy_if_changed(from: &Path, to: &Path) -> Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("missing {}", from.display()))?;
    write_if_changed(&bytes, to)
}

fn write_if_changed(bytes: &[u8], to: &Path) -> Result<()> {
    if std::fs::read(to).ok().as_deref() == Some(bytes) {
        return Ok(());
    }
    // Write then rename, so a watcher of the folder never sees half a file.
    let tmp = to.with_extension("wasm.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, to)?;
    Ok(())
}

fn test(root: &Path, extra: &[String]) -> Result<()> {
    let seconds = match std::env::var("FLOWHOST_FUZZ_SECONDS") {
        Ok(s) => s
            .parse()
            .context("FLOWHOST_FUZZ_SECONDS is seconds per target")?,
        Err(_) => 10,
    };
    let mut phases = Phases::new(if seconds > 0 { 4 } else { 3 });
    phases.next("building the plugins (wasm32-wasip2, `plugin` profile)");
    build_plugins(root)?;
    phases
        .next("building flowhost and flowhost-bench (dev profile, shared with `cargo xtask demo`)");
    build_binaries()?;
    phases.next("building and running the tests (SQLite, PostgreSQL, NATS)");
    ensure_nats(root)?;
    ensure_browser(root)?;
    run_tests(root, extra)?;
    if seconds > 0 {
        phases.next(&format!("fuzzing each target for {seconds} s"));
        fuzz(root, seconds)?;
    }
    Ok(())
}

/// The tests use the machine's NATS server with JetStream (127.0.0.1:4222). When none
/// answers there, one is started (installed first with apt-get when `nats-server` is
/// missing), its store under `target/nats`; it keeps running after the tests.
fn ensure_nats(root: &Path) -> Result<()> {
    let answers = || std::net::TcpStream::connect(("127.0.0.1", 4222)).is_ok();
    if answers() {
        return Ok(());
    }
    let found = |name: &str| {
        ["/usr/sbin", "/usr/bin", "/usr/local/bin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.exists())
    };
    let binary = match found("nats-server") {
        Some(b) => b,
        None => {
            apt_install("nats-server", "no NATS answers on 127.0.0.1:4222").context(
                "cannot install nats-server; the tests need NATS with JetStream on 127.0.0.1:4222",
            )?;
            found("nats-server").context("nats-server is not where apt-get puts it")?
        }
    };
    let store = target_dir(root).join("nats");
    std::fs::create_dir_all(&store)?;
    let log = std::fs::File::create(store.join("server.log"))?;
    eprintln!(
        "+ {} -a 127.0.0.1 -p 4222 -js -sd {}",
        binary.display(),
        store.display()
    );
    Command::new(&binary)
        .args(["-a", "127.0.0.1", "-p", "4222", "-js", "-sd"])
        .arg(&store)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start nats-server")?;
    for _ in 0..100 {
        if answers() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    anyhow::bail!(
        "nats-server did not answer on 127.0.0.1:4222 within 10 s; see {}",
        store.join("server.log").display()
    )
}

/// Installs a Debian package (updating the package lists first when it is not found).
fn apt_install(package: &str, why: &str) -> Result<()> {
    eprintln!("+ apt-get install -y {package} ({why})");
    run(Command::new("apt-get").args(["install", "-y", package])).or_else(|_| {
        run(Command::new("apt-get").arg("update"))?;
        run(Command::new("apt-get").args(["install", "-y", package]))
    })
}

/// The browser test drives Debian's Chromium with playwright-core: Chromium is installed
/// with apt-get when missing, the script's package with `npm ci` (the lock file pins it).
fn ensure_browser(root: &Path) -> Result<()> {
    if !Path::new("/usr/bin/chromium").exists() {
        apt_install("chromium", "for the operator page's browser test")
            .context("cannot install chromium; the browser test needs /usr/bin/chromium")?;
    }
    let browser = root.join("tests/browser");
    if !browser.join("node_modules/playwright-core").exists() {
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&browser))
        .context("cannot install the browser test's package (npm ci in tests/browser)")?;
    }
    Ok(())
}

/// Runs the workspace's tests, echoing their output, and ends with one summary line:
/// `N passed, N failed, N ignored (PostgreSQL: N scratch databases)`. The end-to-end tests
/// note each PostgreSQL database they create in the file `FLOWHOST_TEST_TALLY` names.
fn run_tests(root: &Path, extra: &[String]) -> Result<()> {
    use std::io::BufRead;
    let tally = target_dir(root).join("test-postgres-tally");
    let _ = std::fs::remove_file(&tally);
    let mut cmd = cargo();
    cmd.args(["test", "--workspace"])
        .args(extra)
        .env("FLOWHOST_TEST_TALLY", &tally)
        .stdout(std::process::Stdio::piped());
    eprintln!("+ {cmd:?}");
    let mut child = cmd.spawn().context("cannot run cargo test")?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    let out = child.stdout.take().context("cargo test output")?;
    for line in std::io::BufReader::new(out).lines() {
        let line = line?;
        println!("{line}");
        // `test result: ok. 12 passed; 0 failed; 0 ignored; 0 measured; …`
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(what), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let n: u64 = n.parse().unwrap_or(0);
                match what {
                    "passed" => passed += n,
                    "failed" => failed += n,
                    "ignored" => ignored += n,
                    _ => {}
                }
            }
        }
    }
    let status = child.wait()?;
    let postgres = std::fs::read_to_string(&tally)
        .map(|t| t.lines().count())
        .unwrap_or(0);
    println!(
        "{passed} passed, {failed} failed, {ignored} ignored (PostgreSQL: {postgres} scratch databases)"
    );
    if !status.success() {
        bail!("cargo test failed with {status}");
    }
    Ok(())
}

/// The fuzz targets of `fuzz/` (cargo-fuzz, libFuzzer).
const FUZZ_TARGETS: &[&str] = &["intake_line", "canonical_json", "project"];

/// Runs each fuzz target for `seconds`, from its seeds (`fuzz/seeds/<target>`) and what
/// earlier runs found (`fuzz/corpus/<target>`, not committed). Installs cargo-fuzz when
/// missing. The targets are safe Rust, so they run without a sanitizer; that works on the
/// stable toolchain (`RUSTC_BOOTSTRAP` lets cargo-fuzz pass its coverage flags).
fn fuzz(root: &Path, seconds: u64) -> Result<()> {
    let has_fuzz = cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_fuzz {
        run(unlinted(cargo()).args(["install", "cargo-fuzz", "--version", "0.13.2", "--locked"]))?;
    }
    let dir = root.join("fuzz");
    for target in FUZZ_TARGETS {
        let corpus = dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        run(unlinted(cargo())
            .current_dir(&dir)
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "run", "--sanitizer", "none", target])
            .arg(&corpus)
            .arg(dir.join("seeds").join(target))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-print_final_stats=1"))
        .with_context(|| {
            format!(
                "fuzz target {target} found an input that fails: see fuzz/artifacts/{target}/ \
                 (replay: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -s none {target} <file>)"
            )
        })?;
    }
    Ok(())
}

fn demo(root: &Path, extra: &[String]) -> Result<()> {
    let mut phases = Phases::new(3);
    phases.next("building the plugins (wasm32-wasip2, `plugin` profile)");
    let plugins = build_plugins(root)?;
    phases.next("building flowhost (dev profile, shared with `cargo xtask test`)");
    build_binaries()?;
    let bin = target_dir(root).join("debug").join("flowhost");
    let demo = root.join("demo");
    let live = demo.join("plugins");
    std::fs::create_dir_all(&live)?;
    // Each demo starts from an empty database, so its numbers mean something.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(demo.join(format!("flowhost.db{suffix}")));
    }
    for (_, model) in PLUGINS {
        copy_if_changed(
            &plugins.join(format!("{model}.wasm")),
            &live.join(format!("{model}.wasm")),
        )?;
    }
    phases.next("running the demo");
    run(Command::new(&bin)
        .arg("--plugins")
        .arg(&live)
        .arg("--db")
        .arg(format!("sqlite://{}", demo.join("flowhost.db").display()))
        .arg("demo")
        .args(extra))
}

//! Where the built binary, the plugin components and the test cache are.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests live in the workspace")
        .to_path_buf()
}

pub fn target_dir() -> PathBuf {
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

/// One built test fixture (`plugins/fixtures/<name>`).
pub fn fixture(name: &str) -> PathBuf {
    plugins_dir().join("fixtures").join(format!("{name}.wasm"))
}

/// The `flowhost` binary built by `cargo xtask test` (debug profile).
pub fn binary() -> PathBuf {
    built("flowhost")
}

/// The `flowhost-bench` binary built by `cargo xtask test` (debug profile).
pub fn bench_binary() -> PathBuf {
    built("flowhost-bench")
}

/// A binary of the workspace in the debug profile, which must have been built.
fn built(name: &str) -> PathBuf {
    let bin = target_dir().join("debug").join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` (or `cargo xtask test`)",
        bin.display()
    );
    bin
}

/// Runs the benchmarks binary with `args`, with the test compile cache.
pub fn flowhost_bench(args: &[&str]) -> Output {
    Command::new(bench_binary())
        .args(args)
        .env("FLOWHOST_CACHE_DIR", cache_dir())
        .env_remove("FLOWHOST_DB")
        .env_remove("FLOWHOST_PLUGINS")
        .output()
        .expect("run flowhost-bench")
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

/// A plugin file's version: the hash of its bytes, as the host names it.
pub fn version_of(file: &Path) -> String {
    flowhost_runtime::content_hash(&std::fs::read(file).expect("read plugin"))
}

/// Replaces a file the way `mv` does: write beside it, then rename over it.
pub fn replace_atomically(from: &Path, to: &Path) {
    let tmp = to.with_file_name(".incoming.tmp");
    std::fs::copy(from, &tmp).expect("copy beside");
    std::fs::rename(&tmp, to).expect("rename over");
}

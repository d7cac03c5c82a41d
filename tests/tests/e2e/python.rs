//! The Python guest: `plugins/python/device` (built by `cargo xtask build-plugins` with
//! componentize-py into `target/plugins/python/device.wasm`) loads, passes the probe, and
//! gives the same views, values and parked records as the Rust `device` on a generated
//! workload and on the records its rule rejects.

use flowhost_tests::{Host, Scratch, line, plugin, plugins_dir, snapshot, text};
use serde_json::json;

fn python_device() -> std::path::PathBuf {
    let file = plugins_dir().join("python/device.wasm");
    assert!(
        file.is_file(),
        "{} is missing: `cargo xtask build-plugins` builds it with componentize-py",
        file.display()
    );
    file
}

#[test]
fn the_python_device_gives_the_views_of_the_rust_device() {
    let generated = flowhost_tests::flowhost(&["generate", "--records", "3000"]);
    assert!(generated.status.success(), "{}", text(&generated.stderr));
    let mut input = generated.stdout;
    // What the rule rejects or passes over, in both languages.
    for (i, serial) in [
        json!(42),
        json!(["SN-1", 7]),
        json!("   "),
        json!(["", " sn-x "]),
    ]
    .into_iter()
    .enumerate()
    {
        input.extend(
            line(
                "device",
                "odd",
                &format!("O-{i}"),
                json!({ "serial": serial }),
            )
            .bytes(),
        );
    }
    // An integer longer than Python reads as `int` by default (4,300 digits) stays a
    // number the model passes over, not a failure.
    let big = "9".repeat(5_000);
    input.extend(
        format!(
            "{{\"model\":\"device\",\"source\":{{\"system\":\"odd\"}},\"id\":\"O-big\",\"occurred_at\":\"2026-03-01T10:00:00Z\",\"payload\":{{\"serial\":\"sn-big\",\"count\":{big}}}}}\n"
        )
        .bytes(),
    );

    let rust_db = Scratch::sqlite();
    let rust = Host::new(&rust_db.url);
    assert!(rust.ingest_bytes(&input).status.success());
    rust.process();

    let python_db = Scratch::sqlite();
    let folder = tempfile::tempdir().unwrap();
    std::fs::copy(python_device(), folder.path().join("device.wasm")).unwrap();
    for model in ["sensor", "reading"] {
        std::fs::copy(plugin(model), folder.path().join(format!("{model}.wasm"))).unwrap();
    }
    let python = Host::with_plugins(&python_db.url, folder.path());
    assert!(python.ingest_bytes(&input).status.success());
    python.process();

    let (r, p) = (snapshot(&rust), snapshot(&python));
    assert!(
        r["views"]["canonical device"].as_array().unwrap().len() > 100,
        "the workload makes devices"
    );
    assert_eq!(
        r, p,
        "the Python device must decide and project as the Rust one"
    );
    // The rejections carry the same code and message.
    let rejected = |host: &Host| -> Vec<String> {
        let mut all: Vec<String> = host
            .parked()
            .into_iter()
            .filter(|p| p["reason"] == "REJECTED")
            .map(|p| format!("{} {}", p["id"], p["details"]))
            .collect();
        all.sort();
        all
    };
    let (rr, pr) = (rejected(&rust), rejected(&python));
    assert_eq!(rr.len(), 2, "{rr:?}");
    assert_eq!(rr, pr);
}

#[test]
fn plugins_check_describes_the_python_device() {
    let out = flowhost_tests::flowhost(&["plugins", "check", python_device().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("device"), "{shown}");
}

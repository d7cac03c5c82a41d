//! Misbehaving plugins (real components built from `plugins/fixtures/`): the host stays up,
//! only the poison records park `PLUGIN_FAILED`, everything else is keyed and projected.

use flowhost_tests::{Host, Scratch, block_until_ok, fixture, flowhost, text};
use serde_json::json;

#[test]
fn a_describe_that_traps_is_one_line_naming_the_file() {
    let file = fixture("broken-describe");
    let out = flowhost(&["plugins", "check", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("{}: `describe` failed: trapped", file.display())),
        "{stderr}"
    );
    assert!(stderr.contains("describe is broken on purpose"), "{stderr}");
}

#[test]
fn traps_timeouts_and_runaway_memory_park_only_the_poison_records() {
    let db = Scratch::sqlite();
    let folder = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("faulty"), folder.path().join("faulty.wasm")).unwrap();
    let host = Host {
        db: db.url.clone(),
        plugins: folder.path().to_path_buf(),
    };
    let mut input = String::new();
    for i in 1..=20 {
        let mut payload = json!({"key": format!("k{i}"), "n": i});
        match i {
            5 => payload["trap"] = json!(true),
            13 => payload["spin"] = json!(true),
            17 => payload["grow"] = json!(true),
            _ => {}
        }
        input += &(json!({"model":"faulty","source":{"system":"s"},"id":format!("F-{i}"),"payload":payload}).to_string() + "\n");
    }
    block_until_ok(&host.ingest(&input));
    let out = host
        .command()
        .args([
            "--plugin-timeout-ms",
            "300",
            "--plugin-memory-mb",
            "64",
            "process",
            "--until-idle",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the host survives: {}",
        text(&out.stderr)
    );

    let parked = host.parked();
    let mut ids: Vec<&str> = parked.iter().map(|p| p["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["F-13", "F-17", "F-5"]);
    for p in &parked {
        assert_eq!(p["reason"], "PLUGIN_FAILED");
    }
    let details = |id: &str| {
        parked.iter().find(|p| p["id"] == id).unwrap()["details"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(details("F-5").contains("trapped"), "{}", details("F-5"));
    assert!(
        details("F-5").contains("poison record F-5"),
        "the guest's panic message: {}",
        details("F-5")
    );
    assert!(
        details("F-17").contains("memory allocation of"),
        "{}",
        details("F-17")
    );
    assert!(
        details("F-13").contains("exceeded its time limit"),
        "{}",
        details("F-13")
    );
    assert!(
        details("F-17").contains("faulty.wasm"),
        "names the plugin: {}",
        details("F-17")
    );
    assert_eq!(
        host.export("canonical", "faulty").len(),
        17,
        "the rest is keyed and projected"
    );
}

#[test]
fn guest_log_lines_reach_the_host_log_with_the_model() {
    let db = Scratch::sqlite();
    let folder = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("faulty"), folder.path().join("faulty.wasm")).unwrap();
    let host = Host {
        db: db.url.clone(),
        plugins: folder.path().to_path_buf(),
    };
    let input = json!({"model":"faulty","source":{"system":"s"},"id":"L-1",
                       "payload":{"key":"k","log":"hello from the guest"}})
    .to_string();
    block_until_ok(&host.ingest(&input));
    let out = host
        .command()
        .args(["--log", "flowhost=warn", "process", "--until-idle"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = text(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("hello from the guest"))
        .unwrap_or_else(|| panic!("no guest log line in:\n{stderr}"));
    assert!(line.contains("WARN") && line.contains("faulty"), "{line}");
}

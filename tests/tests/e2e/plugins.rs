//! The example plugins as real components: the worked examples at the plugin level
//! (the keys and parents each record yields, and the SDK's projection), and the CLI's
//! `plugins check` / `plugins test`.

use flowhost_core::{Association, Group, KeyedRecord, ParentKey, Record, Source};
use flowhost_runtime::{Plugin, Runtime, RuntimeConfig};
use flowhost_tests::{fixture, flowhost, plugin, text};
use serde_json::{Value, json};

fn load(model: &str) -> Plugin {
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(flowhost_tests::cache_dir()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    runtime.load(&plugin(model)).unwrap()
}

fn rec(seq: i64, model: &str, system: &str, id: &str, payload: Value) -> Record {
    Record {
        seq,
        model: model.into(),
        source: Source {
            system: system.into(),
            adapter: format!("{system}-v1"),
        },
        external_id: id.into(),
        occurred_at: "2026-03-01T10:00:00Z".into(),
        occurred_micros: 1_772_359_200_000_000 + seq,
        payload: payload.to_string(),
    }
}

fn keyed(keys: &[&str], parents: &[(&str, &str)]) -> Association {
    Association::Keyed {
        keys: keys.iter().map(|k| k.to_string()).collect(),
        parents: parents
            .iter()
            .map(|(m, k)| ParentKey {
                model: m.to_string(),
                key: k.to_string(),
            })
            .collect(),
    }
}

#[test]
fn describe_names_models_kinds_and_parents() {
    let device = load("device");
    let sensor = load("sensor");
    let reading = load("reading");
    assert_eq!(device.description().model, "device");
    assert_eq!(sensor.description().parents, ["device"]);
    assert_eq!(reading.description().kind, flowhost_core::Kind::ValueObject);
    assert_eq!(reading.description().parents, ["sensor"]);
    assert_eq!(device.version().len(), 64, "content hash");
}

#[test]
fn device_keys_normalise_serials() {
    let device = load("device");
    let out = device
        .associate(&[
            rec(
                1,
                "device",
                "bms",
                "D-1",
                json!({"serial":"sn-001","name":"Chiller 1"}),
            ),
            rec(
                2,
                "device",
                "oem",
                "X-9",
                json!({"serial":"SN-001 ","firmware":"1.2"}),
            ),
            rec(3, "device", "bms", "C", json!({"serial":["S1"," s2"]})),
            rec(4, "device", "bms", "D-3", json!({"name":"no serial"})),
            rec(5, "device", "bms", "D-4", json!({"serial": 12})),
        ])
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect::<Vec<_>>();
    assert_eq!(out[0], keyed(&["serial:SN-001"], &[]));
    assert_eq!(out[1], keyed(&["serial:SN-001"], &[]));
    assert_eq!(out[2], keyed(&["serial:S1", "serial:S2"], &[]));
    assert_eq!(out[3], keyed(&[], &[]));
    assert!(matches!(&out[4], Association::Rejected { code, .. } if code == "BAD_SERIAL"));
}

#[test]
fn sensor_and_reading_name_their_parents_by_source_key() {
    let sensor = load("sensor");
    let reading = load("reading");
    let s = sensor
        .associate(&[rec(
            1,
            "sensor",
            "bms",
            "S-1",
            json!({"code":" t1","device_id":"D-7"}),
        )])
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect::<Vec<_>>();
    assert_eq!(s[0], keyed(&["sensor:T1"], &[("device", "src:bms:D-7")]));
    let r = reading
        .associate(&[
            rec(
                1,
                "reading",
                "bms",
                "R-1",
                json!({"sensor_id":"S-1","value":21.5}),
            ),
            rec(
                2,
                "reading",
                "oem",
                "R-2",
                json!({"sensor_id":"T-1","value":21.7}),
            ),
            rec(3, "reading", "oem", "R-3", json!({"value":1})),
        ])
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect::<Vec<_>>();
    assert_eq!(r[0], keyed(&[], &[("sensor", "src:bms:S-1")]));
    assert_eq!(r[1], keyed(&[], &[("sensor", "src:oem:T-1")]));
    assert!(matches!(&r[2], Association::Rejected { code, .. } if code == "MISSING_SENSOR"));
}

#[test]
fn device_projection_merges_with_lineage() {
    let device = load("device");
    let records = [
        rec(
            1,
            "device",
            "bms",
            "D-1",
            json!({"serial":"sn-001","name":"Chiller 1"}),
        ),
        rec(
            2,
            "device",
            "oem",
            "X-9",
            json!({"serial":"SN-001 ","firmware":"1.2"}),
        ),
    ];
    let group = Group {
        reference: "0194f000-0000-7000-8000-000000000001".into(),
        records: records
            .into_iter()
            .map(|record| KeyedRecord {
                record,
                parents: Vec::new(),
            })
            .collect(),
    };
    let p = device.project(&[group]).unwrap().remove(0).unwrap();
    let canonical: Value = serde_json::from_str(&p.canonical).unwrap();
    let lineage: Value = serde_json::from_str(&p.lineage).unwrap();
    let root: Value = serde_json::from_str(&p.root).unwrap();
    assert_eq!(
        canonical,
        json!({"serial":["sn-001"],"name":["Chiller 1"],"firmware":["1.2"]})
    );
    assert_eq!(
        lineage["serial"],
        json!([{"value":"sn-001","sources":["bms/bms-v1/D-1","oem/oem-v1/X-9"]}])
    );
    assert_eq!(
        root,
        json!({"serial":"SN-001 ","name":"Chiller 1","firmware":"1.2"})
    );
}

#[test]
fn check_prints_the_description() {
    let out = flowhost(&["plugins", "check", plugin("sensor").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("model     sensor"), "{stdout}");
    assert!(stdout.contains("parents   device"), "{stdout}");
    assert!(
        stdout.contains("probe     associate 3 records → 3 results"),
        "{stdout}"
    );
}

#[test]
fn check_refuses_what_is_not_a_plugin_with_one_line_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let readme = flowhost_tests::root().join("README.md");
    let text_file = dir.path().join("notes.wasm");
    std::fs::write(&text_file, "just text").unwrap();
    // A core module (not a component): the 8-byte header of an empty module.
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    // A component of another world: the smallest component, exporting nothing.
    let empty = dir.path().join("empty.wasm");
    std::fs::write(&empty, b"\0asm\x0d\0\x01\0").unwrap();

    for (file, expect) in [
        (readme.as_path(), "not a WebAssembly component"),
        (text_file.as_path(), "not a WebAssembly component"),
        (core.as_path(), "a core WebAssembly module, not a component"),
        (
            empty.as_path(),
            "does not target world flowhost:plugin/plugin@0.1.0",
        ),
    ] {
        let out = flowhost(&["plugins", "check", file.to_str().unwrap()]);
        assert!(!out.status.success());
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with(&format!("{}: ", file.display())),
            "{stderr}"
        );
        assert!(stderr.contains(expect), "{stderr}");
    }
}

#[test]
fn test_command_shows_decisions_and_projection() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("devices.ndjson");
    std::fs::write(
        &input,
        concat!(
            r#"{"model":"device","source":{"system":"bms","adapter":"bms-v1"},"id":"D-1","payload":{"serial":"sn-001","name":"Chiller 1"}}"#, "\n",
            r#"{"model":"device","source":{"system":"oem","adapter":"oem-v1"},"id":"X-9","payload":{"serial":"SN-001 ","firmware":"1.2"}}"#, "\n",
            r#"{"model":"sensor","source":{"system":"bms"},"id":"S-1","payload":{"code":"T1"}}"#, "\n",
        ),
    )
    .unwrap();
    let out = flowhost(&[
        "plugins",
        "test",
        plugin("device").to_str().unwrap(),
        input.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "two decisions and one projection");
    assert_eq!(lines[0]["decision"]["keys"], json!(["serial:SN-001"]));
    assert_eq!(
        lines[1]["outcome"]["reference"],
        lines[0]["outcome"]["reference"]
    );
    assert_eq!(lines[2]["canonical"]["serial"], json!(["sn-001"]));
    assert_eq!(
        lines[2]["lineage"]["serial"],
        json!([{"value": "sn-001", "sources": ["bms/bms-v1/D-1", "oem/oem-v1/X-9"]}])
    );
}

#[test]
fn a_cached_plugin_loads_without_compiling() {
    let cache = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let first = runtime.load(&plugin("device")).unwrap();
    assert!(!first.load_info().from_cache, "compiled the first time");
    let artefacts: Vec<std::path::PathBuf> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert_eq!(
        artefacts.len(),
        1,
        "one artefact, named by content hash and engine"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(cache.path()), 0o700, "the cache folder is private");
    assert_eq!(mode(&artefacts[0]), 0o600);
    assert_eq!(mode(&cache.path().join("cache.key")), 0o600);
    let second = runtime.load(&plugin("device")).unwrap();
    assert!(
        second.load_info().from_cache,
        "loaded from the cache the second time"
    );
    assert_eq!(second.version(), first.version());

    // 4 KiB in the middle of the artefact overwritten with 0xCC (int3): loading those bytes
    // would run them. The digest no longer matches, so it is recompiled, never loaded.
    let mut bytes = std::fs::read(&artefacts[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle..middle + 4096].fill(0xCC);
    std::fs::write(&artefacts[0], &bytes).unwrap();
    let third = runtime.load(&plugin("device")).unwrap();
    assert!(
        !third.load_info().from_cache,
        "a tampered artefact is not loaded"
    );
    assert_eq!(third.associate(&[]).unwrap().len(), 0);
    let fourth = runtime.load(&plugin("device")).unwrap();
    assert!(
        fourth.load_info().from_cache,
        "the recompiled artefact replaced it"
    );

    // An artefact written by anything but this cache (no digest under its key) is refused too.
    std::fs::write(&artefacts[0], b"garbage that is not an artefact").unwrap();
    assert!(
        !runtime
            .load(&plugin("device"))
            .unwrap()
            .load_info()
            .from_cache
    );
}

#[test]
fn compiling_has_a_time_limit() {
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: None,
        compile_timeout: std::time::Duration::from_millis(1),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let error = runtime.load(&plugin("device")).err().expect("refused");
    assert!(
        error
            .to_string()
            .contains("compiling took longer than its limit of 0.001 s"),
        "{error}"
    );
}

/// More calls at once than the runtime has instance slots: each waits for a slot instead of
/// failing, and the wait is not counted against its time limit.
#[test]
fn calls_beyond_the_slots_wait_their_turn_outside_their_time_limit() {
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(flowhost_tests::cache_dir()),
        call_slots: 1,
        call_timeout: std::time::Duration::from_millis(1_500),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let faulty = runtime.load(&fixture("faulty")).unwrap();
    // Each call sleeps 600 ms in the guest; four through one slot take 2.4 s in all, past
    // any one call's limit, so a wait that counted would time the last ones out.
    let record = rec(
        1,
        "faulty",
        "s",
        "SLOW",
        json!({"key": "a", "sleep_ms": 600}),
    );
    let results: Vec<_> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..4)
            .map(|_| s.spawn(|| faulty.associate(std::slice::from_ref(&record))))
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for result in results {
        let decided = result.expect("the call ran in a slot, within its limit");
        assert_eq!(decided.len(), 1);
        assert_eq!(decided[0].as_ref().unwrap(), &keyed(&["k:a"], &[]));
    }
}

//! `flowhost reassociate`: after `device` changes its key rule (version 1 → the
//! `device-v2` fixture, which folds serials to letters and digits), the records decided
//! under version 1 are decided again. The result equals a fresh run of the whole input
//! under version 2 (views, values, parked records), on both backends; a dry run changes
//! nothing; references whose grouping did not change keep their ids; a running host's
//! hold on the model is named, and that host does it over HTTP between its own batches.

use flowhost_tests::{
    Host, Http, Scratch, Server, line, own_plugins, plugins_dir, replace_atomically, settled,
    snapshot, text, wait_for,
};
use serde_json::{Value, json};
use std::time::Duration;

/// The generated workload, and devices whose serials only version 2 takes as one (with
/// sensors on them, and a record version 2 rejects).
fn input() -> Vec<u8> {
    let generated = flowhost_tests::flowhost(&["generate", "--records", "2000"]);
    assert!(generated.status.success(), "{}", text(&generated.stderr));
    let mut input = generated.stdout;
    for i in 0..30 {
        let serial = if i % 2 == 0 {
            format!("sn-{}", 9000 + i / 2)
        } else {
            format!("SN {}", 9000 + i / 2)
        };
        let system = if i % 2 == 0 { "bms" } else { "oem" };
        input.extend(
            line(
                "device",
                system,
                &format!("F-{i}"),
                json!({ "serial": serial }),
            )
            .bytes(),
        );
        input.extend(
            line(
                "sensor",
                system,
                &format!("FS-{i}"),
                json!({ "code": format!("fs-{i}"), "device_id": format!("F-{i}") }),
            )
            .bytes(),
        );
    }
    input
}

fn ids(host: &Host) -> Vec<(String, String)> {
    host.export("canonical", "device")
        .into_iter()
        .map(|v: Value| {
            (
                v["id"].as_str().unwrap().to_string(),
                v["serial"].to_string(),
            )
        })
        .collect()
}

#[test]
fn reassociating_after_a_key_rule_change_equals_a_fresh_run_under_the_new_version() {
    let v2 = plugins_dir().join("fixtures/device-v2.wasm");
    let input = input();
    for db in Scratch::both() {
        // A fresh run under version 2.
        let fresh_db = if db.url.starts_with("postgres") {
            Scratch::postgres().expect("a second PostgreSQL database")
        } else {
            Scratch::sqlite()
        };
        let fresh_folder = own_plugins();
        std::fs::copy(&v2, fresh_folder.path().join("device.wasm")).unwrap();
        let fresh = Host::with_plugins(&fresh_db.url, fresh_folder.path());
        assert!(fresh.ingest_bytes(&input).status.success());
        fresh.process();

        // Version 1 first, then version 2 swapped in: the old associations stay.
        let folder = own_plugins();
        let host = Host::with_plugins(&db.url, folder.path());
        assert!(host.ingest_bytes(&input).status.success());
        host.process();
        replace_atomically(&v2, &folder.path().join("device.wasm"));
        host.process();
        let before = snapshot(&host);
        assert_ne!(
            before,
            snapshot(&fresh),
            "{}: the rule change matters",
            db.url
        );
        let ids_before = ids(&host);

        // A running host holds the model: named, nothing changed.
        let mut server = Server::start(&host, &[]);
        let _ = server.url();
        let out = host.run(&["reassociate", "device"]);
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains("is held by"),
            "{}",
            text(&out.stderr)
        );
        assert!(server.stop().success());

        // The dry run says what would change and changes nothing.
        let out = host.run(&["reassociate", "device", "--dry-run", "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(plan["applied"], false);
        assert!(plan["merges"].as_array().unwrap().len() >= 15, "{plan}");
        assert!(plan["children"].as_u64().unwrap() > 0, "{plan}");
        assert_eq!(snapshot(&host), before, "a dry run changes nothing");
        let out = host.run(&["reassociate", "device", "--dry-run"]);
        assert!(text(&out.stdout).contains("dry run: nothing changed"));

        let out = host.run(&["reassociate", "device"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("applied"),
            "{}",
            text(&out.stdout)
        );
        host.process();
        assert_eq!(
            snapshot(&host),
            snapshot(&fresh),
            "{}: re-association equals a fresh run under version 2",
            db.url
        );

        // Devices whose grouping did not change keep their references.
        let after = ids(&host);
        let kept = ids_before
            .iter()
            .filter(|(id, serial)| after.iter().any(|(i, s)| i == id && s == serial))
            .count();
        assert!(
            kept + 20 >= ids_before.len(),
            "{kept} of {} references kept",
            ids_before.len()
        );
        // A second run finds nothing to change.
        let out = host.run(&["reassociate", "device", "--json"]);
        let again: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(again["moved"], 0, "{again}");
        assert_eq!(again["merges"].as_array().unwrap().len(), 0, "{again}");
    }
}

#[test]
fn a_serving_host_reassociates_over_http_between_its_batches() {
    const TOKEN: &str = "reassociate-token";
    let v2 = plugins_dir().join("fixtures/device-v2.wasm");
    let input = input();
    let fresh_db = Scratch::sqlite();
    let fresh_folder = own_plugins();
    std::fs::copy(&v2, fresh_folder.path().join("device.wasm")).unwrap();
    let fresh = Host::with_plugins(&fresh_db.url, fresh_folder.path());
    assert!(fresh.ingest_bytes(&input).status.success());
    fresh.process();

    let db = Scratch::sqlite();
    let folder = own_plugins();
    let host = Host::with_plugins(&db.url, folder.path());
    assert!(host.ingest_bytes(&input).status.success());
    host.process();
    replace_atomically(&v2, &folder.path().join("device.wasm"));
    let mut server = Server::start(&host, &["--admin-token", TOKEN]);
    let http = Http::new(&server.url());
    wait_for("version 2 serving", Duration::from_secs(120), || {
        http.current_version("device") == flowhost_tests::version_of(&v2) && settled(&db.url)
    });
    let route = "/v1/models/device/reassociate";

    assert_eq!(http.post(route, None, "").status, 401);
    let bad = http.post(&format!("{route}?dry_run=maybe"), Some(TOKEN), "");
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(
        http.post("/v1/models/nothing/reassociate", Some(TOKEN), "")
            .status,
        404
    );
    let plan = http.post(&format!("{route}?dry_run=true"), Some(TOKEN), "");
    assert_eq!(plan.status, 200, "{}", plan.body);
    let plan = plan.json();
    assert_eq!(plan["applied"], false);
    assert!(plan["merges"].as_array().unwrap().len() >= 15, "{plan}");

    // Records that come after it are decided against the new keys, like in a fresh run.
    let later: String = (0..20)
        .map(|i| {
            line(
                "device",
                "late",
                &format!("L-{i}"),
                json!({ "serial": format!("SN {}", 9000 + i % 15) }),
            )
        })
        .collect();
    let done = http.post(route, Some(TOKEN), "");
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.json()["applied"], true);
    assert_eq!(http.records(&later).status, 200);
    assert!(fresh.ingest(&later).status.success());
    fresh.process();
    wait_for("the host to settle", Duration::from_secs(120), || {
        settled(&db.url)
    });
    assert!(server.stop().success());
    assert_eq!(
        snapshot(&host),
        snapshot(&fresh),
        "re-association over HTTP equals a fresh run under version 2"
    );
}

//! Shadow runs: a candidate version of `device` (the `device-v2` fixture, which folds serials
//! to letters and digits) placed beside the live version 1 in a running host. It is called
//! on the live batches, its differences are recorded per record (by system and id) while the
//! live views stay version 1's, a replay of history reports the same records, and a
//! promotion makes it current through the usual swap.

use flowhost_tests::{
    Host, Http, Scratch, Server, count_by, line, own_plugins, plugin, plugins_dir, settled, text,
    version_of, wait_for,
};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

/// `D-{i}` with the given serial text.
fn device(i: usize, serial: &str) -> String {
    line(
        "device",
        "bms",
        &format!("D-{i}"),
        json!({ "serial": serial }),
    )
}

/// The ids of the records whose decision (not only keys) differs.
fn decided_otherwise(report: &Value) -> BTreeSet<String> {
    report["diffs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["kind"] == "record")
        .filter(|d| {
            let (l, c) = (&d["live"], &d["candidate"]);
            l["decision"] != c["decision"] || l["reference"] != c["reference"]
        })
        .map(|d| d["id"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn records_named(report: &Value) -> BTreeSet<String> {
    report["diffs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["kind"] == "record")
        .map(|d| d["id"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[test]
fn a_candidate_beside_the_live_version_reports_what_it_would_change_and_is_promoted() {
    let db = Scratch::sqlite();
    let folder = own_plugins();
    let host = Host::with_plugins(&db.url, folder.path());
    let mut server = Server::start(&host, &[]);
    let http = Http::new(&server.url());
    let settled = || settled(&db.url);
    let v1 = version_of(&plugin("device"));
    let v2_file = plugins_dir().join("fixtures/device-v2.wasm");
    let v2 = version_of(&v2_file);

    // Records before the candidate arrives are not compared.
    let before: String = (0..30).map(|i| device(i, &format!("pre-{i}"))).collect();
    assert_eq!(http.records(&before).status, 200);
    wait_for("the first records keyed", WAIT, settled);

    // Bad input first: no run yet, a model nobody knows, a file that is no component.
    let out = host.run(&["plugins", "diff", "device"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no shadow run of 'device'"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(http.get("/v1/plugins/device/shadow").status, 404);
    assert_eq!(http.get("/v1/plugins/nothing/shadow").status, 404);
    let out = host.run(&["plugins", "promote", "device"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no shadow run of 'device' is going"));
    let junk = folder.path().join("junk.txt");
    std::fs::write(&junk, b"not wasm").unwrap();
    let out = host.run(&["plugins", "shadow", junk.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("junk.txt"),
        "{}",
        text(&out.stderr)
    );

    // The candidate, placed through the CLI.
    let out = host.run(&["plugins", "shadow", v2_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(folder.path().join("shadow/device.wasm").is_file());
    wait_for("the shadow run to start", WAIT, || {
        let a = http.get("/v1/plugins/device/shadow");
        a.status == 200 && a.json()["candidate"] == v2.as_str() && a.json()["running"] == true
    });

    // One request of 40 records (one batch): D-100..D-119 with serials `sn-100`…, and
    // D-120..D-139 with `SN 100`…, which version 1 keeps apart (`serial:SN 100` is not
    // `serial:SN-100`) and version 2 folds together (`sn:SN100`): under it each of the
    // latter would collide with the earlier device that owns its folded serial.
    let batch: String = (100..120)
        .map(|i| device(i, &format!("sn-{i}")))
        .chain((120..140).map(|i| device(i, &format!("SN {}", i - 20))))
        .collect();
    assert_eq!(http.records(&batch).status, 200);
    wait_for("the candidate to have seen the batch", WAIT, || {
        let r = http.get("/v1/plugins/device/shadow").json();
        r["records"].as_i64().unwrap_or(0) + r["skipped"].as_i64().unwrap_or(0) >= 40
    });
    wait_for("the live records keyed", WAIT, settled);
    let report = http.get("/v1/plugins/device/shadow").json();
    assert_eq!(report["live"], v1.as_str(), "{report}");
    assert_eq!(report["records"], 40, "{report}");
    assert_eq!(report["skipped"], 0, "{report}");
    // Every record's keys differ (another prefix); the 20 folded ones are decided otherwise.
    assert_eq!(report["record_diffs"], 40, "{report}");
    let all: BTreeSet<String> = (100..140).map(|i| format!("D-{i}")).collect();
    let folded: BTreeSet<String> = (120..140).map(|i| format!("D-{i}")).collect();
    assert_eq!(records_named(&report), all);
    assert_eq!(decided_otherwise(&report), folded, "{report}");
    let d120 = report["diffs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "D-120")
        .unwrap();
    assert_eq!(d120["system"], "bms");
    let summary = d120["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("record bms/D-120: keys [serial:SN 100] → [sn:SN100]; keyed to ")
            && summary.contains("→ parked KEY_COLLISION"),
        "{summary}"
    );
    // Both versions project the same groups alike (the default projection).
    assert_eq!(report["views"], 40, "{report}");
    assert_eq!(report["view_diffs"], 0, "{report}");

    // The live side is untouched: version 1's views, nothing parked, no shadow keys.
    let by_version = count_by(
        &db.url,
        "SELECT plugin_version, COUNT(*) FROM views GROUP BY plugin_version",
    );
    assert_eq!(by_version, vec![(v1.clone(), 70)]);
    assert_eq!(
        count_by(&db.url, "SELECT 'n', COUNT(*) FROM parked")[0].1,
        0
    );
    assert_eq!(
        count_by(
            &db.url,
            "SELECT 'n', COUNT(*) FROM keys WHERE key LIKE 'sn:%'"
        )[0]
        .1,
        0
    );

    // `plugins list` (and GET /v1/plugins) show the run beside the live version.
    let out = host.run(&["plugins", "list"]);
    let listed = text(&out.stdout);
    assert!(
        listed.contains("shadow      candidate")
            && listed.contains("40 records compared, 40 differ"),
        "{listed}"
    );

    // The readable report and the JSON one.
    let out = host.run(&["plugins", "diff", "device", "--limit", "50"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("40 compared in"), "{shown}");
    assert!(
        shown.contains("record bms/D-133: keys [serial:SN 113] → [sn:SN113]"),
        "{shown}"
    );
    let out = host.run(&["plugins", "diff", "device", "--json"]);
    let cli: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(cli["record_diffs"], 40);

    // A replay over the same 40 records finds the same records, and writes nothing.
    let out = host.run(&[
        "plugins", "diff", "device", "--replay", "40", "--json", "--limit", "100",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let replay: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(replay["replayed"], 40, "{replay}");
    assert_eq!(replay["record_diffs"], 40, "{replay}");
    assert_eq!(records_named(&replay), all);
    assert_eq!(decided_otherwise(&replay), folded, "{replay}");
    assert_eq!(
        http.get("/v1/plugins/device/shadow").json()["record_diffs"],
        40
    );

    // Promotion: the usual swap; the run ends; the views are redone by version 2.
    let out = host.run(&["plugins", "promote", "device"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!folder.path().join("shadow/device.wasm").exists());
    assert_eq!(version_of(&folder.path().join("device.wasm")), v2);
    wait_for("version 2 to be current", WAIT, || {
        http.current_version("device") == v2
    });
    let ended = http.get("/v1/plugins/device/shadow").json();
    assert_eq!(ended["running"], false, "{ended}");
    assert_eq!(ended["ended"], "promoted", "{ended}");
    wait_for("the views re-projected by version 2", WAIT, || {
        settled()
            && count_by(
                &db.url,
                "SELECT plugin_version, COUNT(*) FROM views GROUP BY plugin_version",
            ) == vec![(v2.clone(), 70)]
    });
    assert!(server.stop().success());
}

#[test]
fn a_candidate_that_fails_its_probe_is_refused_and_named() {
    let db = Scratch::sqlite();
    let folder = own_plugins();
    let host = Host::with_plugins(&db.url, folder.path());
    let mut server = Server::start(&host, &[]);
    let http = Http::new(&server.url());
    std::fs::create_dir_all(folder.path().join("shadow")).unwrap();
    std::fs::write(folder.path().join("shadow/device.wasm"), b"\0asm broken").unwrap();
    wait_for("the refusal", WAIT, || {
        http.get("/v1/plugins").json()["refused_files"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|f| {
                f["file"]
                    .as_str()
                    .is_some_and(|f| f.ends_with("shadow/device.wasm"))
            })
    });
    assert_eq!(http.get("/v1/plugins/device/shadow").status, 404);
    // The live version serves on.
    assert_eq!(
        http.current_version("device"),
        version_of(&plugin("device"))
    );
    assert!(server.stop().success());
}

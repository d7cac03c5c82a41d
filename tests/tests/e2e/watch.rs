//! A new plugin version watched on its first records: one that fails on every third record,
//! dropped into a running host's folder, is rolled back on its own to the version before;
//! the records it failed are decided again under that version; the log says why and the
//! metrics count it.

use flowhost_tests::{
    Host, Http, Scratch, Server, count_by, line, own_plugins, plugin, plugins_dir,
    replace_atomically, settled, version_of, wait_for,
};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

fn devices(range: std::ops::Range<usize>) -> String {
    range
        .map(|i| {
            line(
                "device",
                "bms",
                &format!("D-{i}"),
                json!({"serial": format!("sn-{i}")}),
            )
        })
        .collect()
}

#[test]
fn a_version_failing_on_every_third_record_is_rolled_back_on_its_own() {
    let db = Scratch::sqlite();
    let folder = own_plugins();
    let host = Host::with_plugins(&db.url, folder.path());
    let mut server = Server::start(&host, &["--set", "plugins.watch_records=60"]);
    let http = Http::new(&server.url());
    let settled = || settled(&db.url);

    // Version 1 decides 90 records without a failure: the baseline.
    let v1 = version_of(&plugin("device"));
    assert_eq!(http.records(&devices(0..90)).status, 200);
    wait_for("version 1's records", WAIT, settled);

    // The careless version: every third record fails in the plugin.
    let flaky_file = plugins_dir().join("fixtures/device-flaky.wasm");
    let flaky = version_of(&flaky_file);
    replace_atomically(&flaky_file, &folder.path().join("device.wasm"));
    wait_for("the flaky version to be current", WAIT, || {
        http.current_version("device") == flaky
    });
    assert_eq!(http.records(&devices(90..180)).status, 200);

    // Judged on its first 60 records and rolled back to version 1.
    // (The version changes in the database just before the host logs why.)
    wait_for("the host to roll back on its own", WAIT, || {
        http.current_version("device") == v1 && server.log().contains("rolled back on its own")
    });
    let log = server.log();
    assert!(
        log.contains("of its first 60 records failed or were rejected"),
        "{log}"
    );
    let metrics = http.get("/metrics").body;
    assert!(
        metrics.contains("flowhost_plugin_auto_rollbacks_total{model=\"device\"} 1"),
        "{metrics}"
    );
    let plugins = http.get("/v1/plugins").json();
    let device = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["model"] == "device")
        .unwrap()
        .clone();
    assert_eq!(device["source"], "rollback", "{device}");

    // What the flaky version failed is decided again by version 1: nothing stays parked.
    wait_for("every record keyed under version 1", WAIT, || {
        settled()
            && count_by(&db.url, "SELECT 'n', COUNT(*) FROM parked")[0].1 == 0
            && count_by(&db.url, "SELECT 'n', COUNT(*) FROM keyed")[0].1 == 180
    });
    // The rolled-back file stays in the folder without becoming current again.
    assert_eq!(http.current_version("device"), v1);
    assert!(server.stop().success());
}

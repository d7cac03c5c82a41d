//! The worked examples of the domain rules (README: how records become references), end to end through the CLI, on SQLite and PostgreSQL.

use flowhost_tests::{Host, Scratch, line, text};
use serde_json::{Value, json};

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn by_id<'a>(items: &'a [Value], id: &Value) -> &'a Value {
    items
        .iter()
        .find(|v| v["id"] == *id)
        .expect("reference exported")
}

#[test]
fn merge_two_sources_into_one_device_with_lineage() {
    for db in Scratch::both() {
        let host = Host::new(&db.url);
        let input = line(
            "device",
            "bms",
            "D-1",
            json!({"serial":"sn-001","name":"Chiller 1"}),
        ) + &line(
            "device",
            "oem",
            "X-9",
            json!({"serial":"SN-001 ","firmware":"1.2"}),
        );
        assert_eq!(
            ok(&host.ingest(&input)).trim(),
            "accepted 2, duplicates 0, refused 0"
        );
        host.process();
        let canonical = host.export("canonical", "device");
        assert_eq!(canonical.len(), 1, "{}: one device", db.backend);
        assert_eq!(
            canonical[0]["canonical"],
            json!({"serial":["sn-001"],"name":["Chiller 1"],"firmware":["1.2"]})
        );
        assert_eq!(canonical[0]["model"], "device");
        let lineage = host.export("lineage", "device");
        assert_eq!(
            lineage[0]["lineage"]["serial"],
            json!([{"value":"sn-001","sources":["bms/bms-v1/D-1","oem/oem-v1/X-9"]}])
        );
        assert_eq!(lineage[0]["id"], canonical[0]["id"]);
        let root = host.export("root", "device");
        assert_eq!(root[0]["root"]["name"], "Chiller 1");
        assert_eq!(root[0]["parents"], json!({}));
    }
}

#[test]
fn a_record_whose_keys_belong_to_two_devices_parks_as_a_collision() {
    for db in Scratch::both() {
        let host = Host::new(&db.url);
        ok(&host.ingest(
            &(line("device", "bms", "A", json!({"serial":"S1"}))
                + &line("device", "bms", "B", json!({"serial":"S2"}))),
        ));
        host.process();
        let before = host.export("canonical", "device");
        ok(&host.ingest(&line("device", "crm", "C", json!({"serial":["S1","S2"]}))));
        host.process();
        let parked = host.parked();
        assert_eq!(parked.len(), 1, "{}", db.backend);
        assert_eq!(parked[0]["reason"], "KEY_COLLISION");
        assert_eq!(parked[0]["id"], "C");
        assert_eq!(parked[0]["attempts"], 1);
        assert_eq!(
            host.export("canonical", "device"),
            before,
            "A and B unchanged"
        );
    }
}

#[test]
fn no_keys_parks_then_joins_through_its_source_key() {
    for db in Scratch::both() {
        let host = Host::new(&db.url);
        ok(&host.ingest(&line(
            "device",
            "bms",
            "D-3",
            json!({"name":"no serial yet"}),
        )));
        host.process();
        let parked = host.parked();
        assert_eq!(parked.len(), 1);
        assert_eq!(parked[0]["reason"], "NO_KEYS");
        assert!(host.export("canonical", "device").is_empty());

        ok(&host.ingest(&line("device", "bms", "D-3", json!({"serial":"Z-3"}))));
        host.process();
        assert!(
            host.parked().is_empty(),
            "{}: the parked record healed",
            db.backend
        );
        let canonical = host.export("canonical", "device");
        assert_eq!(canonical.len(), 1);
        assert_eq!(
            canonical[0]["canonical"],
            json!({"name":["no serial yet"],"serial":["Z-3"]}),
            "the parked record joined: its name is in the view"
        );

        ok(&host.ingest(&line("device", "bms", "D-3", json!({"name":"renamed"}))));
        host.process();
        let after = host.export("canonical", "device");
        assert_eq!(
            after.len(),
            1,
            "joined the same reference through its source key"
        );
        assert_eq!(after[0]["id"], canonical[0]["id"]);
        assert_eq!(
            after[0]["canonical"]["name"],
            json!(["no serial yet", "renamed"])
        );
    }
}

#[test]
fn a_sensor_before_its_device_heals_without_a_manual_step() {
    for db in Scratch::both() {
        let host = Host::new(&db.url);
        ok(&host.ingest(&line(
            "sensor",
            "bms",
            "S-1",
            json!({"code":"T1","device_id":"D-7","unit":"C"}),
        )));
        host.process();
        let parked = host.parked();
        assert_eq!(parked.len(), 1);
        assert_eq!(parked[0]["reason"], "PARENT_NOT_FOUND");
        assert!(
            parked[0]["details"]
                .as_str()
                .unwrap()
                .contains("src:bms:D-7")
        );

        ok(&host.ingest(&line("device", "bms", "D-7", json!({"serial":"SN-7"}))));
        host.process();
        assert!(host.parked().is_empty(), "{}", db.backend);
        let device = host.export("canonical", "device");
        let sensor = host.export("root", "sensor");
        assert_eq!(sensor.len(), 1);
        assert_eq!(
            sensor[0]["root"],
            json!({"code":"T1","device_id":"D-7","unit":"C"})
        );
        assert_eq!(sensor[0]["parents"], json!({"device": device[0]["id"]}));
    }
}

#[test]
fn healing_reaches_through_every_level() {
    for db in Scratch::both() {
        let host = Host::new(&db.url);
        // A reading waits for a sensor that waits for a device.
        ok(&host.ingest(&line(
            "reading",
            "bms",
            "R-1",
            json!({"sensor_id":"S-1","value":21.5}),
        )));
        host.process();
        ok(&host.ingest(&line(
            "sensor",
            "bms",
            "S-1",
            json!({"code":"T1","device_id":"D-1"}),
        )));
        host.process();
        assert_eq!(host.parked().len(), 2);
        ok(&host.ingest(&line("device", "bms", "D-1", json!({"serial":"SN-1"}))));
        host.process();
        assert!(host.parked().is_empty(), "{}", db.backend);
        let values = host.export("values", "reading");
        assert_eq!(values.len(), 1);
        assert_eq!(
            values[0]["parent"]["id"],
            host.export("canonical", "sensor")[0]["id"]
        );
    }
}

#[test]
fn resending_a_file_changes_nothing() {
    for db in Scratch::both() {
        let host = Host::new(&db.url);
        let input = line(
            "device",
            "bms",
            "D-1",
            json!({"serial":"sn-001","name":"Chiller 1"}),
        ) + &line(
            "device",
            "oem",
            "X-9",
            json!({"serial":"SN-001 ","firmware":"1.2"}),
        ) + &line(
            "sensor",
            "bms",
            "S-1",
            json!({"code":"T1","device_id":"D-1"}),
        ) + &line(
            "reading",
            "bms",
            "R-1",
            json!({"sensor_id":"S-1","value":1}),
        );
        assert_eq!(
            ok(&host.ingest(&input)).trim(),
            "accepted 4, duplicates 0, refused 0"
        );
        host.process();
        let views: Vec<Vec<Value>> = ["canonical", "root", "lineage"]
            .iter()
            .flat_map(|v| ["device", "sensor"].map(|m| host.export(v, m)))
            .collect();
        let values = host.export("values", "reading");
        assert_eq!(
            ok(&host.ingest(&input)).trim(),
            "accepted 0, duplicates 4, refused 0"
        );
        host.process();
        let again: Vec<Vec<Value>> = ["canonical", "root", "lineage"]
            .iter()
            .flat_map(|v| ["device", "sensor"].map(|m| host.export(v, m)))
            .collect();
        assert_eq!(views, again, "{}", db.backend);
        assert_eq!(values, host.export("values", "reading"));
    }
}

#[test]
fn readings_from_two_systems_hang_under_the_one_sensor() {
    for db in Scratch::both() {
        let host = Host::new(&db.url);
        let input = line("device", "bms", "D-1", json!({"serial":"SN-1"}))
            + &line("device", "oem", "X-1", json!({"serial":"sn-1"}))
            + &line(
                "sensor",
                "bms",
                "S-1",
                json!({"code":"T1","device_id":"D-1"}),
            )
            + &line(
                "sensor",
                "oem",
                "T-1",
                json!({"code":"t1 ","device_id":"X-1"}),
            )
            + &line(
                "reading",
                "bms",
                "R-1",
                json!({"sensor_id":"S-1","value":21.5}),
            )
            + &line(
                "reading",
                "oem",
                "R-9",
                json!({"sensor_id":"T-1","value":21.7}),
            );
        ok(&host.ingest(&input));
        host.process();
        let sensors = host.export("canonical", "sensor");
        assert_eq!(sensors.len(), 1, "{}: one sensor", db.backend);
        let values = host.export("values", "reading");
        assert_eq!(values.len(), 2);
        for v in &values {
            assert_eq!(
                v["parent"],
                json!({"model":"sensor","id": sensors[0]["id"]})
            );
        }
        assert_eq!(
            values[0]["source"],
            json!({"system":"bms","adapter":"bms-v1"})
        );
        assert_eq!(
            values[0]["payload"],
            json!({"sensor_id":"S-1","value":21.5})
        );
        let sensor = by_id(&host.export("root", "sensor"), &sensors[0]["id"]).clone();
        assert_eq!(
            sensor["parents"]["device"],
            host.export("canonical", "device")[0]["id"]
        );
    }
}

#[test]
fn parked_records_can_be_filtered_and_requeued() {
    let db = Scratch::sqlite();
    let host = Host::new(&db.url);
    ok(&host.ingest(
        &(line("device", "bms", "D-1", json!({"serial": 7}))
            + &line("device", "bms", "D-2", json!({"name":"x"}))),
    ));
    host.process();
    let table = ok(&host.run(&["parked"]));
    assert!(
        table.contains("REJECTED") && table.contains("BAD_SERIAL"),
        "{table}"
    );
    assert!(table.contains("2 parked"), "{table}");
    let out = ok(&host.run(&["parked", "--reason", "rejected", "--json"]));
    assert_eq!(out.lines().count(), 1);
    assert_eq!(
        ok(&host.run(&["parked", "requeue", "--reason", "REJECTED"])).trim(),
        "requeued 1"
    );
    host.process();
    let parked = host.parked();
    let rejected: Vec<&Value> = parked
        .iter()
        .filter(|p| p["reason"] == "REJECTED")
        .collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["attempts"], 2, "attempts count up");
    let bad = host.run(&["parked", "--reason", "LOST"]);
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("unknown reason 'LOST'"));
}

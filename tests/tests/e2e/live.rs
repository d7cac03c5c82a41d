//! Plugins live, against the real `serve` process and real files: every misbehaving fixture
//! while the host runs, live swaps under continuous intake, and rollback.

use flowhost_tests::{
    Host, Scratch, Server, block_until_ok, count_by, fixture, json_lines, plugin,
    replace_atomically, text, version_of, wait_for,
};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

/// `plugins list --json`: the model lines by model, and the refused files. (Before any
/// model was loaded it exits non-zero saying "no plugins in …", still listing refusals.)
fn plugins_list(host: &Host) -> (Vec<Value>, Vec<Value>) {
    let out = host.run(&["plugins", "list", "--json"]);
    if !text(&out.stderr).contains("no plugins in") {
        block_until_ok(&out);
    }
    json_lines(&out.stdout)
        .into_iter()
        .partition(|l| l.get("model").is_some())
}

fn model_line(host: &Host, model: &str) -> Value {
    plugins_list(host)
        .0
        .into_iter()
        .find(|l| l["model"] == model)
        .unwrap_or(Value::Null)
}

fn faulty(id: &str, extra: Value) -> String {
    let mut payload = json!({"key": id});
    for (k, v) in extra.as_object().unwrap() {
        payload[k] = v.clone();
    }
    json!({"model":"faulty","source":{"system":"s"},"id":id,"payload":payload}).to_string() + "\n"
}

#[test]
fn every_fixture_against_a_running_host() {
    let db = Scratch::sqlite();
    let folder = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("faulty"), folder.path().join("faulty.wasm")).unwrap();
    let host = Host {
        db: db.url.clone(),
        plugins: folder.path().to_path_buf(),
    };
    let mut server = Server::start(
        &host,
        &["--plugin-timeout-ms", "300", "--plugin-memory-mb", "64"],
    );
    wait_for("the service to register faulty", WAIT, || {
        model_line(&host, "faulty")["state"] == "serving"
    });

    let poison = [
        ("P-trap", json!({"trap": true}), "poison record P-trap"),
        ("P-spin", json!({"spin": true}), "time limit"),
        ("P-grow", json!({"grow": true}), "memory"),
        ("P-recurse", json!({"recurse": true}), "wasm trap"),
        (
            "P-short",
            json!({"short": true}),
            "returned 0 results for 1",
        ),
    ];
    let mut input = String::new();
    for i in 0..60 {
        input += &faulty(&format!("G-{i}"), json!({"n": i}));
        if i % 12 == 5 {
            let (id, mark, _) = &poison[i / 12];
            input += &faulty(id, mark.clone());
        }
    }
    input += &faulty("P-badjson", json!({"badjson": true}));
    block_until_ok(&host.ingest(&input));

    // Files that must never serve, dropped in while it runs.
    std::fs::copy(fixture("other-world"), folder.path().join("other.wasm")).unwrap();
    std::fs::copy(
        fixture("broken-describe"),
        folder.path().join("broken.wasm"),
    )
    .unwrap();
    std::fs::write(folder.path().join("garbage.wasm"), b"\0asm garbage").unwrap();

    wait_for("the poison records to park", WAIT, || {
        host.parked().len() == poison.len()
            && model_line(&host, "faulty")["views"]["failed"] == 1
            && host.export("canonical", "faulty").len() == 60
    });
    assert!(server.running(), "the host stays up");

    let parked = host.parked();
    for (id, _, message) in &poison {
        let p = parked
            .iter()
            .find(|p| p["id"] == *id)
            .unwrap_or_else(|| panic!("{id} parked: {parked:?}"));
        assert_eq!(p["reason"], "PLUGIN_FAILED", "{p}");
        let details = p["details"].as_str().unwrap().to_lowercase();
        assert!(details.contains(&message.to_lowercase()), "{id}: {details}");
    }
    // Every good record is keyed and projected; the bad-JSON reference is not, and says why.
    let canonical = host.export("canonical", "faulty");
    assert_eq!(canonical.len(), 60);
    assert!(
        canonical
            .iter()
            .all(|v| v["canonical"].get("badjson").is_none())
    );

    let (models, refused) = plugins_list(&host);
    assert_eq!(models.len(), 1, "only faulty serves: {models:?}");
    let refused_text = serde_json::to_string(&refused).unwrap();
    for (file, why) in [
        (
            "other.wasm",
            "does not target world flowhost:plugin/plugin@0.1.0",
        ),
        ("broken.wasm", "describe is broken on purpose"),
        ("garbage.wasm", "load"),
    ] {
        assert!(
            refused
                .iter()
                .any(|r| r["file"].as_str().unwrap().ends_with(file)
                    && r["error"].as_str().unwrap().contains(why)),
            "{file} refused with '{why}': {refused_text}"
        );
    }
    let log = server.log();
    assert!(
        log.contains("plugin refused, the current version keeps serving"),
        "{log}"
    );
    assert!(server.running());
    assert!(server.stop().success(), "exits 0 on SIGTERM");
}

#[test]
fn live_swaps_under_load_key_every_record_once_by_one_version() {
    let db = Scratch::sqlite();
    let folder = tempfile::tempdir().unwrap();
    let live = folder.path().join("device.wasm");
    std::fs::copy(plugin("device"), &live).unwrap();
    let host = Arc::new(Host {
        db: db.url.clone(),
        plugins: folder.path().to_path_buf(),
    });
    let (v1, v2) = (
        version_of(&plugin("device")),
        version_of(&fixture("device-v2")),
    );
    let mut server = Server::start(&host, &[]);
    wait_for("device v1 to serve", WAIT, || {
        assert!(server.running(), "serve stopped: {}", server.log());
        model_line(&host, "device")["version"] == v1.as_str()
    });

    // A client ingests continuously while the plugin changes under it.
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (host, stop) = (host.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut batch = String::new();
                for _ in 0..150 {
                    n += 1;
                    batch += &flowhost_tests::line(
                        "device",
                        ["bms", "erp"][n % 2],
                        &format!("D-{n}"),
                        json!({"serial": format!("sn-{}", n % 400), "n": n}),
                    );
                }
                block_until_ok(&host.ingest(&batch));
            }
            n
        })
    };

    let garbage = folder.path().join("garbage-source.bin");
    std::fs::write(&garbage, b"\0asm\x0d\0\x01\0 not a real component").unwrap();
    let steps = [
        ("v2", fixture("device-v2"), true),
        ("garbage", garbage.clone(), false),
        ("v1", plugin("device"), true),
        ("v2", fixture("device-v2"), true),
        ("garbage", garbage.clone(), false),
        ("v1", plugin("device"), true),
        ("v2", fixture("device-v2"), true),
        ("v1", plugin("device"), true),
    ];
    for (i, (name, file, valid)) in steps.iter().enumerate() {
        // Alternate how the file arrives: rename over it, or rewrite it in place like `cp`.
        if i % 2 == 0 {
            replace_atomically(file, &live);
        } else {
            std::fs::copy(file, &live).unwrap();
        }
        let want = version_of(file);
        if *valid {
            wait_for(&format!("step {i}: {name} to serve"), WAIT, || {
                model_line(&host, "device")["version"] == want.as_str()
            });
        } else {
            wait_for(&format!("step {i}: {name} to be refused"), WAIT, || {
                model_line(&host, "device")["last_error"]["error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("load:"))
            });
        }
        // Let records flow on this version before the next change.
        let before = count_by(&db.url, "SELECT 'n', COUNT(*) FROM keyed")[0].1;
        wait_for("records keyed after the change", WAIT, || {
            count_by(&db.url, "SELECT 'n', COUNT(*) FROM keyed")[0].1 > before + 100
        });
    }
    stop.store(true, Ordering::Relaxed);
    let sent = client.join().unwrap();

    wait_for("the service to catch up", WAIT, || {
        count_by(&db.url, "SELECT 'n', COUNT(*) FROM queue")[0].1 == 0
            && count_by(&db.url, "SELECT 'n', COUNT(*) FROM dirty")
                .first()
                .is_some_and(|(_, n)| *n == 0)
    });
    assert!(server.running(), "the host stays up through every swap");

    let intake = count_by(&db.url, "SELECT 'n', COUNT(*) FROM intake")[0].1;
    assert_eq!(intake as usize, sent, "every record sent was accepted once");
    let keyed = count_by(
        &db.url,
        "SELECT plugin_version, COUNT(*) FROM keyed GROUP BY plugin_version",
    );
    let total: i64 = keyed.iter().map(|(_, n)| n).sum();
    assert_eq!(
        total, intake,
        "every record keyed (exactly once: seq is the key)"
    );
    let versions: Vec<&str> = keyed.iter().map(|(v, _)| v.as_str()).collect();
    assert!(
        versions.iter().all(|v| *v == v1 || *v == v2),
        "only v1 and v2 keyed records: {keyed:?}"
    );
    assert!(versions.contains(&v1.as_str()) && versions.contains(&v2.as_str()));
    assert!(host.parked().is_empty(), "nothing failed or parked");
    let garbage_version = version_of(&garbage);
    assert!(
        count_by(
            &db.url,
            &format!("SELECT version, 1 FROM plugin_versions WHERE version = '{garbage_version}'")
        )
        .is_empty(),
        "the garbage file never served"
    );
    // The views are all by the final version (v1): re-projection finished.
    let line = model_line(&host, "device");
    assert_eq!(line["version"], v1.as_str());
    assert_eq!(line["views"]["current"], line["views"]["total"], "{line}");
    let stale = count_by(
        &db.url,
        &format!(
            "SELECT plugin_version, COUNT(*) FROM views WHERE plugin_version <> '{v1}' GROUP BY plugin_version"
        ),
    );
    assert!(stale.is_empty(), "views by other versions: {stale:?}");
    assert!(server.stop().success());
}

#[test]
fn rollback_returns_to_the_previous_version_at_once_and_survives_a_restart() {
    let db = Scratch::sqlite();
    let folder = tempfile::tempdir().unwrap();
    let live = folder.path().join("device.wasm");
    std::fs::copy(plugin("device"), &live).unwrap();
    let host = Host {
        db: db.url.clone(),
        plugins: folder.path().to_path_buf(),
    };
    let (v1, v2) = (
        version_of(&plugin("device")),
        version_of(&fixture("device-v2")),
    );
    let keyed_by = |id: &str| {
        count_by(
            &db.url,
            &format!(
                "SELECT k.plugin_version, 1 FROM keyed k JOIN intake i ON i.seq = k.seq \
                 WHERE i.external_id = '{id}'"
            ),
        )
        .first()
        .map(|(v, _)| v.clone())
    };
    let send = |id: &str| {
        block_until_ok(&host.ingest(&flowhost_tests::line(
            "device",
            "bms",
            id,
            json!({"serial": id}),
        )))
    };

    let server = Server::start(&host, &[]);
    wait_for("v1", WAIT, || {
        model_line(&host, "device")["version"] == v1.as_str()
    });
    send("A");
    wait_for("A keyed", WAIT, || keyed_by("A").is_some());
    replace_atomically(&fixture("device-v2"), &live);
    wait_for("v2", WAIT, || {
        model_line(&host, "device")["version"] == v2.as_str()
    });
    send("B");
    wait_for("B keyed", WAIT, || keyed_by("B").is_some());
    assert_eq!(keyed_by("B").as_deref(), Some(v2.as_str()));

    let out = host.run(&["plugins", "rollback", "device"]);
    block_until_ok(&out);
    assert_eq!(
        text(&out.stdout).trim(),
        format!("device: now {} (was {})", &v1[..12], &v2[..12])
    );
    let line = model_line(&host, "device");
    assert_eq!(line["version"], v1.as_str());
    assert_eq!(line["source"], "rollback");
    assert_eq!(line["previous"][0]["version"], v2.as_str(), "{line}");
    // The running host serves v1 again: a new record is keyed by it.
    send("C");
    wait_for("C keyed", WAIT, || keyed_by("C").is_some());
    assert_eq!(keyed_by("C").as_deref(), Some(v1.as_str()));
    wait_for("views re-projected by v1", WAIT, || {
        let l = model_line(&host, "device");
        l["views"]["current"] == l["views"]["total"]
    });
    assert!(server.stop().success());

    // A restart keeps the rollback although the folder still holds v2.
    let server = Server::start(&host, &[]);
    send("D");
    wait_for("D keyed", WAIT, || keyed_by("D").is_some());
    assert_eq!(keyed_by("D").as_deref(), Some(v1.as_str()));
    assert_eq!(model_line(&host, "device")["version"], v1.as_str());

    // Forward again with --to and a prefix; bad requests say what is wrong.
    let out = host.run(&["plugins", "rollback", "device", "--to", &v2[..8]]);
    block_until_ok(&out);
    wait_for("v2 again", WAIT, || {
        model_line(&host, "device")["version"] == v2.as_str()
    });
    let out = host.run(&["plugins", "rollback", "device", "--to", "zzz"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("has no version starting with 'zzz'"),
        "{}",
        text(&out.stderr)
    );
    let out = host.run(&["plugins", "rollback", "nosuch"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("model 'nosuch' is not known"));

    // Removing the file pauses the model; records wait, nothing is lost.
    std::fs::remove_file(&live).unwrap();
    wait_for("device paused", WAIT, || {
        model_line(&host, "device")["state"]
            .as_str()
            .is_some_and(|s| s.starts_with("paused"))
    });
    send("E");
    std::fs::copy(plugin("device"), &live).unwrap();
    wait_for("E keyed after the plugin returns", WAIT, || {
        keyed_by("E").is_some()
    });
    assert!(server.stop().success());
}

#[test]
fn a_plugin_failing_on_everything_cools_down_and_per_model_batch_limits_hold() {
    let db = Scratch::sqlite();
    let folder = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("faulty"), folder.path().join("faulty.wasm")).unwrap();
    let host = Host {
        db: db.url.clone(),
        plugins: folder.path().to_path_buf(),
    };
    let mut server = Server::start(
        &host,
        &[
            "--log",
            "info,flowhost_engine=debug",
            "--model-limit",
            "faulty:max_batch=4",
        ],
    );
    wait_for("faulty serving", WAIT, || {
        assert!(server.running(), "serve stopped: {}", server.log());
        model_line(&host, "faulty")["state"] == "serving"
    });
    // Three rounds in which every record traps: the breaker trips on the third.
    for round in 0..3 {
        let mut input = String::new();
        // One batch per round: as many records as the model's limit per call.
        for i in 0..4 {
            input += &faulty(&format!("T-{round}-{i}"), json!({"trap": true}));
        }
        block_until_ok(&host.ingest(&input));
        wait_for("the round to park", WAIT, || {
            host.parked().len() == 4 * (round + 1)
        });
    }
    wait_for("the cool-down to show", WAIT, || {
        model_line(&host, "faulty")["state"]
            .as_str()
            .is_some_and(|s| s.starts_with("cool-down: associate failed on every record"))
    });
    assert!(server.log().contains("cooling down"), "{}", server.log());
    // A good record waits out the cool-down, then goes through and closes the breaker.
    block_until_ok(&host.ingest(&faulty("GOOD", json!({}))));
    wait_for("the good record after the cool-down", WAIT, || {
        host.export("canonical", "faulty").len() == 1
    });
    wait_for("serving again", WAIT, || {
        model_line(&host, "faulty")["state"] == "serving"
    });
    assert_eq!(host.parked().len(), 12, "the cool-down parked nothing more");
    // No call ever carried more than the model's limit of 4 records.
    let log = server.log();
    let sizes: Vec<usize> = log
        .lines()
        .filter(|l| l.contains("batch done") && l.contains("stage=\"associate\""))
        .filter_map(|l| {
            l.split("items=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(!sizes.is_empty(), "{log}");
    assert!(sizes.iter().all(|&n| n <= 4), "{sizes:?}");
    assert!(server.running());
    assert!(server.stop().success());
}

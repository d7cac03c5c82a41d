//! Plugins that block, hoard or lie, and files that are not plugins, against a running
//! `serve` on both backends: the host stays up, the other records are keyed, the bad ones
//! park with a reason naming what happened, in bounded time, and `serve` exits 0 after.

use flowhost_tests::{
    Host, Http, Scratch, Server, block_until_ok, count_by, fixture, plugin, text, wait_for,
};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// A folder holding the given components (copied under the given names).
fn folder(files: &[(&Path, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (from, name) in files {
        std::fs::copy(from, dir.path().join(name)).unwrap();
    }
    dir
}

fn faulty(id: &str, payload: Value) -> String {
    json!({"model":"faulty","source":{"system":"s"},"id":id,"payload":payload}).to_string() + "\n"
}

/// One model's counts from `GET /v1/models`.
fn counts(http: &Http, model: &str) -> Value {
    let models = http.get("/v1/models").json();
    models["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == model)
        .map(|m| m["counts"].clone())
        .unwrap_or(Value::Null)
}

/// Posts a device record and waits for its view: the host keeps working.
fn a_device_flows(http: &Http) {
    let record = flowhost_tests::line("device", "bms", "D-1", json!({"serial": "S1"}));
    assert_eq!(http.records(&record).status, 200);
    wait_for("the device view", Duration::from_secs(30), || {
        http.get("/v1/models/device/canonical").body.lines().count() == 1
    });
}

fn parked_total(counts: &Value) -> i64 {
    counts["parked"]
        .as_object()
        .map(|p| p.values().filter_map(Value::as_i64).sum())
        .unwrap_or(0)
}

#[test]
fn a_plugin_that_blocks_hoards_or_lies_parks_only_its_records() {
    for db in Scratch::both() {
        let plugins = folder(&[(&fixture("faulty"), "faulty.wasm")]);
        let host = Host {
            db: db.url.clone(),
            plugins: plugins.path().to_path_buf(),
        };
        let mut server = Server::start(
            &host,
            &["--plugin-timeout-ms", "1000", "--plugin-memory-mb", "64"],
        );
        let http = Http::new(&server.url());
        let mut body = String::new();
        for i in 1..=20 {
            body += &faulty(&format!("OK-{i}"), json!({"key": format!("ok{i}")}));
        }
        let bad = [
            ("SLEEP", json!({"key": "sleep", "sleep_ms": 3_600_000})),
            ("POLL", json!({"key": "poll", "poll": true})),
            ("SPIN", json!({"key": "spin", "spin": true})),
            ("GROW", json!({"key": "grow", "grow": true})),
            ("BIGKEY", json!({"bigkey": 600})),
            ("NUL", json!({"key": "nul", "nulreject": true})),
        ];
        let fine = [
            (
                "MULTI",
                json!({"key": "multi", "multiline": true, "n": 1.5, "s": "a, b {c}"}),
            ),
            ("BADPARENT", json!({"key": "badparent", "badparent": true})),
        ];
        let mut good = 20;
        for (i, (id, payload)) in bad.iter().chain(&fine).enumerate() {
            // Before and after the good records, so each batch mixes them.
            body.insert_str(0, &faulty(id, payload.clone()));
            if i % 2 == 0 {
                body += &faulty(&format!("OK-x{i}"), json!({"key": format!("x{i}")}));
                good += 1;
            }
        }
        let started = Instant::now();
        assert_eq!(http.records(&body).status, 200);

        wait_for(
            "every record to be decided",
            Duration::from_secs(120),
            || {
                let c = counts(&http, "faulty");
                c["pending"] == 0 && parked_total(&c) == bad.len() as i64
            },
        );
        let decided = started.elapsed();
        eprintln!("{}: all decided in {decided:?}", db.backend);
        assert!(decided < Duration::from_secs(90), "{decided:?}");

        let parked = host.parked();
        let details = |id: &str| -> String {
            let p = parked
                .iter()
                .find(|p| p["id"] == id)
                .unwrap_or_else(|| panic!("{id} not parked: {parked:?}"));
            let reason = if id == "BIGKEY" {
                "STORE_REFUSED"
            } else {
                "PLUGIN_FAILED"
            };
            assert_eq!(p["reason"], reason, "{p}");
            p["details"].as_str().unwrap().to_string()
        };
        for id in ["SLEEP", "POLL", "SPIN"] {
            assert!(
                details(id).contains("exceeded its time limit of 1000 ms"),
                "{id}: {}",
                details(id)
            );
        }
        assert!(
            details("GROW").contains("memory cap of 64 MiB"),
            "{}",
            details("GROW")
        );
        assert!(
            details("BIGKEY").contains("key 1 is 602 bytes long, over the limit of 512 bytes"),
            "{}",
            details("BIGKEY")
        );
        assert!(
            details("NUL").contains("NUL character"),
            "{}",
            details("NUL")
        );
        assert!(details("NUL").contains("faulty.wasm"), "names the plugin");

        // Everything else is keyed; all but the reference whose projection lied have views,
        // each one line (the pretty-printed view was made compact).
        wait_for("the views", Duration::from_secs(60), || {
            host.export("canonical", "faulty").len() == good + 1
        });
        let canonical = host.export("canonical", "faulty");
        let multi = canonical
            .iter()
            .find(|v| v["canonical"]["multiline"] == json!([true]))
            .expect("the multi-line view, compacted");
        assert_eq!(multi["canonical"]["s"], json!(["a, b {c}"]));
        assert!(
            !canonical
                .iter()
                .any(|v| v["canonical"]["badparent"] == json!([true])),
            "a projection naming a parent its group lacks is not stored"
        );

        // A record that floods the log, alone in its batch (one call).
        let flood = faulty("FLOOD", json!({"key": "flood", "flood": 500}));
        assert_eq!(http.records(&flood).status, 200);
        wait_for(
            "the flooding record's view",
            Duration::from_secs(60),
            || host.export("canonical", "faulty").len() == good + 2,
        );

        // A view with a lone surrogate escape (valid JSON syntax, no character), alone in
        // its batch so that its reason is the one the batch's log line gives: not stored,
        // its reference kept failed beside the lying one.
        let surrogate = faulty("SURROGATE", json!({"key": "surrogate", "surrogate": true}));
        assert_eq!(http.records(&surrogate).status, 200);
        let views = || -> serde_json::Value {
            let plugins = http.get("/v1/plugins").json();
            plugins["plugins"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["model"] == "faulty"))
                .map_or(json!(null), |p| p["views"].clone())
        };
        wait_for(
            "two references whose projections failed",
            Duration::from_secs(60),
            || views()["failed"] == 2,
        );
        // Each with the reason its mark keeps, listed beside the count.
        let reasons: Vec<String> = views()["failed_examples"]
            .as_array()
            .expect("failed examples")
            .iter()
            .map(|f| {
                assert_eq!(f["reference"].as_str().map(str::len), Some(36), "{f}");
                f["error"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        for reason in [
            "project named parent faulty",
            "lone UTF-16 surrogate escape",
        ] {
            assert!(
                reasons.iter().any(|r| r.contains(reason)),
                "{reason}: {reasons:?}"
            );
        }
        assert!(
            !host
                .export("canonical", "faulty")
                .iter()
                .any(|v| v["canonical"].get("lone").is_some()),
            "a view with a lone surrogate is not stored"
        );

        let (status, log) = server.stop_with_log();
        assert!(status.success(), "serve exits 0 after it all: {log}");
        assert!(
            log.contains("project named parent faulty"),
            "the lying projection is reported: {log}"
        );
        assert!(
            log.contains(
                "canonical view has a lone UTF-16 surrogate escape, which names no character, at line 1 column 16"
            ),
            "the view naming no character is reported: {log}"
        );
        // The flood: the budget's 100 lines, one line saying how many were dropped, and no
        // forged line (newlines and escapes inside a message are escaped).
        let flood = log.lines().filter(|l| l.contains("flood ")).count();
        assert_eq!(flood, 100, "flood lines logged");
        assert!(log.contains("400 lines dropped"), "{log}");
        assert!(
            !log.lines().any(|l| l.starts_with("INFO forged")),
            "a guest forged a log line"
        );
        assert!(
            !log.contains('\u{1b}'),
            "a guest's escape sequence reached the log"
        );
    }
}

#[test]
fn a_slow_batch_keeps_its_lease_while_another_process_tries_to_take_it() {
    for db in Scratch::both() {
        let plugins = folder(&[(&fixture("faulty"), "faulty.wasm")]);
        let host = Host {
            db: db.url.clone(),
            plugins: plugins.path().to_path_buf(),
        };
        let lease = ["--set", "stages.lease_ttl_ms=600"];
        let mut server = Server::start(&host, &lease);
        let http = Http::new(&server.url());
        // A batch that sleeps 3 s in the plugin: five times the lease length.
        assert_eq!(
            http.records(&faulty("SLOW", json!({"key": "slow", "sleep_ms": 3000})))
                .status,
            200
        );
        // Another process keeps trying to run association meanwhile: it must never get the
        // lease (the slow batch renews it), so it never associates the record itself. Told
        // not to wait, it stops at once naming the holder while the batch runs.
        let mut tries = 0;
        wait_for(
            "the slow record to be keyed",
            Duration::from_secs(60),
            || {
                let out = host
                    .command()
                    .args(lease)
                    .args(["process", "--until-idle", "--no-wait"])
                    .output()
                    .unwrap();
                let said = text(&out.stdout) + &text(&out.stderr);
                if out.status.success() {
                    assert!(
                        said.contains("associated 0 records"),
                        "the other process took the lease of a live batch: {said}"
                    );
                } else {
                    // It names what the service holds: the association lease while the
                    // batch runs, projection claims once the record is keyed.
                    assert!(
                        said.contains("another process is at work on this database")
                            && (said.contains("associate lease of model 'faulty'")
                                || said.contains("project claims of model 'faulty'")),
                        "{said}"
                    );
                }
                tries += 1;
                counts(&http, "faulty")["keyed"] == 1
            },
        );
        assert!(
            tries >= 2,
            "the other process ran during the batch ({tries} tries)"
        );
        let (status, log) = server.stop_with_log();
        assert!(status.success());
        assert!(!log.contains("lease was lost"), "{log}");
        assert!(!log.contains("another host took the lease"), "{log}");
    }
}

#[test]
fn isolation_of_a_batch_that_only_times_out_stops_at_its_budget_and_loses_nothing() {
    for db in Scratch::both() {
        let plugins = folder(&[(&fixture("faulty"), "faulty.wasm")]);
        let host = Host {
            db: db.url.clone(),
            plugins: plugins.path().to_path_buf(),
        };
        let mut input = String::new();
        for i in 1..=16 {
            input += &faulty(&format!("S-{i}"), json!({"key": i, "sleep_ms": 600_000}));
        }
        block_until_ok(&host.ingest(&input));
        let started = Instant::now();
        let out = host
            .command()
            .args([
                "--plugin-timeout-ms",
                "300",
                "--set",
                "plugins.isolation_budget_ms=600",
                "process",
                "--until-idle",
            ])
            .output()
            .unwrap();
        let took = started.elapsed();
        eprintln!(
            "{}: isolation of 16 timing-out records: process returned in {took:?}",
            db.backend
        );
        block_until_ok(&out);
        let log = text(&out.stderr);
        // Without a budget this would be 2·16−1 = 31 time limits (9.3 s) for the first
        // batch alone; with it, each batch makes at most a few calls and the breaker rests
        // the model after three batches that failed everywhere.
        assert!(took < Duration::from_secs(8), "took {took:?}: {log}");
        assert!(log.contains("isolation budget"), "{log}");
        assert!(
            log.contains("cooling down"),
            "the breaker counted it: {log}"
        );
        // Nothing lost: every record is parked (found) or still waits in the queue.
        let parked = host.parked();
        assert!(!parked.is_empty() && parked.len() < 16, "{parked:?}");
        for p in &parked {
            assert!(
                p["details"]
                    .as_str()
                    .unwrap()
                    .contains("exceeded its time limit of 300 ms"),
                "{p}"
            );
        }
        let queued = count_by(&db.url, "SELECT model, COUNT(*) FROM queue GROUP BY model");
        assert_eq!(queued, [("faulty".to_string(), 16 - parked.len() as i64)]);
    }
}

#[test]
fn a_describe_that_blocks_or_hoards_is_refused_in_seconds_and_the_rest_serves() {
    for db in Scratch::both() {
        let plugins = folder(&[
            (&plugin("device"), "device.wasm"),
            (&fixture("sleepy-describe"), "sleepy.wasm"),
            (&fixture("memories"), "memories.wasm"),
            (&fixture("table"), "table.wasm"),
        ]);
        let host = Host {
            db: db.url.clone(),
            plugins: plugins.path().to_path_buf(),
        };
        let started = Instant::now();
        let mut server = Server::start(
            &host,
            &[
                "--set",
                "plugins.describe_timeout_ms=1000",
                "--plugin-memory-mb",
                "64",
            ],
        );
        let http = Http::new(&server.url());
        wait_for("readiness", Duration::from_secs(60), || {
            http.get("/health/ready").status == 200
        });
        let ready = started.elapsed();
        assert!(ready < Duration::from_secs(30), "ready after {ready:?}");

        let refused = |name: &str| -> Option<String> {
            let plugins = http.get("/v1/plugins").json();
            plugins["refused_files"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["file"].as_str().unwrap().ends_with(name))
                .map(|f| f["error"].as_str().unwrap().to_string())
        };
        let sleepy = refused("sleepy.wasm").expect("sleepy refused");
        assert!(
            sleepy.contains("`describe` failed: exceeded its time limit of 1000 ms"),
            "{sleepy}"
        );
        let memories = refused("memories.wasm").expect("memories refused");
        assert!(memories.contains("memory cap of 64 MiB"), "{memories}");
        let table = refused("table.wasm").expect("table refused");
        // Refused when it is built, before any instance: a table of 2,000,000 elements cannot
        // fit one instance slot.
        assert!(
            table.contains(
                "needs more than one plugin instance may have (at most 1000000 table elements"
            ) && table.contains("2000000"),
            "{table}"
        );

        // Dropped into the running host: refused within seconds, the rest keeps serving.
        let dropped = Instant::now();
        std::fs::copy(
            fixture("sleepy-describe"),
            plugins.path().join("sleepy2.wasm"),
        )
        .unwrap();
        wait_for(
            "the dropped file's refusal",
            Duration::from_secs(30),
            || refused("sleepy2.wasm").is_some(),
        );
        let refused_in = dropped.elapsed();
        eprintln!(
            "{}: ready in {ready:?}; a dropped blocking describe refused in {refused_in:?}",
            db.backend
        );
        assert!(refused_in < Duration::from_secs(15));
        // The device model's own file replaced by one whose describe blocks: refused, and
        // the working device version keeps serving.
        let tmp = plugins.path().join(".device.tmp");
        std::fs::copy(fixture("sleepy-describe"), &tmp).unwrap();
        std::fs::rename(&tmp, plugins.path().join("device.wasm")).unwrap();
        wait_for("device.wasm's refusal", Duration::from_secs(30), || {
            let plugins = http.get("/v1/plugins").json();
            plugins["plugins"].as_array().unwrap().iter().any(|m| {
                m["model"] == "device"
                    && m["last_error"]["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("exceeded its time limit"))
            })
        });
        a_device_flows(&http);
        let (status, log) = server.stop_with_log();
        assert!(status.success(), "{log}");
    }
}

#[test]
fn files_that_are_not_plugins_are_refused_with_a_reason_without_blocking() {
    for db in Scratch::both() {
        not_plugins_are_refused(&db);
    }
}

fn not_plugins_are_refused(db: &Scratch) {
    let plugins = folder(&[(&plugin("device"), "device.wasm")]);
    let dir = plugins.path();
    let fifo = |path: &Path| {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo(3) with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    };
    fifo(&dir.join("fifo.wasm"));
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.wasm")).unwrap();
    std::os::unix::fs::symlink(dir.join("missing"), dir.join("dangling.wasm")).unwrap();
    std::fs::create_dir(dir.join("folder.wasm")).unwrap();
    std::fs::write(dir.join("big.wasm"), vec![0u8; 2 << 20]).unwrap();
    let host = Host {
        db: db.url.clone(),
        plugins: dir.to_path_buf(),
    };
    let mut server = Server::start(&host, &["--set", "plugins.max_file_mb=1"]);
    let http = Http::new(&server.url());
    wait_for("readiness", Duration::from_secs(60), || {
        http.get("/health/ready").status == 200
    });
    let refused = || -> Vec<(String, String)> {
        http.get("/v1/plugins").json()["refused_files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let file = f["file"].as_str().unwrap();
                let name = Path::new(file).file_name().unwrap().to_string_lossy();
                (name.into_owned(), f["error"].as_str().unwrap().to_string())
            })
            .collect()
    };
    let expect = |refused: &[(String, String)], name: &str, says: &str| {
        let (_, error) = refused
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} not refused: {refused:?}"));
        assert!(error.contains(says), "{name}: {error}");
    };
    let now = refused();
    expect(&now, "fifo.wasm", "a FIFO named like a plugin");
    expect(&now, "zero.wasm", "a character device");
    expect(
        &now,
        "dangling.wasm",
        "a link to a file that does not exist",
    );
    expect(&now, "folder.wasm", "a directory");
    expect(&now, "big.wasm", "over the limit of 1048576 bytes");

    // One more FIFO into the running host: refused, and the host still answers.
    fifo(&dir.join("late.wasm"));
    wait_for("the late FIFO's refusal", Duration::from_secs(30), || {
        refused().iter().any(|(n, _)| n == "late.wasm")
    });
    assert_eq!(http.get("/health/ready").status, 200);
    let status = server.stop();
    assert!(status.success());
}

#[test]
fn a_tampered_compile_cache_is_recompiled_and_logged_never_loaded() {
    for db in Scratch::both() {
        tampered_cache_is_recompiled(&db);
    }
}

fn tampered_cache_is_recompiled(db: &Scratch) {
    let cache = tempfile::tempdir().unwrap();
    let check = || {
        let out = std::process::Command::new(flowhost_tests::binary())
            .args(["plugins", "check"])
            .arg(plugin("device"))
            .env("FLOWHOST_CACHE_DIR", cache.path())
            .output()
            .unwrap();
        block_until_ok(&out);
        text(&out.stderr)
    };
    check();
    let artefact = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .expect("an artefact");
    let mut bytes = std::fs::read(&artefact).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle..middle + 4096].fill(0xCC);
    std::fs::write(&artefact, &bytes).unwrap();

    let plugins = folder(&[(&plugin("device"), "device.wasm")]);
    let host = Host {
        db: db.url.clone(),
        plugins: plugins.path().to_path_buf(),
    };
    let mut command = host.command();
    command.env("FLOWHOST_CACHE_DIR", cache.path());
    let mut server = Server::start_command(command, &[]);
    let http = Http::new(&server.url());
    a_device_flows(&http);
    let (status, log) = server.stop_with_log();
    assert!(status.success());
    assert!(log.contains("fails its integrity check"), "{log}");
    // Recompiled and stored again: the next run loads it without a word.
    let again = check();
    assert!(!again.contains("integrity"), "{again}");
}

#[test]
fn a_parent_is_found_by_the_id_exactly_as_sent_and_colons_in_systems_are_refused() {
    let db = Scratch::sqlite();
    let host = Host::new(&db.url);
    // The device's id ends in a space; the sensor names it the same way.
    let input = flowhost_tests::line("device", "bms", "D-7 ", json!({"serial": "S7"}))
        + &flowhost_tests::line(
            "sensor",
            "bms",
            "T-1",
            json!({"code": "T1", "device_id": "D-7 "}),
        );
    block_until_ok(&host.ingest(&input));
    host.process();
    assert!(host.parked().is_empty(), "{:?}", host.parked());
    let device = host.export("canonical", "device");
    let sensor = host.export("root", "sensor");
    assert_eq!(sensor[0]["parents"]["device"], device[0]["id"]);

    // `system "a:b", id "c"` and `system "a", id "b:c"` would share `src:a:b:c`.
    let out = host.ingest(&flowhost_tests::line(
        "device",
        "a:b",
        "c",
        json!({"serial": "S8"}),
    ));
    assert!(!out.status.success());
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(
        said.contains("line 1: field `source.system` (\"a:b\") may not contain ':'"),
        "{said}"
    );
}

#[test]
fn requests_a_web_page_could_send_from_another_site_are_refused() {
    let db = Scratch::sqlite();
    let host = Host::new(&db.url);
    let mut server = Server::start(&host, &[]);
    let base = server.url();
    let http = Http::new(&base);
    let record = flowhost_tests::line("device", "bms", "D-1", json!({"serial": "S1"}));
    // A browser sends these cross-site without asking the host first: refused, nothing stored.
    for headers in [
        vec![("content-type", "text/plain")],
        vec![("content-type", "application/x-www-form-urlencoded")],
        vec![],
    ] {
        let answer = http.request("POST", "/v1/records", &headers, record.clone().into_bytes());
        assert_eq!(answer.status, 415, "{headers:?}: {}", answer.body);
        assert!(
            answer.json()["error"]
                .as_str()
                .unwrap()
                .contains("application/x-ndjson")
        );
    }
    assert_eq!(counts(&http, "device")["references"], 0);
    assert_eq!(http.records(&record).status, 200, "NDJSON is taken");

    // Admin actions from a page of another origin are refused; from this host's own
    // origin, or without an Origin header, they are taken.
    let requeue = |origin: Option<&str>| {
        let mut headers = Vec::new();
        if let Some(o) = origin {
            headers.push(("origin", o));
        }
        http.request("POST", "/v1/parked/requeue", &headers, Vec::new())
    };
    let refused = requeue(Some("http://attacker.example"));
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.body.contains("cross-site request refused"),
        "{}",
        refused.body
    );
    assert_eq!(requeue(Some(&base)).status, 200);
    assert_eq!(requeue(None).status, 200);
    assert!(server.stop().success());
}

#[test]
fn a_client_that_stops_sending_is_cut_off_and_excess_requests_are_told_to_retry() {
    use std::io::{Read, Write};
    let db = Scratch::sqlite();
    let host = Host::new(&db.url);
    let mut server = Server::start(
        &host,
        &[
            "--set",
            "server.max_concurrent_requests=1",
            "--set",
            "server.body_idle_timeout_s=1",
        ],
    );
    let base = server.url();
    let http = Http::new(&base);
    // A client that starts a body and then sends nothing more, holding the only place. (If
    // one of this test's own requests held the place at that moment, the slow one is turned
    // away at once: then it tries again.)
    let address = base.trim_start_matches("http://").to_string();
    let line = flowhost_tests::line("device", "bms", "D-1", json!({"serial": "S1"}));
    let started = Instant::now();
    let mut slow = loop {
        let mut slow = std::net::TcpStream::connect(&address).unwrap();
        write!(
            slow,
            "POST /v1/records HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/x-ndjson\r\n\
             transfer-encoding: chunked\r\n\r\n{:x}\r\n{line}\r\n",
            line.len()
        )
        .unwrap();
        slow.flush().unwrap();
        slow.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut first = [0u8; 12];
        match slow.read(&mut first) {
            // No answer yet: the request is in the handler, waiting for more body.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break slow;
            }
            other => assert!(
                started.elapsed() < Duration::from_secs(20),
                "the slow request was answered: {other:?}"
            ),
        }
    };
    let mut busy = None;
    wait_for("a request turned away", Duration::from_secs(30), || {
        let answer = http.get("/v1/models");
        let turned_away = answer.status == 503;
        if turned_away {
            busy = Some(answer);
        }
        turned_away
    });
    let busy = busy.unwrap();
    assert_eq!(busy.header("retry-after").as_deref(), Some("1"));
    assert!(
        busy.body.contains("server.max_concurrent_requests"),
        "{}",
        busy.body
    );
    assert_eq!(http.get("/health/ready").status, 200, "probes always pass");

    // The idle body is cut off: 408, and the line before it is durable.
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("server.body_idle_timeout_s"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(20));
    wait_for(
        "the place to be free again",
        Duration::from_secs(30),
        || http.get("/v1/models").status == 200,
    );
    assert_eq!(
        counts(&http, "device")["pending"].as_i64().unwrap()
            + counts(&http, "device")["keyed"].as_i64().unwrap(),
        1
    );
    assert!(server.stop().success());
}

/// Reads until the peer closes the connection (or 30 s pass); returns what came.
fn read_until_closed(stream: &mut std::net::TcpStream) -> (String, bool) {
    use std::io::Read;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut got = Vec::new();
    let closed = match stream.read_to_end(&mut got) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

#[test]
fn slow_headers_trickled_bodies_and_too_many_connections_are_cut_off() {
    use std::io::Write;
    let db = Scratch::sqlite();
    let host = Host::new(&db.url);
    let mut server = Server::start(
        &host,
        &[
            "--set",
            "server.header_read_timeout_s=1",
            "--set",
            "server.request_timeout_s=2",
        ],
    );
    let base = server.url();
    let address = base.trim_start_matches("http://").to_string();

    // Headers that never end: the connection is closed after the header timeout.
    let started = Instant::now();
    let mut slow = std::net::TcpStream::connect(&address).unwrap();
    write!(slow, "GET /v1/models HTTP/1.1\r\nhost: {address}\r\n").unwrap();
    let (_, closed) = read_until_closed(&mut slow);
    assert!(closed, "the connection was closed");
    assert!(started.elapsed() < Duration::from_secs(20));

    // A body that trickles in (never idle long enough for the idle timeout) ends at the
    // request deadline, with what it stored.
    let line = flowhost_tests::line("device", "bms", "D-1", json!({"serial": "S1"}));
    let mut trickle = std::net::TcpStream::connect(&address).unwrap();
    write!(
        trickle,
        "POST /v1/records HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/x-ndjson\r\n\
         transfer-encoding: chunked\r\n\r\n{:x}\r\n{line}\r\n",
        line.len()
    )
    .unwrap();
    let mut answer = String::new();
    for _ in 0..200 {
        // One byte of whitespace every 100 ms: a blank line in the making.
        if write!(trickle, "1\r\n \r\n")
            .and_then(|()| trickle.flush())
            .is_err()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        trickle.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        if let Ok(n) = std::io::Read::read(&mut trickle, &mut buf)
            && n > 0
        {
            answer.push_str(&String::from_utf8_lossy(&buf[..n]));
            trickle.set_nonblocking(false).unwrap();
            break;
        }
        trickle.set_nonblocking(false).unwrap();
    }
    let (rest, _) = read_until_closed(&mut trickle);
    answer.push_str(&rest);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("server.request_timeout_s"), "{answer}");
    assert!(answer.contains(r#""accepted":1"#), "{answer}");

    assert!(server.stop().success());

    // Three idle connections fill the cap: a fourth is closed at once; when they go,
    // requests are served again.
    let mut server = Server::start(
        &host,
        &[
            "--set",
            "server.header_read_timeout_s=60",
            "--set",
            "server.max_connections=3",
        ],
    );
    let base = server.url();
    let http = Http::new(&base);
    let address = base.trim_start_matches("http://").to_string();
    let idle: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect(&address).unwrap())
        .collect();
    wait_for("the cap to be full", Duration::from_secs(30), || {
        let mut extra = std::net::TcpStream::connect(&address).unwrap();
        let _ = write!(
            extra,
            "GET /health/live HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n"
        );
        let (got, closed) = read_until_closed(&mut extra);
        closed && got.is_empty()
    });
    drop(idle);
    // (Until the host has seen them close, a new connection may still be closed at once.)
    wait_for("requests served again", Duration::from_secs(30), || {
        let mut again = std::net::TcpStream::connect(&address).unwrap();
        let _ = write!(
            again,
            "GET /health/live HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n"
        );
        read_until_closed(&mut again).0.starts_with("HTTP/1.1 200")
    });
    assert_eq!(http.get("/health/live").status, 200);
    let (status, log) = server.stop_with_log();
    assert!(status.success());
    assert!(log.contains("server.max_connections"), "{log}");
}

//! The HTTP API of `flowhost serve`, against the real binary on a free port, on SQLite and
//! PostgreSQL: intake with bad lines, views and paging, one reference, parked records,
//! plugins, health, metrics, the admin token, every error path, JSON logs, the
//! configuration layers, and SIGTERM in the middle of load.

use flowhost_tests::{Host, Http, Scratch, Server, block_until_ok, count_by, line, text, wait_for};
use serde_json::{Value, json};
use std::time::Duration;

const TOKEN: &str = "test-admin-token";
const WAIT: Duration = Duration::from_secs(120);

fn device(system: &str, id: &str, serial: &str) -> String {
    line(
        "device",
        system,
        id,
        json!({"serial": serial, "name": format!("dev {id}")}),
    )
}

/// Every page of a view over HTTP, following `x-next-after`.
fn all_pages(http: &Http, model: &str, view: &str, limit: usize) -> (Vec<Value>, usize) {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/models/{model}/{view}?limit={limit}&after={a}"),
            None => format!("/v1/models/{model}/{view}?limit={limit}"),
        };
        let answer = http.get(&path);
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(
            answer.header("content-type").as_deref(),
            Some("application/x-ndjson")
        );
        let lines = answer.lines();
        assert!(lines.len() <= limit);
        out.extend(lines);
        pages += 1;
        match answer.header("x-next-after") {
            Some(next) => after = Some(next),
            None => return (out, pages),
        }
    }
}

#[test]
fn the_api_on_both_backends() {
    for db in Scratch::both() {
        let host = Host::new(&db.url);
        let mut server = Server::start(
            &host,
            &[
                "--admin-token",
                TOKEN,
                "--set",
                "server.body_limit_bytes=20000",
            ],
        );
        let http = Http::new(&server.url());
        let b = db.backend;

        // Health first: live, and ready once the plugins are loaded.
        assert_eq!(http.get("/health/live").json()["status"], "live");
        let ready = http.get("/health/ready");
        assert_eq!(
            (ready.status, ready.json()["status"].clone()),
            (200, json!("ready")),
            "{b}"
        );

        // Intake: good lines, a duplicate, and bad lines each named by number.
        let body = device("bms", "D-1", "A1")
            + &device("oem", "X-1", "a1 ")
            + &device("bms", "D-2", "B2")
            + &device("bms", "D-1", "A1")
            + "{not json\n"
            + "\n"
            + &line("nope", "bms", "N-1", json!({}))
            + r#"{"model":"device","source":{"system":"bms","adapter":"a"},"id":9,"payload":{}}"#
            + "\n"
            + &line(
                "sensor",
                "bms",
                "S-1",
                json!({"code": "T1", "device_id": "D-1"}),
            )
            + &line(
                "sensor",
                "bms",
                "S-7",
                json!({"code": "T7", "device_id": "D-404"}),
            );
        let answer = http.records(&body);
        assert_eq!(answer.status, 200, "{b}: {}", answer.body);
        let a = answer.json();
        assert_eq!(
            (
                a["accepted"].clone(),
                a["duplicates"].clone(),
                a["refused"].clone()
            ),
            (json!(5), json!(1), json!(3)),
            "{b}: {a}"
        );
        let errors = a["errors"].as_array().unwrap();
        let lines: Vec<i64> = errors.iter().map(|e| e["line"].as_i64().unwrap()).collect();
        assert_eq!(lines, vec![5, 7, 8], "{b}: {a}");
        assert!(
            errors[0]["error"]
                .as_str()
                .unwrap()
                .contains("invalid JSON")
        );
        assert!(
            errors[1]["error"]
                .as_str()
                .unwrap()
                .contains("unknown model 'nope'")
        );
        assert!(errors[2]["error"].as_str().unwrap().contains("`id`"));

        // Every line refused: 400 with the same shape. An empty body: 400.
        let answer = http.records("[1,2]\n{}\n");
        assert_eq!(answer.status, 400);
        assert_eq!(answer.json()["refused"], 2);
        let answer = http.records("");
        assert_eq!(answer.status, 400);
        assert!(
            answer.json()["error"]
                .as_str()
                .unwrap()
                .contains("no records")
        );
        // Not NDJSON: 415. Over the body limit: 413, nothing stored.
        let answer = http.request(
            "POST",
            "/v1/records",
            &[("content-type", "application/xml")],
            b"<r/>".to_vec(),
        );
        assert_eq!(answer.status, 415);
        assert!(
            answer.json()["error"]
                .as_str()
                .unwrap()
                .contains("application/x-ndjson")
        );
        let big: String = (0..400)
            .map(|i| device("big", &format!("B-{i}"), &format!("S{i}")))
            .collect();
        assert!(big.len() > 20_000);
        let answer = http.records(&big);
        assert_eq!(answer.status, 413, "{}", answer.body);
        assert!(answer.json()["error"].as_str().unwrap().contains("20000"));

        // The views, once processed, over HTTP as the CLI exports them.
        wait_for("the views", WAIT, || {
            http.get("/v1/models/device/canonical").lines().len() == 2
                && http.get("/v1/models/sensor/root").lines().len() == 1
        });
        for view in ["canonical", "root", "lineage"] {
            assert_eq!(
                http.get(&format!("/v1/models/device/{view}")).lines(),
                host.export(view, "device"),
                "{b}: {view}"
            );
        }
        let (paged, pages) = all_pages(&http, "device", "lineage", 1);
        assert_eq!(
            (paged, pages),
            (host.export("lineage", "device"), 2),
            "{b}: paging"
        );
        let one = &http.get("/v1/models/device/canonical").lines()[0];
        let id = one["id"].as_str().unwrap();
        assert_eq!(one["canonical"]["serial"], json!(["A1"]), "{b}: {one}");
        let reference = http
            .get(&format!("/v1/models/device/references/{id}"))
            .json();
        assert_eq!(reference["canonical"], one["canonical"]);
        assert!(reference["lineage"]["serial"][0]["sources"].is_array());
        let systems: Vec<&str> = reference["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["system"].as_str().unwrap())
            .collect();
        assert_eq!(systems, vec!["bms", "oem"], "{b}: {reference}");
        assert_eq!(reference["sources"][0]["records"], 1);
        let sensor = &http.get("/v1/models/sensor/root").lines()[0];
        assert_eq!(sensor["parents"]["device"], json!(id), "{b}: {sensor}");

        // Models with counts; parked with filters.
        let models = http.get("/v1/models").json();
        let dev = models["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["model"] == "device")
            .unwrap()
            .clone();
        assert_eq!(dev["kind"], "entity");
        assert_eq!(dev["counts"]["references"], 2, "{b}: {dev}");
        assert_eq!(dev["counts"]["keyed"], 3);
        assert_eq!(dev["plugin_version"].as_str().unwrap().len(), 64);
        let sen = models["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["model"] == "sensor")
            .unwrap()
            .clone();
        assert_eq!(sen["counts"]["parked"]["PARENT_NOT_FOUND"], 1, "{b}: {sen}");
        let parked = http
            .get("/v1/parked?model=sensor&reason=PARENT_NOT_FOUND")
            .lines();
        assert_eq!(parked.len(), 1);
        assert_eq!(parked[0]["id"], "S-7");
        assert_eq!(parked, host.parked(), "{b}: the CLI lists the same");
        assert!(http.get("/v1/parked?model=device").lines().is_empty());

        // Admin routes: the token is required and checked.
        let answer = http.post("/v1/parked/requeue?model=sensor", None, "");
        assert_eq!(answer.status, 401);
        assert!(answer.header("www-authenticate").is_some());
        assert!(answer.json()["error"].as_str().unwrap().contains("Bearer"));
        assert_eq!(
            http.post("/v1/parked/requeue?model=sensor", Some("wrong"), "")
                .status,
            401
        );
        let answer = http.post("/v1/parked/requeue?model=sensor", Some(TOKEN), "");
        assert_eq!(
            (answer.status, answer.json()["requeued"].clone()),
            (200, json!(1)),
            "{b}"
        );
        wait_for("the re-queued sensor to park again", WAIT, || {
            http.get("/v1/parked?model=sensor")
                .lines()
                .first()
                .map(|p| p["attempts"].clone())
                == Some(json!(2))
        });
        let answer = http.post("/v1/plugins/device/rollback", Some(TOKEN), "");
        assert_eq!(answer.status, 409, "{b}: one version only: {}", answer.body);
        assert!(
            answer.json()["error"]
                .as_str()
                .unwrap()
                .contains("no earlier version")
        );
        assert_eq!(
            http.post("/v1/plugins/ghost/rollback", Some(TOKEN), "")
                .status,
            404
        );

        // Plugins.
        let plugins = http.get("/v1/plugins").json();
        let names: Vec<&str> = plugins["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["model"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["device", "reading", "sensor"], "{b}: {plugins}");
        assert_eq!(plugins["plugins"][0]["state"], "serving");

        // Error paths: JSON errors that say what to do.
        for (path, status, needle) in [
            (
                "/v1/models/ghost/canonical",
                404,
                "unknown model 'ghost'; known: device, reading, sensor",
            ),
            (
                "/v1/models/device/values",
                404,
                "canonical, root and lineage",
            ),
            ("/v1/models/device/canonical?limit=abc", 400, "limit"),
            ("/v1/models/device/canonical?limit=1000000", 400, "10000"),
            (
                "/v1/models/device/canonical?after=missing",
                400,
                "no reference 'missing'",
            ),
            (
                "/v1/models/device/canonical?colour=red",
                400,
                "unknown query parameter 'colour'",
            ),
            (
                "/v1/models/device/references/missing",
                404,
                "no reference 'missing'",
            ),
            ("/v1/parked?reason=LOST", 400, "one of REJECTED"),
            ("/v1/parked?after=x", 400, "x-next-after"),
            ("/v1/nothing", 404, "POST /v1/records"),
        ] {
            let answer = http.get(path);
            assert_eq!(answer.status, status, "{b}: {path}: {}", answer.body);
            let message = answer.json()["error"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(message.contains(needle), "{b}: {path}: {message}");
        }
        let answer = http.request("DELETE", "/v1/models", &[], vec![]);
        assert_eq!(answer.status, 405);
        assert!(answer.json()["error"].is_string());
        // Invalid UTF-8 and odd bytes are refused per line, never a crash.
        let answer = http.request(
            "POST",
            "/v1/records",
            &[("content-type", "application/x-ndjson")],
            vec![0xff, 0xfe, b'\n', b'{', 0, b'\n'],
        );
        assert_eq!(answer.status, 400);
        assert_eq!(answer.json()["refused"], 2);

        // Odd input anywhere: a JSON client error, never a server error or a dropped
        // connection.
        let long = "x".repeat(10_000);
        let odd_paths = [
            "/v1/models/%ff/canonical".to_string(),
            "/v1/models/device/references/%00".to_string(),
            "/v1/models/device/canonical?limit=%ff".to_string(),
            "/v1/models/device/canonical?limit=-1".to_string(),
            "/v1/models/device/canonical?after=%27%3B%20DROP%20TABLE%20views%3B--".to_string(),
            format!("/v1/models/{long}/canonical"),
            "/v1/models/device/canonical/extra".to_string(),
            "/v1/parked?model=device&model=sensor".to_string(),
            "/%2e%2e/%2e%2e/etc/passwd".to_string(),
        ];
        for path in &odd_paths {
            let answer = http.get(path);
            assert!(
                (400..500).contains(&answer.status),
                "{b}: {path}: {} {}",
                answer.status,
                answer.body
            );
            assert!(answer.json()["error"].is_string(), "{b}: {path}");
        }
        for (method, path, body) in [
            ("POST", "/v1/records", vec![b'{'; 5000]),
            ("POST", "/v1/records", b"\n\n\r\n  \n".to_vec()),
            (
                "POST",
                "/v1/records",
                br#"{"model":"device","source":{"system":"","adapter":""},"id":"","payload":null}"#
                    .to_vec(),
            ),
            ("POST", "/v1/plugins/%ff/rollback", vec![]),
            ("POST", "/v1/plugins/device/rollback?to=zz&to=yy", vec![]),
            ("GET", "/v1/records", vec![]),
        ] {
            let answer = http.request(
                method,
                path,
                &[
                    ("content-type", "application/x-ndjson"),
                    ("authorization", &format!("Bearer {TOKEN}")),
                ],
                body,
            );
            assert!(
                answer.status < 500,
                "{b}: {method} {path}: {} {}",
                answer.status,
                answer.body
            );
            let json = answer.json();
            assert!(
                json["error"].is_string() || json["refused"].is_number(),
                "{b}: {path}: {json}"
            );
        }

        // Metrics: counters of this process and the database's state.
        let metrics = http.get("/metrics");
        assert_eq!(metrics.status, 200);
        assert!(
            metrics
                .header("content-type")
                .unwrap()
                .starts_with("text/plain")
        );
        for needle in [
            "flowhost_intake_records_total{outcome=\"accepted\"} 5",
            "flowhost_intake_records_total{outcome=\"duplicate\"} 1",
            "flowhost_batches_total{stage=\"associate\",model=\"device\"}",
            "flowhost_batch_duration_seconds_bucket{stage=\"project\",model=\"device\",le=",
            "flowhost_batch_size_bucket{",
            "flowhost_plugin_call_seconds_count{stage=\"associate\",model=\"sensor\"}",
            "flowhost_db_statements_total{stage=\"associate\",model=\"device\"}",
            "flowhost_pending_records{model=\"device\"}",
            "flowhost_dirty_references{model=\"device\"}",
            "flowhost_parked_records{model=\"sensor\",reason=\"PARENT_NOT_FOUND\"} 1",
            "flowhost_plugin_info{model=\"device\",version=\"",
            // Start-up loads are not swaps.
            "flowhost_plugin_swaps_total 0",
            "flowhost_plugin_validation_failures_total 0",
            "flowhost_http_requests_total{route=\"/v1/records\",status=\"413\"} 1",
        ] {
            assert!(
                metrics.body.contains(needle),
                "{b}: metrics lack {needle}:\n{}",
                metrics.body
            );
        }

        // Streamed past the limit: the lines before it are stored and counted, the answer
        // says so, and nothing of the rest is.
        let streamed: String = (0..200)
            .map(|i| {
                line(
                    "sensor",
                    "stream",
                    &format!("T-{i}"),
                    json!({"code": format!("C{i}"), "device_id": "D-1"}),
                )
            })
            .collect();
        assert!(
            streamed.len() > 20_000 && streamed.len() < 40_000,
            "{}",
            streamed.len()
        );
        let answer = http.records_chunked(&streamed);
        assert_eq!(answer.status, 413, "{b}: {}", answer.body);
        let a = answer.json();
        let stored_first = a["accepted"].as_i64().unwrap();
        assert!(stored_first > 0 && stored_first < 200, "{b}: {a}");
        assert!(a["error"].as_str().unwrap().contains("durable"), "{a}");
        let in_intake = count_by(
            &db.url,
            "SELECT 'n', COUNT(*) FROM intake WHERE system = 'stream'",
        )[0]
        .1;
        assert_eq!(
            in_intake, stored_first,
            "{b}: exactly the counted lines are stored"
        );
        // The rest, re-sent whole, adds only what was missing.
        let mid = streamed[..streamed.len() / 2].rfind('\n').unwrap() + 1;
        let answer = http.records(&streamed[..mid]);
        assert_eq!(answer.status, 200);
        let answer = http.records(&streamed[mid..]);
        assert_eq!(answer.status, 200, "{}", answer.body);
        let in_intake = count_by(
            &db.url,
            "SELECT 'n', COUNT(*) FROM intake WHERE system = 'stream'",
        )[0]
        .1;
        assert_eq!(in_intake, 200, "{b}");

        let status = server.stop();
        assert!(status.success(), "{b}: exits 0 on SIGTERM: {status}");
    }
}

#[test]
fn readiness_names_a_model_without_its_plugin() {
    let db = Scratch::sqlite();
    let dir = tempfile::tempdir().unwrap();
    for model in ["device", "sensor", "reading"] {
        std::fs::copy(
            flowhost_tests::plugin(model),
            dir.path().join(format!("{model}.wasm")),
        )
        .unwrap();
    }
    let mut host = Host::new(&db.url);
    host.plugins = dir.path().to_path_buf();
    let mut server = Server::start(&host, &[]);
    let http = Http::new(&server.url());
    assert_eq!(http.get("/health/ready").status, 200);
    std::fs::remove_file(dir.path().join("sensor.wasm")).unwrap();
    wait_for("not ready", WAIT, || {
        http.get("/health/ready").status == 503
    });
    let ready = http.get("/health/ready").json();
    assert_eq!(ready["status"], "not ready");
    let reasons = ready["reasons"].to_string();
    assert!(
        reasons.contains("model 'sensor' has no plugin loaded"),
        "{reasons}"
    );
    assert_eq!(http.get("/health/live").status, 200, "still live");
    std::fs::copy(
        flowhost_tests::plugin("sensor"),
        dir.path().join("sensor.wasm"),
    )
    .unwrap();
    wait_for("ready again", WAIT, || {
        http.get("/health/ready").status == 200
    });
    assert!(server.stop().success());
}

#[test]
fn an_open_admin_surface_is_refused_and_a_token_allows_it() {
    let db = Scratch::sqlite();
    let host = Host::new(&db.url);
    let out = host.run(&["--listen", "0.0.0.0:0", "serve"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0 without an admin token"),
        "{err}"
    );
    let out = host.run(&["--listen", "nowhere", "serve"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("server.listen"),
        "{}",
        text(&out.stderr)
    );

    // With a token from the environment it listens on every address.
    let mut child = host
        .command()
        .args(["--listen", "0.0.0.0:0", "serve"])
        .env("FLOWHOST_ADMIN_TOKEN", TOKEN)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    loop {
        first.clear();
        let n = std::io::BufRead::read_line(&mut stderr, &mut first).unwrap();
        assert!(n > 0, "serve exited without listening");
        if first.contains("listening on") {
            break;
        }
    }
    let port = first
        .split("listening on http://0.0.0.0:")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let http = Http::new(&format!("http://127.0.0.1:{port}"));
    assert_eq!(http.post("/v1/parked/requeue", None, "").status, 401);
    assert_eq!(http.post("/v1/parked/requeue", Some(TOKEN), "").status, 200);
    // SAFETY: kill(2) with SIGTERM on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

#[test]
fn json_logs_have_one_line_per_batch_with_its_span_and_none_per_record() {
    let db = Scratch::sqlite();
    let host = Host::new(&db.url);
    let mut server = Server::start(&host, &["--log-format", "json"]);
    let http = Http::new(&server.url());
    let records = 600;
    let body: String = (0..records)
        .map(|i| device("bms", &format!("D-{i}"), &format!("S{i}")))
        .collect();
    assert_eq!(http.records(&body).json()["accepted"], records);
    wait_for("the views", WAIT, || {
        http.get("/v1/models/device/canonical?limit=10000")
            .lines()
            .len()
            == records
    });
    let (status, log) = server.stop_with_log();
    assert!(status.success());
    let log: Vec<Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let batches: Vec<&Value> = log
        .iter()
        .filter(|l| l["fields"]["message"] == "batch done")
        .collect();
    assert!(!batches.is_empty());
    for b in &batches {
        let span = &b["span"];
        assert_eq!(span["name"], "batch", "{b}");
        assert!(
            ["associate", "project"].contains(&span["stage"].as_str().unwrap()),
            "{b}"
        );
        assert_eq!(span["model"], "device");
        assert_eq!(span["plugin"].as_str().unwrap().len(), 12);
        assert!(span["size"].as_u64().unwrap() > 0);
        assert!(
            b["fields"]["took_ms"].is_number() && b["fields"]["items"].is_number(),
            "{b}"
        );
        assert_eq!(b["level"], "INFO");
    }
    let items: u64 = batches
        .iter()
        .filter(|b| b["span"]["stage"] == "associate")
        .map(|b| b["fields"]["items"].as_u64().unwrap())
        .sum();
    assert_eq!(items, records as u64);
    assert!(
        log.len() < records / 10,
        "nothing per record: {} lines for {records} records",
        log.len()
    );
}

#[test]
fn configuration_layers_flags_over_environment_over_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flowhost.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = \"127.0.0.1:7001\"\nshutdown_deadline_s = 9\n[database]\nurl = \"sqlite://file.db\"\npool_size = 3\n[stages.associate]\nmax_batch = 3000\n",
    )
    .unwrap();
    let out = std::process::Command::new(flowhost_tests::binary())
        .args([
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:7003",
            "--set",
            "stages.project.max_batch=900",
            "config",
        ])
        .env("FLOWHOST_SERVER_LISTEN", "127.0.0.1:7002")
        .env("FLOWHOST_DB", "sqlite://env.db")
        .env("FLOWHOST_ADMIN_TOKEN", "secret")
        .env_remove("FLOWHOST_PLUGINS")
        .output()
        .unwrap();
    block_until_ok(&out);
    let shown: toml::Table = text(&out.stdout).parse().unwrap();
    assert_eq!(
        shown["server"]["listen"].as_str(),
        Some("127.0.0.1:7003"),
        "flag over env over file"
    );
    assert_eq!(
        shown["database"]["url"].as_str(),
        Some("sqlite://env.db"),
        "env over file"
    );
    assert_eq!(
        shown["database"]["pool_size"].as_integer(),
        Some(3),
        "file over default"
    );
    assert_eq!(shown["server"]["shutdown_deadline_s"].as_integer(), Some(9));
    assert_eq!(
        shown["stages"]["associate"]["max_batch"].as_integer(),
        Some(3000)
    );
    assert_eq!(
        shown["stages"]["project"]["max_batch"].as_integer(),
        Some(900)
    );
    assert_eq!(
        shown["server"]["admin_token"].as_str(),
        Some("(set)"),
        "the token is not printed"
    );
    assert_eq!(
        shown["plugins"]["timeout_ms"].as_integer(),
        Some(10_000),
        "defaults fill the rest"
    );

    std::fs::write(&file, "[server]\nlisten = 8080\n").unwrap();
    let out = flowhost_tests::flowhost(&["--config", file.to_str().unwrap(), "config"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("flowhost.toml") && err.contains("listen") && err.contains("line 2"),
        "{err}"
    );
    let out = flowhost_tests::flowhost(&["--set", "server.nothing=1", "config"]);
    assert!(
        text(&out.stderr).contains("no such setting"),
        "{}",
        text(&out.stderr)
    );
}

/// Clients post while the service is stopped with SIGTERM: every request that got an
/// answer has all its records stored, and after a restart they are all in the views.
#[test]
fn sigterm_mid_load_keeps_everything_acknowledged() {
    for db in Scratch::both() {
        let host = Host::new(&db.url);
        let mut server = Server::start(&host, &[]);
        let base = server.url();
        let b = db.backend;
        let clients: Vec<_> = (0..4)
            .map(|c| {
                let base = base.clone();
                std::thread::spawn(move || {
                    let http = Http::new(&base);
                    let mut acked: Vec<String> = Vec::new();
                    // Until the server stops answering (bounded, in case it never does).
                    for r in 0..5_000 {
                        let ids: Vec<String> = (0..200).map(|i| format!("C{c}-R{r}-{i}")).collect();
                        let body: String = ids.iter().map(|id| device("load", id, id)).collect();
                        // After the signal the server refuses new connections: stop there.
                        let Ok(response) = reqwest::blocking::Client::new()
                            .post(format!("{}/v1/records", http.base))
                            .header("content-type", "application/x-ndjson")
                            .body(body)
                            .send()
                        else {
                            break;
                        };
                        if response.status() != 200 {
                            break;
                        }
                        let Ok(answer) = response
                            .text()
                            .map(|t| serde_json::from_str::<Value>(&t).unwrap_or_default())
                        else {
                            break;
                        };
                        assert_eq!(answer["accepted"], 200);
                        acked.extend(ids);
                    }
                    acked
                })
            })
            .collect();
        wait_for("load to build up", WAIT, || {
            count_by(&db.url, "SELECT 'n', COUNT(*) FROM intake")[0].1 > 4_000
        });
        // SAFETY: kill(2) with SIGTERM on our own child.
        unsafe { libc::kill(server.pid(), libc::SIGTERM) };
        let acked: Vec<String> = clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        let status = server.wait();
        assert!(status.success(), "{b}: exits 0: {status}");
        assert!(acked.len() >= 4_000, "{b}: {}", acked.len());

        let stored: std::collections::HashSet<String> = count_by(
            &db.url,
            "SELECT external_id, COUNT(*) FROM intake GROUP BY external_id",
        )
        .into_iter()
        .map(|(id, n)| {
            assert_eq!(n, 1, "{b}: {id} stored once");
            id
        })
        .collect();
        let lost: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
        assert!(
            lost.is_empty(),
            "{b}: acknowledged but not stored: {} (e.g. {:?})",
            lost.len(),
            lost.first()
        );

        // After a restart everything stored is processed; no acknowledged record is missing.
        host.process();
        let keyed = count_by(&db.url, "SELECT 'n', COUNT(*) FROM keyed")[0].1;
        assert_eq!(
            keyed as usize,
            stored.len(),
            "{b}: every stored record keyed"
        );
        let views = host.export("canonical", "device").len();
        assert_eq!(views, stored.len(), "{b}: one device per distinct serial");
    }
}

#[test]
fn the_openapi_document_describes_every_route_and_each_is_served() {
    let db = Scratch::sqlite();
    let host = Host::new(&db.url);
    let mut server = Server::start(&host, &[]);
    let http = Http::new(&server.url());
    let answer = http.get("/openapi.json");
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("content-type").as_deref(),
        Some("application/json")
    );
    let doc = answer.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = doc["paths"].as_object().expect("paths");
    let mut described = Vec::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                !op["responses"].as_object().unwrap().is_empty(),
                "{method} {path}: no responses described"
            );
            described.push(format!("{} {path}", method.to_uppercase()));
            // Served: whatever the handler answers, it is not the router's "no route" or
            // "not allowed" (a path parameter gets a plausible value).
            let concrete = path
                .replace("{model}", "device")
                .replace("{view}", "canonical")
                .replace("{id}", "none");
            let a = match method.as_str() {
                "get" => http.get(&concrete),
                "post" => http.post(&concrete, None, ""),
                other => panic!("{other} {path}: a method the test does not try"),
            };
            assert!(
                a.status != 405 && !a.body.contains("no route"),
                "{method} {path}: {} {}",
                a.status,
                a.body
            );
        }
    }
    // Every route the API offers is in it (the list the 404 answer gives comes from it too).
    for route in [
        "POST /v1/records",
        "GET /v1/models",
        "GET /v1/models/{model}/{view}",
        "GET /v1/models/{model}/references/{id}",
        "GET /v1/parked",
        "POST /v1/parked/requeue",
        "GET /v1/plugins",
        "POST /v1/plugins/{model}/rollback",
        "GET /v1/hosts",
        "GET /v1/changes",
        "GET /health/live",
        "GET /health/ready",
        "GET /metrics",
    ] {
        assert!(
            described.iter().any(|d| d == route),
            "{route}: {described:?}"
        );
    }
    let missing = http.get("/v1/nothing");
    assert_eq!(missing.status, 404);
    assert!(
        missing.body.contains("GET /v1/changes") && missing.body.contains("/openapi.json"),
        "{}",
        missing.body
    );
    // The admin routes say how they are authorised.
    let requeue = &doc["paths"]["/v1/parked/requeue"]["post"];
    assert_eq!(
        requeue["security"][0]["admin_token"],
        json!([]),
        "{requeue}"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["admin_token"]["scheme"],
        "bearer"
    );
    assert!(server.stop().success());
}

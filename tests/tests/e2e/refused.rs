//! Records the database refuses for reasons of its own park `STORE_REFUSED` (or are refused
//! at intake, naming their line) while the rest of their batch goes on; failures that are
//! not about the data are retried with a growing pause and shown while they last.

use flowhost_tests::{Host, Http, Scratch, Server, block_until_ok, count_by, execute, text};
use serde_json::{Value, json};
use std::time::Duration;

/// Text that does not compress (PostgreSQL compresses index entries that do).
fn incompressible(len: usize) -> String {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let c = (x % 36) as u8;
            (if c < 10 { b'0' + c } else { b'a' + c - 10 }) as char
        })
        .collect()
}

/// A host on `db` (opened and migrated) with a rule of an operator's own that the
/// database enforces: an SQLite trigger, a PostgreSQL statement (a constraint) when given.
fn with_operator_rule(db: &Scratch, sqlite: &str, postgres: Option<&str>) -> Host {
    let host = Host::new(&db.url);
    host.process();
    match (db.backend, postgres) {
        ("sqlite", _) => execute(&db.url, &[sqlite]),
        (_, Some(statement)) => execute(&db.url, &[statement]),
        (_, None) => {}
    }
    host
}

fn devices(long_serial: &str) -> String {
    let mut input = flowhost_tests::line("device", "bms", "LONG", json!({"serial": long_serial}));
    for i in 1..=10 {
        input += &flowhost_tests::line(
            "device",
            "bms",
            &format!("D-{i}"),
            json!({"serial": format!("SN-{i}")}),
        );
    }
    input
}

#[test]
fn a_key_over_the_limit_parks_store_refused_and_the_other_ten_are_associated() {
    for db in Scratch::both() {
        let host = Host::new(&db.url);
        block_until_ok(&host.ingest(&devices(&incompressible(4000))));
        host.process();
        let parked = host.parked();
        assert_eq!(parked.len(), 1, "{}: {parked:?}", db.backend);
        assert_eq!(parked[0]["id"], "LONG");
        assert_eq!(parked[0]["reason"], "STORE_REFUSED");
        let details = parked[0]["details"].as_str().unwrap();
        assert!(
            details.contains("key 1 is 4007 bytes long, over the limit of 512 bytes"),
            "{details}"
        );
        assert_eq!(
            host.export("canonical", "device").len(),
            10,
            "{}",
            db.backend
        );
    }
}

/// The key limit raised past what the database's key index takes: the database itself
/// refuses the commit (PostgreSQL: an index row too large; SQLite: an operator's trigger),
/// the batch is split until the record is alone, and it parks with the database's words.
#[test]
fn a_commit_the_database_refuses_is_split_and_only_the_refused_record_parks() {
    for db in Scratch::both() {
        // (PostgreSQL refuses the key by itself: its index rows have a size limit.)
        let host = with_operator_rule(
            &db,
            "CREATE TRIGGER refuse_long_keys BEFORE INSERT ON keys \
                   WHEN length(NEW.key) > 1000 \
                   BEGIN SELECT RAISE(ABORT, 'key longer than 1000 characters'); END",
            None,
        );
        block_until_ok(&host.ingest(&devices(&incompressible(4000))));
        let out = host.run(&[
            "--set",
            "plugins.max_key_bytes=10000",
            "process",
            "--until-idle",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let parked = host.parked();
        assert_eq!(parked.len(), 1, "{}: {parked:?}", db.backend);
        assert_eq!(parked[0]["id"], "LONG");
        assert_eq!(parked[0]["reason"], "STORE_REFUSED");
        let details = parked[0]["details"].as_str().unwrap();
        let said = if db.backend == "sqlite" {
            "key longer than 1000 characters"
        } else {
            "exceeds btree version 4 maximum"
        };
        assert!(
            details.starts_with("the database refused this record's outcome:")
                && details.contains(said),
            "{details}"
        );
        assert!(
            !details.contains("INSERT"),
            "no SQL reaches the details: {details}"
        );
        assert_eq!(
            host.export("canonical", "device").len(),
            10,
            "{}",
            db.backend
        );
        assert!(
            text(&out.stderr).contains("parks STORE_REFUSED"),
            "logged: {}",
            text(&out.stderr)
        );
    }
}

/// An operator's constraint on intake refuses one line: the line is refused with its
/// number and the database's reason, the others are accepted (CLI and HTTP alike).
#[test]
fn a_record_the_database_refuses_at_intake_is_refused_by_line_and_the_rest_are_accepted() {
    for db in Scratch::both() {
        let host = with_operator_rule(
            &db,
            "CREATE TRIGGER refuse_ids BEFORE INSERT ON intake \
                   WHEN NEW.external_id LIKE 'BANNED%' \
                   BEGIN SELECT RAISE(ABORT, 'this id is banned here'); END",
            Some(
                "ALTER TABLE intake ADD CONSTRAINT ids_not_banned \
                   CHECK (external_id NOT LIKE 'BANNED%')",
            ),
        );
        let mut input = String::new();
        for id in ["D-1", "D-2", "BANNED-1", "D-3", "D-4"] {
            input += &flowhost_tests::line("device", "bms", id, json!({"serial": id}));
        }
        let out = host.ingest(&input);
        assert_eq!(out.status.code(), Some(1), "a refused line fails the run");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("line 3: the database refused this record:"),
            "{stderr}"
        );
        let said = if db.backend == "sqlite" {
            "this id is banned here"
        } else {
            "ids_not_banned"
        };
        assert!(stderr.contains(said), "{stderr}");
        assert!(
            text(&out.stdout).contains("accepted 4, duplicates 0, refused 1"),
            "{}",
            text(&out.stdout)
        );

        let mut server = Server::start(&host, &[]);
        let http = Http::new(&server.url());
        let mut body = String::new();
        for id in ["H-1", "BANNED-2", "H-2"] {
            body += &flowhost_tests::line("device", "bms", id, json!({"serial": id}));
        }
        let answer = http.records(&body);
        assert_eq!(answer.status, 200, "{}", answer.body);
        let counts = answer.json();
        assert_eq!(counts["accepted"], 2, "{counts}");
        assert_eq!(counts["refused"], 1, "{counts}");
        assert_eq!(counts["errors"][0]["line"], 2, "{counts}");
        let error = counts["errors"][0]["error"].as_str().unwrap();
        assert!(error.contains(said), "{error}");
        assert!(!error.contains("INSERT"), "{error}");
        server.stop();
        let stored = count_by(&db.url, "SELECT model, COUNT(*) FROM intake GROUP BY model");
        assert_eq!(stored, [("device".to_string(), 6)], "{}", db.backend);
    }
}

/// A view the database refuses keeps its reference marked with the database's reason; the
/// other views of the batch are written.
#[test]
fn a_view_the_database_refuses_keeps_its_mark_and_the_other_views_commit() {
    for db in Scratch::both() {
        let host = with_operator_rule(
            &db,
            "CREATE TRIGGER refuse_big_views BEFORE INSERT ON views \
                   WHEN length(NEW.canonical) > 10000 \
                   BEGIN SELECT RAISE(ABORT, 'view larger than 10000 characters'); END",
            Some(
                "ALTER TABLE views ADD CONSTRAINT views_small \
                   CHECK (length(canonical) <= 10000)",
            ),
        );
        let mut input = String::new();
        for i in 1..=6 {
            let note = if i == 4 {
                "n".repeat(20_000)
            } else {
                "short".into()
            };
            input += &flowhost_tests::line(
                "device",
                "bms",
                &format!("D-{i}"),
                json!({"serial": format!("SN-{i}"), "note": note}),
            );
        }
        block_until_ok(&host.ingest(&input));
        host.process();
        assert_eq!(
            host.export("canonical", "device").len(),
            5,
            "{}",
            db.backend
        );
        let errors = count_by(
            &db.url,
            "SELECT error, COUNT(*) FROM dirty WHERE error IS NOT NULL GROUP BY error",
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0]
                .0
                .starts_with("STORE_REFUSED: the database refused this view:"),
            "{errors:?}"
        );
    }
}

/// A database that stops taking writes (here: switched to read-only behind the host's back)
/// is not about the data: nothing parks, the stage retries with a growing pause and says
/// so in `/metrics`, `/health/ready` and `GET /v1/models`; once writes work again the
/// records flow and the state clears.
#[test]
fn a_failing_database_is_retried_visibly_and_recovers() {
    let Some(db) = Scratch::postgres() else {
        return;
    };
    let host = Host::new(&db.url);
    let mut server = Server::start(&host, &["--set", "stages.idle_poll_ms=20"]);
    let http = Http::new(&server.url());
    let name = db.url.rsplit('/').next().unwrap().to_string();
    // The switch is made from another database: a read-only one cannot switch itself back.
    let admin = db.url.replace(&format!("/{name}"), "/postgres");
    let kick =
        format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'");
    // A record in, then writes stop.
    let answer = http.records(&flowhost_tests::line(
        "device",
        "bms",
        "D-1",
        json!({"serial": "S1"}),
    ));
    assert_eq!(answer.status, 200, "{}", answer.body);
    execute(
        &admin,
        &[
            &format!("ALTER DATABASE {name} SET default_transaction_read_only = on"),
            &kick,
        ],
    );
    // Both stages retry: each takes its lease (a write) before looking for work. (The first
    // attempt may still meet the connection being cut; the next ones meet the read-only
    // database.)
    let associate_retrying = || -> Option<(Value, Value)> {
        let models = http.get("/v1/models").json();
        let device = models["models"]
            .as_array()?
            .iter()
            .find(|m| m["model"] == "device")?
            .clone();
        let associate = device["retrying_here"]
            .as_array()?
            .iter()
            .find(|r| r["stage"] == "associate")?
            .clone();
        associate["last_error"]
            .as_str()?
            .contains("read-only")
            .then_some((device, associate))
    };
    flowhost_tests::wait_for(
        "association retrying on the read-only database",
        Duration::from_secs(60),
        || associate_retrying().is_some(),
    );
    let (device, associate) = associate_retrying().unwrap();
    assert!(associate["attempts"].as_u64().unwrap() >= 1, "{associate}");
    let metrics = http.get("/metrics").body;
    assert!(
        metrics.contains(
            "flowhost_batch_retrying_since_seconds{model=\"device\",stage=\"associate\"}"
        ) && metrics
            .contains("flowhost_batch_retry_attempts{model=\"device\",stage=\"associate\"}"),
        "{metrics}"
    );
    let ready = http.get("/health/ready");
    assert_eq!(ready.status, 503);
    assert!(
        ready.body.contains("retrying since") && ready.body.contains("read-only"),
        "{}",
        ready.body
    );
    assert_eq!(
        device["counts"]["parked"],
        json!({}),
        "nothing parks: {device}"
    );

    execute(
        &admin,
        &[
            &format!("ALTER DATABASE {name} RESET default_transaction_read_only"),
            &kick,
        ],
    );
    flowhost_tests::wait_for("the record associated", Duration::from_secs(90), || {
        http.get("/v1/models/device/canonical").body.contains("S1")
    });
    flowhost_tests::wait_for("retrying to clear", Duration::from_secs(30), || {
        !http
            .get("/metrics")
            .body
            .contains("flowhost_batch_retrying_since_seconds{")
    });
    assert_eq!(http.get("/health/ready").status, 200);
    let (_, log) = server.stop_with_log();
    assert!(log.contains("batch failed (nothing of it was committed; it is tried again)"));
    assert!(log.contains("batches go through again"), "{log}");
}
